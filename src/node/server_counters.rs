//! [`ServerCounters`]: what the node counts per proposal and per leader change for its
//! metrics (etcd's `etcd_server_proposals_*` and `etcd_server_leader_changes_seen_total`),
//! two relaxed atomic adds per proposal. The node holds it; `metrics/mod.rs` renders it.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use raftkv_core::Error;

/// Counters of proposals and leader changes, kept by the node.
#[derive(Debug, Default)]
pub(crate) struct ServerCounters {
    pub(crate) leader_changes: AtomicU64,
    pub(crate) proposals_pending: AtomicI64,
    pub(crate) proposals_failed: AtomicU64,
}

/// A proposal in flight: counted in `etcd_server_proposals_pending` until dropped.
pub(crate) struct PendingProposal<'a>(&'a ServerCounters);

impl Drop for PendingProposal<'_> {
    fn drop(&mut self) {
        self.0.proposals_pending.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ServerCounters {
    /// Count a proposal as pending until the returned guard is dropped.
    pub(crate) fn proposing(&self) -> PendingProposal<'_> {
        self.proposals_pending.fetch_add(1, Ordering::Relaxed);
        PendingProposal(self)
    }

    /// Count `outcome` in `etcd_server_proposals_failed_total` if the proposal failed to
    /// commit (no leader, timed out, shut down, a storage failure), as etcd counts it;
    /// a request the state machine refused (compacted, no such lease) did commit.
    pub(crate) fn finished<T>(&self, outcome: &Result<T, Error>) {
        let failed = match outcome {
            Ok(_) => false,
            // Refused before proposing, or answered by the state machine: not failures.
            Err(
                Error::Request(_)
                | Error::TooManyRequests { .. }
                | Error::NoSpace
                | Error::Corrupt
                | Error::LeaderTransferTimeout,
            ) => false,
            // No leader, timed out, outcome unknown, shut down, storage or internal errors.
            Err(_) => true,
        };
        if failed {
            self.proposals_failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}
