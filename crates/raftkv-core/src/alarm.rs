//! etcd's alarms: what a member raises when it cannot go on safely (its disk quota is
//! exhausted, its data is found corrupt), kept in the replicated state so every member
//! agrees which are active and they survive restarts.
//!
//! An alarm is a pair (member id, alarm type). Raising and disarming one goes through the
//! log ([`crate::Command::Alarm`]), and so does listing them, as etcd 3.4 does (a list
//! is linearizable). While any NOSPACE alarm is active, every member refuses the writes
//! that add data (puts, txns with a put, lease grants); while any CORRUPT alarm is
//! active, every write that changes the store. The refusal happens when the entry is
//! applied, so all members decide alike.

use serde::{Deserialize, Serialize};

/// etcd's `AlarmType`: no alarm (in a request: any type).
pub const ALARM_NONE: i32 = 0;
/// etcd's `AlarmType`: a member's database exceeded its quota.
pub const ALARM_NOSPACE: i32 = 1;
/// etcd's `AlarmType`: a member's data differs from the others'.
pub const ALARM_CORRUPT: i32 = 2;

/// What an alarm request does (etcd's `AlarmRequest.AlarmAction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlarmAction {
    /// List the active alarms of the request's type (all, for [`ALARM_NONE`]).
    Get,
    /// Raise an alarm for a member.
    Activate,
    /// Disarm a member's alarm.
    Deactivate,
}

impl AlarmAction {
    /// The action of etcd's wire number (0 GET, 1 ACTIVATE, 2 DEACTIVATE).
    pub fn from_wire(action: i32) -> Option<Self> {
        match action {
            0 => Some(AlarmAction::Get),
            1 => Some(AlarmAction::Activate),
            2 => Some(AlarmAction::Deactivate),
            _ => None,
        }
    }
}

/// An alarm request, applied through the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmRequest {
    /// What to do.
    pub action: AlarmAction,
    /// The member the alarm belongs to, kept as given (etcd 3.4 stores 0 as 0 too).
    pub member_id: u64,
    /// etcd's alarm type number.
    pub alarm: i32,
}

/// An active alarm: which member raised which type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AlarmMember {
    /// The member id.
    pub member_id: u64,
    /// etcd's alarm type number.
    pub alarm: i32,
}

impl AlarmMember {
    /// etcd's text for the alarm in `Status.errors` (Go's proto `String()`:
    /// `memberID:1 alarm:NOSPACE `).
    pub fn status_text(&self) -> String {
        // Go's text format leaves zero fields out.
        let mut text = String::new();
        if self.member_id != 0 {
            text.push_str(&format!("memberID:{} ", self.member_id));
        }
        match self.alarm {
            ALARM_NONE => {}
            ALARM_NOSPACE => text.push_str("alarm:NOSPACE "),
            ALARM_CORRUPT => text.push_str("alarm:CORRUPT "),
            other => text.push_str(&format!("alarm:{other} ")),
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_actions_round_trip_and_unknown_ones_are_refused() {
        assert_eq!(AlarmAction::from_wire(0), Some(AlarmAction::Get));
        assert_eq!(AlarmAction::from_wire(1), Some(AlarmAction::Activate));
        assert_eq!(AlarmAction::from_wire(2), Some(AlarmAction::Deactivate));
        assert_eq!(AlarmAction::from_wire(7), None);
        assert_eq!(AlarmAction::from_wire(-1), None);
    }

    #[test]
    fn status_text_is_gos_proto_text() {
        let a = AlarmMember {
            member_id: 42,
            alarm: ALARM_NOSPACE,
        };
        assert_eq!(a.status_text(), "memberID:42 alarm:NOSPACE ");
        let zero = AlarmMember {
            member_id: 0,
            alarm: ALARM_CORRUPT,
        };
        assert_eq!(zero.status_text(), "alarm:CORRUPT ");
    }
}
