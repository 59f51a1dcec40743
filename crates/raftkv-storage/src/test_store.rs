//! [`TestStore`]: a store in a temporary directory that unit tests apply commands to
//! directly, without Raft (one log index per command, in order).

use raftkv_core::kv::PutRequest;
use raftkv_core::{Command, Response};

use crate::apply::lease_tests::entries;
use crate::{Store, StoreOptions};

pub(crate) struct TestStore {
    _dir: tempfile::TempDir,
    pub(crate) store: Store,
    /// The log index of the last command applied.
    pub(crate) index: u64,
}

impl TestStore {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        Self {
            _dir: dir,
            store,
            index: 0,
        }
    }

    /// Apply `commands` in one call of the state machine; their answers, in order.
    pub(crate) async fn apply(&mut self, commands: Vec<Command>) -> Vec<Response> {
        let first = self.index + 1;
        self.index += commands.len() as u64;
        self.store
            .state_machine
            .apply_committed(entries(first, commands))
            .await
            .unwrap()
    }

    pub(crate) async fn put(&mut self, key: &str, value: &str) {
        self.apply(vec![Command::Put(PutRequest::new(key, value))]).await;
    }
}
