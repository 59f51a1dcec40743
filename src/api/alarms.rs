//! etcd's alarms on a node: the disk quota that raises NOSPACE, the alarm requests (list,
//! raise, disarm) that go through the log, and the early refusal of writes an active
//! alarm would refuse anyway when applied (`raftkv-storage`'s `apply/alarm_table.rs` decides,
//! entry by entry, on every member alike).
//!
//! As in etcd 3.4, the member that receives a write that adds data measures its own disk
//! usage (here at most once a second); over the quota it raises a NOSPACE alarm for
//! itself through the log and refuses the write. The alarm then caps the whole cluster
//! until an operator disarms it, and survives restarts.

use raftkv_core::alarm::{ALARM_NOSPACE, AlarmAction, AlarmMember, AlarmRequest};
use raftkv_core::{Command, Error, Response, Result};
use raftkv_storage::apply::alarm_table;

use crate::node::{MAX_APPLY_LAG, Node};

impl Node {
    /// etcd Alarm: list (`Get`, all types for type 0), raise or disarm an alarm, through
    /// the log. The answer names the alarms listed, raised or disarmed.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn alarm(&self, req: AlarmRequest) -> Result<Vec<AlarmMember>> {
        let answer = match self.propose_command(Command::Alarm(req)).await? {
            (Response::Alarms(alarms), _) => alarms,
            (Response::Rejected(e), _) => return Err(e.into()),
            (other, _) => return Err(crate::api::kv::unexpected(other)),
        };
        if req.action == AlarmAction::Deactivate {
            // A disarmed quota alarm is raised again by the next write if still exceeded.
            self.inner.quota.measure_next_write();
        }
        Ok(answer)
    }

    /// The active alarms as this member has applied them (local, possibly stale; what
    /// etcd's `Status` and `/health` report).
    pub fn alarms(&self) -> Result<Vec<AlarmMember>> {
        self.inner.reader.alarms()
    }

    /// Whether a NOSPACE alarm is active (as this member has applied the alarms).
    pub fn nospace_alarm(&self) -> bool {
        self.inner.reader.alarm_mask() & alarm_table::NOSPACE_ACTIVE != 0
    }

    /// etcd's quota check of a write received here: over the quota, raise this member's
    /// NOSPACE alarm (through the log; its outcome does not change the answer) and refuse
    /// the write.
    pub(crate) async fn check_quota(&self, command: &Command) -> Result<()> {
        if !command.adds_data() || !self.inner.quota.exceeded_now() {
            return Ok(());
        }
        let mine = AlarmMember {
            member_id: self.id(),
            alarm: ALARM_NOSPACE,
        };
        if !self.alarms().is_ok_and(|active| active.contains(&mine)) {
            let raise = AlarmRequest {
                action: AlarmAction::Activate,
                member_id: self.id(),
                alarm: ALARM_NOSPACE,
            };
            // Boxed: proposing is what called this check (for other commands).
            if let Err(e) = Box::pin(self.alarm(raise)).await {
                tracing::warn!(error = %e, "could not raise the NOSPACE alarm");
            }
        }
        Err(Error::NoSpace)
    }

    /// Refuse a write the leader cannot take now: apply lags commit too far (etcd's "too
    /// many requests"), or an active alarm would refuse it when applied.
    pub(crate) fn admit_write(&self, command: &Command) -> Result<()> {
        let lag = self.committed().get().saturating_sub(self.applied().get());
        if lag > MAX_APPLY_LAG {
            return Err(Error::TooManyRequests { lag });
        }
        match alarm_table::refusal(self.inner.reader.alarm_mask(), command) {
            Some(refused) => Err(refused.into()),
            None => Ok(()),
        }
    }

    /// Bytes the data directory takes on disk (`disk_usage.rs`: directories are listed
    /// again only when they changed).
    pub fn disk_usage(&self) -> u64 {
        self.inner.quota.usage_bytes()
    }
}
