//! One chunk of physical compaction: planning at most a budget of deletions from the
//! compactor's progress towards its target, and committing them as two runs of ordered
//! writes (versions: older layouts' `v` records, then in-place rewrites of layout-5
//! history chunks, `chunk_rewrite.rs`; then older layouts' history records and the
//! progress). The why is in [`crate::maintenance::compactor`]; this file
//! is the how, and its test models a crash after every batch.

use std::collections::HashSet;

use raftkv_core::codec;
use raftkv_core::kv::Revision;

use crate::apply::tree_writes::{TreeBatch, WriteGate};
use crate::disk::generation::Generation;
use crate::error::Result;
use crate::keys::{self, meta};
use crate::maintenance::chunk_rewrite::{ChunkEdits, survives};
use crate::mvcc::history_records::{ChunkFormat, EventKind};
use crate::mvcc::key_index::KeyIndex;
use crate::mvcc::{VersionRecord, history_records, versions};

/// The revision `tree` is physically compacted up to (0 if never).
pub(crate) fn compacted_to(tree: &sled::Tree) -> Result<Revision> {
    match tree.get(meta::COMPACT_DONE)? {
        Some(bytes) => Ok(codec::decode(&bytes)?),
        None => Ok(0),
    }
}

/// The deletions of one chunk, not yet committed.
pub(crate) struct Chunk {
    /// Version deletions of older layouts (`v` records), then the rewrites of layout-5
    /// chunks (`maintenance/chunk_rewrite.rs`).
    versions: TreeBatch,
    history: TreeBatch,
    /// Every history record at or below this revision is processed once committed (and
    /// deleted if below the target).
    pub(crate) progress: Revision,
    pub(crate) versions_deleted: usize,
    /// History records deleted (each one deletion of the budget)...
    pub(crate) history_deleted: usize,
    /// ... and the events they held.
    pub(crate) history_events_deleted: usize,
    /// Keys whose versions below the target this chunk finishes deleting: once it is
    /// committed, the key index forgets the same writes (`KeyIndex::prune`).
    pub(crate) keys_done: HashSet<Vec<u8>>,
}

impl Chunk {
    fn deletions(&self) -> usize {
        self.versions_deleted + self.history_deleted
    }

    /// First batch: the versions (see the invariant in the module doc).
    pub(crate) fn commit_versions(
        self,
        tree: &Generation,
        gate: &mut WriteGate,
    ) -> Result<CommittedVersions> {
        if !self.versions.is_empty() {
            self.versions.commit(tree, gate)?;
        }
        Ok(CommittedVersions(self.history))
    }
}

/// A chunk whose version deletions are committed; its history batch is next.
pub(crate) struct CommittedVersions(TreeBatch);

impl CommittedVersions {
    /// Second batch: the history records and the progress.
    pub(crate) fn commit_history(self, tree: &Generation, gate: &mut WriteGate) -> Result<()> {
        self.0.commit(tree, gate)?;
        Ok(())
    }
}

/// Plan the next chunk of compacting `tree` from `done` to `target`: at most `budget`
/// deletions. Reads only; see [`Chunk`].
pub(crate) fn plan_chunk(
    tree: &sled::Tree,
    index: &KeyIndex,
    done: Revision,
    target: Revision,
    budget: usize,
) -> Result<Chunk> {
    let mut chunk = Chunk {
        versions: TreeBatch::default(),
        history: TreeBatch::default(),
        progress: done,
        versions_deleted: 0,
        history_deleted: 0,
        history_events_deleted: 0,
        keys_done: HashSet::new(),
    };
    let mut edits = ChunkEdits::default();
    let mut finished: HashSet<Vec<u8>> = HashSet::new();
    let mut stopped_at = None;
    // From `done` itself: the records of a previous target were kept (see below). A record
    // (a chunk of events) that starts below `done` has its events below it processed; the
    // one a previous chunk stopped in is walked again even if that chunk's edits cut
    // every event at or above `done` off it (the rest of it is still to rewrite).
    'records: for record in history_records::records_from_previous(tree, done) {
        let record = record?;
        if record.events.first().is_some_and(|e| e.revision > target) {
            break;
        }
        let mut first_unprocessed = None;
        for event in record.events.iter().filter(|e| e.revision >= done) {
            if event.revision > target {
                break 'records;
            }
            first_unprocessed.get_or_insert(event.revision);
            let key_done = finished.contains(&event.key)
                || delete_superseded(tree, index, &event.key, target, &mut chunk, &mut edits, budget)?;
            if key_done {
                finished.insert(event.key.clone());
            }
            if !key_done || chunk.deletions() >= budget {
                stopped_at = Some(event.revision);
                break 'records;
            }
        }
        // The target's own events stay, so a watch can start at the compact revision (as
        // on etcd): a record holding any goes with the next compaction. The record needs a
        // slot of the budget itself; without one, its events are found again next time.
        if record.last_revision() < target {
            let inline = record.format == Some(ChunkFormat::Inline);
            if inline && record.events.iter().all(|e| survives(index, target, e)) {
                // Only versions still visible (a chunk an earlier round rewrote): as is.
                continue;
            }
            if chunk.deletions() >= budget {
                stopped_at = Some(first_unprocessed.unwrap_or(done).max(done));
                break;
            }
            if inline {
                // Its versions still visible at the target live on in it; the others are
                // dropped as versions (by `delete_superseded`), its deletes here.
                let deletes = record.events.iter().filter(|e| e.kind == EventKind::Delete);
                chunk.history_events_deleted += deletes.count();
                edits.keep_survivors(record.tree_key);
            } else {
                chunk.history.remove(record.tree_key);
                chunk.history_events_deleted += record.events.len();
            }
            chunk.history_deleted += 1;
        }
    }
    // Stopped at revision `rev`: its remaining events are found again next time.
    chunk.progress = stopped_at.map_or(target, |rev| rev - 1);
    chunk.keys_done = finished;
    edits.stage(tree, index, target, &mut chunk.versions)?;
    chunk
        .history
        .overwrite(meta::COMPACT_DONE, codec::encode(&chunk.progress)?);
    Ok(chunk)
}

/// Stage the deletion of every version of `key` that no read at or above `target` can
/// see, oldest first, within `budget`. Returns whether the key is finished.
///
/// Every version below the key's newest change at or below `target` goes (the index
/// knows the changes: a delete is a history event), and that newest change too if it is
/// a tombstone record of an older layout below `target`. A tombstone at the target
/// itself stays with the target's history record: the delete is an event of the compact
/// revision, which a watch may still replay. A version of an older layout is a `v` record;
/// one of layout 5 is dropped from its chunk (`maintenance/chunk_rewrite.rs`).
fn delete_superseded(
    tree: &sled::Tree,
    index: &KeyIndex,
    key: &[u8],
    target: Revision,
    chunk: &mut Chunk,
    edits: &mut ChunkEdits,
    budget: usize,
) -> Result<bool> {
    let newest_change = index.change_at(key, target);
    let lower = keys::version_key(key, 0);
    let upper = keys::version_key(key, target);
    if let Some(newest) = tree.range(lower.as_slice()..=upper.as_slice()).next_back() {
        let (newest_key, newest_bytes) = newest?;
        let newest_rev = keys::split_version_key(&newest_key).map_or(0, |(_, rev)| rev);
        // The index holds every change of the key at or below the target that compaction
        // has not pruned; without it (it should always know), the record decides.
        let keep_from = newest_change.map_or(newest_rev, |c| c.revision());
        for item in tree.range(lower.as_slice()..newest_key.as_ref()) {
            if chunk.deletions() >= budget {
                return Ok(false);
            }
            let (version_key, _) = item?;
            chunk.versions.remove(version_key);
            chunk.versions_deleted += 1;
        }
        let tombstone_record = !VersionRecord::is_put(&newest_bytes)?;
        let deleted = newest_change.map_or(tombstone_record, |change| !change.is_put());
        let superseded = newest_rev < keep_from || (deleted && !(tombstone_record && newest_rev == target));
        if superseded {
            if chunk.deletions() >= budget {
                return Ok(false);
            }
            chunk.versions.remove(newest_key);
            chunk.versions_deleted += 1;
        }
    }
    // Inline versions: every put the index retains below the newest change.
    let Some(newest_change) = newest_change else {
        return Ok(true);
    };
    for change in index.changes(key) {
        if change.revision() >= newest_change.revision() {
            break;
        }
        if !change.is_put() {
            continue;
        }
        if chunk.deletions() >= budget {
            return Ok(false);
        }
        if let Some(chunk_key) = versions::inline_chunk_of(tree, key, change.revision())? {
            edits.drop_version(chunk_key, change.revision(), key);
            chunk.versions_deleted += 1;
        }
    }
    Ok(true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use openraft::{EntryPayload, LogId};
    use raftkv_core::Command;
    use raftkv_core::kv::{CompactionRequest, DeleteRangeRequest, KeyValue, PutRequest};
    use raftkv_core::types::Entry;

    use super::*;
    use crate::{Store, StoreOptions, mvcc};

    fn entry(index: u64, command: Command) -> Entry {
        Entry {
            log_id: LogId::new(raftkv_core::types::leader_id(1, 1), index),
            payload: EntryPayload::Normal(command),
        }
    }

    /// Everything a read at `rev` sees: the whole range (by the index and by the walk),
    /// and each key on its own.
    fn reads_at(
        tree: &sled::Tree,
        index: &KeyIndex,
        rev: Revision,
    ) -> (Vec<KeyValue>, Vec<KeyValue>, Vec<Option<KeyValue>>) {
        let (all, fallbacks) = mvcc::range_indexed_at(tree, index, b"", &[0], rev).unwrap();
        assert_eq!(fallbacks, 0);
        let (visible, _) = index.range_at(b"", &[0], rev);
        let (by_index, fallbacks) = mvcc::range_by_index(tree, index, visible, rev).unwrap();
        assert_eq!(fallbacks, 0);
        assert_eq!(all, by_index);
        let each = ["a", "b", "c", "d", "gone"]
            .iter()
            .map(|k| mvcc::get_indexed_at(tree, index, k.as_bytes(), rev).unwrap())
            .collect();
        (all, by_index, each)
    }

    /// A crash can stop compaction after any chunk's commit (a chunk is written as plain
    /// inserts and removes, its progress record last: `apply/tree_writes.rs`). Compacting with a
    /// budget of 3 deletions, every chunk boundary is checked: reads at every revision >= C are
    /// exactly what they were, and the compaction still completes from there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_batch_boundary_leaves_reads_at_and_above_the_compact_revision_unchanged() {
        // Budgets of 1 and 2 stop chunks at every event, also right after a drop that cut
        // the tail off the record the chunk stopped in.
        for budget in [1, 2, 3] {
            every_batch_boundary_with_budget(budget).await;
        }
    }

    async fn every_batch_boundary_with_budget(budget: usize) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        // This test commits the chunks itself.
        store.shared.limit_compaction(Some(0));
        let mut commands = Vec::new();
        for round in 0..6 {
            for key in ["a", "b", "c", "d", "gone"] {
                commands.push(Command::Put(PutRequest::new(key, format!("{key}{round}"))));
            }
            if round == 2 {
                // One revision with several history records (sub-revisions).
                commands.push(Command::DeleteRange(DeleteRangeRequest::prefix("")));
            }
        }
        commands.push(Command::DeleteRange(DeleteRangeRequest::key("gone")));
        commands.push(Command::DeleteRange(DeleteRangeRequest::key("d")));
        commands.push(Command::Put(PutRequest::new("d", "reborn")));
        let entries: Vec<Entry> = commands
            .into_iter()
            .enumerate()
            .map(|(i, c)| entry(i as u64 + 1, c))
            .collect();
        let last = entries.len() as u64;
        // Three entries per apply call: each call writes one history record (a chunk of
        // its events), so compaction deletes some records whole and keeps others.
        for call in entries.chunks(3) {
            store.state_machine.apply_committed(call.to_vec()).await.unwrap();
        }
        let current = store.shared.revision();
        let compact_at = current - 1; // "d" is deleted at C, re-created above it.
        let tree = store.shared.tree();
        let index = &store.shared.key_index;
        let expected: Vec<_> = (compact_at..=current)
            .map(|r| reads_at(&tree, index, r))
            .collect();
        let history_kept = history_records::events_between(&tree, compact_at, current).count();
        store
            .state_machine
            .apply_committed([entry(
                last + 1,
                Command::Compact(CompactionRequest {
                    revision: compact_at,
                    physical: false,
                }),
            )])
            .await
            .unwrap();

        let check = |when: &str| {
            for (r, want) in (compact_at..=current).zip(&expected) {
                assert_eq!(&reads_at(&tree, index, r), want, "{when}: read at {r} changed");
            }
        };
        let mut chunks = 0;
        loop {
            let done = compacted_to(&tree).unwrap();
            if done >= compact_at {
                break;
            }
            let mut chunk = plan_chunk(&tree, index, done, compact_at, budget).unwrap();
            assert!(chunk.versions_deleted + chunk.history_deleted <= budget);
            let keys_done = std::mem::take(&mut chunk.keys_done);
            let gate = &mut WriteGate::default();
            let committed = chunk.commit_versions(&tree, gate).unwrap();
            check("after a version batch");
            committed.commit_history(&tree, gate).unwrap();
            check("after a history batch");
            index.prune(keys_done.iter().map(Vec::as_slice), compact_at);
            check("after the index forgot the same");
            chunks += 1;
            assert!(chunks < 1000, "no progress");
        }
        assert!(chunks >= 10, "{chunks} chunks with a budget of {budget}");
        assert_eq!(compacted_to(&tree).unwrap(), compact_at);
        // Left: one version of a, b, c (their newest puts) and d's re-creation above C;
        // d's delete at C is its history event (an event of C, which a watch may replay);
        // nothing of "gone" (deleted below C). The history of C and above stays.
        assert_eq!(store.shared.version_records(b"", &[0]).unwrap(), 4);
        assert_eq!(
            index
                .changes(b"d")
                .iter()
                .map(|c| (c.revision(), c.is_put()))
                .collect::<Vec<_>>(),
            [(compact_at, false), (current, true)]
        );
        assert!(index.changes(b"gone").is_empty());
        // A restart rebuilds the same index from what the tree holds.
        let rebuilt = KeyIndex::build(&tree, Revision::MAX, compact_at).unwrap();
        for key in ["a", "b", "c", "d", "gone"] {
            assert_eq!(
                rebuilt.changes(key.as_bytes()),
                index.changes(key.as_bytes()),
                "{key}"
            );
        }
        assert_eq!(store.shared.version_records(b"gone", b"").unwrap(), 0);
        assert_eq!(
            history_records::events_between(&tree, compact_at, current).count(),
            history_kept
        );
        // Records wholly below C keep only the versions a read at C sees (a, b, c's
        // newest puts); the one holding C's events stays whole.
        let records: Vec<_> = history_records::records_from(&tree, 0)
            .map(|r| r.unwrap())
            .collect();
        for record in records.iter().filter(|r| r.last_revision() < compact_at) {
            for event in &record.events {
                assert!(event.record.is_some(), "{event:?}");
                assert_eq!(
                    index.visible_at(&event.key, compact_at),
                    Some(event.revision),
                    "{event:?}"
                );
            }
        }
        let below: usize = records
            .iter()
            .filter(|r| r.last_revision() < compact_at)
            .map(|r| r.events.len())
            .sum();
        assert_eq!(below, 3);
        assert!(records.len() <= 4, "{} records left", records.len());
    }
}
