//! [`LeaseManager`]: the leader's lease deadlines (which leases expire when, which
//! revokes are in flight, when the next checkpoint is due), the state the leader's timers
//! (`tasks/lease_timers.rs`) and the lease API (`api/lease.rs`) work on. Below the node, which holds
//! it, and below both of them.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use raftkv_core::lease;
use tokio::time::Instant;

/// The leader's lease deadlines.
#[derive(Debug, Default)]
pub(crate) struct Table {
    /// The term the deadlines belong to (None: this node does not lead).
    pub(crate) term: Option<u64>,
    /// The term's first entry is applied and the deadlines are loaded: expiry may run.
    pub(crate) ready: bool,
    /// The state machine's lease-change count the deadlines reflect.
    pub(crate) seen_changes: u64,
    /// When each lease expires, unless renewed.
    pub(crate) deadlines: HashMap<i64, Instant>,
    /// Leases whose revoke is proposed and not answered yet.
    pub(crate) revoking: HashSet<i64>,
    pub(crate) next_checkpoint: Option<Instant>,
}

/// Lease deadlines, kept by the leader (see the module doc).
pub(crate) struct LeaseManager {
    /// Locked for table reads and updates only, never across an `.await`.
    pub(crate) table: parking_lot::Mutex<Table>,
    pub(crate) checkpoint_interval: Duration,
    pub(crate) min_ttl: i64,
}

impl LeaseManager {
    /// `election_timeout_max` sets the minimum TTL, 1.5 times it rounded up to whole
    /// seconds, as etcd derives its own from its election timeout (700 ms gives etcd's
    /// default of 2 s, which outlasts a typical failover of 1.1-1.5 s).
    pub(crate) fn new(checkpoint_interval: Duration, election_timeout_max: Duration) -> Self {
        Self {
            table: parking_lot::Mutex::new(Table::default()),
            checkpoint_interval,
            min_ttl: lease::min_ttl(election_timeout_max.as_millis() as u64),
        }
    }
}

/// A remaining time in whole seconds, rounded up (a lease with 1 ms left has 1 s, not 0).
pub(crate) fn ceil_secs(d: Duration) -> i64 {
    let secs = d.as_secs() as i64;
    if d.subsec_nanos() > 0 { secs + 1 } else { secs }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_ttl_rounds_up() {
        assert_eq!(ceil_secs(Duration::from_millis(0)), 0);
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_millis(4000)), 4);
        assert_eq!(ceil_secs(Duration::from_millis(4001)), 5);
    }
}
