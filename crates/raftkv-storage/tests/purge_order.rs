//! Before the log is purged past an index, the state machine up to that index is synced:
//! otherwise a crash after the purge would lose data that exists nowhere else.
//!
//! Shown two ways: a purge performs a real state-machine sync covering the purged index
//! before it returns (sync counters); and when that sync fails (test hook), the purge fails
//! and deletes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;

use openraft::storage::{RaftLogReaderExt, RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, LogId, RaftLogReader};
use raftkv_core::kv::{PutRequest, RangeRequest};
use raftkv_core::types::Entry;
use raftkv_storage::{Store, StoreOptions};

fn entry(i: u64) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), i),
        payload: EntryPayload::Normal(raftkv_core::Command::Put(PutRequest::new(
            format!("k{i:04}"),
            "v",
        ))),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_syncs_the_state_machine_first_and_deletes_nothing_if_it_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    store.log.blocking_append((1..=100).map(entry)).await.unwrap();
    let entries = store.log.try_get_log_entries(1..=100).await.unwrap();
    store.state_machine.apply(entries).await.unwrap();
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
