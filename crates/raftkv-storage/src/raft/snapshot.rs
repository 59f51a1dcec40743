//! Snapshots: built at a captured point while apply goes on, streamed through files, and
//! installed into a fresh keyspace that is switched in atomically.
//!
//! **Build.** `get_snapshot_builder` runs between applies and captures the last-applied
//! log id, the membership, the revision `R`, the compact revision and the small non-MVCC
//! state (published members, leases, alarms). The builder then walks the live tree on a blocking thread
//! and keeps every version and history record at or below `R`; anything newer that apply
//! writes meanwhile is skipped, so the result is exactly the state at `R` (sled has no
//! point-in-time iterator; MVCC gives us one). Physical compaction runs meanwhile, so the
//! capture pins the compact revision `Cs` it records (`maintenance/compaction_pins.rs`):
//! until the build ends (or fails), the compactor deletes nothing a read at any revision
//! in `[Cs, R]` needs, and the snapshot serves every revision its header allows. It pins
//! `Cs`, not `R`: compacting up to `R` would drop versions readable in `[Cs, R)`, and the
//! receiver would answer reads there wrongly until it applied the later `Compact` entry.
//! The snapshot holds every version and history record at or below `R` that still exists
//! (a compaction up to `Cs` may have removed some already; see [`crate::maintenance::compactor`] for
//! why the receiver's compactor still finds the rest). The physical progress itself is
//! not copied: it belongs to a tree, and the receiver starts from 0.
//!
//! **Leases.** The lease records (`l`) are small, unversioned state like the published
//! members: they are captured with them, between applies. The attachment index (`a`) is
//! not sent: the install rebuilds it from the versions it receives (the newest version of
//! each key names its lease). A version-1 snapshot written before leases existed simply
//! holds no lease records, which is exactly the state it was taken in, so the file format
//! and its version stayed as it was. Active alarms (`r`) travel the same
//! way, and the same holds for a snapshot written before alarms were replicated.
//!
//! **File format** (version [`crate::SNAPSHOT_FORMAT_VERSION`]):
//! `"RAFTKVSN"` (8 bytes), schema version (u32 BE), then frames, each a u32 BE length and
//! a bincode `Frame`: one `Header`, any number of `Pairs` (raw tree key/value pairs,
//! at most ~256 KiB a frame), one `EndCrc32` with the pair count and a CRC-32 of all
//! frames before it. A file with another magic or schema version is refused clearly.
//! The framing and checksum live in `raft/snapshot_file.rs`.
//!
//! **Install.** The received file is read frame by frame (bounded memory) into a new
//! generation (a fresh database, `disk/generation.rs`), synced, and then `state.current` is
//! switched durably: a crash before the switch leaves the old state, after it the new one.
//! The install holds the tree-writers gate, like a defragmentation; the replaced
//! generation is deleted once the last reader holding it lets go.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use raftkv_core::codec;
use raftkv_core::kv::Revision;
use raftkv_core::types::{LogId, StoredMembership};

use crate::apply::applied_state::AppliedState;
use crate::disk::durable::sync_dir;
use crate::disk::generation::Generation;
use crate::error::{Error, Result};
use crate::keys::{self, meta};
use crate::maintenance::compaction_pins::CompactionPin;
use crate::mvcc::key_index::KeyIndex;
use crate::raft::snapshot_file::{
    Frame, FrameReader, FrameWriter, MAGIC, MAX_FRAME_PAIR_BYTES, Pairs, SnapshotHeader, SnapshotMetaOf,
};
use crate::raft::snapshot_scan;
use crate::state::StateShared;

/// What `get_snapshot_builder` captured; `build` writes it out.
#[derive(Clone)]
pub struct SnapshotBuilder {
    shared: Arc<StateShared>,
    tree: Arc<Generation>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    revision: Revision,
    compact_revision: Revision,
    /// Published members, leases, alarms and the cluster id, captured with the rest (not
    /// versioned).
    members: std::result::Result<Pairs, String>,
    /// Holds physical compaction at `compact_revision` until the build ends; shared by the
    /// clones (openraft builds on a clone). The mutex is only taken to move the pin out
    /// when a build starts, never across I/O or an `.await`.
    pin: Arc<parking_lot::Mutex<Option<CompactionPin>>>,
}

pub(crate) fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn final_name(meta: &SnapshotMetaOf) -> String {
    let (index, term) = meta
        .last_log_id
        .map_or((0, 0), |id| (id.index, id.leader_id.term));
    format!("snapshot-{index:020}-{term:020}.snap")
}

impl SnapshotBuilder {
    pub(crate) fn capture(
        shared: Arc<StateShared>,
        last_applied: Option<LogId>,
        membership: StoredMembership,
    ) -> Self {
        let revision = shared.revision();
        let tree = shared.tree();
        let (pin, compact_revision) = CompactionPin::take(&shared.pins, || shared.compact_revision());
        shared
            .snapshot_cadence
            .captured(last_applied.map_or(0, |id| id.index));
        let members = tree
            .scan_prefix([keys::MEMBER])
            .chain(tree.scan_prefix([keys::LEASE]))
            .chain(tree.scan_prefix([keys::ALARM]))
            .chain(tree.scan_prefix([keys::AUTH]))
            .chain(
                tree.get(meta::CLUSTER_ID)
                    .transpose()
                    .map(|v| v.map(|v| (meta::CLUSTER_ID.into(), v))),
            )
            .map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| e.to_string());
        Self {
            compact_revision,
            shared,
            tree,
            last_applied,
            membership,
            revision,
            members,
            pin: Arc::new(parking_lot::Mutex::new(Some(pin))),
        }
    }

    /// The revision `R` this builder captured.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// The compact revision this builder captured (and pins while it builds).
    pub fn compact_revision(&self) -> Revision {
        self.compact_revision
    }

    /// Write the snapshot file and return its metadata and a handle positioned at 0.
    /// Blocking. The compaction pin is released when this returns, successfully or not
    /// (or when the last clone of the builder is dropped without building); a second
    /// build would stream the tree unpinned, so it is refused.
    pub(crate) fn build(&self) -> Result<(SnapshotMetaOf, File)> {
        let pin = self.pin.lock().take();
        let Some(_pin) = pin else {
            return Err(std::io::Error::other(
                "snapshot builder already used: its compaction pin is released",
            )
            .into());
        };
        self.write_file()
    }

    fn write_file(&self) -> Result<(SnapshotMetaOf, File)> {
        let started = std::time::Instant::now();
        let members = self.members.clone().map_err(|detail| Error::Corrupt {
            what: "published members",
            detail,
        })?;
        let meta = SnapshotMetaOf {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
        };
        let dir = &self.shared.snapshot_dir;
        let tmp = dir.join(format!("build-{}.tmp", unique_suffix()));
        let mut out = FrameWriter::create(&tmp)?;
        out.frame(&Frame::Header(SnapshotHeader {
            meta: meta.clone(),
            revision: self.revision,
            compact_revision: self.compact_revision,
        }))?;
        let mut pairs = Vec::new();
        let mut pair_bytes = 0;
        // History newest first, then versions of older layouts (`raft/snapshot_scan.rs`
        // says why); metadata and members come from the capture, not the live tree.
        snapshot_scan::scan(&self.tree, self.revision, |k, v| {
            pair_bytes += k.len() + v.len();
            pairs.push((k, v));
            if pair_bytes >= MAX_FRAME_PAIR_BYTES {
                out.pairs(std::mem::take(&mut pairs))?;
                pair_bytes = 0;
            }
            Ok(())
        })?;
        pairs.extend(members);
        out.pairs(pairs)?;
        out.finish()?;
        let path = dir.join(final_name(&meta));
        std::fs::rename(&tmp, &path)?;
        sync_dir(dir)?;
        prune_older(dir, &path)?;
        let file = File::open(&path)?;
        let bytes = file.metadata()?.len();
        self.shared.snapshot_cadence.built(bytes);
        tracing::info!(
            revision = self.revision,
            bytes,
            took_ms = started.elapsed().as_millis() as u64,
            "snapshot built"
        );
        Ok((meta, file))
    }
}

/// A fresh file to write a snapshot received from the leader into (the peer service
/// fills it, then hands it to openraft, which installs it).
pub(crate) fn receiving_file(dir: &Path) -> std::io::Result<File> {
    // One transfer at a time: files of earlier transfers that were refused or cut short
    // are garbage now.
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with("recv-") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dir.join(format!("recv-{}.tmp", unique_suffix())))
}

/// The newest snapshot in `dir`, with a handle positioned at its start.
pub(crate) fn current(dir: &Path) -> Result<Option<(SnapshotMetaOf, File)>> {
    let Some(path) = newest_snapshot(dir)? else {
        return Ok(None);
    };
    let mut file = File::open(&path)?;
    let meta = {
        let mut reader = FrameReader::open(BufReader::new(&mut file))?;
        match reader.next()?.0 {
            Frame::Header(h) => h.meta,
            _ => {
                return Err(Error::Corrupt {
                    what: "snapshot",
                    detail: format!("{} does not start with a header", path.display()),
                });
            }
        }
    };
    file.seek(SeekFrom::Start(0))?;
    Ok(Some((meta, file)))
}

/// The log index the newest snapshot in `dir` covers and its size (0 and 0 if none).
pub(crate) fn current_index_and_size(dir: &Path) -> Result<(u64, u64)> {
    let Some((meta, file)) = current(dir)? else {
        return Ok((0, 0));
    };
    Ok((meta.last_log_id.map_or(0, |id| id.index), file.metadata()?.len()))
}

fn newest_snapshot(dir: &Path) -> Result<Option<PathBuf>> {
    let mut newest: Option<PathBuf> = None;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let is_snapshot = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("snapshot-") && n.ends_with(".snap"));
        if is_snapshot && newest.as_ref().is_none_or(|n| path > *n) {
            newest = Some(path);
        }
    }
    Ok(newest)
}

/// Remove snapshot files older than `keep` (names sort by index, then term).
fn prune_older(dir: &Path, keep: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with("snapshot-") && name.ends_with(".snap") && path.as_path() < keep {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Remove temporary files a crash may have left behind.
pub(crate) fn remove_temporary_files(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "tmp") {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Load a received snapshot into a fresh generation and switch to it (see the module
/// doc). Blocking; the caller holds the tree-writers gate.
pub(crate) fn install(shared: &StateShared, meta: &SnapshotMetaOf, mut file: File) -> Result<()> {
    file.seek(SeekFrom::Start(0))?;
    let mut reader = FrameReader::open(BufReader::new(file))?;
    let dir = &shared.snapshot_dir;
    let tee_path = dir.join(format!("install-{}.tmp", unique_suffix()));
    let mut tee = BufWriter::new(File::create(&tee_path)?);
    tee.write_all(MAGIC)?;
    tee.write_all(&crate::SNAPSHOT_FORMAT_VERSION.to_be_bytes())?;

    let old = shared.tree();
    let tree = Generation::create(
        &shared.data_dir,
        old.number() + 1,
        shared.cache_bytes,
        shared.sync_stats.clone(),
        shared.dir_lock.clone(),
    )?;

    let (header, raw) = reader.next()?;
    tee.write_all(&raw)?;
    let Frame::Header(header) = header else {
        return Err(Error::Corrupt {
            what: "snapshot",
            detail: "first frame is not a header".into(),
        });
    };
    if header.meta.last_log_id != meta.last_log_id {
        return Err(Error::Corrupt {
            what: "snapshot",
            detail: format!(
                "file is at {:?}, install asked for {:?}",
                header.meta.last_log_id, meta.last_log_id
            ),
        });
    }
    loop {
        let (frame, raw) = reader.next()?;
        tee.write_all(&raw)?;
        match frame {
            // Plain writes (no sled batch, see `apply/tree_writes.rs`): the new generation is
            // synced before it is switched in, and a crash before that discards it.
            Frame::Pairs(pairs) => {
                for (k, v) in pairs {
                    if k.first() == Some(&keys::ATTACHMENT) || k.first() == Some(&keys::UNDO) {
                        // Rebuilt from the key index below, never taken from the file; undo
                        // records are local bookkeeping.
                        continue;
                    }
                    tree.insert(k, v)?;
                }
            }
            Frame::End { .. } | Frame::EndCrc32 { .. } => break,
            Frame::Header(_) => {
                return Err(Error::Corrupt {
                    what: "snapshot",
                    detail: "second header".into(),
                });
            }
        }
    }
    let state = AppliedState {
        applied: meta.last_log_id,
        membership: meta.last_membership.clone(),
        revision: header.revision,
        compact_revision: header.compact_revision,
    };
    // The new tree has no compaction progress (progress is local to a tree).
    let key_index = KeyIndex::build(&tree, header.revision, 0)?;
    crate::apply::lease_table::rebuild_attachments(&tree, &key_index)?;
    tree.insert(meta::STATE, state.encode()?)?;
    tree.sync()?;
    tree.mark_baseline();
    // The switch: `state.current`, made durable.
    shared.commit_switch(&tree)?;
    // Readers pin the revision before they load the tree, so store the tree first, and
    // the index before the revision (`mvcc/key_index.rs`). A range reader that overlaps
    // the switch may pair one tree or index with the other's revisions: it sees the
    // switch epoch move and reads again (`mvcc/reader.rs`).
    let switching = shared.begin_switch();
    shared.active.store(Arc::new(tree));
    let replaced = shared.key_index.replace(key_index);
    old.retire();
    shared
        .compact_revision
        .store(header.compact_revision, Ordering::Release);
    shared.revision.store(header.revision, Ordering::Release);
    drop(switching);
    drop(replaced);
    if let Some(bytes) = shared.tree().get(meta::CLUSTER_ID)? {
        shared.cluster_id.store(codec::decode(&bytes)?, Ordering::Release);
    }
    let alarms = crate::apply::alarm_table::read(&shared.tree(), raftkv_core::alarm::ALARM_NONE)?;
    shared
        .alarm_mask
        .store(crate::apply::alarm_table::mask_of(&alarms), Ordering::Release);
    // Tokens are not in snapshots: clients whose token this drops authenticate again.
    shared
        .auth
        .store(Arc::new(crate::apply::auth_table::read(&shared.tree())?));
    shared.tokens.drop_all();
    if let Some(id) = meta.last_log_id {
        shared.applied.advance(id.index);
        // The new generation was synced before the switch.
        shared.synced_applied.fetch_max(id.index, Ordering::AcqRel);
    }
    shared
        .synced_revision
        .fetch_max(header.revision, Ordering::AcqRel);
    // The new tree starts with no physical progress: let the compactor look at it.
    shared.compactor.wake();
    // Keep the installed snapshot as the current one (openraft serves it to others).
    let tee = tee.into_inner().map_err(|e| e.into_error())?;
    tee.sync_all()?;
    shared
        .snapshot_cadence
        .installed(meta.last_log_id.map_or(0, |id| id.index), tee.metadata()?.len());
    let path = dir.join(final_name(meta));
    std::fs::rename(&tee_path, &path)?;
    sync_dir(dir)?;
    prune_older(dir, &path)?;
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        if p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("recv-"))
        {
            std::fs::remove_file(p)?;
        }
    }
    Ok(())
}

impl StateShared {
    /// A fresh file in the snapshot directory to receive a snapshot from the leader into;
    /// files of earlier transfers that were cut short go first.
    pub fn receiving_snapshot_file(&self) -> std::io::Result<std::fs::File> {
        receiving_file(&self.snapshot_dir)
    }
}
