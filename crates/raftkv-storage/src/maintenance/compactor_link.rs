//! What the state shares with its compactor thread: the counters the thread keeps
//! ([`CompactionStats`]) and the handle that wakes it ([`CompactorWake`]).
//!
//! They live apart from `maintenance/compactor.rs` because [`crate::state::StateShared`] holds them
//! while the compactor works on that state: keeping them here lets the state name them
//! without depending on the compactor.

use std::sync::atomic::AtomicU64;

use crossbeam::channel::{self, Receiver, Sender, TrySendError};

/// Counters of the compactor, for tests and metrics.
#[derive(Debug, Default)]
pub struct CompactionStats {
    /// Chunks committed.
    pub batches: AtomicU64,
    /// Version records deleted.
    pub versions_deleted: AtomicU64,
    /// History events deleted (in whole records: one that holds an event at or above the
    /// target stays, with its events below it, until a later compaction passes it).
    pub history_deleted: AtomicU64,
    /// Times the compactor went idle short of the compact revision because a snapshot
    /// build pinned an older one.
    pub held_back: AtomicU64,
}

/// Wakes the compactor thread (a compaction was published, a pin released, a tree
/// installed). Wake-ups coalesce: the channel holds at most one.
#[derive(Debug, Clone)]
pub(crate) struct CompactorWake(Sender<()>);

impl CompactorWake {
    pub(crate) fn wake(&self) {
        match self.0.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
        }
    }
}

/// The wake channel, with one wake-up already in it so a new compactor first looks for
/// work left over from before a restart.
pub(crate) fn wake_channel() -> (CompactorWake, Receiver<()>) {
    let (tx, rx) = channel::bounded(1);
    let wake = CompactorWake(tx);
    wake.wake();
    (wake, rx)
}
