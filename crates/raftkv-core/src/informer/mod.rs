//! List-Watch, as Kubernetes programs use it: a local cache of one prefix that lists it,
//! watches from the list's revision, and calls add / update / delete handlers as it
//! changes (client-go's reflector and informer are the model).
//!
//! The source of lists and watches is a trait ([`ListWatch`]), so one informer serves
//! both the embedded API (`raftkv::Node`) and the gRPC client (`raftkv-client`); each
//! implements it in a few lines.
//!
//! How it stays right:
//! - **List, then watch from the list's revision + 1**: no change is missed between the
//!   two, none is seen twice. A large prefix is listed in pages of [`LIST_PAGE`] keys,
//!   every page after the first read at the first page's revision, so the list is one
//!   consistent snapshot (client-go pages the same way).
//! - **Resume, or re-list**: when the watch ends (the server or the connection went),
//!   the informer watches again from the next revision it has not seen. When that
//!   revision was compacted away (the watch answers canceled with a compact revision),
//!   changes are lost from the history, so it lists again and reports the difference
//!   between the old cache and the new list as adds, updates and deletes (what
//!   client-go's `Replace` does). A failed list or watch is retried after a backoff
//!   (100 ms doubling to 5 s). A source that is closed for good (a node that was shut
//!   down) stops the informer: it keeps its cache, drops the source (so the node's
//!   data directory is not held by it), and waits on it return at once.
//! - **Revisions only go forward**: events at or below the cache's revision (a resumed
//!   watch repeating a revision) change nothing; handlers see each change once, in
//!   revision order, from one task.
//! - **Handlers run outside the cache's lock**, after the cache changed, so they may read
//!   the informer; they should return quickly (they hold up the next event).
//!
//! Left out: resync (client-go's periodic replay of the whole cache to the handlers) and
//! shared informers (one cache for several handler sets); both are easy on top.

mod cache;
mod reflector;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use cache::Change;

use crate::kv::{KeyValue, RangeRequest, RangeResponse, Revision};
use crate::watch::{WatchRequest, WatchResponse};

/// Keys per list page (client-go's default page size).
pub const LIST_PAGE: i64 = 500;

/// Why a list or watch of an informer's source failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SourceError {
    /// The revision asked for is no longer in the history: the informer lists again.
    #[error("required revision has been compacted")]
    Compacted,
    /// Anything else (logged; the informer retries after a backoff).
    #[error("{0}")]
    Failed(String),
    /// The source will never answer again (the embedded node was shut down): the
    /// informer stops, keeps its cache as it was, and lets go of the source.
    #[error("source closed: {0}")]
    Closed(String),
}

/// Where an informer lists and watches: the embedded node or a client.
pub trait ListWatch: Send + Sync + 'static {
    /// The watch stream it opens.
    type Watch: WatchEvents;

    /// One linearizable range read (a page of the list).
    fn range(&self, request: RangeRequest)
    -> impl Future<Output = Result<RangeResponse, SourceError>> + Send;

    /// Open a watch.
    fn watch(&self, request: WatchRequest) -> impl Future<Output = Result<Self::Watch, SourceError>> + Send;
}

/// An open watch, as an informer reads it.
pub trait WatchEvents: Send + 'static {
    /// The next response; `None` or an error once the watch ended (a canceled response
    /// with a compact revision, or [`SourceError::Compacted`], when its next revision
    /// was compacted away).
    fn next(&mut self) -> impl Future<Output = Option<Result<WatchResponse, SourceError>>> + Send;

    /// Ask for a progress notification (so the cache learns that nothing changed up to
    /// the current revision).
    fn request_progress(&mut self);
}

/// What an informer calls as its cache changes; every method defaults to nothing.
pub trait InformerHandler: Send + Sync + 'static {
    /// A key appeared (also each key of the first list).
    fn on_add(&self, _kv: &KeyValue) {}
    /// A key changed.
    fn on_update(&self, _old: &KeyValue, _new: &KeyValue) {}
    /// A key went away; its last known value.
    fn on_delete(&self, _last: &KeyValue) {}
}

/// A handler that does nothing: a cache to read, no callbacks.
impl InformerHandler for () {}

/// A shared handler (keep a clone to read what it gathered).
impl<H: InformerHandler> InformerHandler for Arc<H> {
    fn on_add(&self, kv: &KeyValue) {
        (**self).on_add(kv);
    }
    fn on_update(&self, old: &KeyValue, new: &KeyValue) {
        (**self).on_update(old, new);
    }
    fn on_delete(&self, last: &KeyValue) {
        (**self).on_delete(last);
    }
}

/// Why a wait on an informer failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum InformerError {
    /// The cache did not reach the awaited revision in time.
    #[error("informer at revision {reached}, not {wanted}, after {after:?}")]
    Timeout {
        /// The awaited revision (1 for "the first list").
        wanted: Revision,
        /// Where the cache was.
        reached: Revision,
        /// How long it waited.
        after: Duration,
    },
    /// The informer stopped (its source closed for good) below the awaited revision.
    #[error("informer stopped at revision {reached}, not {wanted}: {reason}")]
    Stopped {
        /// The awaited revision.
        wanted: Revision,
        /// Where the cache stays.
        reached: Revision,
        /// Why its source closed.
        reason: String,
    },
}

/// How an informer got where it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InformerStats {
    /// Complete lists (the first one and every re-list).
    pub lists: u64,
    /// Re-lists because the watch's next revision was compacted away.
    pub relists_after_compaction: u64,
    /// Watches opened (the first after each list, and every resume).
    pub watches: u64,
}

/// What the informer task and its handle share.
struct Shared {
    cache: parking_lot::RwLock<cache::Cache>,
    /// The cache's revision, to wait on.
    revision: tokio::sync::watch::Sender<Revision>,
    /// Wakes the task to ask its watch for a progress notification.
    progress_wanted: tokio::sync::Notify,
    lists: AtomicU64,
    relists_after_compaction: AtomicU64,
    watches: AtomicU64,
    /// Why the informer stopped, once its source closed for good.
    stopped: parking_lot::Mutex<Option<String>>,
}

/// A running List-Watch cache of one prefix; see the module docs. Dropping it stops
/// the task (and its watch).
pub struct Informer {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Informer {
    /// Start an informer of `prefix` on `source`, calling `handler` as the cache
    /// changes. Must be called within a Tokio runtime (the informer is a task on it).
    pub fn spawn<S: ListWatch, H: InformerHandler>(
        source: S,
        prefix: impl Into<Vec<u8>>,
        handler: H,
    ) -> Self {
        let shared = Arc::new(Shared {
            cache: parking_lot::RwLock::new(cache::Cache::default()),
            revision: tokio::sync::watch::Sender::new(0),
            progress_wanted: tokio::sync::Notify::new(),
            lists: AtomicU64::new(0),
            relists_after_compaction: AtomicU64::new(0),
            watches: AtomicU64::new(0),
            stopped: parking_lot::Mutex::new(None),
        });
        let reflector = reflector::Reflector {
            source,
            prefix: prefix.into(),
            handler,
            shared: shared.clone(),
        };
        let task = tokio::spawn(reflector.run());
        Self { shared, task }
    }

    /// The value of `key` in the cache.
    pub fn get(&self, key: &[u8]) -> Option<KeyValue> {
        self.shared.cache.read().map.get(key).cloned()
    }

    /// The whole cache: key -> key-value.
    pub fn snapshot(&self) -> BTreeMap<Vec<u8>, KeyValue> {
        self.shared.cache.read().map.clone()
    }

    /// Keys in the cache.
    pub fn len(&self) -> usize {
        self.shared.cache.read().map.len()
    }

    /// Whether the cache holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The revision the cache reflects every change up to (0 before the first list).
    pub fn revision(&self) -> Revision {
        *self.shared.revision.borrow()
    }

    /// Whether the first list is in.
    pub fn has_synced(&self) -> bool {
        self.revision() > 0
    }

    /// Wait (up to `timeout`) for the first list.
    pub async fn wait_synced(&self, timeout: Duration) -> Result<(), InformerError> {
        self.wait_for_revision(1, timeout).await
    }

    /// Wait (up to `timeout`) until the cache reflects every change up to `revision`
    /// (for instance a write's revision: read your own writes from the cache). Asks the
    /// server for progress, so it returns even when nothing changed under the prefix.
    pub async fn wait_for_revision(
        &self,
        revision: Revision,
        timeout: Duration,
    ) -> Result<(), InformerError> {
        let mut seen = self.shared.revision.subscribe();
        let wait = async {
            loop {
                if *seen.borrow_and_update() >= revision {
                    return Ok(());
                }
                if let Some(reason) = self.stopped() {
                    return Err(InformerError::Stopped {
                        wanted: revision,
                        reached: self.revision(),
                        reason,
                    });
                }
                self.shared.progress_wanted.notify_one();
                // Ask again now and then: a progress request made while the watch was
                // being reopened is lost with it.
                let _ = tokio::time::timeout(Duration::from_millis(500), seen.changed()).await;
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| InformerError::Timeout {
                wanted: revision,
                reached: self.revision(),
                after: timeout,
            })?
    }

    /// Why the informer stopped, if its source closed for good (the node it watches was
    /// shut down); its cache stays as it was then.
    pub fn stopped(&self) -> Option<String> {
        self.shared.stopped.lock().clone()
    }

    /// How the informer got here (lists, re-lists, watches).
    pub fn stats(&self) -> InformerStats {
        InformerStats {
            lists: self.shared.lists.load(Ordering::Relaxed),
            relists_after_compaction: self.shared.relists_after_compaction.load(Ordering::Relaxed),
            watches: self.shared.watches.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Informer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
