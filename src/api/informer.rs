//! [`Node::informer`]: the List-Watch cache (`raftkv_core::informer`) over this node's own
//! reads and watches: a linearizable paged list, then a watch from its revision.

use raftkv_core::informer::{Informer, InformerHandler, ListWatch, SourceError, WatchEvents};
use raftkv_core::kv::{RangeRequest, RangeResponse};
use raftkv_core::watch::{WatchRequest, WatchResponse};

use crate::Node;
use crate::api::watch::WatchStream;

/// A compacted revision is the informer's cue to list again, a node shut down its cue to
/// stop (and let go of the node); anything else a retry.
fn source_error(e: raftkv_core::Error) -> SourceError {
    match e {
        raftkv_core::Error::Request(raftkv_core::RequestError::Compacted { .. }) => SourceError::Compacted,
        raftkv_core::Error::Shutdown(reason) => SourceError::Closed(reason),
        other => SourceError::Failed(other.to_string()),
    }
}

/// The node as an informer's source.
struct NodeSource(Node);

impl ListWatch for NodeSource {
    type Watch = WatchStream;

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, SourceError> {
        self.0.range(request).await.map_err(source_error)
    }

    async fn watch(&self, request: WatchRequest) -> Result<WatchStream, SourceError> {
        self.0.watch(request).map_err(source_error)
    }
}

impl WatchEvents for WatchStream {
    async fn next(&mut self) -> Option<Result<WatchResponse, SourceError>> {
        WatchStream::next(self).await.map(Ok)
    }

    fn request_progress(&mut self) {
        WatchStream::request_progress(self);
    }
}

impl Node {
    /// A List-Watch cache of every key under `prefix`, kept current by a watch on this
    /// node, calling `handler` (`()` for none) on each add, update and delete; re-lists
    /// when the watch's next revision was compacted away. Runs as a task on the current
    /// Tokio runtime until dropped or until the node is shut down (then it stops, keeps
    /// its cache, and lets go of its clone of the node: see [`Informer::stopped`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() -> raftkv::Result<()> {
    /// # let dir = tempfile::tempdir().map_err(|e| raftkv::Error::Internal(e.to_string()))?;
    /// # let node = raftkv::Node::builder().id(1).data_dir(dir.path()).start().await?;
    /// # node.wait_for_leader(std::time::Duration::from_secs(10)).await?;
    /// use std::time::Duration;
    ///
    /// node.put("services/api/1", "10.0.0.1:80").await?;
    /// let services = node.informer("services/", ());
    /// let added = node.put("services/api/2", "10.0.0.2:80").await?;
    /// services
    ///     .wait_for_revision(added.header.revision, Duration::from_secs(10))
    ///     .await
    ///     .map_err(|e| raftkv::Error::Timeout(e.to_string()))?;
    /// assert_eq!(services.len(), 2);
    /// assert_eq!(services.get(b"services/api/2").map(|kv| kv.value), Some(b"10.0.0.2:80".to_vec()));
    /// # drop(services);
    /// # node.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn informer<H: InformerHandler>(&self, prefix: impl Into<Vec<u8>>, handler: H) -> Informer {
        Informer::spawn(NodeSource(self.clone()), prefix, handler)
    }
}
