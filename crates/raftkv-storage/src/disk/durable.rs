//! [`DurableDb`]: a sled database whose `sync()` really reaches the disk.
//!
//! sled 0.34's `Db::flush()` writes its buffers and calls `sync_file_range`, never
//! `fsync`/`fdatasync`, so "flushed" data may still sit in the device cache and the file's
//! metadata may not be on disk. `sync()` therefore flushes, then `fdatasync`s sled's data
//! file (`<dir>/db`). sled also writes any item larger than a quarter of a segment
//! (~128 KiB by default; a page can get there too) to its own file under `<dir>/blobs/`
//! and never syncs it: `sync()` `fdatasync`s every blob file written since the last sync,
//! which an inotify watch names (`BlobWatch`, no directory listing per sync), then the
//! directory itself when a file was created, so the new names survive too.
//!
//! [`SyncStats`] counts what was synced; tests read it to prove the order of events
//! (a test hook, not a guess: a SIGKILL test cannot show a missing fsync because the page
//! cache survives the process).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use raftkv_core::Histogram;

use crate::disk::blob_watch::{BlobChanges, BlobWatch};
use crate::disk::data_dir_lock::DataDirLock;
use crate::error::Result;

/// A sync slower than this is logged (etcd's `slow fdatasync` threshold).
const SLOW_SYNC: Duration = Duration::from_secs(1);

/// Counters of real syncs, for tests and metrics.
#[derive(Debug, Default)]
pub struct SyncStats {
    /// `sync()` calls that completed (each one fdatasync of the data file).
    pub syncs: AtomicU64,
    /// Blob files fdatasync'ed.
    pub blob_files_synced: AtomicU64,
    /// How long each `sync()` took (sled's flush, the fdatasync and any blob files):
    /// `etcd_disk_wal_fsync_duration_seconds` for the log,
    /// `etcd_disk_backend_commit_duration_seconds` for the state machine.
    pub durations: Histogram,
}

/// A sled database plus the file handles that make its writes durable.
pub struct DurableDb {
    db: sled::Db,
    dir: PathBuf,
    data_file: File,
    /// Names the blob files written since the last sync; `None` where inotify is not
    /// available (then every sync syncs every blob file).
    blob_watch: Option<BlobWatch>,
    stats: Arc<SyncStats>,
    /// Declared last: released once sled's files are closed (`disk/data_dir_lock.rs`).
    dir_lock: Option<Arc<DataDirLock>>,
}

impl DurableDb {
    /// Open (or create) the database in `dir` with at most `cache_bytes` of page cache.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self> {
        Self::open_with_stats(dir, cache_bytes, Arc::default())
    }

    /// [`DurableDb::open`], counting its syncs in `stats` (shared by the successive
    /// databases of the state machine, see `disk/generation.rs`).
    pub fn open_with_stats(dir: &Path, cache_bytes: u64, stats: Arc<SyncStats>) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let db = open_waiting_for_lock(dir, cache_bytes)?;
        let data_file = File::open(dir.join("db"))?;
        // Watch before the first sync: that one syncs every blob file already there.
        let blobs_dir = dir.join("blobs");
        std::fs::create_dir_all(&blobs_dir)?;
        let blob_watch = match BlobWatch::new(&blobs_dir) {
            Ok(watch) => Some(watch),
            Err(e) => {
                tracing::warn!(error = %e, dir = %blobs_dir.display(), "no inotify: every sync lists the blob files");
                None
            }
        };
        let this = Self {
            db,
            dir: dir.to_path_buf(),
            data_file,
            blob_watch,
            stats,
            dir_lock: None,
        };
        this.sync_all_blobs()?;
        // Make the directory entries sled just created durable as well.
        sync_dir(dir)?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
        this.sync()?;
        Ok(this)
    }

    /// Keep `dir_lock` (the store's hold on its data directory) until this database is
    /// closed.
    pub fn holding(mut self, dir_lock: Arc<DataDirLock>) -> Self {
        self.dir_lock = Some(dir_lock);
        self
    }

    /// The sled database.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Sync counters.
    pub fn stats(&self) -> &SyncStats {
        &self.stats
    }

    /// Flush sled and make everything written so far durable (see the module doc).
    /// Blocking: call it from a thread that may block.
    pub fn sync(&self) -> Result<()> {
        let started = Instant::now();
        self.db.flush()?;
        self.data_file.sync_data()?;
        self.sync_new_blobs()?;
        self.stats.syncs.fetch_add(1, Ordering::Relaxed);
        let took = started.elapsed();
        self.stats.durations.observe(took);
        if took > SLOW_SYNC {
            // etcd's "slow fdatasync" warning, at its threshold.
            tracing::warn!(?took, expected_duration = ?SLOW_SYNC, dir = %self.dir.display(), "slow fdatasync");
        }
        Ok(())
    }

    fn sync_new_blobs(&self) -> io::Result<()> {
        let changes = match &self.blob_watch {
            Some(watch) => watch.changes()?,
            None => BlobChanges::Unknown,
        };
        match changes {
            BlobChanges::Unknown => self.sync_all_blobs(),
            BlobChanges::Files { names, created } => {
                let blobs_dir = self.dir.join("blobs");
                for name in names {
                    self.sync_blob(&blobs_dir.join(name))?;
                }
                if created {
                    sync_dir(&blobs_dir)?;
                }
                Ok(())
            }
        }
    }

    /// Sync every blob file and the directory (at open, and when events were lost).
    fn sync_all_blobs(&self) -> io::Result<()> {
        let blobs_dir = self.dir.join("blobs");
        let entries = match std::fs::read_dir(&blobs_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            self.sync_blob(&entry?.path())?;
        }
        sync_dir(&blobs_dir)
    }

    fn sync_blob(&self, path: &Path) -> io::Result<()> {
        match File::open(path) {
            Ok(f) => f.sync_data()?,
            // sled removed it since: nothing to keep.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        self.stats.blob_files_synced.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// sled holds an exclusive file lock while a `Db` is open. A store's databases are
/// ordered by its data directory lock (`disk/data_dir_lock.rs`); this wait (with a deadline)
/// covers a `DurableDb` opened on its own, whose previous user may still be dropping its
/// handles on other threads.
fn open_waiting_for_lock(dir: &Path, cache_bytes: u64) -> Result<sled::Db> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::Config::new().path(dir).cache_capacity(cache_bytes).open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return Ok(other?),
        }
    }
}

/// fsync a directory, so the names created in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn small_items_sync_the_data_file_and_large_ones_their_blob_too() {
        let dir = tempfile::tempdir().unwrap();
        let db = DurableDb::open(dir.path(), 8 << 20).unwrap();
        let base_syncs = db.stats().syncs.load(Ordering::Relaxed);
        db.db().insert(b"small", vec![1u8; 100]).unwrap();
        db.sync().unwrap();
        assert_eq!(db.stats().syncs.load(Ordering::Relaxed), base_syncs + 1);
        assert_eq!(db.stats().blob_files_synced.load(Ordering::Relaxed), 0);

        db.db().insert(b"large", vec![7u8; 200 * 1024]).unwrap();
        db.sync().unwrap();
        let blobs: Vec<_> = std::fs::read_dir(dir.path().join("blobs")).unwrap().collect();
        assert!(!blobs.is_empty(), "sled wrote the 200 KiB item as a blob file");
        assert!(db.stats().blob_files_synced.load(Ordering::Relaxed) >= 1);
        // Nothing new: no blob is synced twice, and the directory is not listed.
        let before = db.stats().blob_files_synced.load(Ordering::Relaxed);
        db.sync().unwrap();
        assert_eq!(db.stats().blob_files_synced.load(Ordering::Relaxed), before);
        db.db().insert(b"small2", vec![1u8; 100]).unwrap();
        db.sync().unwrap();
        assert_eq!(db.stats().blob_files_synced.load(Ordering::Relaxed), before);
    }
}
