//! Physical compaction: deleting, in bounded background chunks, what no read at or above
//! the compact revision can see.
//!
//! `Command::Compact` only records the compact revision `C` (`apply/applier.rs`); readers
//! refuse revisions below it. After `C` is published, the compactor thread of each replica
//! compacts the tree up to a *target* `T = min(C, oldest compaction pin, synced
//! revision)` (the last is the revision the durable applied state has reached, synced
//! first if needed: a crash rolls the tree back to that state by the history records
//! above it, see `apply/rollback.rs`, so none of them may be deleted):
//!
//! - for every key, every version older than its newest version at or below `T`, and
//!   that newest version too if the key was deleted after it at or below `T` (a delete
//!   is a history event, which the key index knows), or if it is a tombstone record of
//!   an older layout below `T` (a read at `r >= T` sees the newest change `<= r`, which
//!   is never one of these);
//! - every history record (`h` family) below `T`, or since layout 5, where a put's version
//!   lives in its history event, every event below `T` but those versions (a record
//!   wholly below `T` is rewritten in place to them, `chunk_rewrite.rs`). The history
//!   serves future watches, which start at the compact revision or above, so the records
//!   of `T` itself (and a delete at `T`) stay until the next compaction, as etcd lets a
//!   watch start at its compact revision. It also holds the deletes (a delete has no
//!   version record), which the key index is built from at open and on install: a delete
//!   below `T` goes only after every version it superseded (the invariant below), so a
//!   rebuilt index never misses a delete that a version left in the tree still needs.
//!
//! **Finding the work.** The compactor walks the `h` family from the last revision it
//! finished (`m`+`compact_done`, [`crate::keys::meta::COMPACT_DONE`]; that revision's
//! records are kept by the previous round, so the walk includes it) up to `T`; each
//! record names a key written in that window, whose versions at or below `T` it then
//! finds: `v` records by a scan (`version_key(key, 0) ..= version_key(key, T)`), inline
//! ones through the key index's retained changes. A version can only become
//! deletable because a newer write of its key (with its own history record) landed at or
//! below `T`, so this finds every one of them, and the work is proportional to the writes
//! in the window rather than to the whole keyspace (one walk of the `v` family would read
//! every live key at every compaction). Keys finished in a chunk are remembered, so a key
//! written 5,000 times in the window is scanned once per chunk, not 5,000 times.
//!
//! **Chunks.** One chunk deletes at most [`MAX_DELETIONS_PER_BATCH`] records and commits
//! them as two runs of ordered writes: the version deletions first, then the history records of
//! the keys it finished and the new progress, written last (the revision below which every history
//! record is processed). Between chunks the thread yields and re-reads the target, so
//! apply (which shares the tree-writers gate with it) waits for at most one chunk. The
//! order of the two runs keeps one invariant at every instant, also across a crash and
//! in a snapshot streamed while compaction runs (a crash keeps a prefix of the ordered
//! writes; layout-5 chunks are rewritten in ascending order, a put's chunk before the
//! chunk of the delete that superseded it; and a snapshot reads the `h` family newest
//! first, then the `v` family: `raft/snapshot_scan.rs`):
//!
//! > if a version superseded by a newer write `b` (or a tombstone `b`) still exists, the
//! > history record of `b` still exists too.
//!
//! So a restarted compactor, or the compactor of a replica that installed the snapshot
//! (which starts from progress 0: progress is local to a tree and not in snapshots), finds
//! every record still to delete by walking the history that remains. Deletions are
//! idempotent; a crash within or between the runs only repeats work. Within a key versions are
//! deleted oldest first and a tombstone last, so even a reader that observes half a
//! batch sees, at any revision `>= T`, what it would have seen before.
//!
//! **Pins.** A snapshot build streams the versions at or below its revision from the live
//! tree, and its receiver serves every revision from the snapshot's compact revision `Cs`
//! up. So the build pins `Cs` (not its revision `R`: compacting up to `R` would delete
//! versions readable in `[Cs, R)`, which the receiver would then lack until it applies the
//! later `Compact` entry, and answer wrongly meanwhile). Pins and the target are read under
//! one lock (`maintenance/compaction_pins.rs`): a pin taken after the target was computed pins
//! the compact revision of that moment or a later one, hence at least the target; a
//! target computed after the pin sees it. Targets therefore never decrease and a chunk in
//! flight never needs to be interrupted.
//!
//! **Readers.** A deletion for target `T` only happens after a compact revision `>= T` is
//! published. `KvReader::range` checks its revision against the compact revision before
//! and after its scan, so a scan that raced with deletions past its revision is refused
//! (see `mvcc/reader.rs`). Reads inside a transaction are at or above the applier's compact
//! revision, which is at least the published one, hence at least any target.
//!
//! **Progress** is published in [`StateShared::physically_compacted`] as chunks commit.
//!
//! **Defragmentation.** Once idle after a round, the thread checks whether the state
//! database outgrew what it holds and, if so, rewrites it (`maintenance/defrag.rs`).
//!
//! **Left out.** No rate limit beyond the chunk size and a yield; a storage error is
//! logged and retried a second later. After a snapshot install the watermark (which never
//! moves back) keeps the value reached on the replaced tree until the new tree catches up.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crossbeam::channel::{Receiver, RecvTimeoutError};
use raftkv_core::kv::Revision;

use crate::disk::generation::Generation;
use crate::error::Result;
pub(crate) use crate::maintenance::compaction_chunk::compacted_to;
use crate::maintenance::compaction_chunk::plan_chunk;
use crate::state::StateShared;

/// At most this many records (versions and history) are deleted per chunk.
pub const MAX_DELETIONS_PER_BATCH: usize = 1000;

const RETRY_AFTER_ERROR: Duration = Duration::from_secs(1);

/// Start the compactor thread of `shared`. It holds only a `Weak` between chunks and ends
/// when the last `Arc<StateShared>` is gone (the wake channel disconnects).
pub(crate) fn spawn(shared: &Arc<StateShared>, wake: Receiver<()>) -> Result<()> {
    let shared = Arc::downgrade(shared);
    std::thread::Builder::new()
        .name("raftkv-compactor".into())
        .spawn(move || run(shared, wake))?;
    Ok(())
}

fn run(shared: Weak<StateShared>, wake: Receiver<()>) {
    let mut failed = false;
    loop {
        let woken = if failed {
            wake.recv_timeout(RETRY_AFTER_ERROR)
        } else {
            wake.recv().map_err(|_| RecvTimeoutError::Disconnected)
        };
        if let Err(RecvTimeoutError::Disconnected) = woken {
            return;
        }
        failed = false;
        loop {
            let Some(strong) = shared.upgrade() else {
                return;
            };
            match step(&strong) {
                Ok(true) => {}
                Ok(false) => {
                    // Idle: a compaction round is done, the moment to see whether the
                    // file outgrew what it holds (`maintenance/defrag.rs`).
                    if let Err(e) = strong.defragment_if_due() {
                        tracing::warn!(error = %e, "automatic defragmentation failed");
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "physical compaction failed; retrying");
                    failed = true;
                    break;
                }
            }
            drop(strong);
            std::thread::yield_now();
        }
    }
}

/// Commit one chunk if there is work. Returns whether it did. Blocking.
#[tracing::instrument(level = "debug", skip_all)]
pub(crate) fn step(shared: &StateShared) -> Result<bool> {
    if shared.compaction_budget.load(Ordering::Acquire) == 0 {
        return Ok(false);
    }
    // Target first, then the tree: an install stores its tree before its compact
    // revision, which is never below the replaced one, so the target is safe for
    // whichever tree is loaded next.
    let mut compact_revision = 0;
    let target = shared.pins.bound(|| {
        compact_revision = shared.compact_revision();
        compact_revision
    });
    // Never delete past the durable applied state: a crash rolls the tree back to it by
    // the history records above it (`apply/rollback.rs`), so those must still be there.
    if target > shared.synced_revision() {
        shared.sync_durable()?;
    }
    let target = target.min(shared.synced_revision());
    // The plan reads the tree and the key index; an install switches both (and then the
    // plan is made again: see the commit below).
    let switch_epoch = shared.settled_switch_epoch();
    let tree = shared.tree();
    let done = compacted_to(&tree)?;
    if target <= done {
        if target < compact_revision {
            shared.compaction_stats.held_back.fetch_add(1, Ordering::Relaxed);
        }
        publish(shared, &tree, done);
        return Ok(false);
    }
    let mut chunk = plan_chunk(&tree, &shared.key_index, done, target, MAX_DELETIONS_PER_BATCH)?;
    let keys_done = std::mem::take(&mut chunk.keys_done);
    let (versions, history, progress) = (
        chunk.versions_deleted,
        chunk.history_events_deleted,
        chunk.progress,
    );
    {
        // Planned without the gate (apply goes on meanwhile: it never deletes what a
        // chunk plans to), committed under it, and only into the generation still active,
        // with the index of that generation: a chunk planned on a replaced tree, or with
        // an index that an install replaced meanwhile, is planned again.
        let mut gate = shared.writers.blocking_lock();
        let switched = shared.switch_epoch.load(Ordering::Acquire) != switch_epoch;
        if switched || !Arc::ptr_eq(&tree, &shared.tree()) {
            return Ok(true);
        }
        chunk
            .commit_versions(&tree, &mut gate)?
            .commit_history(&tree, &mut gate)?;
        shared
            .key_index
            .prune(keys_done.iter().map(Vec::as_slice), target);
    }
    let stats = &shared.compaction_stats;
    stats.batches.fetch_add(1, Ordering::Relaxed);
    stats
        .versions_deleted
        .fetch_add(versions as u64, Ordering::Relaxed);
    stats.history_deleted.fetch_add(history as u64, Ordering::Relaxed);
    // Test hook: count down a limited budget (`u64::MAX` is unlimited).
    let _ = shared
        .compaction_budget
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
            (b != u64::MAX).then(|| b.saturating_sub(1))
        });
    publish(shared, &tree, progress);
    Ok(true)
}

/// Advance the watermark, unless an install switched trees under this chunk.
fn publish(shared: &StateShared, tree: &Arc<Generation>, progress: Revision) {
    if Arc::ptr_eq(tree, &shared.tree()) {
        shared.physically_compacted.advance(progress.max(0) as u64);
    }
}
