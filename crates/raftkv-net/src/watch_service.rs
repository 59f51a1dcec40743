//! [`WatchService`]: etcd's `Watch` gRPC service (a bidirectional stream) over a
//! [`WatchBackend`], which hands out one [`WatchSession`] per stream. It is served by
//! [`crate::WatchServer`] (`watch_server.rs`).
//!
//! Each `Watch` call gets a task that owns the session and is the only writer of the
//! response stream: it reads requests (create, cancel, progress) and forwards what the
//! session yields, one response at a time into a small bounded channel. A client that
//! stops reading fills that channel; the task then waits, the session stops being polled,
//! and the node's hub moves the stream's watchers to history replay instead of buffering
//! (see `raftkv-storage`'s `watch/hub.rs`), so a slow client never slows writes.
//!
//! What etcd's server does, this does: the "created" response is sent before anything
//! else of that watcher; cancel answers "canceled"; an unknown cancel id is ignored; a
//! client that half-closes its side keeps receiving (the stream ends when the client goes
//! away); responses of watchers that asked for fragments are split when larger than the
//! request limit plus gRPC overhead. When the node stops serving watches the stream ends
//! with etcd's "server stopped". A stream opened with etcd's require-leader metadata is
//! refused, or ended, with "no leader" while its member has none (`require_leader.rs`).
//!
//! **Fan-out.** The session hands its events out shared (`Arc<SharedEvent>`, one per
//! event for every watcher of the node that gets it), and responses go out as
//! `raftkv_proto::watch_wire::EncodedWatchResponse`s, which encode each event once (twice
//! at most: with and without `prev_kv`) and copy those bytes into every response that
//! carries it. So a hundred watchers of one prefix cost a hundred small headers and
//! byte copies per event, not a hundred conversions and encodings.

use std::collections::HashSet;
use std::sync::Arc;

use raftkv_core::auth::AuthError;
use raftkv_core::kv::ResponseHeader;
use raftkv_core::watch::{
    INVALID_WATCH_ID, SharedWatchResponse, WatchId, WatchRequest, WatchResponse, WatchSession,
};
use raftkv_core::{Error, RequestError};
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::watch_request::RequestUnion;
use raftkv_proto::status::{auth_status, text};
use raftkv_proto::watch_wire::EncodedWatchResponse;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::gate::{AuthGate, Credentials, Need, credentials_of};
use crate::require_leader::{LeaderMonitor, LeaderStatus};

/// Responses of one stream waiting for the client to read them.
const OUTBOUND_BUFFER: usize = 16;

/// What serves watches (the node). A create is refused (a created-and-canceled answer,
/// as etcd's) unless the stream's caller may read the watched range.
pub trait WatchBackend: LeaderStatus + AuthGate {
    /// One stream's watchers.
    type Session: WatchSession + 'static;
    /// A new, empty session.
    fn watch_session(&self) -> Self::Session;
    /// The header fields of this member (cluster id, member id, raft term); the revision
    /// comes from each response.
    fn watch_header(&self) -> ResponseHeader;
    /// Responses at least this large (encoded) are split for watchers that asked for
    /// fragments.
    fn max_watch_response_bytes(&self) -> usize;
    /// The newest applied revision (the header of a refused create).
    fn current_revision(&self) -> i64;
}

/// The etcd Watch gRPC service.
pub struct WatchService<B> {
    backend: Arc<B>,
}

impl<B: WatchBackend> WatchService<B> {
    /// Serve `backend`.
    pub fn new(backend: Arc<B>) -> Self {
        Self { backend }
    }
}

type Outbound = mpsc::Sender<Result<EncodedWatchResponse, Status>>;

/// The responses of one `Watch` call.
pub(crate) type WatchStream = ReceiverStream<Result<EncodedWatchResponse, Status>>;

impl<B: WatchBackend> WatchService<B> {
    /// Serve one `Watch` call: spawn its task and return its responses.
    #[tracing::instrument(level = "debug", skip_all)]
    pub(crate) fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<WatchStream>, Status> {
        let monitor = LeaderMonitor::for_call(request.metadata(), self.backend.as_ref())?;
        // etcd reads the credentials of the stream, once, and checks them at each create.
        let credentials = credentials_of(&request);
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER);
        let stream = WatchStreamTask {
            session: self.backend.watch_session(),
            backend: self.backend.clone(),
            fragmented: HashSet::new(),
            credentials,
            tx,
        };
        tokio::spawn(
            stream
                .run(inbound, monitor)
                .instrument(tracing::debug_span!("watch_stream")),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// One `Watch` call.
struct WatchStreamTask<B: WatchBackend> {
    session: B::Session,
    backend: Arc<B>,
    /// Watchers that asked for fragments.
    fragmented: HashSet<WatchId>,
    /// What the stream presented.
    credentials: Credentials,
    tx: Outbound,
}

impl<B: WatchBackend> WatchStreamTask<B> {
    async fn run(mut self, mut inbound: Streaming<pb::WatchRequest>, mut monitor: Option<LeaderMonitor>) {
        let mut inbound_open = true;
        let backend = self.backend.clone();
        loop {
            tokio::select! {
                biased;
                () = self.tx.closed() => return,
                () = LeaderMonitor::lost(&mut monitor, backend.as_ref()) => {
                    tracing::debug!("no leader for the require-leader watch stream; ending it");
                    let _ = self.tx.send(Err(LeaderMonitor::lost_status())).await;
                    return;
                }
                message = inbound.message(), if inbound_open => match message {
                    Ok(Some(request)) => {
                        if !self.handle(request).await {
                            return;
                        }
                    }
                    // etcd keeps serving a stream whose client closed its sending side.
                    Ok(None) => inbound_open = false,
                    Err(status) => {
                        tracing::debug!(%status, "watch stream broke");
                        return;
                    }
                },
                next = std::future::poll_fn(|cx| self.session.poll_next_shared(cx)) => match next {
                    Some(response) => {
                        if !self.send(response).await {
                            return;
                        }
                    }
                    None => {
                        let _ = self.tx.send(Err(Status::unavailable(text::STOPPED))).await;
                        return;
                    }
                },
            }
        }
    }

    /// Handle one request; returns false once the client is gone.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn handle(&mut self, request: pb::WatchRequest) -> bool {
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => {
                let request = WatchRequest::from(create);
                tracing::debug!(
                    key_len = request.key.len(),
                    start_revision = request.start_revision,
                    "watch create"
                );
                let backend = self.backend.clone();
                if let Err(refused) = admit(backend.as_ref(), self.credentials.clone(), &request).await {
                    return self.send(refused).await;
                }
                let fragment = request.fragment;
                let created = self.session.create(request);
                if fragment && !created.canceled {
                    self.fragmented.insert(created.watch_id);
                }
                self.send(created.into()).await
            }
            Some(RequestUnion::CancelRequest(cancel)) => match self.session.cancel(cancel.watch_id) {
                Some(canceled) => self.send(canceled.into()).await,
                None => true,
            },
            Some(RequestUnion::ProgressRequest(_)) => {
                self.session.request_progress();
                true
            }
            // etcd ignores a request it does not understand rather than ending the stream.
            None => true,
        }
    }

    /// Send one response (in fragments if its watcher asked); returns false once the
    /// client is gone.
    async fn send(&mut self, response: SharedWatchResponse) -> bool {
        let (watch_id, canceled) = (response.response.watch_id, response.response.canceled);
        let mut header = pb::ResponseHeader::from(self.backend.watch_header());
        header.revision = response.response.header.revision;
        let wire = EncodedWatchResponse::new(response, header);
        let parts = if self.fragmented.contains(&watch_id) {
            wire.fragment(self.backend.max_watch_response_bytes())
        } else {
            vec![wire]
        };
        if canceled {
            self.fragmented.remove(&watch_id);
        }
        for part in parts {
            if self.tx.send(Ok(part)).await.is_err() {
                return false;
            }
        }
        true
    }
}

/// Whether the stream's caller may watch what `request` asks for; if not, etcd's
/// answer: created and canceled at once, watch id -1, the reason in gRPC's text form.
async fn admit<B: WatchBackend>(
    backend: &B,
    credentials: Credentials,
    request: &WatchRequest,
) -> Result<(), SharedWatchResponse> {
    let admitted = match backend.identify(credentials).await {
        Ok(caller) => {
            // etcd watches an empty key as "\0", the smallest key. Unlike etcd 3.4,
            // which checks a from-key watch ("\0" end) as its first key alone, the
            // whole range is checked.
            let key = if request.key.is_empty() {
                &[0u8][..]
            } else {
                &request.key[..]
            };
            backend.authorize(&caller, Need::Read(key, &request.range_end))
        }
        Err(e) => Err(e),
    };
    let Err(e) = admitted else {
        return Ok(());
    };
    let reason = match e {
        Error::Request(RequestError::Auth(
            a @ (AuthError::InvalidAuthToken | AuthError::AuthOldRevision | AuthError::UserEmpty),
        )) => auth_status(a),
        _ => auth_status(AuthError::PermissionDenied),
    };
    Err(SharedWatchResponse {
        response: WatchResponse {
            header: ResponseHeader {
                revision: backend.current_revision(),
                ..ResponseHeader::default()
            },
            watch_id: INVALID_WATCH_ID,
            created: true,
            canceled: true,
            cancel_reason: format!(
                "rpc error: code = {:?} desc = {}",
                reason.code(),
                reason.message()
            ),
            ..WatchResponse::default()
        },
        events: Vec::new(),
        prev_kv: false,
    })
}
