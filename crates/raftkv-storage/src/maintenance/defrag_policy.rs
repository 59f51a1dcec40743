//! When the state database is defragmented by itself ([`AutoDefrag`]) and the counters of
//! what defragmentation did ([`DefragStats`]).
//!
//! Held by [`crate::state::StateShared`]; the defragmentation itself (`maintenance/defrag.rs`) works on
//! that state, so these live apart from it.

use std::sync::atomic::AtomicU64;

/// When the compactor defragments by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoDefrag {
    /// Defragment once the database file is more than this many times its size at the
    /// last switch (0: never by itself).
    pub ratio: u64,
    /// The size at the last switch counts as at least this: a young database is left
    /// alone until it is `ratio` times this large.
    pub floor_bytes: u64,
}

impl AutoDefrag {
    /// Never defragment by itself.
    pub const OFF: Self = Self {
        ratio: 0,
        floor_bytes: 0,
    };
}

impl Default for AutoDefrag {
    /// 2x over at least 64 MiB: the file is rewritten at most once per doubling, so the
    /// copy costs a constant share of what was written, and the disk holds at most about
    /// twice the compacted size, or 128 MiB (sled under churn grows past ten times: a
    /// 20-minute soak measured 4x within four minutes of a rewrite).
    fn default() -> Self {
        Self {
            ratio: 2,
            floor_bytes: 64 << 20,
        }
    }
}

/// Counters of defragmentation, for tests and metrics.
#[derive(Debug, Default)]
pub struct DefragStats {
    /// Defragmentations completed.
    pub runs: AtomicU64,
    /// Of those, started by the compactor.
    pub automatic: AtomicU64,
    /// Database file size before and after the last one.
    pub last_before_bytes: AtomicU64,
    /// See `last_before_bytes`.
    pub last_after_bytes: AtomicU64,
    /// How long writes waited for the last one, in microseconds.
    pub last_pause_micros: AtomicU64,
    /// Keys the running one re-copied outside the gate so far (reset when it reports).
    pub(crate) caught_up_outside: AtomicU64,
}
