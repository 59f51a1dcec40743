//! The log store after a restart: truncate, purge, vote, committed id and `get_log_state`
//! read back what was written, and `save_committed` drives the commit watermark.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use openraft::storage::{RaftLogReaderExt, RaftLogStorage, RaftLogStorageExt};
use openraft::{EntryPayload, LogId, RaftLogReader, Vote};
use raftkv_core::types::Entry;
use raftkv_storage::{Store, StoreOptions};

fn blank(term: u64, index: u64) -> Entry {
    Entry {
        log_id: LogId::new(raftkv_core::types::leader_id(term, 1), index),
        payload: EntryPayload::Blank,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_state_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        store
            .log
            .blocking_append((1..=30).map(|i| blank(1, i)))
            .await
            .unwrap();
        store.log.save_vote(&Vote::new_committed(2, 1)).await.unwrap();
        // Conflict: entries from 21 on are replaced by term-2 entries.
        store
            .log
            .truncate_after(Some(LogId::new(raftkv_core::types::leader_id(1, 1), 20)))
            .await
            .unwrap();
        store
            .log
            .blocking_append((21..=25).map(|i| blank(2, i)))
            .await
            .unwrap();
        let purged = store.log.get_log_id(10).await.unwrap();
        store.log.purge(purged).await.unwrap();
        let committed = store.log.get_log_id(24).await.unwrap();
        store.log.save_committed(Some(committed)).await.unwrap();
        assert_eq!(
            store.log.committed().get(),
            24,
            "save_committed advances the watermark"
        );
        store.log.blocking_append([blank(2, 26)]).await.unwrap();
    }
    let mut store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let state = store.log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id.unwrap().index, 10);
    let last = state.last_log_id.unwrap();
    assert_eq!((last.index, last.leader_id.term), (26, 2));
    let entries = store.log.try_get_log_entries(..).await.unwrap();
    assert_eq!(entries.first().unwrap().log_id.index, 11);
    assert!(
        entries
            .iter()
            .filter(|e| e.log_id.index >= 21)
            .all(|e| e.log_id.leader_id.term == 2)
    );
    assert_eq!(entries.len(), 16);
    assert_eq!(
        store.log.read_vote().await.unwrap(),
        Some(Vote::new_committed(2, 1))
    );
    assert_eq!(store.log.read_committed().await.unwrap().unwrap().index, 24);
    assert_eq!(
        store.log.committed().get(),
        24,
        "the watermark starts from the stored commit"
    );
}
