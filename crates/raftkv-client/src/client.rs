//! [`Client`]: the KV API over etcd v3's gRPC protocol, and the retry loop every call
//! runs through (the Cluster and Maintenance calls in [`crate::cluster`],
//! [`crate::maintenance`] and [`crate::snapshot`] too).
//!
//! A call converts its request to protobuf once, then makes attempts until one succeeds,
//! the retry policy (`retry::decide`) says stop, or the total deadline (`request_timeout`) passes.
//! Each attempt goes to the preferred endpoint (a call pinned to one server, `Route`,
//! goes there only: no hints followed, the preference left alone), carries the time left
//! as its gRPC deadline (`grpc-timeout`, which the server enforces; not when the attempt
//! opens a stream, whose rest the server must not cut off) and is also bounded locally by
//! a timer, so a server that never answers costs at most the time that was left. Between
//! attempts the loop either follows a leader hint at once (a few hops in a row at most,
//! so two servers naming each other cannot spin it) or moves to the next endpoint and
//! waits a jittered backoff that never reaches past the deadline. An attempt that got
//! no answer also moves the preference on when its write is not retried, so a hung
//! server does not catch the next call too.
//!
//! The `Client` is an `Arc` around the endpoint set and the options: cloning it is
//! cheap, and every clone shares the channels (one HTTP/2 connection per server).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use raftkv_core::kv::{
    CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, KeyValue, PutRequest, PutResponse,
    RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::cluster_client::ClusterClient;
use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use tokio::time::Instant;
use tonic::Status;
use tonic::transport::Channel;

use crate::endpoints::{Endpoints, MAX_RESPONSE_BYTES, Target};
use crate::error::{ClientError, Result};
use crate::retry::{self, Backoff, Decision, Failure, MIN_ATTEMPT_TIME, Mutability};

/// Leader hints followed in a row without a backoff wait.
const MAX_IMMEDIATE_HOPS: u32 = 3;

/// Deadlines and backoff of a [`Client`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Total time one call may take, retries and waits included. Default 5 s. No
    /// attempt starts with less than 10 ms left, so a shorter timeout fails at once.
    /// For a snapshot it bounds the opening (up to the first message) and then each wait
    /// for the next message, not the whole transfer.
    pub request_timeout: Duration,
    /// Time to establish a connection to one endpoint. Default 1 s.
    pub connect_timeout: Duration,
    /// Upper bound of the first backoff wait. Default 20 ms.
    pub backoff_initial: Duration,
    /// Upper bound of any backoff wait. Default 500 ms.
    pub backoff_max: Duration,
    /// TLS for `https://` endpoints (required to use them). Default none.
    pub tls: Option<crate::TlsOptions>,
    /// Authenticate as this user (a cluster with auth enabled). Default none.
    pub credentials: Option<crate::Credentials>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_millis(500),
            tls: None,
            credentials: None,
        }
    }
}

/// A client of a raftkv (or etcd v3) cluster. Cheap to clone; use it from any number of
/// tasks at once.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    endpoints: Endpoints,
    options: ClientOptions,
    /// The token of `options.credentials`, once authenticated.
    tokens: crate::auth::TokenCache,
}

impl Client {
    /// A client of the servers at `endpoints` (`http://host:port`; `https://` with
    /// [`ClientOptions::tls`]), default options.
    /// Connections are made lazily, by the first call that needs each one; this only
    /// checks the URLs. Must be called inside a Tokio runtime.
    pub async fn connect(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Result<Client> {
        Self::connect_with(endpoints, ClientOptions::default()).await
    }

    /// A client of the servers at `endpoints` with `options`.
    pub async fn connect_with(
        endpoints: impl IntoIterator<Item = impl Into<String>>,
        options: ClientOptions,
    ) -> Result<Client> {
        let urls = endpoints.into_iter().map(Into::into).collect();
        let endpoints = Endpoints::new(urls, options.connect_timeout, options.tls.as_ref())?;
        Ok(Client {
            inner: Arc::new(Inner {
                endpoints,
                options,
                tokens: Default::default(),
            }),
        })
    }

    /// The endpoints known now: those given, plus any learned from leader hints.
    pub fn endpoints(&self) -> Vec<String> {
        self.inner.endpoints.urls()
    }

    /// The endpoint the next call starts with.
    pub fn preferred_endpoint(&self) -> Option<String> {
        self.inner.endpoints.preferred().ok().map(|t| t.url.to_string())
    }

    /// The options this client was made with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// Write `value` at `key`.
    pub async fn put(&self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Result<PutResponse> {
        self.put_with(PutRequest::new(key, value)).await
    }

    /// Write with every option of etcd's `PutRequest` (lease, prev_kv, ignore_*).
    #[tracing::instrument(level = "debug", skip_all, fields(key_len = req.key.len()))]
    pub async fn put_with(&self, req: PutRequest) -> Result<PutResponse> {
        let req = pb::PutRequest::from(req);
        let resp = self
            .call(Mutability::Write, req, |ch, r| async move { kv(ch).put(r).await })
            .await?;
        Ok(resp.into())
    }

    /// The current value of `key` (a linearizable read), `None` if absent.
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<KeyValue>> {
        let resp = self.range(RangeRequest::key(key)).await?;
        Ok(resp.kvs.into_iter().next())
    }

    /// The value of `key` as the answering server has it (a serializable read: no
    /// round to the leader, may be stale), `None` if absent.
    pub async fn get_serializable(&self, key: impl Into<Vec<u8>>) -> Result<Option<KeyValue>> {
        let resp = self.range(RangeRequest::key(key).with_serializable(true)).await?;
        Ok(resp.kvs.into_iter().next())
    }

    /// etcd's Range: a key, a prefix or an interval, at a revision, with a limit.
    #[tracing::instrument(level = "debug", skip_all, fields(serializable = req.serializable))]
    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        let req = pb::RangeRequest::from(req);
        let resp = self
            .call(
                Mutability::Read,
                req,
                |ch, r| async move { kv(ch).range(r).await },
            )
            .await?;
        Ok(resp.into())
    }

    /// Delete `key`.
    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<DeleteRangeResponse> {
        self.delete_range(DeleteRangeRequest::key(key)).await
    }

    /// etcd's DeleteRange: a key, a prefix or an interval.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn delete_range(&self, req: DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        let req = pb::DeleteRangeRequest::from(req);
        let resp = self
            .call(Mutability::Write, req, |ch, r| async move {
                kv(ch).delete_range(r).await
            })
            .await?;
        Ok(resp.into())
    }

    /// etcd's Txn. A transaction with no Put or DeleteRange anywhere is retried as a
    /// read; any other as a write.
    #[tracing::instrument(level = "debug", skip_all, fields(compares = req.compare.len()))]
    pub async fn txn(&self, req: TxnRequest) -> Result<TxnResponse> {
        let mutability = retry::txn_mutability(&req);
        let req = pb::TxnRequest::from(req);
        let resp = self
            .call(mutability, req, |ch, r| async move { kv(ch).txn(r).await })
            .await?;
        TxnResponse::try_from(resp).map_err(|e| ClientError::InvalidResponse(e.to_string()))
    }

    /// etcd's Compact: make revisions below `revision` unreadable.
    #[tracing::instrument(level = "debug", skip_all, fields(revision = revision))]
    pub async fn compact(&self, revision: i64) -> Result<CompactionResponse> {
        let req = pb::CompactionRequest {
            revision,
            physical: false,
        };
        let resp = self
            .call(
                Mutability::Write,
                req,
                |ch, r| async move { kv(ch).compact(r).await },
            )
            .await?;
        Ok(CompactionResponse {
            header: resp.header.map(Into::into).unwrap_or_default(),
        })
    }

    /// Run `rpc` until it succeeds, the failure is final, or the deadline passes. Every
    /// call of every service goes through here; `call` says how to route and retry it.
    pub(crate) async fn call<Req, Resp, F, Fut>(
        &self,
        call: impl Into<Call>,
        request: Req,
        rpc: F,
    ) -> Result<Resp>
    where
        Req: Clone,
        F: Fn(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<Resp>, Status>>,
    {
        let Call {
            mutability,
            route,
            server_deadline,
        } = call.into();
        let options = &self.inner.options;
        let endpoints = &self.inner.endpoints;
        let deadline = Instant::now() + options.request_timeout;
        let mut backoff = Backoff::new(options.backoff_initial, options.backoff_max);
        let mut attempts: u32 = 0;
        let mut hops: u32 = 0;
        let mut reauthenticated = false;
        let mut last_error = String::from("no attempt was made");
        let deadline_exceeded = |attempts, last_error| ClientError::DeadlineExceeded { attempts, last_error };
        // Moving the preference is for routed calls only: a pinned call must not steer
        // the others.
        let rotate_from = |target: &Target| {
            if matches!(route, Route::Preferred) {
                endpoints.rotate_from(target);
            }
        };
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining < MIN_ATTEMPT_TIME {
                return Err(deadline_exceeded(attempts, last_error));
            }
            let target = match &route {
                Route::Preferred => endpoints.preferred()?,
                Route::Pinned(target) => target.clone(),
            };
            attempts = attempts.saturating_add(1);
            let mut req = tonic::Request::new(request.clone());
            if server_deadline {
                req.set_timeout(remaining);
            }
            let token = match self.token_for(&target, remaining).await {
                Ok(token) => token,
                // Nothing of the call was sent: retried as a read would be.
                Err(status) => match retry::decide(Mutability::Read, retry::classify_status(&status)) {
                    Decision::Fail(e) => return Err(e),
                    _ => {
                        last_error = format!("{}: authenticate: {}", target.url, status.message());
                        rotate_from(&target);
                        let remaining = deadline.saturating_duration_since(Instant::now());
                        match retry::wait_within_deadline(backoff.next_delay(), remaining) {
                            Some(wait) => tokio::time::sleep(wait).await,
                            None => return Err(deadline_exceeded(attempts, last_error)),
                        }
                        continue;
                    }
                },
            };
            if let Some(token) = &token {
                crate::auth::attach(&mut req, token)
                    .map_err(|s| ClientError::InvalidResponse(s.to_string()))?;
            }
            let failure = match tokio::time::timeout(remaining, rpc(target.channel.clone(), req)).await {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                // The token alone was refused (nothing applied): authenticate again, once.
                Ok(Err(status))
                    if !reauthenticated && token.is_some() && crate::auth::token_refused(&status) =>
                {
                    if let Some(stale) = &token {
                        self.inner.tokens.forget(stale);
                    }
                    reauthenticated = true;
                    continue;
                }
                Ok(Err(status)) => retry::classify_status(&status),
                Err(_) => Failure::Lost(format!("no answer within the deadline ({remaining:?})")),
            };
            tracing::debug!(attempt = attempts, endpoint = %target.url, ?failure, "attempt failed");
            let lost = matches!(failure, Failure::Lost(_));
            match retry::decide(mutability, failure) {
                Decision::Fail(e) => {
                    if lost {
                        // The endpoint may be hung or cut off: let the next call start
                        // elsewhere, even though this one may not retry.
                        rotate_from(&target);
                    }
                    return Err(e);
                }
                Decision::FollowLeader { urls, reason } => {
                    last_error = format!("{}: {reason}", target.url);
                    if matches!(route, Route::Preferred) {
                        match endpoints.prefer_leader(&urls) {
                            Some(leader) if leader.index != target.index => {
                                if hops < MAX_IMMEDIATE_HOPS {
                                    hops += 1;
                                    tracing::debug!(leader = %leader.url, "following the leader hint");
                                    continue;
                                }
                            }
                            // No usable hint (no leader known): ask another server.
                            _ => endpoints.rotate_from(&target),
                        }
                    }
                    // A pinned call cannot go to the leader: it waits and asks again.
                }
                Decision::TryNext { reason } => {
                    last_error = format!("{}: {reason}", target.url);
                    rotate_from(&target);
                }
            }
            hops = 0;
            let remaining = deadline.saturating_duration_since(Instant::now());
            match retry::wait_within_deadline(backoff.next_delay(), remaining) {
                Some(wait) => tokio::time::sleep(wait).await,
                None => return Err(deadline_exceeded(attempts, last_error)),
            }
        }
    }

    /// The token to send to `target`, authenticating there first if none is cached;
    /// `None` without credentials.
    pub(crate) async fn token_for(
        &self,
        target: &Target,
        timeout: Duration,
    ) -> std::result::Result<Option<String>, Status> {
        let Some(credentials) = &self.inner.options.credentials else {
            return Ok(None);
        };
        self.inner
            .tokens
            .get(credentials, target.channel.clone(), timeout)
            .await
            .map(Some)
    }

    /// Forget `token`: the server no longer takes it.
    pub(crate) fn forget_token(&self, token: &str) {
        self.inner.tokens.forget(token);
    }

    /// A target for a call pinned to the server at `endpoint`.
    pub(crate) fn pinned(&self, endpoint: &str) -> Result<Target> {
        self.inner.endpoints.pinned(endpoint)
    }
}

/// How the retry loop runs one call: whether it may change anything, where it goes, and
/// whether the server is told the deadline.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    /// Decides which failures are retried.
    pub(crate) mutability: Mutability,
    /// Decides which endpoint each attempt goes to.
    pub(crate) route: Route,
    /// Whether each attempt carries the time left as its gRPC deadline. Off for a stream
    /// whose attempt covers only its opening: the server must not cut off the rest.
    pub(crate) server_deadline: bool,
}

impl Call {
    /// A call that may go to any endpoint.
    pub(crate) fn new(mutability: Mutability) -> Self {
        Self {
            mutability,
            route: Route::Preferred,
            server_deadline: true,
        }
    }

    /// The same call, made only to `target`.
    pub(crate) fn pinned_to(self, target: Target) -> Self {
        Self {
            route: Route::Pinned(target),
            ..self
        }
    }

    /// The same call, as the opening of a stream: no gRPC deadline is sent.
    pub(crate) fn opening_a_stream(self) -> Self {
        Self {
            server_deadline: false,
            ..self
        }
    }
}

impl From<Mutability> for Call {
    fn from(mutability: Mutability) -> Self {
        Self::new(mutability)
    }
}

/// Which endpoint the attempts of a call go to.
#[derive(Debug, Clone)]
pub(crate) enum Route {
    /// The preferred endpoint: leader hints are followed and a failed endpoint is left
    /// for the next one.
    Preferred,
    /// Always this endpoint (a question about one member): failures are retried there,
    /// hints are ignored and the preference of other calls is left alone.
    Pinned(Target),
}

/// The KV service's stub on `channel`.
pub(crate) fn kv(channel: Channel) -> KvClient<Channel> {
    KvClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES)
}

/// The Cluster service's stub on `channel`.
pub(crate) fn cluster(channel: Channel) -> ClusterClient<Channel> {
    ClusterClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES)
}

/// The Maintenance service's stub on `channel`.
pub(crate) fn maintenance(channel: Channel) -> MaintenanceClient<Channel> {
    MaintenanceClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES)
}
