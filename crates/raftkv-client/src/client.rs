//! [`Client`]: the KV API over etcd v3's gRPC protocol, and the retry loop every call
//! runs through.
//!
//! A call converts its request to protobuf once, then makes attempts until one succeeds,
//! the retry policy (`retry::decide`) says stop, or the total deadline (`request_timeout`) passes.
//! Each attempt goes to the preferred endpoint, carries the time left as its gRPC
//! deadline (`grpc-timeout`, which the server enforces) and is also bounded locally by a
//! timer, so a server that never answers costs at most the time that was left. Between
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
use raftkv_proto::etcdserverpb::kv_client::KvClient;
use tokio::time::Instant;
use tonic::Status;
use tonic::transport::Channel;

use crate::endpoints::Endpoints;
use crate::error::{ClientError, Result};
use crate::retry::{self, Backoff, Decision, Failure, MIN_ATTEMPT_TIME, Mutability};

/// Largest response the client decodes (etcd's clients use the same limit); tonic's
/// default of 4 MiB is too small for a large range.
const MAX_RESPONSE_BYTES: usize = i32::MAX as usize;

/// Leader hints followed in a row without a backoff wait.
const MAX_IMMEDIATE_HOPS: u32 = 3;

/// Deadlines and backoff of a [`Client`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Total time one call may take, retries and waits included. Default 5 s. No
    /// attempt starts with less than 10 ms left, so a shorter timeout fails at once.
    pub request_timeout: Duration,
    /// Time to establish a connection to one endpoint. Default 1 s.
    pub connect_timeout: Duration,
    /// Upper bound of the first backoff wait. Default 20 ms.
    pub backoff_initial: Duration,
    /// Upper bound of any backoff wait. Default 500 ms.
    pub backoff_max: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_millis(500),
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
}

impl Client {
    /// A client of the servers at `endpoints` (`http://host:port`), default options.
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
        let endpoints = Endpoints::new(urls, options.connect_timeout)?;
        Ok(Client {
            inner: Arc::new(Inner { endpoints, options }),
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
            .call(Mutability::Write, req, |mut kv, r| async move { kv.put(r).await })
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
                |mut kv, r| async move { kv.range(r).await },
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
            .call(Mutability::Write, req, |mut kv, r| async move {
                kv.delete_range(r).await
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
            .call(mutability, req, |mut kv, r| async move { kv.txn(r).await })
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
                |mut kv, r| async move { kv.compact(r).await },
            )
            .await?;
        Ok(CompactionResponse {
            header: resp.header.map(Into::into).unwrap_or_default(),
        })
    }

    /// Run `rpc` until it succeeds, the failure is final, or the deadline passes.
    async fn call<Req, Resp, F, Fut>(&self, mutability: Mutability, request: Req, rpc: F) -> Result<Resp>
    where
        Req: Clone,
        F: Fn(KvClient<Channel>, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<Resp>, Status>>,
    {
        let options = &self.inner.options;
        let endpoints = &self.inner.endpoints;
        let deadline = Instant::now() + options.request_timeout;
        let mut backoff = Backoff::new(options.backoff_initial, options.backoff_max);
        let mut attempts: u32 = 0;
        let mut hops: u32 = 0;
        let mut last_error = String::from("no attempt was made");
        let deadline_exceeded = |attempts, last_error| ClientError::DeadlineExceeded { attempts, last_error };
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining < MIN_ATTEMPT_TIME {
                return Err(deadline_exceeded(attempts, last_error));
            }
            let target = endpoints.preferred()?;
            attempts = attempts.saturating_add(1);
            let mut req = tonic::Request::new(request.clone());
            req.set_timeout(remaining);
            let kv = KvClient::new(target.channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES);
            let failure = match tokio::time::timeout(remaining, rpc(kv, req)).await {
                Ok(Ok(response)) => return Ok(response.into_inner()),
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
                        endpoints.rotate_from(&target);
                    }
                    return Err(e);
                }
                Decision::FollowLeader { urls, reason } => {
                    last_error = format!("{}: {reason}", target.url);
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
                Decision::TryNext { reason } => {
                    last_error = format!("{}: {reason}", target.url);
                    endpoints.rotate_from(&target);
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
}
