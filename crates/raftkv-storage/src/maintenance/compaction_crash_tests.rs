//! A crash in the middle of a compaction chunk, at every write of it.
//!
//! Since layout 5 a chunk rewrites history records (a version lives in its chunk,
//! `maintenance/chunk_rewrite.rs`): each in place, in chunk order. A compaction chunk is
//! written as plain inserts and removes, and sled recovers a prefix of them, so for every
//! `k` the chunk is stopped after its first `k` writes and then
//! - reads at every revision from the compact revision up are what they were, by the live
//!   index and by one built from the tree (what an open would build);
//! - after a reopen the compactor finishes, reads are still the same, and the tree holds
//!   what an uninterrupted compaction leaves (the same events and versions).
//!
//! Two rounds: the first rewrites chunks wholly below its target to their survivors; the
//! second drops survivors of the first that later writes superseded.

use openraft::EntryPayload;
use raftkv_core::Command;
use raftkv_core::kv::*;
use raftkv_core::types::{Entry, LogId};

use crate::apply::tree_writes::WriteGate;
use crate::failpoints::stop_writes_after;
use crate::maintenance::compaction_chunk::{compacted_to, plan_chunk};
use crate::mvcc::history_records;
use crate::mvcc::key_index::KeyIndex;
use crate::{Store, StoreOptions, mvcc};

const KEYS: [&str; 6] = ["a", "b", "c", "d", "e", "f"];

fn put(key: &str, value: &str) -> Command {
    Command::Put(PutRequest::new(key, value))
}

fn delete(key: &str) -> Command {
    Command::DeleteRange(DeleteRangeRequest::key(key))
}

/// The apply calls (revision after each in the comment). A compaction to 8 finds chunks
/// 1 and 2 wholly below it: chunk 1 keeps c1 alone (under its key, though a1 went), chunk 2 goes
/// (d's delete, after d1 went from chunk 1: in the other order a crash between would
/// bring d back). One to 11 then drops c1 from that rewritten chunk (superseded by c2)
/// and removes chunk 3 (a2 superseded by a's delete, b's delete).
fn calls() -> Vec<Vec<Command>> {
    vec![
        vec![put("a", "a1"), put("b", "b1"), put("c", "c1"), put("d", "d1")], // 5
        vec![delete("d")],                                                    // 6
        vec![put("a", "a2"), delete("b")],                                    // 8
        vec![put("c", "c2"), delete("a"), put("e", "e1")],                    // 11
        vec![put("f", "f1")],                                                 // 12
    ]
}

async fn apply(store: &mut Store, next_index: &mut u64, commands: Vec<Command>) {
    let entries: Vec<Entry> = commands
        .into_iter()
        .map(|command| {
            *next_index += 1;
            Entry {
                log_id: LogId::new(raftkv_core::types::leader_id(1, 1), *next_index),
                payload: EntryPayload::Normal(command),
            }
        })
        .collect();
    store.state_machine.apply_committed(entries).await.unwrap();
}

fn compact(revision: Revision) -> Command {
    Command::Compact(CompactionRequest {
        revision,
        physical: false,
    })
}

/// Every key read at `rev` from `tree` through `index`: the range and each key alone.
fn reads_at(tree: &sled::Tree, index: &KeyIndex, rev: Revision) -> (Vec<KeyValue>, Vec<Option<KeyValue>>) {
    let (all, fallbacks) = mvcc::range_indexed_at(tree, index, b"", &[0], rev).unwrap();
    assert_eq!(fallbacks, 0, "a version the index names is missing at {rev}");
    let each = KEYS
        .iter()
        .map(|k| mvcc::get_indexed_at(tree, index, k.as_bytes(), rev).unwrap())
        .collect();
    (all, each)
}

/// Compact `store`'s tree to `target` in this thread, one unbounded chunk after another.
fn compact_fully(store: &Store, target: Revision) {
    compact_with_budget(store, target, usize::MAX);
}

/// Compact `store`'s tree to `target` in this thread, chunks of at most `budget`.
fn compact_with_budget(store: &Store, target: Revision, budget: usize) {
    let tree = store.shared.tree();
    let index = &store.shared.key_index;
    while compacted_to(&tree).unwrap() < target {
        let done = compacted_to(&tree).unwrap();
        let mut chunk = plan_chunk(&tree, index, done, target, budget).unwrap();
        let keys_done = std::mem::take(&mut chunk.keys_done);
        let gate = &mut WriteGate::default();
        chunk
            .commit_versions(&tree, gate)
            .unwrap()
            .commit_history(&tree, gate)
            .unwrap();
        index.prune(keys_done.iter().map(Vec::as_slice), target);
    }
}

/// Every history event of the tree: (revision, sub, key).
fn events(store: &Store) -> Vec<(Revision, u32, Vec<u8>)> {
    history_records::events_between(&store.shared.tree(), 0, Revision::MAX)
        .map(|e| e.unwrap())
        .map(|e| (e.revision, e.sub, e.key))
        .collect()
}

/// A store with every call applied and compacted up to `earlier` (if any); the
/// compactor thread held back, the compaction to `target` applied but not started.
async fn prepared(dir: &std::path::Path, earlier: Option<Revision>, target: Revision) -> Store {
    let mut store = Store::open(dir, StoreOptions::default()).unwrap();
    store.shared.limit_compaction(Some(0));
    let mut next_index = 0;
    for commands in calls() {
        apply(&mut store, &mut next_index, commands).await;
    }
    if let Some(earlier) = earlier {
        apply(&mut store, &mut next_index, vec![compact(earlier)]).await;
        compact_fully(&store, earlier);
    }
    apply(&mut store, &mut next_index, vec![compact(target)]).await;
    store
}

async fn stop_at_every_write(earlier: Option<Revision>, target: Revision) {
    // What an uninterrupted compaction leaves.
    let control_dir = tempfile::tempdir().unwrap();
    let control = prepared(control_dir.path(), earlier, target).await;
    let current = control.shared.revision();
    let expected: Vec<_> = (target..=current)
        .map(|r| reads_at(&control.shared.tree(), &control.shared.key_index, r))
        .collect();
    compact_fully(&control, target);
    let (events_after, versions_after) = (
        events(&control),
        control.shared.version_records(b"", &[0]).unwrap(),
    );
    drop(control);

    let mut stopped = 0;
    for k in 0.. {
        assert!(k < 1_000, "the chunk never completed");
        let dir = tempfile::tempdir().unwrap();
        let store = prepared(dir.path(), earlier, target).await;
        let tree = store.shared.tree();
        let index = &store.shared.key_index;
        let done = compacted_to(&tree).unwrap();
        let chunk = plan_chunk(&tree, index, done, target, usize::MAX).unwrap();
        stop_writes_after(Some(k));
        let gate = &mut WriteGate::default();
        let outcome = chunk
            .commit_versions(&tree, gate)
            .and_then(|versions| versions.commit_history(&tree, gate));
        stop_writes_after(None);
        if outcome.is_ok() {
            break;
        }
        stopped += 1;
        // What the tree says now, through the live index and one an open would build.
        let rebuilt = KeyIndex::build(&tree, Revision::MAX, compacted_to(&tree).unwrap()).unwrap();
        for (r, want) in (target..=current).zip(&expected) {
            assert_eq!(
                &reads_at(&tree, index, r),
                want,
                "stopped at write {k}: read at {r}"
            );
            assert_eq!(
                &reads_at(&tree, &rebuilt, r),
                want,
                "stopped at write {k}: rebuilt, at {r}"
            );
        }
        drop(tree);
        drop(store);
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        store
            .shared
            .physically_compacted()
            .wait_for_timeout(target as u64, std::time::Duration::from_secs(30))
            .await
            .unwrap();
        let tree = store.shared.tree();
        for (r, want) in (target..=current).zip(&expected) {
            assert_eq!(
                &reads_at(&tree, &store.shared.key_index, r),
                want,
                "stopped at write {k}, finished after a reopen: read at {r}"
            );
        }
        assert_eq!(events(&store), events_after, "stopped at write {k}");
        assert_eq!(store.shared.version_records(b"", &[0]).unwrap(), versions_after);
    }
    assert!(stopped >= 2, "only {stopped} stopping points");
}

#[tokio::test(flavor = "current_thread")]
async fn a_first_round_stopped_after_any_write_reads_the_same_and_finishes_clean() {
    stop_at_every_write(None, 8).await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_second_round_stopped_after_any_write_reads_the_same_and_finishes_clean() {
    stop_at_every_write(Some(8), 11).await;
}

/// A chunk that stops right after the drop of the last event of a record that starts
/// below its progress, the record's middle dropped by an earlier round: what is left of
/// the record (a delete) still goes. Without coming back to the record, whose last event
/// now lies below the progress, the delete would stay in the tree for good.
#[tokio::test(flavor = "current_thread")]
async fn a_record_cut_below_the_progress_is_still_finished() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    store.shared.limit_compaction(Some(0));
    let mut next_index = 0;
    apply(&mut store, &mut next_index, vec![put("m", "m1")]).await;
    // One chunk: m's delete, a twice, k.
    apply(
        &mut store,
        &mut next_index,
        vec![delete("m"), put("a", "a1"), put("a", "a2"), put("k", "k1")],
    )
    .await;
    let first = store.shared.revision() - 1; // a's second put
    apply(&mut store, &mut next_index, vec![compact(first)]).await;
    compact_fully(&store, first);
    apply(&mut store, &mut next_index, vec![put("k", "k2"), put("a", "a3")]).await;
    let target = store.shared.revision();
    apply(&mut store, &mut next_index, vec![compact(target)]).await;
    // a2 and k1 dropped: the budget of 2 stops right after k1, the chunk's last event.
    compact_with_budget(&store, target, 2);
    let tree = store.shared.tree();
    let left: Vec<_> = history_records::events_between(&tree, 0, target - 1)
        .map(|e| e.unwrap())
        .map(|e| (String::from_utf8(e.key).unwrap(), e.revision))
        .collect();
    assert_eq!(
        left,
        [("k".to_string(), target - 1)],
        "only k2 (a3 is at the target)"
    );
}

/// Whatever the budget, and so wherever chunks stop (also right after a drop that cut
/// the tail off the record a chunk stopped in), a finished compaction leaves below its
/// target only the versions still visible there: no delete, no superseded put.
#[tokio::test(flavor = "current_thread")]
async fn any_budget_leaves_only_visible_versions_below_the_target() {
    for budget in 1..=8 {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        store.shared.limit_compaction(Some(0));
        let mut next_index = 0;
        apply(&mut store, &mut next_index, vec![put("m", "m1"), put("n", "n1")]).await;
        // One chunk: a delete, then puts that later writes supersede.
        apply(
            &mut store,
            &mut next_index,
            vec![delete("m"), put("k", "k1"), put("j", "j1"), put("n", "n2")],
        )
        .await;
        apply(&mut store, &mut next_index, vec![put("k", "k2"), put("j", "j2")]).await;
        apply(&mut store, &mut next_index, vec![put("z", "z1")]).await;
        let target = store.shared.revision();
        apply(&mut store, &mut next_index, vec![compact(target)]).await;
        compact_with_budget(&store, target, budget);
        let tree = store.shared.tree();
        let index = &store.shared.key_index;
        let left: Vec<_> = history_records::events_between(&tree, 0, target - 1)
            .map(|e| e.unwrap())
            .map(|e| (String::from_utf8(e.key).unwrap(), e.revision, e.record.is_some()))
            .collect();
        for (key, revision, put) in &left {
            assert!(
                *put && index.visible_at(key.as_bytes(), target) == Some(*revision),
                "budget {budget}: {key}@{revision} left below {target}: {left:?}"
            );
        }
        assert_eq!(left.len(), 3, "budget {budget}: n2, k2, j2: {left:?}");
    }
}
