//! [`StateShared`]: what the state machine shares with readers and with the log store.
//!
//! The live keyspace is a sled tree reached through an `ArcSwap`, so a snapshot install can
//! switch to a freshly loaded tree atomically while readers keep whichever tree they
//! already hold. The current revision and compact revision are atomics, published after
//! each applied batch is visible; the applied log index is a [`Watermark`]. No lock
//! guards any of them.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use arc_swap::ArcSwap;
use raftkv_core::Watermark;
use raftkv_core::kv::Revision;

use crate::durable::DurableDb;
use crate::error::Result;

/// Key (in sled's default tree) naming the active state-machine generation.
pub(crate) const ACTIVE_GENERATION: &[u8] = b"active_generation";

/// The name of the state-machine tree of `generation`.
pub(crate) fn generation_tree_name(generation: u64) -> String {
    format!("sm.{generation}")
}

/// State shared by the state machine, its readers and the log store.
pub struct StateShared {
    pub(crate) db: DurableDb,
    pub(crate) active: ArcSwap<sled::Tree>,
    pub(crate) generation: AtomicU64,
    pub(crate) revision: AtomicI64,
    pub(crate) compact_revision: AtomicI64,
    pub(crate) applied: Arc<Watermark>,
    /// The applied index covered by the last completed `sync_durable`.
    pub(crate) synced_applied: AtomicU64,
    pub(crate) snapshot_dir: PathBuf,
    /// Test hook: make the next state-machine syncs fail (see `inject_sync_failure`).
    pub(crate) fail_syncs: AtomicBool,
    /// 0 until the first membership is applied.
    pub(crate) cluster_id: AtomicU64,
}

impl StateShared {
    /// The newest applied revision (readers pin this).
    pub fn revision(&self) -> Revision {
        self.revision.load(Ordering::Acquire)
    }

    /// The compact revision.
    pub fn compact_revision(&self) -> Revision {
        self.compact_revision.load(Ordering::Acquire)
    }

    /// The cluster id (0 before the first membership entry is applied).
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id.load(Ordering::Acquire)
    }

    /// The applied-index watermark.
    pub fn applied(&self) -> &Arc<Watermark> {
        &self.applied
    }

    /// The live keyspace tree.
    pub(crate) fn tree(&self) -> Arc<sled::Tree> {
        self.active.load_full()
    }

    /// Make the state machine durable up to what is applied now (flush + fdatasync).
    /// Blocking. Returns the applied index it covers.
    pub fn sync_durable(&self) -> Result<u64> {
        if self.fail_syncs.load(Ordering::Acquire) {
            return Err(std::io::Error::other("injected state-machine sync failure").into());
        }
        let applied = self.applied.get();
        self.db.sync()?;
        self.synced_applied.fetch_max(applied, Ordering::AcqRel);
        Ok(applied)
    }

    /// The applied index covered by the last state-machine sync.
    pub fn synced_applied(&self) -> u64 {
        self.synced_applied.load(Ordering::Acquire)
    }

    /// Test hook: while `fail` is set, state-machine syncs fail with an I/O error, so tests
    /// can show what depends on them (a log purge must not delete anything then).
    pub fn inject_sync_failure(&self, fail: bool) {
        self.fail_syncs.store(fail, Ordering::Release);
    }

    /// Sync counters of the state-machine database.
    pub fn sync_stats(&self) -> &crate::durable::SyncStats {
        self.db.stats()
    }
}
