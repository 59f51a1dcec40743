//! Physical compaction: after `Compact(C)` is applied, the compactor deletes what no read
//! at or above C can see, in chunks of at most 1,000 deletions; reads at C and above are
//! unchanged, reads below C are refused; a snapshot build holds it back; a restart resumes
//! it; a reader racing it gets all of its data or `Compacted`, never part.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use openraft::RaftSnapshotBuilder;
use openraft::storage::RaftStateMachine;
use raftkv_core::kv::{DeleteRangeRequest, KeyValue, RangeRequest};
use raftkv_core::{Command, Error, RequestError};
use raftkv_storage::maintenance::compactor::MAX_DELETIONS_PER_BATCH;
use std::sync::atomic::Ordering;

mod support;

use support::{Log, delete, install_snapshot, open, put, read_all, read_key, wait_physical, wait_until};

fn is_compacted(result: Result<Vec<KeyValue>, Error>) -> bool {
    matches!(result, Err(Error::Request(RequestError::Compacted { .. })))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_versions_are_deleted_and_reads_at_and_above_the_compact_revision_are_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let mut log = Log::new();
    let mut commands = Vec::new();
    for round in 0..20 {
        for key in ["a", "b", "c"] {
            commands.push(put(key, format!("{key}{round}")));
        }
    }
    for key in ["x", "y"] {
        for round in 0..3 {
            commands.push(put(key, format!("{key}{round}")));
        }
        commands.push(delete(key));
    }
    commands.push(put("z", "z0"));
    log.apply(&mut store, commands).await;
    // The write at C in an apply of its own: the history record holding it then holds
    // nothing below C (compaction keeps that record whole).
    log.apply(&mut store, [put("z", "z1")]).await;
    let compact_at = store.shared.revision();
    log.apply(&mut store, [put("a", "after"), delete("z")]).await;
    log.apply(&mut store, [put("c", "after")]).await;
    let current = store.shared.revision();
    let before: Vec<_> = (1..=current).map(|r| read_all(&store, r).unwrap()).collect();
    let versions_before = store.shared.version_records(b"", &[0]).unwrap();
    // A delete writes no version record (its history event is the tombstone).
    assert_eq!(versions_before, 60 + 6 + 2 + 2);

    log.compact(&mut store, compact_at).await;
    wait_physical(&store, compact_at).await;

    // a: its newest version at C and the one above; b: one; c: as a; x, y: nothing (deleted
    // below C); z: its newest put at C (its delete above C is a history event).
    let shared = store.shared.clone();
    let versions = |key: &str| shared.version_records(key.as_bytes(), b"").unwrap();
    assert_eq!(["a", "b", "c", "x", "y", "z"].map(versions), [2, 1, 2, 0, 0, 1]);
    assert_eq!(store.shared.version_records(b"", &[0]).unwrap(), 6);
    assert_eq!(
        store.shared.history_records().unwrap(),
        3 + 1 + 3,
        "a, b and c's versions visible at C (a version lives in its history event), the \
         write at C (a watch may start there) and the writes above it"
    );
    for rev in compact_at..=current {
        assert_eq!(
            read_all(&store, rev).unwrap(),
            before[rev as usize - 1],
            "read at {rev}"
        );
    }
    let a = read_key(&store, "a", compact_at).remove(0);
    assert_eq!(
        (a.value.as_slice(), a.version, a.create_revision),
        (&b"a19"[..], 20, 2),
        "the kept version keeps its version count and creation revision"
    );
    for rev in 1..compact_at {
        assert!(is_compacted(read_all(&store, rev)), "read at {rev}");
    }
    assert!(is_compacted(
        store
            .reader
            .range(&RangeRequest::key("a").with_revision(compact_at - 1))
            .map(|r| r.kvs)
    ));
    let stats = store.shared.compaction_stats();
    assert_eq!(stats.versions_deleted.load(Ordering::Relaxed), 57 + 6 + 1);
    assert_eq!(
        stats.history_deleted.load(Ordering::Relaxed),
        2,
        "the deletes of x and y (the puts went as versions)"
    );

    // A second compaction only walks its own window; z is gone from disk entirely now.
    log.compact(&mut store, current).await;
    wait_physical(&store, current).await;
    assert_eq!(["a", "b", "c", "x", "y", "z"].map(versions), [1, 1, 1, 0, 0, 0]);
    assert_eq!(
        store.shared.history_records().unwrap(),
        3,
        "b's version, a's above the old C, and c's put at the new C"
    );
    assert_eq!(read_all(&store, current).unwrap(), before[current as usize - 1]);
    assert_eq!(store.shared.physically_compacted().get(), current as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_runs_in_chunks_of_at_most_a_thousand_deletions() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let mut log = Log::new();
    // 5,000 superseded versions of one key...
    log.apply(&mut store, (0..=5000).map(|i| put("hot", format!("v{i}"))))
        .await;
    // ... and 1,500 keys deleted by one request (one revision, 1,500 history events).
    log.apply(&mut store, (0..1500).map(|i| put(format!("k{i:04}"), "v")))
        .await;
    log.apply(
        &mut store,
        [Command::DeleteRange(DeleteRangeRequest::prefix("k"))],
    )
    .await;
    // Compacted up to one more write, so the tombstones are below C (and go).
    log.apply(&mut store, [put("last", "v")]).await;
    let current = store.shared.revision();
    let hot = read_key(&store, "hot", current);
    let batches_before = store.shared.compaction_stats().batches.load(Ordering::Relaxed);

    log.compact(&mut store, current).await;
    wait_physical(&store, current).await;

    let stats = store.shared.compaction_stats();
    let versions = stats.versions_deleted.load(Ordering::Relaxed);
    let history = stats.history_deleted.load(Ordering::Relaxed);
    // The superseded puts and the deleted keys' puts; their deletes are history events
    // only.
    assert_eq!(versions, 5000 + 1500);
    assert_eq!(history, 1500);
    let batches = stats.batches.load(Ordering::Relaxed) - batches_before;
    // History goes in records of many events: the versions alone need this many chunks.
    let at_least = versions.div_ceil(MAX_DELETIONS_PER_BATCH as u64);
    assert!(
        batches >= at_least,
        "{batches} chunks for {} deletions",
        versions + history
    );
    assert_eq!(
        store.shared.version_records(b"", &[0]).unwrap(),
        2,
        "hot and last"
    );
    assert_eq!(
        store.shared.history_records().unwrap(),
        2,
        "hot's version and last's put at C"
    );
    assert_eq!(read_key(&store, "hot", current), hot);
    assert_eq!(hot[0].version, 5001);
    assert_eq!(read_all(&store, current).unwrap().len(), 2);
}

/// A snapshot build pins the compact revision it captured: compaction proceeds up to it
/// and waits there (even past a newer compaction) until the build ends; then it goes on.
/// A receiver of the snapshot reads every revision from that compact revision to the
/// captured one as the leader did, and compacts its new tree from scratch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_build_holds_compaction_back_and_its_snapshot_reads_correctly() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut leader = open(dirs[0].path());
    let mut log = Log::new();
    log.apply(&mut leader, [put("gone", "g"), delete("gone")]).await;
    // Every later revision changes "k", so every revision reads differently.
    log.apply(&mut leader, (0..10).map(|i| put("k", format!("k{i}"))))
        .await;
    // Compacted logically only for now (the compactor is stopped).
    leader.shared.limit_compaction(Some(0));
    let compact_before = 5;
    log.compact(&mut leader, compact_before).await;
    log.apply(&mut leader, (10..15).map(|i| put("k", format!("k{i}"))))
        .await;

    // Built at once, before any physical compaction: its receiver has work to do.
    let unpinned_early = support::build_snapshot(&mut leader).await;
    let mut builder = leader.state_machine.get_snapshot_builder().await;
    let captured = leader.shared.revision();
    assert_eq!(builder.revision(), captured);
    assert_eq!(builder.compact_revision(), compact_before);
    // The pin is the captured compact revision, not the captured revision: the snapshot's
    // receiver serves every revision from `compact_before` to `captured`.
    assert_eq!(leader.shared.compaction_pin(), Some(compact_before));
    let expected: Vec<_> = (compact_before..=captured)
        .map(|r| read_all(&leader, r).unwrap())
        .collect();

    // Applied after the capture, and a compaction past the captured revision.
    log.apply(&mut leader, (15..20).map(|i| put("k", format!("k{i}"))))
        .await;
    let compact_after = captured + 3;
    log.compact(&mut leader, compact_after).await;
    leader.shared.limit_compaction(None);
    wait_until("the compactor to stop at the pin", || {
        leader.shared.compaction_stats().held_back.load(Ordering::Relaxed) > 0
    })
    .await;
    assert_eq!(
        leader.shared.physically_compacted().get(),
        compact_before as u64,
        "compacted up to the pin, and no further"
    );
    assert_eq!(leader.shared.version_records(b"gone", b"").unwrap(), 0);
    assert_eq!(
        leader.shared.version_records(b"k", b"").unwrap(),
        20 - 1,
        "only the version of k superseded at the pin is gone"
    );

    let snapshot = builder.build_snapshot().await.unwrap();
    assert_eq!(leader.shared.compaction_pin(), None, "released by the build");
    drop(builder);
    wait_physical(&leader, compact_after).await;
    assert_eq!(leader.shared.version_records(b"k", b"").unwrap(), 3);

    for (dir, snapshot) in dirs[1..].iter().zip([snapshot, unpinned_early]) {
        let mut follower = open(dir.path());
        install_snapshot(&mut follower, snapshot).await;
        assert_eq!(follower.shared.revision(), captured);
        assert_eq!(follower.shared.compact_revision(), compact_before);
        let check = |when: &str| {
            for (rev, want) in (compact_before..=captured).zip(&expected) {
                assert_eq!(&read_all(&follower, rev).unwrap(), want, "{when}: read at {rev}");
            }
            assert!(is_compacted(read_all(&follower, compact_before - 1)));
        };
        check("installed");
        // The follower's compactor starts from nothing on the new tree and catches up.
        wait_physical(&follower, compact_before).await;
        check("compacted on the follower");
        assert_eq!(follower.shared.version_records(b"gone", b"").unwrap(), 0);
        assert_eq!(follower.shared.version_records(b"k", b"").unwrap(), 15 - 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_resumes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let mut log = Log::new();
    // 3,000 keys written twice: 3,000 superseded versions, 6,000 history events; then
    // the write at C, in an apply of its own, whose history stays.
    for _ in 0..2 {
        log.apply(&mut store, (0..3000).map(|i| put(format!("k{i:04}"), "v")))
            .await;
    }
    log.apply(&mut store, [put("last", "v")]).await;
    let current = store.shared.revision();
    let expected = read_all(&store, current).unwrap();

    // Stop the compactor after two chunks, as a crash would.
    store.shared.limit_compaction(Some(2));
    log.compact(&mut store, current).await;
    wait_until("two chunks", || {
        store.shared.compaction_stats().batches.load(Ordering::Relaxed) == 2
    })
    .await;
    let reached = store.shared.physically_compacted().get();
    assert!(0 < reached && reached < current as u64, "midway: {reached}");
    let stats = store.shared.compaction_stats();
    let deleted_before = (
        stats.versions_deleted.load(Ordering::Relaxed),
        stats.history_deleted.load(Ordering::Relaxed),
    );
    assert_eq!(read_all(&store, current).unwrap(), expected, "readable midway");
    drop(store);

    let store = open(dir.path());
    assert!(
        store.shared.physically_compacted().get() >= reached,
        "progress was persisted"
    );
    assert_eq!(store.shared.compact_revision(), current);
    assert_eq!(read_all(&store, current).unwrap(), expected);
    wait_physical(&store, current).await;
    let stats = store.shared.compaction_stats();
    // The restarted compactor did only what was left.
    assert_eq!(
        stats.versions_deleted.load(Ordering::Relaxed) + deleted_before.0,
        3000
    );
    assert_eq!(
        stats.history_deleted.load(Ordering::Relaxed) + deleted_before.1,
        0
    );
    assert_eq!(store.shared.version_records(b"", &[0]).unwrap(), 3001);
    // A version lives in its history event.
    assert_eq!(store.shared.history_records().unwrap(), 3001);
    assert_eq!(read_all(&store, current).unwrap(), expected);
}

/// Readers scanning an old revision while compaction deletes past it: every answer is
/// the whole answer or `Compacted`, never a partial one. The interleaving is up to the
/// scheduler, so this test may miss a bug; `src/mvcc/reader.rs` has a deterministic test of the
/// re-check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_racing_compaction_get_everything_or_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let mut log = Log::new();
    for round in 0..4 {
        // Written from the last key down: the compactor (which walks the history by
        // revision) deletes from the end of the key range while a scan (in key order)
        // walks towards it.
        log.apply(
            &mut store,
            (0..3000)
                .rev()
                .map(|i| put(format!("k{i:04}"), format!("old{round}"))),
        )
        .await;
        let old = store.shared.revision();
        log.apply(
            &mut store,
            (0..3000)
                .rev()
                .map(|i| put(format!("k{i:04}"), format!("new{round}"))),
        )
        .await;
        let expected = read_all(&store, old).unwrap();
        assert_eq!(expected.len(), 3000);
        // Compacting to the newest revision makes every "old" version deletable.
        let target = store.shared.revision();

        let whole_answers = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (reader, shared) = (store.reader.clone(), store.shared.clone());
                let (expected, whole_answers) = (expected.clone(), whole_answers.clone());
                std::thread::spawn(move || {
                    let mut refused = 0;
                    let request = RangeRequest::prefix("k").with_revision(old);
                    loop {
                        let finished = shared.physically_compacted().get() >= target as u64;
                        match reader.range(&request) {
                            Ok(response) => {
                                assert_eq!(response.kvs, expected, "a partial answer");
                                whole_answers.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(Error::Request(RequestError::Compacted { .. })) => refused += 1,
                            Err(e) => panic!("{e}"),
                        }
                        if finished {
                            return refused;
                        }
                    }
                })
            })
            .collect();
        // Compact while scans are in flight.
        wait_until("the readers to be scanning", || {
            whole_answers.load(Ordering::Relaxed) >= 4
        })
        .await;
        log.compact(&mut store, target).await;
        wait_physical(&store, target).await;
        for handle in readers {
            let refused = handle.join().unwrap();
            assert!(refused > 0, "the last read, after compaction, is refused");
        }
        assert!(is_compacted(read_all(&store, old)));
    }
}
