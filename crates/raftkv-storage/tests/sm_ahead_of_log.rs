//! The state machine durable ahead of a log that lost its tail.
//!
//! With openraft 0.10 a leader commits an entry once a quorum of followers has it, maybe
//! before its own log sync finished, and applies it; a later state-machine sync (before a
//! purge, before physical compaction) can then make the applied state durable while the
//! leader's copy of the newest entries is not. A crash there leaves a state machine whose
//! applied index is above the log's last entry. This test builds that data directory and
//! shows what openraft does with it at startup (`StorageHelper::get_initial_state`, the
//! call `Raft::new` makes): it purges the log up to the applied id, so the log and the
//! state machine agree again, and the store takes the next entries from there; nothing
//! applied is lost or applied twice.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, StorageHelper};
use openraft::{EntryPayload, LogId};
use raftkv_core::Command;
use raftkv_core::kv::{PutRequest, RangeRequest};
use raftkv_core::types::{Entry, TypeConfig};
use raftkv_storage::{Store, StoreOptions};

fn put(index: u64) -> Entry {
    Entry {
        log_id: LogId::new(raftkv_core::types::leader_id(1, 1), index),
        payload: EntryPayload::Normal(Command::Put(PutRequest::new(
            format!("k{index}"),
            format!("v{index}"),
        ))),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_purges_the_log_up_to_a_state_machine_that_is_ahead() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        store.log.blocking_append((1..=10).map(put)).await.unwrap();
        store
            .state_machine
            .apply_committed((1..=10).map(put))
            .await
            .unwrap();
        assert_eq!(store.shared.sync_durable().unwrap(), 10);
        // The log loses its tail (entries 7-10 were never synced on this member).
        store.log.truncate_after(Some(put(6).log_id)).await.unwrap();
        store.log.blocking_append(std::iter::empty()).await.unwrap();
    }
    let mut store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(store.shared.applied().get(), 10);
    let state = StorageHelper::<TypeConfig, _, _>::new(&mut store.log, &mut store.state_machine)
        .with_id(1)
        .get_initial_state()
        .await
        .expect("openraft starts on a state machine ahead of the log");
    assert_eq!(state.log_ids.last().map(|l| l.index), Some(10));
    let log_state = store.log.get_log_state().await.unwrap();
    assert_eq!(log_state.last_purged_log_id.map(|l| l.index), Some(10));
    // Every applied write is there once; the next entry follows on.
    let all = store.reader.range(&RangeRequest::prefix("k")).unwrap();
    assert_eq!(all.kvs.len(), 10);
    assert_eq!(store.shared.revision(), 11);
    store.log.blocking_append([put(11)]).await.unwrap();
    store.state_machine.apply_committed([put(11)]).await.unwrap();
    assert_eq!(store.shared.revision(), 12);
}
