//! State-machine generations: the state machine's sled database, one directory per
//! generation, replaced wholesale by defragmentation and by snapshot installs.
//!
//! **Why whole databases.** sled 0.34 reuses a segment of its file only once at most half
//! of it is live, and shrinks the file only from its end, so a database under churn keeps
//! its high-water mark and then some: a 20-minute put/delete soak grew a state database
//! with ~55 MiB of live records past 600 MiB, though compaction kept the record count
//! flat (RELIABILITY.md). Copying the live records into a fresh database gives the space
//! back (the same 623 MiB copied into 149 MiB in 1.5 s); a new tree inside the same
//! database does not. So a generation is a database, and a snapshot install loads into a
//! new one too.
//!
//! **Layout.** Generation 0 is `<data>/state`; generation `n > 0` is `<data>/state.<n>`.
//! The file `<data>/state.current` names the active generation (absent: 0). Inside a
//! generation the keyspace is one tree: `sm.0` for every generation made here, or, in a
//! `state` directory from an older build, the `sm.<g>` its `active_generation` key names.
//!
//! **Switching** (crash-safe): the new generation is built and synced in its directory,
//! then `state.current` is replaced (written to a temporary file, synced, renamed over,
//! directory synced). A crash before the rename leaves the old generation active and the
//! half-built directory is removed at the next open; after it, the new one is active and
//! the old directory is removed at the next open. While running, a retired generation is
//! removed when the last reader holding it lets go (`Generation::retire`).

use std::fs::File;
use std::io::{self, Write};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::disk::data_dir_lock::DataDirLock;
use crate::disk::durable::{DurableDb, SyncStats, sync_dir};
use crate::error::{Error, Result};

/// Key (in a generation's default tree) naming its keyspace tree, as written by builds
/// that switched trees inside one database; absent means `sm.0`.
pub(crate) const ACTIVE_TREE: &[u8] = b"active_generation";

const CURRENT_FILE: &str = "state.current";
const CURRENT_TEMP: &str = "state.current.tmp";

/// One generation: its database and its keyspace tree. Derefs to the tree.
pub struct Generation {
    number: u64,
    tree: sled::Tree,
    db: DurableDb,
    /// Size of the database file when the generation became active (opened, or filled
    /// and synced by a switch).
    baseline_bytes: AtomicU64,
    /// Records added and deleted by tree batches since the generation became active
    /// (`apply/tree_writes.rs`); a defragmentation's or an install's own loading is not counted.
    inserted: AtomicU64,
    removed: AtomicU64,
    /// Runs after the tree and the database are closed.
    removal: RemoveOnDrop,
    /// Declared last: the data directory stays locked until the files are closed and a
    /// retired directory is removed (`disk/data_dir_lock.rs`).
    _dir_lock: Arc<DataDirLock>,
}

impl Deref for Generation {
    type Target = sled::Tree;

    fn deref(&self) -> &sled::Tree {
        &self.tree
    }
}

impl Generation {
    /// Open generation `number` under `data_dir` (creating it if absent), with its
    /// schema checked; `dir_lock` is the store's hold on `data_dir`.
    pub(crate) fn open(
        data_dir: &Path,
        number: u64,
        cache_bytes: u64,
        stats: Arc<SyncStats>,
        dir_lock: Arc<DataDirLock>,
    ) -> Result<Self> {
        let dir = generation_dir(data_dir, number);
        let db = DurableDb::open_with_stats(&dir, cache_bytes, stats)?;
        let layout = crate::read_schema(db.db(), "state database")?;
        let tree_number = match db.db().get(ACTIVE_TREE)? {
            Some(bytes) => {
                u64::from_be_bytes(<[u8; 8]>::try_from(bytes.as_ref()).map_err(|_| Error::Corrupt {
                    what: "state database",
                    detail: "active generation is not 8 bytes".into(),
                })?)
            }
            None => 0,
        };
        let tree_name = format!("sm.{tree_number}");
        for name in db.db().tree_names() {
            if name.starts_with(b"sm.") && name.as_ref() != tree_name.as_bytes() {
                db.db().drop_tree(name)?;
            }
        }
        let tree = db.db().open_tree(tree_name.as_bytes())?;
        match layout {
            None => crate::write_schema(db.db(), crate::STATE_LAYOUT_VERSION)?,
            Some(crate::STATE_LAYOUT_VERSION) => {}
            Some(1) => {
                crate::apply::applied_state::migrate_from_layout_1(&tree)?;
                crate::write_schema(db.db(), crate::STATE_LAYOUT_VERSION)?;
                db.sync()?;
                tracing::info!(dir = %dir.display(), "state database migrated from layout 1 to 5");
            }
            Some(old @ (2..=4)) => {
                // Its history records (one event each, chunks without kinds, chunks with
                // kinds), version records and tombstone records are read as they are; new
                // ones are chunks holding their versions, deletes and puts write no `v`
                // record, and compaction drains the old ones.
                crate::write_schema(db.db(), crate::STATE_LAYOUT_VERSION)?;
                db.sync()?;
                tracing::info!(dir = %dir.display(), "state database migrated from layout {old} to 5");
            }
            Some(found) => {
                return Err(Error::Schema {
                    what: "state database",
                    found,
                    supported: crate::STATE_LAYOUT_VERSION,
                });
            }
        }
        let baseline_bytes = AtomicU64::new(file_bytes(&dir));
        Ok(Self {
            number,
            tree,
            db,
            baseline_bytes,
            inserted: AtomicU64::new(0),
            removed: AtomicU64::new(0),
            removal: RemoveOnDrop {
                dir,
                armed: AtomicBool::new(false),
            },
            _dir_lock: dir_lock,
        })
    }

    /// Create generation `number` empty, replacing whatever a crash left in its directory.
    pub(crate) fn create(
        data_dir: &Path,
        number: u64,
        cache_bytes: u64,
        stats: Arc<SyncStats>,
        dir_lock: Arc<DataDirLock>,
    ) -> Result<Self> {
        remove_dir_if_present(&generation_dir(data_dir, number))?;
        Self::open(data_dir, number, cache_bytes, stats, dir_lock)
    }

    /// The generation's number.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// Flush and fdatasync the database (see [`DurableDb::sync`]). Blocking.
    pub(crate) fn sync(&self) -> Result<()> {
        self.db.sync()
    }

    /// Bytes the database's file takes now (sled's `db` file; blobs are rare and not
    /// counted).
    pub fn file_bytes(&self) -> u64 {
        file_bytes(&self.removal.dir)
    }

    /// [`Generation::file_bytes`] when this generation became active.
    pub fn baseline_bytes(&self) -> u64 {
        self.baseline_bytes.load(Ordering::Relaxed)
    }

    /// Count a committed batch's records added and deleted.
    pub(crate) fn record_churn(&self, inserted: u64, removed: u64) {
        self.inserted.fetch_add(inserted, Ordering::Relaxed);
        self.removed.fetch_add(removed, Ordering::Relaxed);
    }

    /// Records added and deleted since this generation became active.
    pub fn churn(&self) -> (u64, u64) {
        (
            self.inserted.load(Ordering::Relaxed),
            self.removed.load(Ordering::Relaxed),
        )
    }

    /// Record the file size now as the baseline (a switch calls it once the new
    /// generation is filled and synced).
    pub(crate) fn mark_baseline(&self) {
        self.baseline_bytes.store(self.file_bytes(), Ordering::Relaxed);
    }

    /// Mark the generation replaced: its directory is removed once the last handle to it
    /// is dropped (readers and snapshot builds may still hold it).
    pub(crate) fn retire(&self) {
        self.removal.armed.store(true, Ordering::Release);
    }
}

/// Removes a retired generation's directory; a field of [`Generation`] declared after the
/// database, so it runs once sled has closed its files.
struct RemoveOnDrop {
    dir: PathBuf,
    armed: AtomicBool,
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if !self.armed.load(Ordering::Acquire) {
            return;
        }
        // A failure leaves a directory the next open removes; nothing else depends on it.
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not remove a retired state generation");
        } else {
            tracing::debug!(dir = %self.dir.display(), "removed a retired state generation");
        }
        release_freed_memory();
    }
}

/// Hand the memory a closed database freed back to the OS. glibc keeps freed heap pages
/// for reuse, so without this a node's RSS kept its peak after every switch (two page
/// caches live during the copy) and crept up by ~8 MiB a defragmentation; with it, RSS
/// fell from 261 to 70 MiB after the first one (measured, 300 MiB database, 10,000 keys).
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only returns free pages of glibc's own heaps to the kernel,
    // under the allocator's locks; it is callable from any thread at any time and touches
    // no memory of ours.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The directory of generation `number`.
pub(crate) fn generation_dir(data_dir: &Path, number: u64) -> PathBuf {
    if number == 0 {
        data_dir.join("state")
    } else {
        data_dir.join(format!("state.{number}"))
    }
}

/// The active generation's number, from `state.current` (0 when absent).
pub(crate) fn current(data_dir: &Path) -> Result<u64> {
    let text = match std::fs::read_to_string(data_dir.join(CURRENT_FILE)) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    text.trim().parse().map_err(|_| Error::Corrupt {
        what: "state.current",
        detail: format!("{text:?} is not a generation number"),
    })
}

/// Make generation `number` the active one, durably: after this returns, a restart opens
/// it. Blocking. Use [`crate::StateShared::commit_switch`], which handles a failure.
pub(crate) fn commit(data_dir: &Path, number: u64) -> Result<()> {
    let temp = data_dir.join(CURRENT_TEMP);
    let mut file = File::create(&temp)?;
    writeln!(file, "{number}")?;
    file.sync_all()?;
    std::fs::rename(&temp, data_dir.join(CURRENT_FILE))?;
    sync_dir(data_dir)?;
    Ok(())
}

/// Remove every generation directory but `keep`'s (left by a crash mid-switch, or retired
/// before a crash), and a stray temporary `state.current`.
pub(crate) fn remove_others(data_dir: &Path, keep: u64) -> Result<()> {
    let keep_dir = generation_dir(data_dir, keep);
    for entry in std::fs::read_dir(data_dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let is_generation = name == "state"
            || name
                .strip_prefix("state.")
                .is_some_and(|n| n.parse::<u64>().is_ok());
        if is_generation && path != keep_dir {
            tracing::info!(dir = %path.display(), "removing an inactive state generation");
            remove_dir_if_present(&path)?;
        } else if name == CURRENT_TEMP {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

fn remove_dir_if_present(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

fn file_bytes(dir: &Path) -> u64 {
    std::fs::metadata(dir.join("db")).map_or(0, |m| m.len())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn lock(dir: &tempfile::TempDir) -> Arc<DataDirLock> {
        DataDirLock::acquire(dir.path(), std::time::Duration::from_secs(10)).unwrap()
    }

    #[test]
    fn current_defaults_to_zero_and_commit_switches_it() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(current(dir.path()).unwrap(), 0);
        commit(dir.path(), 3).unwrap();
        assert_eq!(current(dir.path()).unwrap(), 3);
        std::fs::write(dir.path().join(CURRENT_FILE), "x").unwrap();
        assert!(matches!(current(dir.path()), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn layouts_1_to_4_are_migrated_and_an_unknown_layout_refused() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(SyncStats::default());
        {
            let g = Generation::create(dir.path(), 0, 1 << 20, stats.clone(), lock(&dir)).unwrap();
            assert_eq!(
                crate::read_schema(g.db.db(), "t").unwrap(),
                Some(crate::STATE_LAYOUT_VERSION)
            );
            // Make it look like layout 1: four metadata keys, no state record.
            crate::write_schema(g.db.db(), 1).unwrap();
            g.insert(
                crate::keys::meta::REVISION,
                raftkv_core::codec::encode(&9i64).unwrap(),
            )
            .unwrap();
            g.sync().unwrap();
        }
        {
            let g = Generation::open(dir.path(), 0, 1 << 20, stats.clone(), lock(&dir)).unwrap();
            assert_eq!(crate::read_schema(g.db.db(), "t").unwrap(), Some(5));
            assert_eq!(
                crate::apply::applied_state::AppliedState::read(&g)
                    .unwrap()
                    .revision,
                9
            );
            crate::write_schema(g.db.db(), 2).unwrap();
            g.sync().unwrap();
        }
        {
            // Layout 2: only the version changes (its history records are read as they are).
            let g = Generation::open(dir.path(), 0, 1 << 20, stats.clone(), lock(&dir)).unwrap();
            assert_eq!(crate::read_schema(g.db.db(), "t").unwrap(), Some(5));
            crate::write_schema(g.db.db(), 3).unwrap();
            g.sync().unwrap();
        }
        {
            // Layout 3: the same (its chunks without kinds and its tombstones are read).
            let g = Generation::open(dir.path(), 0, 1 << 20, stats.clone(), lock(&dir)).unwrap();
            assert_eq!(crate::read_schema(g.db.db(), "t").unwrap(), Some(5));
            crate::write_schema(g.db.db(), 4).unwrap();
            g.sync().unwrap();
        }
        {
            // Layout 4: the same (its `v` records are read, and drained by compaction).
            let g = Generation::open(dir.path(), 0, 1 << 20, stats.clone(), lock(&dir)).unwrap();
            assert_eq!(crate::read_schema(g.db.db(), "t").unwrap(), Some(5));
            crate::write_schema(g.db.db(), 6).unwrap();
            g.sync().unwrap();
        }
        let refused = Generation::open(dir.path(), 0, 1 << 20, stats, lock(&dir))
            .err()
            .unwrap();
        assert!(matches!(
            refused,
            Error::Schema {
                found: 6,
                supported: 5,
                ..
            }
        ));
        assert!(
            refused.to_string().contains("run the build that wrote it"),
            "{refused}"
        );
    }

    #[test]
    fn a_retired_generation_is_removed_when_its_last_handle_goes() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(SyncStats::default());
        let g1 = Arc::new(Generation::create(dir.path(), 1, 1 << 20, stats.clone(), lock(&dir)).unwrap());
        g1.insert(b"k", b"v").unwrap();
        let reader = g1.clone();
        g1.retire();
        drop(g1);
        let path = generation_dir(dir.path(), 1);
        assert!(path.exists(), "a reader still holds it");
        assert_eq!(reader.get(b"k").unwrap().unwrap().as_ref(), b"v");
        drop(reader);
        assert!(!path.exists());
    }

    #[test]
    fn remove_others_keeps_only_the_active_generation() {
        let dir = tempfile::tempdir().unwrap();
        for n in [0, 1, 2] {
            std::fs::create_dir_all(generation_dir(dir.path(), n)).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("log")).unwrap();
        std::fs::write(dir.path().join(CURRENT_TEMP), "9").unwrap();
        remove_others(dir.path(), 1).unwrap();
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["log", "state.1"]);
    }
}
