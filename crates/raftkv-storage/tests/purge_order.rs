//! Before the log is purged past an index, the state machine up to that index is synced:
//! otherwise a crash after the purge would lose data that exists nowhere else.
//!
//! Shown two ways: a purge performs a real state-machine sync covering the purged index
//! before it returns (sync counters); and when that sync fails (test hook), the purge fails
//! and deletes nothing. Also: the entries themselves are deleted behind the purge, on a
//! thread of their own, and never read once purged.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use openraft::storage::{RaftLogReaderExt, RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{EntryPayload, LogId, RaftLogReader};
use raftkv_core::kv::{PutRequest, RangeRequest};
use raftkv_core::types::Entry;
use raftkv_storage::{Store, StoreOptions};

fn entry(i: u64) -> Entry {
    Entry {
        log_id: LogId::new(raftkv_core::types::leader_id(1, 1), i),
        payload: EntryPayload::Normal(raftkv_core::Command::Put(PutRequest::new(
            format!("k{i:04}"),
            "v",
        ))),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_syncs_the_state_machine_first_and_deletes_nothing_if_it_cannot() {
    let dir = tempfile::tempdir().unwrap();
    // Without the background sync: this test shows what the purge itself syncs.
    let options = StoreOptions {
        state_sync_interval: None,
        ..StoreOptions::default()
    };
    let mut store = Store::open(dir.path(), options).unwrap();
    store.log.blocking_append((1..=100).map(entry)).await.unwrap();
    let entries = store.log.try_get_log_entries(1..=100).await.unwrap();
    store.state_machine.apply_committed(entries).await.unwrap();
    let syncs_before = store.shared.sync_stats().syncs.load(Ordering::Relaxed);
    assert!(
        store.shared.synced_applied() < 60,
        "apply alone does not sync the state machine"
    );

    // The sync fails: the purge must fail and leave every entry in place.
    store.shared.inject_sync_failure(true);
    let upto = store.log.get_log_id(60).await.unwrap();
    assert!(store.log.purge(upto).await.is_err());
    assert_eq!(store.log.try_get_log_entries(1..=100).await.unwrap().len(), 100);

    // The sync works: the state machine is durable past the purge point before deletion.
    store.shared.inject_sync_failure(false);
    store.log.purge(upto).await.unwrap();
    assert!(store.shared.sync_stats().syncs.load(Ordering::Relaxed) > syncs_before);
    assert!(store.shared.synced_applied() >= 60);
    let state = store.log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(upto));
    assert_eq!(store.log.try_get_log_entries(1..=100).await.unwrap().len(), 40);

    // Reopened, the state machine still holds what the purged entries wrote.
    drop(store);
    let mut store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let (applied, _) = store.state_machine.applied_state().await.unwrap();
    assert!(applied.unwrap().index >= 60);
    assert_eq!(store.reader.range(&RangeRequest::prefix("k")).unwrap().count, 100);
}

/// Wait (at most 10 s) until `store` holds `n` entries on disk.
async fn wait_for_entries_on_disk(store: &Store, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.log.entries_on_disk() != n {
        assert!(
            Instant::now() < deadline,
            "{} entries on disk, not {n}",
            store.log.entries_on_disk()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_entries_are_never_read_and_deleted_behind_the_purge() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    store.log.blocking_append((1..=1000).map(entry)).await.unwrap();
    let entries = store.log.try_get_log_entries(1..=1000).await.unwrap();
    store.state_machine.apply_committed(entries).await.unwrap();

    let upto = store.log.get_log_id(900).await.unwrap();
    store.log.purge(upto).await.unwrap();
    // Unreadable at once, whatever the purger has deleted yet.
    let left = store.log.try_get_log_entries(..).await.unwrap();
    assert_eq!(left.first().map(|e| e.log_id.index), Some(901));
    assert_eq!(left.len(), 100);
    wait_for_entries_on_disk(&store, 100).await;

    // A purge past the last entry (as after a snapshot install): the log state says so
    // even while the entries below are still being deleted.
    let beyond = LogId::new(raftkv_core::types::leader_id(2, 1), 1500);
    store.log.purge(beyond).await.unwrap();
    let state = store.log.get_log_state().await.unwrap();
    assert_eq!(
        (state.last_purged_log_id, state.last_log_id),
        (Some(beyond), Some(beyond))
    );
    assert!(store.log.try_get_log_entries(..).await.unwrap().is_empty());
    wait_for_entries_on_disk(&store, 0).await;

    // Reopened: the same state, appends go on after the purged id.
    drop(store);
    let mut store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let state = store.log.get_log_state().await.unwrap();
    assert_eq!(
        (state.last_purged_log_id, state.last_log_id),
        (Some(beyond), Some(beyond))
    );
    let next = Entry {
        log_id: LogId::new(raftkv_core::types::leader_id(2, 1), 1501),
        ..entry(1501)
    };
    store.log.blocking_append([next]).await.unwrap();
    assert_eq!(store.log.try_get_log_entries(..).await.unwrap().len(), 1);
}
