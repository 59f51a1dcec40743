//! Defragmentation: copying the live keyspace into a fresh generation (`disk/generation.rs`)
//! and switching to it, which is how a sled 0.34 database gives disk space back.
//!
//! etcd's `Defragment` does the same for bbolt: rewrite the live data into a new file.
//! Unlike etcd's, writes do not wait for the copy. It runs in two phases around the
//! tree-writers gate (`apply/tree_writes.rs`): first, under the gate, the gate starts recording
//! the key of every write committed from then on; the whole live tree is then copied
//! (and synced) while applies and compaction go on. Then, under the gate again, the
//! recorded keys are copied once more as they are now (a key not written since the copy
//! began was copied with its final value; one written since is re-copied, or deleted
//! from the copy), the new database is synced, `state.current` switched and the new
//! generation published. Before that final round, rounds outside the gate copy what was
//! recorded so far (the record restarting each time), until a round is small, so under
//! a heavy write load the final round stays short too. Writes wait only for that catch-up (reads never wait: they keep
//! using whichever generation they hold). A snapshot install during the copy replaces
//! the state database itself; the defragmentation then gives up (the install's database
//! is fresh anyway).
//! It runs on demand (`Maintenance.Defragment`, [`StateShared::defragment`]) and, when
//! [`AutoDefrag`] allows, by itself: the compactor thread checks after each compaction
//! round whether the database file has grown past `ratio` times its size at the last
//! switch (taken as at least `floor_bytes`) **and** whether at least half as many
//! records were deleted from it since as were added ([`Generation::churn`]). Growth
//! without deletions is live data, which a copy cannot shrink: rewriting it would cost
//! seconds of CPU and I/O for nothing (a write benchmark without compaction stalled ~4 s
//! on it, all three members copying ~60 MiB of history at once).
//!
//! The copy is raw: every record of the tree, byte for byte, in batches. The old
//! generation is retired: its directory goes when its last reader does.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sled::IVec;

use crate::disk::generation::Generation;
use crate::error::{Error, Result};
use crate::maintenance::defrag_policy::AutoDefrag;
use crate::state::StateShared;

/// Catch-up rounds outside the gate at most, and the record size that ends them: the
/// final round, under the gate, copies about this many keys (a few milliseconds).
const MAX_CATCH_UP_ROUNDS: usize = 4;
const SMALL_CATCH_UP_KEYS: usize = 2_000;

/// What one defragmentation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefragReport {
    /// The generation now active.
    pub generation: u64,
    /// Records copied.
    pub records: u64,
    /// Keys written during the copy and copied again before the switch.
    pub caught_up: u64,
    /// Database file size before.
    pub before_bytes: u64,
    /// Database file size after.
    pub after_bytes: u64,
    /// How long the whole defragmentation took.
    pub duration: Duration,
    /// How long writes waited: the catch-up, the sync and the switch.
    pub pause: Duration,
}

impl StateShared {
    /// Rewrite the live keyspace into a fresh database and switch to it (module doc).
    /// Blocking, for seconds on a large keyspace: call it from a thread that may block
    /// (`spawn_blocking`), never from an async task.
    #[tracing::instrument(level = "info", skip_all)]
    pub fn defragment(&self) -> Result<DefragReport> {
        let report = self.defragment_with(false, || {})?;
        tracing::info!(?report, "defragmented the state database");
        Ok(report)
    }

    /// Defragment if [`AutoDefrag`] says the file has grown enough. Blocking.
    pub(crate) fn defragment_if_due(&self) -> Result<Option<DefragReport>> {
        if !self.defrag_due() {
            return Ok(None);
        }
        let report = self.defragment_with(true, || {})?;
        tracing::info!(?report, "defragmented the state database (automatic)");
        Ok(Some(report))
    }

    fn defrag_due(&self) -> bool {
        let AutoDefrag { ratio, floor_bytes } = self.auto_defrag;
        if ratio == 0 {
            return false;
        }
        let active = self.tree();
        let grown = active.file_bytes() > active.baseline_bytes().max(floor_bytes).saturating_mul(ratio);
        let (inserted, removed) = active.churn();
        grown && removed.saturating_mul(2) >= inserted
    }

    /// The defragmentation; `between_phases` runs after the copy, before the catch-up
    /// (tests write there).
    fn defragment_with(&self, automatic: bool, between_phases: impl FnOnce()) -> Result<DefragReport> {
        // One at a time (the Maintenance call and the compactor's own).
        let _one = self.defrag_running.lock();
        let started = Instant::now();
        // Phase 1: copy the live tree while writes go on, recording their keys.
        let old = {
            let mut gate = self.writers.blocking_lock();
            gate.track();
            self.tree()
        };
        let fresh = Generation::create(
            &self.data_dir,
            old.number() + 1,
            self.cache_bytes,
            self.sync_stats.clone(),
            self.dir_lock.clone(),
        );
        let copied = fresh.and_then(|fresh| {
            let filled = copy_all(&old, &fresh).and_then(|records| {
                self.catch_up_outside_the_gate(&old, &fresh)?;
                // Synced here, so the sync under the gate has only the last keys to write.
                fresh.sync()?;
                Ok(records)
            });
            match filled {
                Ok(records) => Ok((fresh, records)),
                Err(e) => {
                    fresh.retire();
                    Err(e)
                }
            }
        });
        between_phases();
        // Phase 2, under the gate: re-copy what was written meanwhile, sync, switch.
        let mut gate = self.writers.blocking_lock();
        let written = gate.take_tracked();
        let (fresh, records) = copied?;
        let paused = Instant::now();
        if !Arc::ptr_eq(&old, &self.tree()) {
            fresh.retire();
            return Err(Error::Interrupted(
                "a snapshot install replaced the state database during the copy".into(),
            ));
        }
        let caught_up = copy_keys(&old, &fresh, &written).and_then(|()| fresh.sync());
        let written_under_gate = written.len() as u64;
        if let Err(e) = caught_up {
            // Not switched to: remove what was copied (a full disk is a likely cause).
            fresh.retire();
            return Err(e);
        }
        // The next automatic rewrite is due at `ratio` times the fresh file's size. A
        // floor of the old size over the ratio made rewrites rarer but let the soak's
        // disk and RSS medians creep (RELIABILITY.md); the plain mark kept them level.
        fresh.mark_baseline();
        self.commit_switch(&fresh)?;
        let report = DefragReport {
            generation: fresh.number(),
            records,
            caught_up: self.defrag_stats.caught_up_outside.swap(0, Ordering::Relaxed) + written_under_gate,
            before_bytes: old.file_bytes(),
            after_bytes: fresh.file_bytes(),
            duration: started.elapsed(),
            pause: paused.elapsed(),
        };
        self.active.store(Arc::new(fresh));
        drop(gate);
        old.retire();
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

impl StateShared {
    /// Copy what was written during the copy, in rounds, without holding the gate: each
    /// round takes the keys recorded so far (restarting the record under the gate, a
    /// moment) and copies them as they are now; a key written again meanwhile is in the
    /// next round's record. Stops once a round is small (or after a few), leaving the last
    /// record for the final catch-up under the gate.
    fn catch_up_outside_the_gate(&self, old: &sled::Tree, fresh: &sled::Tree) -> Result<()> {
        for _ in 0..MAX_CATCH_UP_ROUNDS {
            let written = {
                let mut gate = self.writers.blocking_lock();
                let written = gate.take_tracked();
                gate.track();
                written
            };
            copy_keys(old, fresh, &written)?;
            self.defrag_stats
                .caught_up_outside
                .fetch_add(written.len() as u64, Ordering::Relaxed);
            if written.len() <= SMALL_CATCH_UP_KEYS {
                break;
            }
        }
        Ok(())
    }
}

/// Copy `keys` from `from` into `to` as they are in `from` now (absent: deleted). Plain
/// writes (no sled batch, see `apply/tree_writes.rs`): `to` is synced before it is switched in,
/// and a crash before that discards it.
fn copy_keys(from: &sled::Tree, to: &sled::Tree, keys: &HashSet<IVec>) -> Result<()> {
    for key in keys {
        match from.get(key)? {
            Some(value) => to.insert(key, value)?,
            None => to.remove(key)?,
        };
    }
    Ok(())
}

/// Copy every record of `from` into `to`. Returns the records copied.
fn copy_all(from: &sled::Tree, to: &sled::Tree) -> Result<u64> {
    let mut records = 0;
    for item in from.iter() {
        let (key, value) = item?;
        to.insert(key, value)?;
        records += 1;
    }
    Ok(records)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::apply::tree_writes::TreeBatch;
    use crate::{Store, StoreOptions};

    fn write(shared: &StateShared, stage: impl FnOnce(&mut TreeBatch)) {
        let mut gate = shared.writers.blocking_lock();
        let mut batch = TreeBatch::default();
        stage(&mut batch);
        batch.commit(&shared.tree(), &mut gate).unwrap();
    }

    fn contents(tree: &sled::Tree) -> Vec<(IVec, IVec)> {
        tree.iter().map(Result::unwrap).collect()
    }

    fn no_auto_defrag() -> StoreOptions {
        StoreOptions {
            auto_defrag: AutoDefrag::OFF,
            ..StoreOptions::default()
        }
    }

    /// A store without automatic defragmentation holding `k0000`..`k0999` = `v0`.
    fn store_of_1000_keys(dir: &tempfile::TempDir) -> Store {
        let store = Store::open(dir.path(), no_auto_defrag()).unwrap();
        write(&store.shared, |b| {
            for i in 0..1000 {
                b.insert(format!("k{i:04}").as_bytes(), &b"v0"[..]);
            }
        });
        store
    }

    #[test]
    fn writes_made_during_the_copy_are_caught_up_before_the_switch() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_of_1000_keys(&dir);
        let shared = store.shared.clone();
        let mut expected = Vec::new();
        let report = shared
            .defragment_with(false, || {
                // Overwrite, delete, create: the copy has the old state of all three.
                write(&shared, |b| {
                    b.insert(&b"k0001"[..], &b"v1"[..]);
                    b.remove(&b"k0002"[..]);
                    b.insert(&b"new"[..], &b"x"[..]);
                });
                expected = contents(&shared.tree());
            })
            .unwrap();
        assert_eq!(report.caught_up, 3);
        assert_eq!(shared.tree().number(), 1);
        assert_eq!(contents(&shared.tree()), expected);
        assert_eq!(shared.tree().get(b"k0001").unwrap().unwrap().as_ref(), b"v1");
        assert!(shared.tree().get(b"k0002").unwrap().is_none());
    }

    #[test]
    fn a_store_reopened_while_a_dropped_one_still_defragments_opens_the_result() {
        // The compactor's automatic defragmentation holds the store past its owner's
        // drop; a reopen at that moment must wait for it, not clean up under it.
        let dir = tempfile::tempdir().unwrap();
        let store = store_of_1000_keys(&dir);
        let shared = store.shared.clone();
        let expected = contents(&shared.tree());
        let (copied_tx, copied_rx) = std::sync::mpsc::channel();
        let background = std::thread::spawn(move || {
            let report = shared.defragment_with(false, || {
                copied_tx.send(()).unwrap();
                // Widens the window a reopen without the directory lock raced into.
                std::thread::sleep(std::time::Duration::from_millis(200));
            });
            report.map(|r| r.generation)
        });
        copied_rx.recv().unwrap();
        drop(store);
        let reopened = Store::open(dir.path(), no_auto_defrag()).unwrap();
        assert_eq!(background.join().unwrap().unwrap(), 1);
        assert_eq!(reopened.shared.tree().number(), 1);
        assert_eq!(contents(&reopened.shared.tree()), expected);
        drop(reopened);
        let again = Store::open(dir.path(), no_auto_defrag()).unwrap();
        assert_eq!(contents(&again.shared.tree()), expected);
    }

    #[test]
    fn growth_is_rewritten_automatically_only_once_enough_was_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            auto_defrag: AutoDefrag {
                ratio: 2,
                floor_bytes: 1 << 20,
            },
            ..StoreOptions::default()
        };
        let store = Store::open(dir.path(), options).unwrap();
        let shared = store.shared.clone();
        // Only additions: the file outgrows twice the floor, but all of it is live.
        let value = vec![7u8; 1024];
        for chunk in 0..8 {
            write(&shared, |b| {
                for i in 0..1000 {
                    b.insert(format!("k{chunk}/{i:04}").as_bytes(), value.clone());
                }
            });
        }
        shared.tree().sync().unwrap();
        assert!(shared.tree().file_bytes() > 2 << 20);
        assert_eq!(shared.tree().churn(), (8000, 0));
        assert!(shared.defragment_if_due().unwrap().is_none());
        // Delete half of it (as compaction would): now the rewrite is worth it.
        for chunk in 0..4 {
            write(&shared, |b| {
                for i in 0..1000 {
                    b.remove(format!("k{chunk}/{i:04}").as_bytes());
                }
            });
        }
        let report = shared
            .defragment_if_due()
            .unwrap()
            .expect("due once half was deleted");
        assert_eq!(report.records, 4000);
        assert_eq!(shared.tree().churn(), (0, 0));
    }
}
