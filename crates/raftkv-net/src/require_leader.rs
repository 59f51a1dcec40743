//! etcd's "require leader" option for streams: a client that sets the gRPC metadata
//! `hasleader: true` (clientv3's `WithRequireLeader`) asks that its stream not be served by
//! a member cut off from the cluster, whose answers would go stale unnoticed.
//!
//! As etcd does (`v3rpc/interceptor.go`): such a stream is refused with "no leader" when
//! the member has no leader as it opens, and ended with the same status once the member
//! has had no leader for [`MAX_NO_LEADER_TIMEOUTS`] election timeouts in a row (checked
//! once per election timeout; a short blip costs no reconnect). Streams without the
//! option are served regardless. The Watch and LeaseKeepAlive streams honour it, through
//! [`LeaderMonitor::for_call`] over their backend's [`LeaderStatus`].

use std::time::Duration;

use raftkv_proto::status::text;
use tonic::Status;
use tonic::metadata::MetadataMap;

/// The metadata key (and value `true`) of etcd's require-leader option.
pub const REQUIRE_LEADER_KEY: &str = "hasleader";

/// Checks without a leader, one per election timeout, after which a stream ends (etcd's
/// `maxNoLeaderCnt`).
pub const MAX_NO_LEADER_TIMEOUTS: u32 = 3;

/// Whether the call asked to be served only while its member has a leader.
pub fn requires_leader(metadata: &MetadataMap) -> bool {
    metadata
        .get(REQUIRE_LEADER_KEY)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "true")
}

/// What a require-leader stream asks of its member.
pub trait LeaderStatus: Send + Sync + 'static {
    /// Whether this member knows a leader now.
    fn has_leader(&self) -> bool;
    /// The election timeout: how often a require-leader stream checks for a leader.
    fn election_timeout(&self) -> Duration;
}

/// Watches a member's leader for one require-leader stream.
pub(crate) struct LeaderMonitor {
    ticks: tokio::time::Interval,
    missed: u32,
}

impl LeaderMonitor {
    /// For a call with `metadata` on `member`: `None` when the call did not ask for a
    /// leader, a monitor when it did and the member has one, and etcd's "no leader"
    /// status (to refuse the call) when it did and the member has none.
    pub(crate) fn for_call(
        metadata: &MetadataMap,
        member: &impl LeaderStatus,
    ) -> Result<Option<Self>, Status> {
        if !requires_leader(metadata) {
            return Ok(None);
        }
        if !member.has_leader() {
            return Err(Status::unavailable(text::NO_LEADER));
        }
        Ok(Some(Self::new(member.election_timeout())))
    }

    /// Returns once `monitor`'s member has been without a leader for too long (see
    /// [`LeaderMonitor::leader_lost`]); never when there is no monitor.
    pub(crate) async fn lost(monitor: &mut Option<Self>, member: &impl LeaderStatus) {
        match monitor {
            Some(monitor) => monitor.leader_lost(|| member.has_leader()).await,
            None => std::future::pending().await,
        }
    }

    /// The status a stream ends with once [`LeaderMonitor::lost`] returned.
    pub(crate) fn lost_status() -> Status {
        Status::unavailable(text::NO_LEADER)
    }

    /// Check once per `election_timeout`.
    pub(crate) fn new(election_timeout: Duration) -> Self {
        let period = election_timeout.max(Duration::from_millis(10));
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self { ticks, missed: 0 }
    }

    /// Returns once `has_leader` has said no at [`MAX_NO_LEADER_TIMEOUTS`] checks in a row.
    pub(crate) async fn leader_lost(&mut self, has_leader: impl Fn() -> bool) {
        loop {
            self.ticks.tick().await;
            self.missed = if has_leader() { 0 } else { self.missed + 1 };
            if self.missed >= MAX_NO_LEADER_TIMEOUTS {
                return;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[test]
    fn only_hasleader_true_requires_a_leader() {
        let mut metadata = MetadataMap::new();
        assert!(!requires_leader(&metadata));
        metadata.insert(REQUIRE_LEADER_KEY, "false".parse().unwrap());
        assert!(!requires_leader(&metadata));
        metadata.insert(REQUIRE_LEADER_KEY, "true".parse().unwrap());
        assert!(requires_leader(&metadata));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_ends_after_three_election_timeouts_without_a_leader_in_a_row() {
        let leader = Arc::new(AtomicBool::new(true));
        let mut monitor = LeaderMonitor::new(Duration::from_secs(1));
        let started = tokio::time::Instant::now();
        let flag = leader.clone();
        // Lost at 1.5 s, back at 2.5 s (a blip: the count restarts), lost again at 3.5 s.
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            flag.store(false, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(1)).await;
            flag.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(1)).await;
            flag.store(false, Ordering::SeqCst);
        });
        monitor.leader_lost(|| leader.load(Ordering::SeqCst)).await;
        // Checks at 4, 5 and 6 s find no leader.
        assert_eq!(started.elapsed(), Duration::from_secs(6));
    }
}
