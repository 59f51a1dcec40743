//! etcd's Watch: [`Client::watch`] gives a [`Watcher`] that survives broken connections.
//!
//! A background task owns the gRPC stream. It opens it on the preferred endpoint, creates
//! the watcher, and passes every response on (joining fragments back together, keeping
//! the "created" response to itself). It tracks the next revision the caller has not
//! seen: after the last event's revision, or after a progress notification's. When the
//! stream breaks (the server went away, the connection reset), it waits a jittered
//! backoff, moves to the next endpoint and creates the watcher again **from that
//! revision**, so the caller sees every event once, in order, across reconnects and
//! leader changes. Only a verdict ends it: a canceled response (a compacted revision,
//! passed on with its `compact_revision`), or an error a server answered for the request
//! itself (passed on as the last item).
//!
//! The task hands responses over through a small bounded channel: a caller that stops
//! reading stops the task reading the stream, and the server then replays that watcher
//! from its history instead of buffering (etcd's slow-watcher handling). Dropping the
//! [`Watcher`] ends the task and the stream.

use std::time::Duration;

use raftkv_core::kv::Revision;
use raftkv_core::watch::{WatchRequest, WatchResponse, cancel_reason};
use raftkv_core::{Error, RequestError};
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::watch_client::WatchClient;
use raftkv_proto::etcdserverpb::watch_request::RequestUnion;
use tokio::sync::{mpsc, oneshot};
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::client::Client;
use crate::endpoints::MAX_RESPONSE_BYTES;
use crate::error::{ClientError, Result};
use crate::retry::{self, Backoff, Failure};

/// Responses waiting for the caller.
const RESPONSE_BUFFER: usize = 16;

/// A watch that reconnects by itself (see the module doc). Dropping it cancels the watch.
#[derive(Debug)]
pub struct Watcher {
    responses: mpsc::Receiver<Result<WatchResponse>>,
    progress: mpsc::UnboundedSender<()>,
    task: tokio::task::JoinHandle<()>,
    created_revision: Revision,
}

impl Watcher {
    /// The next response: events, a progress notification (no events), or the final
    /// canceled one. `None` after the watch ended (after a canceled response or an
    /// error).
    pub async fn next(&mut self) -> Option<Result<WatchResponse>> {
        self.responses.recv().await
    }

    /// Ask the server for a progress notification (sent once the watcher is caught up).
    pub fn request_progress(&self) {
        let _ = self.progress.send(());
    }

    /// The revision of the server that created the watcher first: without a start
    /// revision, the watcher gets every change after it.
    pub fn created_revision(&self) -> Revision {
        self.created_revision
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Client {
    /// Watch a key, prefix or range (etcd's Watch; see [`WatchRequest`]'s constructors),
    /// resuming after broken connections from the next revision not yet received. Returns
    /// once a server created the watcher, within `request_timeout`.
    #[tracing::instrument(level = "debug", skip_all, fields(start_revision = request.start_revision))]
    pub async fn watch(&self, request: WatchRequest) -> Result<Watcher> {
        let (responses_tx, responses) = mpsc::channel(RESPONSE_BUFFER);
        let (progress, progress_rx) = mpsc::unbounded_channel();
        let (created_tx, created_rx) = oneshot::channel();
        let task = tokio::spawn(
            WatchTask {
                client: self.clone(),
                request,
                next_revision: None,
                responses: responses_tx,
                progress: progress_rx,
                created: Some(created_tx),
                connected: false,
            }
            .run(),
        );
        let timeout = self.options().request_timeout;
        let created = tokio::time::timeout(timeout, created_rx).await;
        match created {
            Ok(Ok(Ok(created_revision))) => Ok(Watcher {
                responses,
                progress,
                task,
                created_revision,
            }),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(ClientError::InvalidResponse(
                "the watch ended before it was created".into(),
            )),
            Err(_) => {
                task.abort();
                Err(ClientError::DeadlineExceeded {
                    attempts: 0,
                    last_error: "no server created the watch in time".into(),
                })
            }
        }
    }
}

/// How one connection of the watch ended.
enum Ended {
    /// Done for good (the caller is gone, or got the final response).
    Finished,
    /// The stream broke: reconnect.
    Broken(String),
}

struct WatchTask {
    client: Client,
    request: WatchRequest,
    /// The next revision the caller has not seen; `None` until a server created the
    /// watcher without a start revision.
    next_revision: Option<Revision>,
    responses: mpsc::Sender<Result<WatchResponse>>,
    progress: mpsc::UnboundedReceiver<()>,
    /// Told once, when the watcher is first created (or refused).
    created: Option<oneshot::Sender<Result<Revision>>>,
    /// The current connection created the watcher (so the next break starts the backoff
    /// over).
    connected: bool,
}

impl WatchTask {
    async fn run(mut self) {
        if self.request.start_revision > 0 {
            self.next_revision = Some(self.request.start_revision);
        }
        let options = self.client.options().clone();
        let mut backoff = Backoff::new(options.backoff_initial, options.backoff_max);
        let mut endpoint = self.client.preferred_endpoint().unwrap_or_default();
        loop {
            match self.connection(&endpoint).await {
                Ok(Ended::Finished) => return,
                Ok(Ended::Broken(reason)) => {
                    tracing::debug!(%endpoint, %reason, next_revision = ?self.next_revision, "watch stream broke; resuming elsewhere");
                }
                Err(e) => {
                    self.fail(e).await;
                    return;
                }
            }
            if std::mem::take(&mut self.connected) {
                // It worked before this break: start the backoff over.
                backoff = Backoff::new(options.backoff_initial, options.backoff_max);
            }
            tokio::time::sleep(backoff.next_delay().max(Duration::from_millis(1))).await;
            let urls = self.client.endpoints();
            let next = urls.iter().position(|u| *u == endpoint).map_or(0, |i| i + 1);
            endpoint = urls.get(next % urls.len().max(1)).cloned().unwrap_or_default();
        }
    }

    /// End the watch with `e`: the caller of `watch` gets it if still waiting, else the
    /// watcher's last item.
    async fn fail(&mut self, e: ClientError) {
        match self.created.take() {
            Some(created) => {
                let _ = created.send(Err(e));
            }
            None => {
                let _ = self.responses.send(Err(e)).await;
            }
        }
    }

    /// One stream to `endpoint`, until it breaks or the watch ends.
    async fn connection(&mut self, endpoint: &str) -> Result<Ended> {
        let target = self.client.pinned(endpoint)?;
        let (requests, requests_rx) = mpsc::channel(4);
        let mut create = pb::WatchCreateRequest::from(self.request.clone());
        create.start_revision = self.next_revision.unwrap_or(0);
        create.watch_id = 0;
        let create = pb::WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(create)),
        };
        if requests.send(create).await.is_err() {
            return Ok(Ended::Broken("request channel closed".into()));
        }
        let timeout = self.client.options().request_timeout;
        let token = match self.client.token_for(&target, timeout).await {
            Ok(token) => token,
            Err(status) => return self.broken(&status),
        };
        let mut request = tonic::Request::new(ReceiverStream::new(requests_rx));
        if let Some(token) = &token {
            crate::auth::attach(&mut request, token)
                .map_err(|s| ClientError::InvalidResponse(s.to_string()))?;
        }
        let opened = tokio::time::timeout(timeout, watch_stub(target.channel).watch(request)).await;
        let mut stream = match opened {
            Err(_) => return Ok(Ended::Broken("no answer to the watch in time".into())),
            Ok(Err(status)) => return self.broken(&status),
            Ok(Ok(response)) => response.into_inner(),
        };
        let mut fragments: Option<pb::WatchResponse> = None;
        loop {
            let message = tokio::select! {
                asked = self.progress.recv() => {
                    if asked.is_none() {
                        return Ok(Ended::Finished);
                    }
                    let progress = pb::WatchRequest {
                        request_union: Some(RequestUnion::ProgressRequest(pb::WatchProgressRequest {})),
                    };
                    let _ = requests.try_send(progress);
                    continue;
                }
                message = stream.message() => message,
            };
            let response = match message {
                Ok(Some(response)) => response,
                Ok(None) => return Ok(Ended::Broken("the server ended the stream".into())),
                Err(status) => return self.broken(&status),
            };
            // Join fragments: only a whole response goes on.
            let response = match (fragments.take(), response.fragment) {
                (None, false) => response,
                (Some(mut joined), fragment) => {
                    joined.events.extend(response.events);
                    if fragment {
                        fragments = Some(joined);
                        continue;
                    }
                    joined.fragment = false;
                    joined
                }
                (None, true) => {
                    fragments = Some(response);
                    continue;
                }
            };
            let response =
                WatchResponse::try_from(response).map_err(|e| ClientError::InvalidResponse(e.to_string()))?;
            // A create refused for the stream's token alone: authenticate again and
            // reconnect.
            if response.created
                && response.canceled
                && let Some(stale) = &token
                && response.cancel_reason.contains("etcdserver: invalid auth token")
            {
                self.client.forget_token(stale);
                return Ok(Ended::Broken(response.cancel_reason));
            }
            if !self.deliver(response).await? {
                return Ok(Ended::Finished);
            }
        }
    }

    /// Handle one whole response; returns whether the watch goes on.
    async fn deliver(&mut self, mut response: WatchResponse) -> Result<bool> {
        if response.created {
            if response.canceled {
                return Err(refused(&response.cancel_reason));
            }
            self.connected = true;
            if self.next_revision.is_none() {
                self.next_revision = Some(response.header.revision.saturating_add(1));
            }
            if let Some(created) = self.created.take() {
                let _ = created.send(Ok(response.header.revision));
            }
            return Ok(true);
        }
        // Never hand out a revision twice, whatever a server resumed from.
        let floor = self.next_revision.unwrap_or(0);
        response.events.retain(|e| e.kv.mod_revision >= floor);
        if let Some(last) = response.events.last() {
            self.next_revision = Some(last.kv.mod_revision.saturating_add(1));
        } else if response.is_progress_notify() {
            self.next_revision = Some(floor.max(response.header.revision.saturating_add(1)));
        }
        let canceled = response.canceled;
        if self.responses.send(Ok(response)).await.is_err() {
            return Ok(false);
        }
        Ok(!canceled)
    }

    /// A failed stream: a server's verdict on the request ends the watch, anything else
    /// is reconnected.
    fn broken(&self, status: &tonic::Status) -> Result<Ended> {
        match retry::classify_status(status) {
            Failure::Answered {
                error: error @ Error::Request(_),
                ..
            } => Err(ClientError::Server(error)),
            Failure::Answered { error, .. } => Ok(Ended::Broken(error.to_string())),
            Failure::NotSent(reason) | Failure::Lost(reason) => Ok(Ended::Broken(reason)),
        }
    }
}

/// The error of a watcher refused at creation.
fn refused(reason: &str) -> ClientError {
    match reason {
        cancel_reason::EMPTY_RANGE => ClientError::Server(RequestError::InvalidRangeEnd.into()),
        cancel_reason::COMPACTED => ClientError::Server(
            RequestError::Compacted {
                requested: 0,
                compacted: 0,
            }
            .into(),
        ),
        other => ClientError::Server(Error::Internal(format!("watch refused: {other}"))),
    }
}

fn watch_stub(channel: Channel) -> WatchClient<Channel> {
    WatchClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use raftkv_core::kv::{KeyValue, ResponseHeader};
    use raftkv_core::watch::{Event, EventType};

    use super::*;

    fn response(revision: Revision, events: &[Revision]) -> WatchResponse {
        WatchResponse {
            header: ResponseHeader {
                revision,
                ..ResponseHeader::default()
            },
            events: events
                .iter()
                .map(|r| Event {
                    kind: EventType::Put,
                    kv: KeyValue {
                        key: b"k".to_vec(),
                        mod_revision: *r,
                        ..KeyValue::default()
                    },
                    prev_kv: None,
                })
                .collect(),
            ..WatchResponse::default()
        }
    }

    #[tokio::test]
    async fn resume_point_follows_events_and_progress_and_repeats_are_dropped() {
        let client = Client::connect(["http://127.0.0.1:1"]).await.unwrap();
        let (responses, mut rx) = mpsc::channel(16);
        let (_progress, progress_rx) = mpsc::unbounded_channel();
        let (created_tx, created_rx) = oneshot::channel();
        let mut task = WatchTask {
            client,
            request: WatchRequest::prefix("k"),
            next_revision: None,
            responses,
            progress: progress_rx,
            created: Some(created_tx),
            connected: false,
        };
        let created = WatchResponse {
            created: true,
            ..response(10, &[])
        };
        assert!(task.deliver(created.clone()).await.unwrap());
        assert_eq!(created_rx.await.unwrap().unwrap(), 10);
        assert_eq!(task.next_revision, Some(11));
        assert!(task.deliver(response(12, &[11, 12, 12])).await.unwrap());
        assert_eq!(task.next_revision, Some(13));
        // A later "created" (after a reconnect) is not passed on and moves nothing.
        assert!(task.deliver(created).await.unwrap());
        assert_eq!(task.next_revision, Some(13));
        // A server resuming too early: what was delivered is not delivered again.
        assert!(task.deliver(response(14, &[12, 13, 14])).await.unwrap());
        assert!(task.deliver(response(20, &[])).await.unwrap());
        assert_eq!(task.next_revision, Some(21), "progress moves the resume point");
        let canceled = WatchResponse {
            canceled: true,
            compact_revision: 30,
            ..response(30, &[])
        };
        assert!(!task.deliver(canceled).await.unwrap(), "canceled ends the watch");
        let delivered: Vec<Vec<Revision>> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|r| r.unwrap().events.iter().map(|e| e.kv.mod_revision).collect())
            .collect();
        assert_eq!(delivered, [vec![11, 12, 12], vec![13, 14], vec![], vec![]]);
        assert_eq!(
            refused(cancel_reason::EMPTY_RANGE),
            ClientError::Server(RequestError::InvalidRangeEnd.into())
        );
    }
}
