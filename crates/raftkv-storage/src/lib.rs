//! # raftkv-storage: the Raft log and the MVCC state machine, on sled
//!
//! Sled databases under the node's data directory:
//!
//! - `log/` holds the Raft log ([`LogStore`], openraft's `RaftLogStorage`): entries by
//!   big-endian index, the vote, the committed and last purged log ids. An append is
//!   acknowledged only after a real sync (sled's `flush()` plus `fdatasync` of its data
//!   file and any blob files, see [`disk::durable`]), done by one thread that covers every
//!   append queued meanwhile with one sync (group fsync).
//! - `state/` (or `state.<n>`, see [`disk::generation`]) holds the state machine
//!   ([`StateMachine`], openraft's `RaftStateMachine`): etcd's MVCC keyspace in ONE tree
//!   with key prefixes ([`keys`]). An `apply` writes its records in order, then the one
//!   record that names the applied log id and revision (`apply/applied_state.rs`); no
//!   sled batch or transaction is used anywhere (`apply/tree_writes.rs` says why), and
//!   what a crash leaves above that record is rolled back at open (`apply/rollback.rs`).
//!   A snapshot install and a defragmentation ([`maintenance::defrag`]) build a new
//!   database and switch to it: the only way sled gives disk space back. Reads go through
//!   [`KvReader`] at a pinned revision ([`mvcc`]) and never block apply. After a
//!   compaction is applied, a background thread per replica
//!   ([`maintenance::compactor`]) deletes what no read at or above the compact revision
//!   can see, in chunks of at most 1,000 deletions, resuming after a restart from its
//!   persisted progress, and holding back while a snapshot build streams the tree
//!   (`maintenance/compaction_pins.rs`).
//! - `snapshots/` holds the current snapshot file ([`raft::snapshot`]).
//! - `LOCK` is held while a store of the directory is open, by every part that keeps a
//!   database open, so a reopen waits for the previous store to close wholly and a
//!   second process is kept out ([`disk::data_dir_lock`]).
//!
//! ## The parts
//!
//! Each folder's `mod.rs` says what the part owns, its invariants and what it leaves out.
//!
//! | Module | Owns |
//! |---|---|
//! | [`raft`] | openraft's storage: the log store, the state machine, snapshots, the background state sync, restore |
//! | [`apply`] | applying committed commands as ordered tree writes; the applied-state record; rollback at open |
//! | [`mvcc`] | the version records, reads at a pinned revision, the key index, `HashKV`'s history |
//! | [`watch`] | the watch hub, watch sessions, event collection and history replay |
//! | [`maintenance`] | physical compaction and defragmentation, in the background |
//! | [`disk`] | databases that really sync, the directory lock, state generations |
//! | [`state`], [`keys`], [`error`] | what the parts share: [`StateShared`], the key families, the error type |
//! | [`etcd_snapshot`] | etcd 3.4's bbolt snapshot format, read and written |
//!
//! Files import each other in one direction only: `scripts/file-cycles.py` checks it.
//!
//! **Watches** are served by every replica from its own applied stream: after each applied
//! batch the state machine publishes the batch's events to the [`WatchHub`]
//! (`watch/hub.rs`, etcd's synced watchers), which queues them for the watchers whose key
//! or range they touch, within a bounded buffer per watcher. A [`LocalWatchSession`]
//! (`watch/session/`, one per watch stream) hands them out, and replays the history
//! (`watch/history.rs`, the `h` family) for watchers that start in the past or fell
//! behind, at its consumer's pace; apply never waits for a watcher.
//!
//! **Leases** live in the same tree (`l` records, `a` attachments, see [`keys`]): a grant,
//! a revoke with the deletes of its keys (one revision) and a checkpoint are applied like
//! any write; [`KvReader`] answers lease lookups and [`LeaseChanges`] tells the leader's
//! lease manager when the table changed.
//!
//! The log database carries [`SCHEMA_VERSION`], the snapshot format
//! [`SNAPSHOT_FORMAT_VERSION`], the state database [`STATE_LAYOUT_VERSION`]; a data directory or snapshot of an unknown version is refused
//! with [`Error::Schema`] instead of misread (a state database of layout 1 is migrated).
//!
//! ## Caveats
//! - Physical compaction trails the logical one: between a `Compact` being applied and the
//!   compactor reaching it (or while a snapshot build pins an older revision), reads
//!   below the compact revision are refused but the old versions are still on disk.
//!   [`StateShared::physically_compacted`] says how far it got. Deleted records free
//!   space inside sled's files, which sled reuses only in part and never returns; the
//!   file shrinks when [`maintenance::defrag`] rewrites it (on demand, or past
//!   [`AutoDefrag`]'s ratio).
//! - Leases (`apply/lease_table.rs`) hold granted and checkpointed remaining TTLs, never
//!   deadlines: expiry is the leader's decision and arrives as a `LeaseRevoke` entry.
//! - The state machine is synced in the background every 100 ms (`raft/state_sync.rs`),
//!   before a log purge, around snapshots and before physical compaction passes the
//!   synced revision; after a crash the open rolls back
//!   what lies above the durable applied state and openraft replays the log from there.
//! - Physical compaction at `C` keeps the history of revision `C` itself, so a watch can
//!   start at `C` (as on etcd), which is what a compacted watcher is told; an event of `C`
//!   carries its previous key-value only while compaction has not removed it yet (etcd's
//!   watch omits it there too).

#![warn(missing_docs)]

pub mod apply;
pub mod disk;
pub mod error;
pub mod etcd_snapshot;
pub mod failpoints;
pub mod keys;
pub mod maintenance;
pub mod mvcc;
pub mod raft;
pub mod state;
pub mod watch;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod test_store;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64};

use arc_swap::ArcSwap;
use raftkv_core::Watermark;
use raftkv_core::codec;

use apply::applied_state::AppliedState;
use apply::{alarm_table, auth_table, rollback};
use disk::generation::{self, Generation};
use maintenance::compaction_pins::CompactionPins;
use maintenance::{compactor, compactor_link};
use raft::{log_store, snapshot, state_sync};

/// An applied command slower than this is logged and counted as etcd does (its
/// `--experimental-warning-apply-duration` default).
pub const SLOW_APPLY: std::time::Duration = std::time::Duration::from_millis(100);

pub use apply::lease_table::{LeaseChanges, LeaseRecord};
pub use disk::data_dir_lock::DataDirLock;
pub use disk::durable::{DurableDb, SyncStats};
pub use error::{Error, Result};
pub use maintenance::compactor_link::CompactionStats;
pub use maintenance::defrag::DefragReport;
pub use maintenance::defrag_policy::{AutoDefrag, DefragStats};
pub use mvcc::hash_history::{HashScope, HashedWrite};
pub use mvcc::key_index::KeyIndex;
pub use mvcc::reader::KvReader;
pub use raft::log_store::{LogReader, LogStore};
pub use raft::snapshot_cadence::SnapshotCadence;
pub use raft::state_machine::StateMachine;
pub use state::StateShared;
pub use watch::config::WatchConfig;
pub use watch::hub::WatchHub;
pub use watch::session::LocalWatchSession;

/// Version of the log database's layout.
pub const SCHEMA_VERSION: u32 = 1;

/// Version of the snapshot file format: 2 since history records may be chunks of events,
/// 3 since a delete is a history event alone, 4 since a put's version is inline in its
/// history chunk (`mvcc/history_records.rs`); files of versions 1 to 3 are still read,
/// and a build before a version refuses its files instead of misreading them.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 4;

/// Version of the state database's layout: 2 since the applied state is one record
/// written last (`apply/applied_state.rs`), 3 since history records may be chunks of
/// events, 4 since a delete is a history event alone, without a tombstone version record,
/// 5 since a put's version is inline in its history chunk, without a `v` record
/// (`mvcc/history_records.rs`). Layouts 2 to 4 need nothing rewritten (their records are
/// still read as they are, and compaction drains their `v` records); 1 is migrated at
/// open. A build of an older layout refuses a newer directory instead of misreading its
/// history.
pub const STATE_LAYOUT_VERSION: u32 = 5;

const SCHEMA_KEY: &[u8] = b"schema";

/// How long [`Store::open`] waits for a store of the same directory that this process
/// dropped to close: its background threads finish their current step first, and an
/// automatic defragmentation of a large database takes seconds.
const PREVIOUS_STORE_CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Sizes of sled's page caches, and when to defragment.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// Page cache of the log database.
    pub log_cache_bytes: u64,
    /// Page cache of the state-machine database (default 1 GiB, sled's own default).
    /// Writes to a state larger than this page its nodes in and out of the database
    /// file: at 64 clients over 1M keys, 256 MiB lost about a fifth of the write rate
    /// once the state outgrew it (README, "Ten minutes at full speed").
    pub state_cache_bytes: u64,
    /// When the state database is defragmented without being asked
    /// ([`maintenance::defrag`]).
    pub auto_defrag: AutoDefrag,
    /// How often what is applied is made durable in the background (`raft/state_sync.rs`);
    /// `None`: only before a log purge, before physical compaction and around snapshots.
    pub state_sync_interval: Option<std::time::Duration>,
    /// Log entries applied between two snapshots at least; a snapshot also waits for as
    /// many bytes written as the last one holds (`raft/snapshot_cadence.rs`).
    pub snapshot_every_entries: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            log_cache_bytes: 64 << 20,
            state_cache_bytes: 1 << 30,
            auto_defrag: AutoDefrag::default(),
            state_sync_interval: Some(std::time::Duration::from_millis(100)),
            snapshot_every_entries: 10_000,
        }
    }
}

/// Everything a node needs from storage, opened from one data directory.
pub struct Store {
    /// The Raft log (hand to openraft).
    pub log: LogStore,
    /// The state machine (hand to openraft).
    pub state_machine: StateMachine,
    /// Reads of the state machine.
    pub reader: KvReader,
    /// Shared state-machine state (watermarks, sync).
    pub shared: Arc<StateShared>,
}

pub(crate) fn check_schema(db: &sled::Tree, what: &'static str) -> Result<()> {
    match read_schema(db, what)? {
        Some(found) if found != SCHEMA_VERSION => Err(Error::Schema {
            what,
            found,
            supported: SCHEMA_VERSION,
        }),
        Some(_) => Ok(()),
        None => {
            db.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
            Ok(())
        }
    }
}

/// The layout version `db` records, if any.
pub(crate) fn read_schema(db: &sled::Tree, what: &'static str) -> Result<Option<u32>> {
    let Some(bytes) = db.get(SCHEMA_KEY)? else {
        return Ok(None);
    };
    <[u8; 4]>::try_from(bytes.as_ref())
        .map(|b| Some(u32::from_be_bytes(b)))
        .map_err(|_| Error::Corrupt {
            what,
            detail: "schema version is not 4 bytes".into(),
        })
}

/// Record `version` as `db`'s layout version.
pub(crate) fn write_schema(db: &sled::Tree, version: u32) -> Result<()> {
    db.insert(SCHEMA_KEY, &version.to_be_bytes())?;
    Ok(())
}

impl Store {
    /// Open (or create) the store in `dir`.
    pub fn open(dir: &Path, options: StoreOptions) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let dir_lock = DataDirLock::acquire(dir, PREVIOUS_STORE_CLOSE_WAIT)?;
        let log_db =
            Arc::new(DurableDb::open(&dir.join("log"), options.log_cache_bytes)?.holding(dir_lock.clone()));
        check_schema(&log_db.db().open_tree(log_store::SCHEMA)?, "log database")?;
        let snapshot_dir = dir.join("snapshots");
        std::fs::create_dir_all(&snapshot_dir)?;
        snapshot::remove_temporary_files(&snapshot_dir)?;
        let number = generation::current(dir)?;
        generation::remove_others(dir, number)?;
        let sync_stats = Arc::new(SyncStats::default());
        let tree = Generation::open(
            dir,
            number,
            options.state_cache_bytes,
            sync_stats.clone(),
            dir_lock.clone(),
        )?;
        let state = AppliedState::read(&tree)?;
        let physically_compacted = compactor::compacted_to(&tree)?;
        // The index of the state `state` names (what lies above it is ignored): the
        // rollback asks it which keys were live there.
        let key_index = KeyIndex::build(&tree, state.revision, physically_compacted)?;
        // A crash may have left the first writes of the apply after `state`: undo them
        // before anything reads the tree, so that openraft's replay starts from exactly
        // the state `state` names.
        let rolled_back = rollback::roll_back(&tree, &state, &key_index)?;
        if rolled_back != rollback::RolledBack::default() {
            tracing::info!(
                ?rolled_back,
                applied = state.applied_index(),
                revision = state.revision,
                "rolled back an apply a crash interrupted"
            );
        }
        let (revision, compact_revision) = (state.revision, state.compact_revision);
        let applied_index = state.applied_index();
        let cluster_id: u64 = match tree.get(keys::meta::CLUSTER_ID)? {
            Some(b) => codec::decode(&b)?,
            None => 0,
        };
        let alarm_mask = alarm_table::mask_of(&alarm_table::read(&tree, raftkv_core::alarm::ALARM_NONE)?);
        let auth = auth_table::read(&tree)?;
        let (snapshot_index, snapshot_bytes) = snapshot::current_index_and_size(&snapshot_dir)?;
        let snapshot_cadence = SnapshotCadence::new(
            options.snapshot_every_entries,
            snapshot_index,
            snapshot_bytes,
            applied_index,
        );
        let (compactor_wake, compactor_woken) = compactor_link::wake_channel();
        let shared = Arc::new(StateShared {
            data_dir: dir.to_path_buf(),
            active: ArcSwap::from_pointee(tree),
            cache_bytes: options.state_cache_bytes,
            sync_stats,
            writers: Default::default(),
            auto_defrag: options.auto_defrag,
            defrag_stats: Default::default(),
            defrag_running: Default::default(),
            revision: AtomicI64::new(revision),
            compact_revision: AtomicI64::new(compact_revision),
            switch_epoch: AtomicU64::new(0),
            applied: Arc::new(Watermark::new(applied_index)),
            synced_applied: AtomicU64::new(applied_index),
            synced_revision: AtomicI64::new(revision),
            snapshot_dir,
            fail_syncs: AtomicBool::new(false),
            switch_failed: AtomicBool::new(false),
            cluster_id: AtomicU64::new(cluster_id),
            alarm_mask: AtomicU8::new(alarm_mask),
            auth: ArcSwap::from_pointee(auth),
            tokens: Default::default(),
            physically_compacted: Arc::new(Watermark::new(physically_compacted.max(0) as u64)),
            pins: Arc::new(CompactionPins::new(compactor_wake.clone())),
            compactor: compactor_wake,
            compaction_stats: Default::default(),
            slow_applies: Default::default(),
            compaction_budget: AtomicU64::new(u64::MAX),
            watch_hub: WatchHub::new(revision),
            key_index,
            snapshot_cadence,
            dir_lock,
        });
        compactor::spawn(&shared, compactor_woken)?;
        if let Some(every) = options.state_sync_interval {
            state_sync::spawn(&shared, every)?;
        }
        let lease_changes = Arc::new(LeaseChanges::default());
        let state_machine = StateMachine::load(shared.clone(), lease_changes.clone(), state);
        let log = LogStore::open(log_db, shared.clone())?;
        Ok(Self {
            log,
            state_machine,
            reader: KvReader::new(shared.clone(), lease_changes),
            shared,
        })
    }
}
