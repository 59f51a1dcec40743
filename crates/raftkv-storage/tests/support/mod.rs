//! Helpers the storage behaviour tests share: a store applying commands as log entries,
//! reads at a revision, and bounded waits.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use openraft::{EntryPayload, LogId};
use raftkv_core::kv::{CompactionRequest, DeleteRangeRequest, KeyValue, PutRequest, RangeRequest, Revision};
use raftkv_core::types::Entry;
use raftkv_core::{Command, Error};
use raftkv_storage::{Store, StoreOptions};

pub const DEADLINE: Duration = Duration::from_secs(60);

pub fn open(dir: &std::path::Path) -> Store {
    Store::open(dir, StoreOptions::default()).unwrap()
}

/// Applies commands as log entries with consecutive indexes.
pub struct Log {
    next: u64,
}

impl Log {
    pub fn new() -> Self {
        Self { next: 1 }
    }

    pub fn entries(&mut self, commands: impl IntoIterator<Item = Command>) -> Vec<Entry> {
        commands
            .into_iter()
            .map(|command| {
                let index = self.next;
                self.next += 1;
                Entry {
                    log_id: LogId::new(raftkv_core::types::leader_id(1, 1), index),
                    payload: EntryPayload::Normal(command),
                }
            })
            .collect()
    }

    pub async fn apply(&mut self, store: &mut Store, commands: impl IntoIterator<Item = Command>) {
        let entries = self.entries(commands);
        // At most 1,000 entries per apply call, as openraft would hand them over.
        for chunk in entries.chunks(1000) {
            store.state_machine.apply_committed(chunk.to_vec()).await.unwrap();
        }
    }

    pub async fn compact(&mut self, store: &mut Store, revision: Revision) {
        self.apply(
            store,
            [Command::Compact(CompactionRequest {
                revision,
                physical: false,
            })],
        )
        .await;
        assert_eq!(store.shared.compact_revision(), revision, "compaction applied");
    }
}

pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Command {
    Command::Put(PutRequest::new(key, value))
}

pub fn delete(key: &str) -> Command {
    Command::DeleteRange(DeleteRangeRequest::key(key))
}

/// Every key as a read at `rev` sees it.
pub fn read_all(store: &Store, rev: Revision) -> Result<Vec<KeyValue>, Error> {
    Ok(store
        .reader
        .range(&RangeRequest::prefix("").with_revision(rev))?
        .kvs)
}

pub fn read_key(store: &Store, key: &str, rev: Revision) -> Vec<KeyValue> {
    store
        .reader
        .range(&RangeRequest::key(key).with_revision(rev))
        .unwrap()
        .kvs
}

pub async fn wait_physical(store: &Store, rev: Revision) {
    store
        .shared
        .physically_compacted()
        .wait_for_timeout(rev as u64, DEADLINE)
        .await
        .expect("physical compaction reached the revision");
}

/// Poll `condition` until it holds; fails at the deadline.
pub async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Build a snapshot of `store`'s state now, as openraft would ask for one.
pub async fn build_snapshot(store: &mut Store) -> raftkv_core::types::Snapshot {
    use openraft::RaftSnapshotBuilder;
    use openraft::storage::RaftStateMachine;
    store
        .state_machine
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap()
}

/// Copy `snapshot` into a file `follower` receives, as the network would, and install it.
pub async fn install_snapshot(follower: &mut Store, snapshot: raftkv_core::types::Snapshot) {
    use openraft::storage::RaftStateMachine;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut incoming = follower.state_machine.begin_receiving_snapshot().await.unwrap();
    let mut data = Vec::new();
    let mut source = snapshot.snapshot;
    source.read_to_end(&mut data).await.unwrap();
    incoming.write_all(&data).await.unwrap();
    incoming.flush().await.unwrap();
    follower
        .state_machine
        .install_snapshot(&snapshot.meta, incoming)
        .await
        .unwrap();
}
