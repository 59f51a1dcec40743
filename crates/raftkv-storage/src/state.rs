//! [`StateShared`]: what the state machine shares with readers and with the log store.
//!
//! The live keyspace is the tree of the active [`Generation`] (a sled database of its
//! own), reached through an `ArcSwap`, so a snapshot install or a defragmentation can
//! switch to a fresh database atomically while readers keep whichever one they already
//! hold. The current revision and compact revision are atomics, published after
//! each applied batch is visible; the applied log index and the physically compacted
//! revision are [`Watermark`]s. No lock guards any of them. Two locks exist: the
//! compaction-pin registry's (see `maintenance/compaction_pins.rs`) and the tree-writers gate, which
//! every write to the live tree holds (an applied batch, a compaction chunk's commit) so
//! that a switch of generations (`maintenance/defrag.rs`, a snapshot install) never misses a write.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, Ordering};

use arc_swap::ArcSwap;
use raftkv_core::Watermark;
use raftkv_core::auth::{AuthEffect, AuthState, TokenTable};
use raftkv_core::kv::Revision;

use crate::apply::auth_overlay::AuthOverlay;
use crate::apply::tree_writes::WriteGate;
use crate::disk::data_dir_lock::DataDirLock;
use crate::disk::durable::SyncStats;
use crate::disk::generation::{self, Generation};
use crate::error::Result;
use crate::maintenance::compaction_pins::CompactionPins;
use crate::maintenance::compactor_link::{CompactionStats, CompactorWake};
use crate::maintenance::defrag_policy::{AutoDefrag, DefragStats};
use crate::mvcc::key_index::KeyIndex;
use crate::raft::snapshot_cadence::SnapshotCadence;
use crate::watch::hub::WatchHub;

/// State shared by the state machine, its readers and the log store.
pub struct StateShared {
    /// The node's data directory (generations live under it, see `disk/generation.rs`).
    pub(crate) data_dir: PathBuf,
    pub(crate) active: ArcSwap<Generation>,
    /// Page cache of each generation's database.
    pub(crate) cache_bytes: u64,
    /// Sync counters, shared by every generation.
    pub(crate) sync_stats: Arc<SyncStats>,
    /// The tree-writers gate (`apply/tree_writes.rs`): held by every write to the live tree and
    /// by a generation switch. An async mutex: apply waits for it without blocking a
    /// runtime thread.
    pub(crate) writers: Arc<tokio::sync::Mutex<WriteGate>>,
    /// When the compactor defragments by itself.
    pub(crate) auto_defrag: AutoDefrag,
    /// Counters of defragmentation.
    pub(crate) defrag_stats: DefragStats,
    /// Held by a running defragmentation, so two never overlap.
    pub(crate) defrag_running: parking_lot::Mutex<()>,
    pub(crate) revision: AtomicI64,
    pub(crate) compact_revision: AtomicI64,
    /// Odd while a snapshot install switches tree, key index and revisions (a seqlock:
    /// `begin_switch` and its guard); readers that saw it change read again.
    pub(crate) switch_epoch: AtomicU64,
    pub(crate) applied: Arc<Watermark>,
    /// The applied index covered by the last completed `sync_durable`.
    pub(crate) synced_applied: AtomicU64,
    /// A revision the durable applied state is known to have reached (read before the
    /// last sync began); physical compaction stays at or below it (`maintenance/compactor.rs`).
    pub(crate) synced_revision: AtomicI64,
    pub(crate) snapshot_dir: PathBuf,
    /// Test hook: make the next state-machine syncs fail (see `inject_sync_failure`).
    pub(crate) fail_syncs: AtomicBool,
    /// A generation switch failed midway (see `commit_switch`): syncs fail from then on.
    pub(crate) switch_failed: AtomicBool,
    /// 0 until the first membership is applied.
    pub(crate) cluster_id: AtomicU64,
    /// Which alarm types are active as of the applied state (`apply/alarm_table.rs`).
    pub(crate) alarm_mask: AtomicU8,
    /// The auth store as of the applied state (`apply/auth_table.rs`).
    pub(crate) auth: ArcSwap<AuthState>,
    /// The simple tokens assigned on this member (in memory only).
    pub(crate) tokens: TokenTable,
    /// The revision the live tree is physically compacted up to (see [`crate::maintenance::compactor`]).
    pub(crate) physically_compacted: Arc<Watermark>,
    /// Revisions snapshot builds hold physical compaction at.
    pub(crate) pins: Arc<CompactionPins>,
    /// Wakes the compactor thread.
    pub(crate) compactor: CompactorWake,
    /// Counters of the compactor (relaxed atomics: statistics only).
    pub(crate) compaction_stats: CompactionStats,
    /// Commands whose apply took longer than [`crate::SLOW_APPLY`] (etcd's
    /// `etcd_server_slow_apply_total`).
    pub(crate) slow_applies: std::sync::atomic::AtomicU64,
    /// Test hook: chunks the compactor may still commit (`u64::MAX`: no limit).
    pub(crate) compaction_budget: AtomicU64,
    /// This replica's watchers and the events apply publishes to them.
    pub(crate) watch_hub: WatchHub,
    /// Every key's retained revisions and live keys' newest versions (`mvcc/key_index.rs`).
    pub(crate) key_index: KeyIndex,
    /// When the next snapshot is due (`raft/snapshot_cadence.rs`).
    pub(crate) snapshot_cadence: SnapshotCadence,
    /// The store's hold on its data directory, for the generations it creates
    /// (`disk/data_dir_lock.rs`).
    pub(crate) dir_lock: Arc<DataDirLock>,
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

    /// Which alarm types are active as of the applied state: bits
    /// [`crate::apply::alarm_table::NOSPACE_ACTIVE`] and [`crate::apply::alarm_table::CORRUPT_ACTIVE`].
    pub fn alarm_mask(&self) -> u8 {
        self.alarm_mask.load(Ordering::Acquire)
    }

    /// The auth store as of the applied state.
    pub fn auth_state(&self) -> Arc<AuthState> {
        self.auth.load_full()
    }

    /// The simple tokens assigned on this member.
    pub fn tokens(&self) -> &TokenTable {
        &self.tokens
    }

    /// After an apply's writes are in the tree: publish the auth store it changed and do
    /// its token bookkeeping, in order.
    pub(crate) fn publish_auth(&self, overlay: AuthOverlay) {
        if let Some(state) = overlay.changed {
            self.auth.store(Arc::new(state));
        }
        for effect in overlay.effects {
            match effect {
                AuthEffect::None => {}
                AuthEffect::Assign { user, token } => self.tokens.assign(&user, &token),
                AuthEffect::Invalidate(user) => self.tokens.invalidate(&user),
                AuthEffect::DropAll => self.tokens.drop_all(),
            }
        }
    }

    /// An estimate of the bytes of live data in the state database, for etcd's
    /// `etcd_mvcc_db_total_size_in_use_in_bytes`: sled does not say how much of its file
    /// is live, but a snapshot file holds exactly the live records (plus framing), so
    /// the newest snapshot's size plus what apply wrote since. Deletions since that
    /// snapshot are not subtracted: between snapshots this overestimates, which errs
    /// toward "no fragmentation".
    pub fn live_bytes_estimate(&self) -> u64 {
        self.snapshot_cadence
            .last_snapshot_bytes()
            .saturating_add(self.snapshot_cadence.written_since_snapshot())
    }

    /// What a defragmentation would give back, estimated: the state database's file
    /// beyond [`StateShared::live_bytes_estimate`].
    pub fn reclaimable_bytes_estimate(&self) -> u64 {
        self.tree()
            .file_bytes()
            .saturating_sub(self.live_bytes_estimate())
    }

    /// The applied-index watermark.
    pub fn applied(&self) -> &Arc<Watermark> {
        &self.applied
    }

    /// The watch hub: configure it, count watchers, close it on shutdown. Watch streams
    /// are opened with [`crate::LocalWatchSession::open`].
    pub fn watch_hub(&self) -> &WatchHub {
        &self.watch_hub
    }

    /// Every key's retained revisions and live keys' newest versions (`mvcc/key_index.rs`).
    pub fn key_index(&self) -> &KeyIndex {
        &self.key_index
    }

    /// The active generation; derefs to the live keyspace tree.
    /// When the next snapshot is due.
    pub fn snapshot_cadence(&self) -> &SnapshotCadence {
        &self.snapshot_cadence
    }

    pub(crate) fn tree(&self) -> Arc<Generation> {
        self.active.load_full()
    }

    /// A snapshot install starts switching tree, key index and revisions; the switch
    /// ends when the guard drops (however the install's code leaves), so readers never
    /// wait on a switch that will not end.
    pub(crate) fn begin_switch(&self) -> SwitchGuard<'_> {
        self.switch_epoch.fetch_add(1, Ordering::AcqRel);
        SwitchGuard(&self.switch_epoch)
    }

    /// The switch epoch, once no switch is under way (odd: one is; it takes a few
    /// stores, so this yields until it ends). A reader compares it before and after.
    pub(crate) fn settled_switch_epoch(&self) -> u64 {
        loop {
            let epoch = self.switch_epoch.load(Ordering::Acquire);
            if epoch.is_multiple_of(2) {
                return epoch;
            }
            std::thread::yield_now();
        }
    }

    /// Make the state machine durable up to what is applied now (flush + fdatasync).
    /// Blocking. Returns the applied index it covers.
    pub fn sync_durable(&self) -> Result<u64> {
        if self.fail_syncs.load(Ordering::Acquire) {
            return Err(std::io::Error::other("injected state-machine sync failure").into());
        }
        if self.switch_failed.load(Ordering::Acquire) {
            return Err(std::io::Error::other(
                "a state generation switch failed; restart the node to recover",
            )
            .into());
        }
        // Both read before the sync: whatever apply published by then is in the tree, and
        // the sync makes it durable.
        let revision = self.revision();
        let applied = self.applied.get();
        // Loaded after `applied`: a batch counted there went to this generation or an
        // older one that a switch synced before retiring it.
        self.tree().sync()?;
        self.synced_applied.fetch_max(applied, Ordering::AcqRel);
        self.synced_revision.fetch_max(revision, Ordering::AcqRel);
        Ok(applied)
    }

    /// Durably name `next` (filled and synced) as the active generation; the caller then
    /// publishes it. If that fails, `state.current` may name either generation after a
    /// restart, and the old one may miss what is applied from now on: so every later
    /// state-machine sync fails, which keeps the log from being purged past what either
    /// generation holds (openraft replays it at the restart this asks for).
    pub(crate) fn commit_switch(&self, next: &Generation) -> Result<()> {
        generation::commit(&self.data_dir, next.number()).inspect_err(|e| {
            self.switch_failed.store(true, Ordering::Release);
            tracing::error!(error = %e, "could not switch state generations; restart the node");
        })
    }

    /// A revision the durable applied state has reached (see `synced_revision`).
    pub(crate) fn synced_revision(&self) -> Revision {
        self.synced_revision.load(Ordering::Acquire)
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
    pub fn sync_stats(&self) -> &SyncStats {
        &self.sync_stats
    }

    /// Counters of defragmentation (manual and automatic).
    pub fn defrag_stats(&self) -> &DefragStats {
        &self.defrag_stats
    }

    /// Commands whose apply took longer than [`crate::SLOW_APPLY`].
    pub fn slow_applies(&self) -> u64 {
        self.slow_applies.load(Ordering::Relaxed)
    }

    /// The active generation's number and the size of its database file now.
    pub fn state_file(&self) -> (u64, u64) {
        let generation = self.tree();
        (generation.number(), generation.file_bytes())
    }

    /// The revision the live tree is physically compacted up to: every version no read at
    /// or above it can see, and every history record below it, is deleted. Advances
    /// as the compactor's chunks commit; wait on it for etcd's `physical: true`. It lags
    /// [`StateShared::compact_revision`] while a snapshot build holds compaction back.
    pub fn physically_compacted(&self) -> &Arc<Watermark> {
        &self.physically_compacted
    }

    /// Counters of the compactor.
    pub fn compaction_stats(&self) -> &CompactionStats {
        &self.compaction_stats
    }

    /// The oldest revision a running snapshot build holds physical compaction at, if any.
    pub fn compaction_pin(&self) -> Option<Revision> {
        self.pins.oldest()
    }

    /// Test hook: let the compactor commit at most `chunks` more chunks (`None`: no limit),
    /// so tests can stop it midway; it waits, idle, once the budget is spent.
    pub fn limit_compaction(&self, chunks: Option<u64>) {
        self.compaction_budget
            .store(chunks.unwrap_or(u64::MAX), Ordering::Release);
        self.compactor.wake();
    }

    /// Diagnostics: the number of versions (puts: inline in the history, or `v` records of
    /// older layouts) in the live tree for user keys in `[key, range_end)`, in etcd's
    /// forms (`(b"", &[0])` counts them all). Walks the records: for tests and tools, not
    /// for a hot path.
    pub fn version_records(&self, key: &[u8], range_end: &[u8]) -> Result<usize> {
        crate::mvcc::versions::count_versions(&self.tree(), key, range_end)
    }

    /// Diagnostics: the number of history events (`h` family) in the live tree, at any
    /// revision (a record may keep events below the physically compacted revision until
    /// the next compaction passes its last one: `maintenance/compaction_chunk.rs`).
    pub fn history_records(&self) -> Result<usize> {
        let mut n = 0;
        for event in crate::mvcc::history_records::events_between(&self.tree(), 0, Revision::MAX) {
            event?;
            n += 1;
        }
        Ok(n)
    }
}

/// Ends a state switch when dropped (see [`StateShared::begin_switch`]).
pub(crate) struct SwitchGuard<'a>(&'a AtomicU64);

impl Drop for SwitchGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}
