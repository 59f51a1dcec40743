//! The active alarms (the `r` family, see [`crate::keys`]) and applying
//! [`raftkv_core::Command::Alarm`] (an extension of `Applier`, see
//! `apply/applier.rs`), with etcd 3.4's semantics: raising an alarm that is active answers it
//! again and changes nothing; disarming one that is not active answers nothing; a list
//! names the alarms of one type, or all of them for type NONE.
//!
//! Whether a NOSPACE or a CORRUPT alarm is active is kept as a bit mask: in the applier
//! (it decides refusals entry by entry, so an alarm raised earlier in the same `apply()`
//! call already counts) and in [`crate::state::StateShared`] (published after each apply
//! and install, read by the write path to refuse early and by health probes).
//!
//! Unlike etcd, whose applier follows the alarm raised or disarmed last (disarming a
//! NOSPACE alarm there lifts the CORRUPT refusals too), the refusals here follow the
//! whole table: CORRUPT while any CORRUPT alarm is active, else NOSPACE while any NOSPACE
//! alarm is.

use raftkv_core::alarm::{ALARM_CORRUPT, ALARM_NONE, ALARM_NOSPACE, AlarmAction, AlarmMember, AlarmRequest};
use raftkv_core::{Command, RequestError};

use crate::apply::applier::Applier;
use crate::error::Error;
use crate::keys;

/// Mask bit: a NOSPACE alarm is active.
pub const NOSPACE_ACTIVE: u8 = 1;
/// Mask bit: a CORRUPT alarm is active.
pub const CORRUPT_ACTIVE: u8 = 2;

/// The active alarms in `tree` of type `alarm` (all types for [`ALARM_NONE`]), ordered by
/// type, then member.
pub(crate) fn read(tree: &sled::Tree, alarm: i32) -> Result<Vec<AlarmMember>, Error> {
    let scan = if alarm == ALARM_NONE {
        tree.scan_prefix([keys::ALARM])
    } else {
        tree.scan_prefix(keys::alarm_prefix(alarm))
    };
    let mut out = Vec::new();
    for item in scan {
        let (key, _) = item?;
        let (alarm, member_id) = keys::alarm_of(&key).ok_or_else(|| Error::Corrupt {
            what: "alarm record",
            detail: format!("key of {} bytes", key.len()),
        })?;
        out.push(AlarmMember { member_id, alarm });
    }
    Ok(out)
}

/// The mask of `alarms`.
pub(crate) fn mask_of(alarms: &[AlarmMember]) -> u8 {
    alarms.iter().fold(0, |mask, a| match a.alarm {
        ALARM_NOSPACE => mask | NOSPACE_ACTIVE,
        ALARM_CORRUPT => mask | CORRUPT_ACTIVE,
        _ => mask,
    })
}

/// Why `command` must be refused while the alarms of `mask` are active, if it must.
pub fn refusal(mask: u8, command: &Command) -> Option<RequestError> {
    if mask & CORRUPT_ACTIVE != 0 && command.changes_data() {
        return Some(RequestError::Corrupt);
    }
    if mask & NOSPACE_ACTIVE != 0 && command.adds_data() {
        return Some(RequestError::NoSpace);
    }
    None
}

impl Applier<'_> {
    /// The active alarms of type `alarm` as this call left them so far.
    fn alarms(&self, alarm: i32) -> Result<Vec<AlarmMember>, Error> {
        let mut active: std::collections::BTreeSet<AlarmMember> =
            read(self.tree, alarm)?.into_iter().collect();
        for (member, on) in &self.alarms {
            if alarm == ALARM_NONE || member.alarm == alarm {
                if *on {
                    active.insert(*member);
                } else {
                    active.remove(member);
                }
            }
        }
        Ok(active.into_iter().collect())
    }

    /// Apply an alarm request; the answer lists the alarms listed, raised or disarmed.
    pub(crate) fn alarm(&mut self, req: &AlarmRequest) -> Result<Vec<AlarmMember>, Error> {
        let member = AlarmMember {
            member_id: req.member_id,
            alarm: req.alarm,
        };
        let answer = match req.action {
            AlarmAction::Get => return self.alarms(req.alarm),
            AlarmAction::Activate => {
                if !self.alarms(req.alarm)?.contains(&member) {
                    self.batch
                        .insert(keys::alarm_key(req.alarm, req.member_id), Vec::new());
                    self.alarms.insert(member, true);
                    tracing::warn!(alarm = req.alarm, member = %format_args!("{:x}", req.member_id), "alarm raised");
                }
                vec![member]
            }
            AlarmAction::Deactivate => {
                if !self.alarms(req.alarm)?.contains(&member) {
                    return Ok(Vec::new());
                }
                self.batch.remove(keys::alarm_key(req.alarm, req.member_id));
                self.alarms.insert(member, false);
                tracing::warn!(alarm = req.alarm, member = %format_args!("{:x}", req.member_id), "alarm disarmed");
                vec![member]
            }
        };
        self.alarm_mask = mask_of(&self.alarms(ALARM_NONE)?);
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use raftkv_core::kv::{PutRequest, RequestOp, TxnRequest};

    use super::*;

    #[test]
    fn refusals_follow_the_mask() {
        let put = Command::Put(PutRequest::new("k", "v"));
        let read_txn = Command::Txn(TxnRequest::default());
        let delete_txn = Command::Txn(TxnRequest {
            success: vec![RequestOp::Txn(TxnRequest {
                failure: vec![RequestOp::DeleteRange(raftkv_core::kv::DeleteRangeRequest::key(
                    "k",
                ))],
                ..TxnRequest::default()
            })],
            ..TxnRequest::default()
        });
        assert_eq!(refusal(0, &put), None);
        assert_eq!(refusal(NOSPACE_ACTIVE, &put), Some(RequestError::NoSpace));
        // Deletes free space: NOSPACE lets them through, CORRUPT does not.
        assert_eq!(refusal(NOSPACE_ACTIVE, &delete_txn), None);
        assert_eq!(refusal(CORRUPT_ACTIVE, &delete_txn), Some(RequestError::Corrupt));
        assert_eq!(
            refusal(CORRUPT_ACTIVE | NOSPACE_ACTIVE, &put),
            Some(RequestError::Corrupt)
        );
        assert_eq!(refusal(CORRUPT_ACTIVE, &read_txn), None);
        let alarm = Command::Alarm(AlarmRequest {
            action: AlarmAction::Deactivate,
            member_id: 1,
            alarm: ALARM_CORRUPT,
        });
        assert_eq!(refusal(CORRUPT_ACTIVE | NOSPACE_ACTIVE, &alarm), None);
    }

    #[test]
    fn the_mask_names_the_known_types() {
        let a = |alarm| AlarmMember { member_id: 1, alarm };
        assert_eq!(mask_of(&[]), 0);
        assert_eq!(mask_of(&[a(ALARM_NONE), a(7)]), 0);
        assert_eq!(mask_of(&[a(ALARM_NOSPACE)]), NOSPACE_ACTIVE);
        assert_eq!(
            mask_of(&[a(ALARM_CORRUPT), a(ALARM_NOSPACE)]),
            NOSPACE_ACTIVE | CORRUPT_ACTIVE
        );
    }
}
