//! When this member should build its next snapshot: after enough entries AND enough new
//! data that the build's cost is paid for.
//!
//! A build walks the whole live tree (`raft/snapshot.rs`): its cost grows with the state, not
//! with what changed. A fixed cadence in entries (openraft's `LogsSinceLast`) therefore
//! spends more and more of the machine on snapshots as history grows: measured at 64
//! clients over 1M keys, a build every ~45 s took 1 s of a core after the first minute
//! and 8.5 s after the fourth, on every member, and the write rate fell by a fifth in
//! four minutes. So a snapshot is due only when both hold:
//! - at least `every_entries` log entries were applied since the last one (the floor,
//!   as before: small states still snapshot, and the log is purged, this often);
//! - the bytes apply wrote to the tree since then reach the size of the last snapshot
//!   file. Each build then costs at most about what the writes since the previous one
//!   cost to apply: the share of the machine spent on snapshots stays flat however big
//!   the state grows. The price is a log up to about one state's size long between
//!   snapshots (etcd's backend needs no build: its database file is the snapshot).
//!
//! Apply reports each batch (`SnapshotCadence::applied`); a node task waits on
//! [`SnapshotCadence::due`] and asks openraft to build (its own policy is off). The
//! counters restart at each capture and install. No lock: atomics read by apply and the
//! node's task, a `Notify` between them.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

/// The snapshot policy's counters (see the module doc).
#[derive(Debug)]
pub struct SnapshotCadence {
    every_entries: u64,
    /// Log index the newest snapshot (built or installed) covers.
    last_index: AtomicU64,
    /// Size of the newest snapshot file.
    last_bytes: AtomicU64,
    /// Bytes apply wrote to the tree since the newest snapshot was captured.
    written_since: AtomicU64,
    /// Applied log index, as apply last reported it.
    applied_index: AtomicU64,
    due: Notify,
}

impl SnapshotCadence {
    /// Counters for a member whose newest snapshot covers `last_index` and is `last_bytes`
    /// long (0 and 0 if it has none), applied up to `applied_index`.
    pub(crate) fn new(every_entries: u64, last_index: u64, last_bytes: u64, applied_index: u64) -> Self {
        Self {
            every_entries: every_entries.max(1),
            last_index: AtomicU64::new(last_index),
            last_bytes: AtomicU64::new(last_bytes),
            written_since: AtomicU64::new(0),
            applied_index: AtomicU64::new(applied_index),
            due: Notify::new(),
        }
    }

    /// Apply wrote `bytes` to the tree and applied up to `index`.
    pub(crate) fn applied(&self, index: u64, bytes: u64) {
        self.written_since.fetch_add(bytes, Ordering::Relaxed);
        self.applied_index.store(index, Ordering::Relaxed);
        if self.is_due() {
            // Stores a permit if no one waits: cheap, and the waiter re-checks.
            self.due.notify_one();
        }
    }

    /// Whether a snapshot is due now.
    pub fn is_due(&self) -> bool {
        let entries = self
            .applied_index
            .load(Ordering::Relaxed)
            .saturating_sub(self.last_index.load(Ordering::Relaxed));
        entries >= self.every_entries
            && self.written_since.load(Ordering::Relaxed) >= self.last_bytes.load(Ordering::Relaxed)
    }

    /// Wait until a snapshot is due.
    pub async fn due(&self) {
        loop {
            let notified = self.due.notified();
            if self.is_due() {
                return;
            }
            notified.await;
        }
    }

    /// A build captured the state at log index `index` (between applies).
    pub(crate) fn captured(&self, index: u64) {
        self.last_index.store(index, Ordering::Relaxed);
        self.written_since.store(0, Ordering::Relaxed);
    }

    /// The build finished: its file is `bytes` long.
    pub(crate) fn built(&self, bytes: u64) {
        self.last_bytes.store(bytes, Ordering::Relaxed);
    }

    /// A snapshot up to log index `index`, `bytes` long, was installed.
    pub(crate) fn installed(&self, index: u64, bytes: u64) {
        self.captured(index);
        self.applied_index.fetch_max(index, Ordering::Relaxed);
        self.built(bytes);
    }

    /// The size of the newest snapshot file (0 before the first).
    pub fn last_snapshot_bytes(&self) -> u64 {
        self.last_bytes.load(Ordering::Relaxed)
    }

    /// Bytes apply wrote to the tree since the newest snapshot was captured (or since
    /// this process opened the store, if that is later).
    pub fn written_since_snapshot(&self) -> u64 {
        self.written_since.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn due_needs_both_the_entries_and_the_bytes() {
        let cadence = SnapshotCadence::new(10, 0, 0, 0);
        cadence.applied(9, 1_000);
        assert!(!cadence.is_due(), "9 entries < 10");
        cadence.applied(10, 0);
        assert!(cadence.is_due(), "no snapshot yet: the entries alone make it due");

        cadence.captured(10);
        cadence.built(5_000);
        cadence.applied(25, 4_999);
        assert!(
            !cadence.is_due(),
            "15 entries, but 4,999 bytes < the 5,000 of the last file"
        );
        cadence.applied(26, 1);
        assert!(cadence.is_due());

        cadence.captured(26);
        assert!(!cadence.is_due(), "a capture restarts both counts");
        cadence.applied(30, 1_000_000);
        assert!(!cadence.is_due(), "bytes alone are not enough: 4 entries < 10");
    }

    #[test]
    fn an_install_restarts_the_counts_at_its_index_and_size() {
        let cadence = SnapshotCadence::new(10, 0, 0, 0);
        cadence.applied(50, 10);
        assert!(cadence.is_due());
        cadence.installed(100, 300);
        assert!(!cadence.is_due());
        cadence.applied(110, 299);
        assert!(!cadence.is_due());
        cadence.applied(111, 1);
        assert!(cadence.is_due());
    }

    #[tokio::test]
    async fn due_wakes_the_waiter_once_apply_makes_it_due() {
        let cadence = std::sync::Arc::new(SnapshotCadence::new(2, 0, 0, 0));
        let waiter = tokio::spawn({
            let cadence = cadence.clone();
            async move { cadence.due().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        cadence.applied(1, 0);
        cadence.applied(2, 0);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken within the deadline")
            .expect("waiter task");
    }
}
