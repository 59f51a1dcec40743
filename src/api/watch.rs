//! Watches on [`Node`]: the embedded `node.watch(...)` ([`WatchStream`], a `Stream` of
//! etcd-shaped [`WatchResponse`]s) and the node as the gRPC Watch service's backend.
//!
//! Both are served from this node's own applied history (`raftkv-storage`'s watch hub and
//! sessions), on followers as on the leader: a watcher sees exactly the revisions this
//! node applied, in order, whole, and never waits for the leader. A watch does not go
//! through Raft, so (as in etcd) a watcher on a lagging follower lags with it; its
//! responses say which revision they are complete up to.

use std::pin::Pin;
use std::task::{Context, Poll};

use raftkv_core::kv::{ResponseHeader, Revision};
use raftkv_core::watch::{WatchId, WatchRequest, WatchResponse, WatchSession, cancel_reason};
use raftkv_core::{Error, RequestError, Result};
use raftkv_net::WatchBackend;
use raftkv_storage::LocalWatchSession;
use tonic::codegen::tokio_stream::Stream;

use crate::node::Node;

/// What etcd adds to its request limit for a watch response before fragmenting it
/// (`grpcOverheadBytes`).
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// How many watchers a node serves, and how many of them are replaying history because
/// they started in the past or fell behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchCounts {
    /// Watchers registered (embedded and gRPC).
    pub watchers: usize,
    /// Of those, the ones behind the applied revision (replaying).
    pub unsynced: usize,
}

impl Node {
    /// Watch a key, a prefix or a range, from `request.start_revision` (0: from the next
    /// revision on), as etcd's Watch does: the stream yields every change in revision
    /// order, each revision whole, replaying the history first if the start is in the past.
    /// A start revision whose history was compacted yields one response with `canceled`
    /// and `compact_revision` (the oldest revision a watch can start at), then ends. The
    /// stream also ends when the node shuts down. Dropping it cancels the watch.
    ///
    /// Errors: a range that holds no key (`InvalidRangeEnd`), a negative start revision
    /// (`Compacted`), a node that is shut down.
    ///
    /// # Example
    ///
    /// ```
    /// # #[tokio::main(flavor = "multi_thread")]
    /// # async fn main() -> raftkv::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let node = raftkv::Node::builder().id(1).data_dir(dir.path()).start().await?;
    /// use raftkv::{EventType, WatchRequest};
    /// let mut watch = node.watch(WatchRequest::prefix("jobs/"))?;
    /// node.put("jobs/1", "queued").await?;
    /// // The first response says the watcher is created; events follow.
    /// let mut events = Vec::new();
    /// while events.is_empty() {
    ///     events = watch.next().await.expect("the watch is open").events;
    /// }
    /// assert_eq!(events[0].kind, EventType::Put);
    /// assert_eq!(events[0].kv.key, b"jobs/1");
    /// node.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    #[tracing::instrument(level = "debug", skip_all, fields(start_revision = request.start_revision))]
    pub fn watch(&self, request: WatchRequest) -> Result<WatchStream> {
        let start_revision = request.start_revision;
        let mut session = LocalWatchSession::open(self.inner.shared.clone());
        let created = session.create(request);
        if created.canceled {
            return Err(match created.cancel_reason.as_str() {
                cancel_reason::EMPTY_RANGE => RequestError::InvalidRangeEnd.into(),
                cancel_reason::COMPACTED => RequestError::Compacted {
                    requested: start_revision,
                    compacted: self.inner.reader.compact_revision(),
                }
                .into(),
                cancel_reason::STOPPED => Error::Shutdown("the node stopped serving watches".into()),
                other => Error::Internal(other.to_string()),
            });
        }
        Ok(WatchStream {
            session,
            node: self.clone(),
            watch_id: created.watch_id,
            created_revision: created.header.revision,
            done: false,
        })
    }

    /// Watchers served by this node now.
    pub fn watch_counts(&self) -> WatchCounts {
        let hub = self.inner.shared.watch_hub();
        WatchCounts {
            watchers: hub.watchers(),
            unsynced: hub.unsynced_watchers(),
        }
    }
}

/// One embedded watcher: a [`Stream`] of [`WatchResponse`]s (see [`Node::watch`]).
/// Responses carry events, or are progress notifications (no events, see
/// [`WatchResponse::is_progress_notify`]), or the final canceled one.
pub struct WatchStream {
    session: LocalWatchSession,
    node: Node,
    watch_id: WatchId,
    created_revision: Revision,
    done: bool,
}

impl WatchStream {
    /// The watcher's id.
    pub fn watch_id(&self) -> WatchId {
        self.watch_id
    }

    /// The node's revision when the watcher was created (a watcher created without a
    /// start revision gets every change after it).
    pub fn created_revision(&self) -> Revision {
        self.created_revision
    }

    /// Ask for a progress notification: a response with no events whose revision the
    /// watcher has received everything up to, yielded once it is caught up.
    pub fn request_progress(&mut self) {
        self.session.request_progress();
    }

    /// The next response, `None` once the watch ended.
    pub async fn next(&mut self) -> Option<WatchResponse> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    fn fill_header(&self, header: &mut ResponseHeader) {
        let base = self.node.response_header();
        header.cluster_id = base.cluster_id;
        header.member_id = base.member_id;
        header.raft_term = base.raft_term;
    }
}

impl Stream for WatchStream {
    type Item = WatchResponse;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<WatchResponse>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match this.session.poll_next(cx) {
            Poll::Ready(Some(mut response)) => {
                // The session's stream-wide progress answer is this watcher's.
                response.watch_id = this.watch_id;
                this.fill_header(&mut response.header);
                this.done = response.canceled;
                Poll::Ready(Some(response))
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl std::fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchStream")
            .field("watch_id", &self.watch_id)
            .field("created_revision", &self.created_revision)
            .field("done", &self.done)
            .finish()
    }
}

impl WatchBackend for Node {
    type Session = LocalWatchSession;

    fn watch_session(&self) -> LocalWatchSession {
        LocalWatchSession::open(self.inner.shared.clone())
    }

    fn watch_header(&self) -> ResponseHeader {
        self.response_header()
    }

    fn max_watch_response_bytes(&self) -> usize {
        self.inner.limits.max_request_bytes + GRPC_OVERHEAD_BYTES
    }

    fn current_revision(&self) -> i64 {
        self.inner.reader.revision()
    }
}
