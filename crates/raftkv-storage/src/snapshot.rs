//! Snapshots: built at a captured point while apply goes on, streamed through files, and
//! installed into a fresh keyspace that is switched in atomically.
//!
//! **Build.** `get_snapshot_builder` runs between applies and captures the last-applied
//! log id, the membership, the revision `R`, the compact revision and the small non-MVCC
//! state (published members). The builder then walks the live tree on a blocking thread
//! and keeps every version and history record at or below `R`; anything newer that apply
//! writes meanwhile is skipped, so the result is exactly the state at `R` (sled has no
//! point-in-time iterator; MVCC gives us one). Nothing is compacted physically yet, so the
//! versions at or below `R` cannot disappear under the builder.
//!
//! **File format** (schema version [`crate::SCHEMA_VERSION`]):
//! `"RAFTKVSN"` (8 bytes), schema version (u32 BE), then frames, each a u32 BE length and
//! a bincode [`Frame`]: one `Header`, any number of `Pairs` (raw tree key/value pairs,
//! at most ~256 KiB a frame), one `End` with the pair count and an FNV-1a checksum of all
//! frames before it. A file with another magic or schema version is refused clearly.
//!
//! **Install.** The received file is read frame by frame (bounded memory) into a new tree
//! `sm.<generation+1>`, synced, and then the `active_generation` pointer is switched and
//! synced: a crash before the switch leaves the old state, after it the new one. The
//! previous generation is dropped one install later, so readers holding it finish.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::SnapshotMeta;
use serde::{Deserialize, Serialize};

use raftkv_core::codec;
use raftkv_core::kv::Revision;
use raftkv_core::types::{LogId, MemberNode, NodeId, StoredMembership};

use crate::durable::sync_dir;
use crate::error::{Error, Result};
use crate::keys::{self, meta};
use crate::state::{ACTIVE_GENERATION, StateShared, generation_tree_name};

const MAGIC: &[u8; 8] = b"RAFTKVSN";
const MAX_FRAME_PAIR_BYTES: usize = 256 * 1024;
/// A frame longer than this is corrupt (frames are ~256 KiB plus one oversized pair).
const MAX_FRAME_LEN: usize = 64 * 1024 * 1024;

type SnapshotMetaOf = SnapshotMeta<NodeId, MemberNode>;
/// Raw tree key/value pairs.
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// One unit of the snapshot stream.
#[derive(Debug, Serialize, Deserialize)]
enum Frame {
    Header(SnapshotHeader),
    Pairs(Pairs),
    End { pairs: u64, checksum: u64 },
}

#[derive(Debug, Serialize, Deserialize)]
struct SnapshotHeader {
    meta: SnapshotMetaOf,
    revision: Revision,
    compact_revision: Revision,
}

/// What `get_snapshot_builder` captured; `build` writes it out.
#[derive(Clone)]
pub struct SnapshotBuilder {
    shared: Arc<StateShared>,
    tree: Arc<sled::Tree>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    revision: Revision,
    compact_revision: Revision,
    /// Published members and the cluster id, captured with the rest (not versioned).
    members: std::result::Result<Pairs, String>,
}

fn unique_suffix() -> String {
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
        let members = tree
            .scan_prefix([keys::MEMBER])
            .chain(
                tree.get(meta::CLUSTER_ID)
                    .transpose()
                    .map(|v| v.map(|v| (meta::CLUSTER_ID.into(), v))),
            )
            .map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| e.to_string());
        Self {
            compact_revision: shared.compact_revision(),
            shared,
            tree,
            last_applied,
            membership,
            revision,
            members,
        }
    }

    /// Write the snapshot file and return its metadata and a handle positioned at 0.
    /// Blocking.
    pub(crate) fn build(&self) -> Result<(SnapshotMetaOf, File)> {
        let members = self.members.clone().map_err(|detail| Error::Corrupt {
            what: "published members",
            detail,
        })?;
        let meta = SnapshotMetaOf {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id: format!(
                "{}-r{}-{}",
                final_name_stem(&self.last_applied),
                self.revision,
                unique_suffix()
            ),
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
        for item in self.tree.iter() {
            let (k, v) = item?;
            let keep = match k.first() {
                Some(&keys::VERSION) => {
                    keys::split_version_key(&k).is_some_and(|(_, rev)| rev <= self.revision)
                }
                Some(&keys::HISTORY) => keys::history_revision(&k).is_some_and(|rev| rev <= self.revision),
                // Metadata and members come from the capture, not the live tree.
                _ => false,
            };
            if keep {
                pair_bytes += k.len() + v.len();
                pairs.push((k.to_vec(), v.to_vec()));
                if pair_bytes >= MAX_FRAME_PAIR_BYTES {
                    out.pairs(std::mem::take(&mut pairs))?;
                    pair_bytes = 0;
                }
            }
        }
        pairs.extend(members);
        out.pairs(pairs)?;
        out.finish()?;
        let path = dir.join(final_name(&meta));
        std::fs::rename(&tmp, &path)?;
        sync_dir(dir)?;
        prune_older(dir, &path)?;
        Ok((meta, File::open(&path)?))
    }
}

fn final_name_stem(last_applied: &Option<LogId>) -> String {
    last_applied.map_or("none".to_string(), |id| {
        format!("t{}-i{}", id.leader_id.term, id.index)
    })
}

/// Writes frames and keeps the running count and checksum.
struct FrameWriter {
    out: BufWriter<File>,
    pairs: u64,
    checksum: Fnv64,
}

impl FrameWriter {
    fn create(path: &Path) -> Result<Self> {
        let mut out = BufWriter::new(File::create(path)?);
        out.write_all(MAGIC)?;
        out.write_all(&crate::SCHEMA_VERSION.to_be_bytes())?;
        Ok(Self {
            out,
            pairs: 0,
            checksum: Fnv64::new(),
        })
    }

    fn pairs(&mut self, pairs: Pairs) -> Result<()> {
        if pairs.is_empty() {
            return Ok(());
        }
        self.pairs += pairs.len() as u64;
        self.frame(&Frame::Pairs(pairs))
    }

    fn frame(&mut self, frame: &Frame) -> Result<()> {
        let bytes = codec::encode(frame)?;
        let len = (bytes.len() as u32).to_be_bytes();
        self.checksum.update(&len);
        self.checksum.update(&bytes);
        self.out.write_all(&len)?;
        self.out.write_all(&bytes)?;
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        let end = Frame::End {
            pairs: self.pairs,
            checksum: self.checksum.0,
        };
        self.frame(&end)?;
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(())
    }
}

/// Reads frames, checking magic, schema version and (at the end) the checksum.
struct FrameReader<R: Read> {
    input: R,
    checksum: Fnv64,
    pairs: u64,
}

impl<R: Read> FrameReader<R> {
    fn open(mut input: R) -> Result<Self> {
        let mut magic = [0u8; 8];
        input.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(Error::Corrupt {
                what: "snapshot",
                detail: "not a raftkv snapshot (bad magic)".into(),
            });
        }
        let mut version = [0u8; 4];
        input.read_exact(&mut version)?;
        let found = u32::from_be_bytes(version);
        if found != crate::SCHEMA_VERSION {
            return Err(Error::Schema {
                what: "snapshot",
                found,
                supported: crate::SCHEMA_VERSION,
            });
        }
        Ok(Self {
            input,
            checksum: Fnv64::new(),
            pairs: 0,
        })
    }

    /// The next frame with its raw bytes (length prefix included).
    fn next(&mut self) -> Result<(Frame, Vec<u8>)> {
        let mut len = [0u8; 4];
        self.input.read_exact(&mut len)?;
        let n = u32::from_be_bytes(len) as usize;
        if n > MAX_FRAME_LEN {
            return Err(Error::Corrupt {
                what: "snapshot",
                detail: format!("frame of {n} bytes"),
            });
        }
        let mut raw = Vec::with_capacity(4 + n);
        raw.extend_from_slice(&len);
        raw.resize(4 + n, 0);
        self.input.read_exact(&mut raw[4..])?;
        let frame: Frame = codec::decode(&raw[4..])?;
        match &frame {
            Frame::End { pairs, checksum } => {
                if *checksum != self.checksum.0 || *pairs != self.pairs {
                    return Err(Error::Corrupt {
                        what: "snapshot",
                        detail: format!(
                            "checksum/count mismatch: {checksum:x}/{pairs} recorded, {:x}/{} read",
                            self.checksum.0, self.pairs
                        ),
                    });
                }
            }
            Frame::Pairs(p) => self.pairs += p.len() as u64,
            Frame::Header(_) => {}
        }
        self.checksum.update(&raw);
        Ok((frame, raw))
    }
}

/// FNV-1a, 64 bit: catches truncation and bit rot in a snapshot; not a MAC.
struct Fnv64(u64);

impl Fnv64 {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// A fresh file for openraft to write a received snapshot into.
pub(crate) fn receiving_file(dir: &Path) -> std::io::Result<File> {
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

/// Load a received snapshot into a fresh tree and switch to it (see the module doc).
/// Blocking.
pub(crate) fn install(shared: &StateShared, meta: &SnapshotMetaOf, mut file: File) -> Result<()> {
    file.seek(SeekFrom::Start(0))?;
    let mut reader = FrameReader::open(BufReader::new(file))?;
    let dir = &shared.snapshot_dir;
    let tee_path = dir.join(format!("install-{}.tmp", unique_suffix()));
    let mut tee = BufWriter::new(File::create(&tee_path)?);
    tee.write_all(MAGIC)?;
    tee.write_all(&crate::SCHEMA_VERSION.to_be_bytes())?;

    let db = shared.db.db();
    let generation = shared.generation.load(Ordering::Acquire) + 1;
    let name = generation_tree_name(generation);
    db.drop_tree(name.as_bytes())?;
    let tree = db.open_tree(name.as_bytes())?;

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
            Frame::Pairs(pairs) => {
                let mut batch = sled::Batch::default();
                for (k, v) in pairs {
                    batch.insert(k, v);
                }
                tree.apply_batch(batch)?;
            }
            Frame::End { .. } => break,
            Frame::Header(_) => {
                return Err(Error::Corrupt {
                    what: "snapshot",
                    detail: "second header".into(),
                });
            }
        }
    }
    let mut batch = sled::Batch::default();
    batch.insert(meta::APPLIED, codec::encode(&meta.last_log_id)?);
    batch.insert(meta::MEMBERSHIP, codec::encode(&meta.last_membership)?);
    batch.insert(meta::REVISION, codec::encode(&header.revision)?);
    batch.insert(meta::COMPACT, codec::encode(&header.compact_revision)?);
    batch.insert(meta::SCHEMA, &crate::SCHEMA_VERSION.to_be_bytes());
    tree.apply_batch(batch)?;
    shared.db.sync()?;
    // The switch: one key, made durable.
    db.insert(ACTIVE_GENERATION, &generation.to_be_bytes())?;
    shared.db.sync()?;
    // Readers pin the revision before they load the tree, so store the tree first.
    shared.active.store(Arc::new(tree));
    shared.generation.store(generation, Ordering::Release);
    shared
        .compact_revision
        .store(header.compact_revision, Ordering::Release);
    shared.revision.store(header.revision, Ordering::Release);
    if let Some(bytes) = shared.tree().get(meta::CLUSTER_ID)? {
        shared.cluster_id.store(codec::decode(&bytes)?, Ordering::Release);
    }
    if let Some(id) = meta.last_log_id {
        shared.applied.advance(id.index);
    }
    if generation >= 2 {
        db.drop_tree(generation_tree_name(generation - 2).as_bytes())?;
    }
    // Keep the installed snapshot as the current one (openraft serves it to others).
    let tee = tee.into_inner().map_err(|e| e.into_error())?;
    tee.sync_all()?;
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
