//! Defragmentation: the state machine is copied into a fresh sled database and switched
//! to; the file shrinks, every read (at every revision still readable) and the watch
//! history are unchanged, writes applied meanwhile land, a restart opens the new
//! generation, and the compactor defragments by itself past `AutoDefrag`'s ratio.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use raftkv_core::kv::Revision;
use raftkv_storage::{AutoDefrag, DefragReport, StateShared, Store, StoreOptions};
use support::{Log, delete, put, read_all, wait_physical, wait_until};

const KEYS: usize = 200;

fn open_with(dir: &std::path::Path, auto_defrag: AutoDefrag) -> Store {
    Store::open(
        dir,
        StoreOptions {
            auto_defrag,
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

/// `rounds` rounds of churn: every key rewritten with a 1 KiB value, every tenth deleted.
async fn churn(store: &mut Store, log: &mut Log, rounds: usize) {
    for round in 0..rounds {
        let value = vec![(round % 251) as u8; 1024];
        let puts = (0..KEYS).map(|k| put(format!("key/{k:04}"), value.clone()));
        log.apply(store, puts).await;
        let deletes = (0..KEYS).step_by(10).map(|k| delete(&format!("key/{k:04}")));
        log.apply(store, deletes).await;
    }
}

async fn defragment(shared: &Arc<StateShared>) -> DefragReport {
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || shared.defragment())
        .await
        .unwrap()
        .unwrap()
}

/// Revisions to read at: the newest, the compact revision and halfway.
fn revisions(store: &Store) -> [Revision; 3] {
    let newest = store.shared.revision();
    let compact = store.shared.compact_revision();
    [newest, compact, (newest + compact) / 2]
}

/// Every key as reads at `revisions` see it.
fn reads_at(store: &Store, revisions: [Revision; 3]) -> Vec<String> {
    revisions
        .iter()
        .map(|&rev| format!("{rev}: {:?}", read_all(store, rev).unwrap()))
        .collect()
}

/// What readers can see: [`reads_at`] [`revisions`], and the record counts (versions and
/// watch history).
fn visible(store: &Store) -> Vec<String> {
    let mut seen = reads_at(store, revisions(store));
    seen.push(format!(
        "versions {} history {}",
        store.shared.version_records(b"", &[0]).unwrap(),
        store.shared.history_records().unwrap()
    ));
    seen
}

fn generation_dirs(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n == "state" || n.starts_with("state.") && n != "state.current")
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defragment_shrinks_the_file_and_changes_nothing_a_reader_sees() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open_with(dir.path(), AutoDefrag::OFF);
    let mut log = Log::new();
    churn(&mut store, &mut log, 60).await;
    let compact_to: Revision = store.shared.revision() - 2 * KEYS as Revision;
    log.compact(&mut store, compact_to).await;
    wait_physical(&store, compact_to).await;
    let read_revisions = revisions(&store);
    let before = reads_at(&store, read_revisions);
    let (generation, bytes_before) = store.shared.state_file();
    assert_eq!(generation, 0);

    // Writes applied while the copy runs land in the new generation (copied, or caught
    // up before the switch).
    let copying = {
        let shared = store.shared.clone();
        tokio::task::spawn_blocking(move || shared.defragment())
    };
    log.apply(&mut store, (0..50).map(|k| put(format!("during/{k}"), "x")))
        .await;
    let report = copying.await.unwrap().unwrap();
    assert_eq!(report.generation, 1);
    // The concurrent applies may grow the file before the copy measures it.
    assert!(
        report.before_bytes >= bytes_before,
        "{} < {bytes_before}",
        report.before_bytes
    );
    assert!(
        report.after_bytes * 2 < report.before_bytes,
        "the copy holds only the live records: {report:?}"
    );
    let during = read_all(&store, store.shared.revision()).unwrap();
    assert_eq!(
        during.iter().filter(|kv| kv.key.starts_with(b"during/")).count(),
        50
    );
    assert_eq!(store.shared.defrag_stats().runs.load(Ordering::Relaxed), 1);

    // Reads at the revisions read before see what they saw, and the old files are gone.
    assert_eq!(reads_at(&store, read_revisions), before);
    assert_eq!(generation_dirs(dir.path()), ["state.1"]);

    // A restart opens the new generation, with everything in it.
    let after = visible(&store);
    drop(store);
    let store = open_with(dir.path(), AutoDefrag::OFF);
    assert_eq!(store.shared.state_file().0, 1);
    assert_eq!(visible(&store), after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_defragment_and_a_restart_keep_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open_with(dir.path(), AutoDefrag::OFF);
    let mut log = Log::new();
    churn(&mut store, &mut log, 5).await;
    let first = defragment(&store.shared).await;
    churn(&mut store, &mut log, 5).await;
    let expected = visible(&store);
    let second = defragment(&store.shared).await;
    assert_eq!((first.generation, second.generation), (1, 2));
    assert_eq!(visible(&store), expected);
    assert_eq!(generation_dirs(dir.path()), ["state.2"]);
    drop(store);
    let store = open_with(dir.path(), AutoDefrag::OFF);
    assert_eq!(store.shared.state_file().0, 2);
    assert_eq!(visible(&store), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compactor_defragments_by_itself_once_the_file_outgrows_its_ratio() {
    let dir = tempfile::tempdir().unwrap();
    let auto = AutoDefrag {
        ratio: 2,
        floor_bytes: 1 << 20,
    };
    let mut store = open_with(dir.path(), auto);
    let mut log = Log::new();
    // Churn with compaction after each burst, as a running cluster does, until the file
    // outgrows twice its size at open and the compactor rewrites it (bounded).
    for _ in 0..40 {
        churn(&mut store, &mut log, 10).await;
        let to = store.shared.revision() - KEYS as Revision;
        log.compact(&mut store, to).await;
        wait_physical(&store, to).await;
        if store.shared.defrag_stats().automatic.load(Ordering::Relaxed) > 0 {
            break;
        }
    }
    let stats = store.shared.defrag_stats();
    wait_until("an automatic defragmentation", || {
        stats.automatic.load(Ordering::Relaxed) > 0
    })
    .await;
    let (before, after) = (
        stats.last_before_bytes.load(Ordering::Relaxed),
        stats.last_after_bytes.load(Ordering::Relaxed),
    );
    // It ran because the file passed the ratio. Whether the copy comes out smaller is
    // `defragment_shrinks_the_file...`'s to show: at this size sled's own rewrites while
    // copying (~6 MB for ~400 KiB of values) are as large as the churned file it
    // replaces (~5.8 MB): the copy came out 1.08-1.18x larger in 4 of 10 runs on
    // 2026-12-07, before and after the key index kept every revision.
    assert!(
        before > auto.ratio * auto.floor_bytes,
        "started at {before} bytes, below {} x {}",
        auto.ratio,
        auto.floor_bytes
    );
    assert!(after > 0, "rewritten from {before} to {after} bytes");
    assert!(store.shared.state_file().0 >= 1);
    let expected = visible(&store);
    drop(store);
    let store = open_with(dir.path(), AutoDefrag::OFF);
    assert_eq!(visible(&store), expected);
}
