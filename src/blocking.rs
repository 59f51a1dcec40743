//! Blocking work (walks of the whole store: hashes, exports, defragmentation; reads of a
//! key range) run off the async workers, with a failed task reported as an internal
//! error. A worker held for long holds up everything queued on it, heartbeats included.

use raftkv_core::{Error, Result};

/// Run blocking work (a walk of many keys) off the async workers; `what` names it
/// if the task itself fails.
pub(crate) async fn off_workers<T: Send + 'static>(
    what: &str,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Internal(format!("{what} task: {e}")))?
}
