//! openraft's own storage conformance suite, unmodified, against the sled store.

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use raftkv_core::types::TypeConfig;
use raftkv_storage::{LogStore, StateMachine, Store, StoreOptions};

struct SledStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for SledStoreBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().map_err(|e| {
            StorageError::from_io_error(openraft::ErrorSubject::Store, openraft::ErrorVerb::Write, e)
        })?;
        let options = StoreOptions {
            log_cache_bytes: 4 << 20,
            state_cache_bytes: 4 << 20,
            ..StoreOptions::default()
        };
        let store = Store::open(dir.path(), options).map_err(|e| {
            StorageError::from_io_error(
                openraft::ErrorSubject::Store,
                openraft::ErrorVerb::Write,
                std::io::Error::other(e.to_string()),
            )
        })?;
        Ok((dir, store.log, store.state_machine))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes() {
    Suite::test_all(SledStoreBuilder).await.unwrap();
}
