//! Fixtures of the storage unit tests: [`TestStore`], a store in a temporary directory
//! that tests apply commands to directly, without Raft (one log index per command, in
//! order), and [`temporary_tree`], a bare tree for tests of the layout.

use raftkv_core::kv::PutRequest;
use raftkv_core::{Command, Response};

use crate::apply::lease_tests::entries;
use crate::{Store, StoreOptions};

/// A tree of a temporary sled database (removed when the last handle drops): for tests of
/// the tree layout that need no store around it.
pub(crate) fn temporary_tree() -> sled::Tree {
    let db = sled::Config::new().temporary(true).open().unwrap();
    db.open_tree("t").unwrap()
}

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
