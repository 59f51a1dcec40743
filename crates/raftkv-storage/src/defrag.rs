//! Defragmentation: copying the live keyspace into a fresh generation (`generation.rs`)
//! and switching to it, which is how a sled 0.34 database gives disk space back.
//!
//! etcd's `Defragment` does the same for bbolt: rewrite the live data into a new file.
//! The copy happens under the tree-writers gate ([`StateShared`]'s `writers`), so no
//! applied batch or compaction chunk lands in the old tree after the copy began; writes
//! wait for the copy (reads do not: they keep using whichever generation they hold).
//! It runs on demand (`Maintenance.Defragment`, [`StateShared::defragment`]) and, when
//! [`AutoDefrag`] allows, by itself: the compactor thread checks after each compaction
//! round whether the database file has grown past `ratio` times its size at the last
//! switch (and past `min_bytes`). Churn without compaction keeps live data, which a copy
//! cannot shrink, so compaction is the natural moment to look.
//!
//! The copy is raw: every record of the tree, byte for byte, in batches; then the new
//! database is synced, `state.current` switched, the new generation published, and the
//! old one retired (its directory goes when its last reader does).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::generation::Generation;
use crate::state::StateShared;

/// Bytes of records per batch written into the new generation.
const COPY_BATCH_BYTES: usize = 4 << 20;

/// When the compactor defragments by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoDefrag {
    /// Defragment once the database file is more than this many times its size at the
    /// last switch (0: never by itself).
    pub ratio: u64,
    /// ... and larger than this.
    pub min_bytes: u64,
}

impl AutoDefrag {
    /// Never defragment by itself.
    pub const OFF: Self = Self {
        ratio: 0,
        min_bytes: 0,
    };
}

impl Default for AutoDefrag {
    /// 4x and 64 MiB: the file is rewritten at most once per fourfold growth, so the copy
    /// costs a constant share of what was written, and the disk holds at most about four
    /// times the compacted size (sled under churn settles near ten).
    fn default() -> Self {
        Self {
            ratio: 4,
            min_bytes: 64 << 20,
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
}

/// What one defragmentation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefragReport {
    /// The generation now active.
    pub generation: u64,
    /// Records copied.
    pub records: u64,
    /// Database file size before.
    pub before_bytes: u64,
    /// Database file size after.
    pub after_bytes: u64,
    /// How long writes waited (the copy, the syncs and the switch).
    pub pause: Duration,
}

impl StateShared {
    /// Rewrite the live keyspace into a fresh database and switch to it (module doc).
    /// Blocking, for seconds on a large keyspace: call it from a thread that may block
    /// (`spawn_blocking`), never from an async task.
    #[tracing::instrument(level = "info", skip_all)]
    pub fn defragment(&self) -> Result<DefragReport> {
        let report = self.defragment_gated(false)?;
        tracing::info!(?report, "defragmented the state database");
        Ok(report)
    }

    /// Defragment if [`AutoDefrag`] says the file has grown enough. Blocking.
    pub(crate) fn defragment_if_due(&self) -> Result<Option<DefragReport>> {
        if !self.defrag_due() {
            return Ok(None);
        }
        let report = self.defragment_gated(true)?;
        tracing::info!(?report, "defragmented the state database (automatic)");
        Ok(Some(report))
    }

    fn defrag_due(&self) -> bool {
        let AutoDefrag { ratio, min_bytes } = self.auto_defrag;
        if ratio == 0 {
            return false;
        }
        let active = self.tree();
        let size = active.file_bytes();
        size > min_bytes && size > active.baseline_bytes().saturating_mul(ratio)
    }

    fn defragment_gated(&self, automatic: bool) -> Result<DefragReport> {
        let _gate = self.writers.blocking_lock();
        let started = Instant::now();
        let old = self.tree();
        let fresh = Generation::create(
            &self.data_dir,
            old.number() + 1,
            self.cache_bytes,
            self.sync_stats.clone(),
        )?;
        let filled = copy(&old, &fresh).and_then(|records| {
            fresh.sync()?;
            Ok(records)
        });
        let records = match filled {
            Ok(records) => records,
            Err(e) => {
                // Not switched to: remove what was copied (a full disk is a likely cause).
                fresh.retire();
                return Err(e);
            }
        };
        fresh.mark_baseline();
        self.commit_switch(&fresh)?;
        let report = DefragReport {
            generation: fresh.number(),
            records,
            before_bytes: old.file_bytes(),
            after_bytes: fresh.file_bytes(),
            pause: Duration::ZERO,
        };
        self.active.store(Arc::new(fresh));
        old.retire();
        let report = DefragReport {
            pause: started.elapsed(),
            ..report
        };
        let stats = &self.defrag_stats;
        stats.runs.fetch_add(1, Ordering::Relaxed);
        if automatic {
            stats.automatic.fetch_add(1, Ordering::Relaxed);
        }
        stats
            .last_before_bytes
            .store(report.before_bytes, Ordering::Relaxed);
        stats
            .last_after_bytes
            .store(report.after_bytes, Ordering::Relaxed);
        stats
            .last_pause_micros
            .store(report.pause.as_micros() as u64, Ordering::Relaxed);
        Ok(report)
    }
}

/// Copy every record of `from` into `to`, in batches. Returns the records copied.
fn copy(from: &sled::Tree, to: &sled::Tree) -> Result<u64> {
    let mut records = 0;
    let mut batch = sled::Batch::default();
    let mut batch_bytes = 0;
    for item in from.iter() {
        let (key, value) = item?;
        batch_bytes += key.len() + value.len();
        batch.insert(key, value);
        records += 1;
        if batch_bytes >= COPY_BATCH_BYTES {
            to.apply_batch(std::mem::take(&mut batch))?;
            batch_bytes = 0;
        }
    }
    to.apply_batch(batch)?;
    Ok(records)
}
