//! [`LeaseService`]: etcd's `Lease` gRPC service over a [`LeaseBackend`]. Grant, Revoke,
//! TimeToLive and Leases are unary calls that translate and delegate; KeepAlive is a
//! bidirectional stream served by one task per stream, which answers each request in
//! order (a renewal is answered only once the leader has confirmed its leadership: the
//! backend's business) into a small bounded channel, so a client that stops reading
//! stops the task instead of growing a queue.
//!
//! As etcd: a keep-alive of a lease that does not exist is answered with TTL 0 (not an
//! error), a time-to-live of one with TTL -1; a keep-alive stream opened with etcd's
//! require-leader metadata is refused, or ended, with "no leader" while its member has
//! none (`require_leader.rs`).

use std::future::Future;
use std::sync::Arc;

use raftkv_core::Error;
use raftkv_core::auth::Caller;
use raftkv_core::kv::ResponseHeader;
use raftkv_core::lease::LeaseInfo;
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::status::to_status;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::gate::{self, AuthGate};
use crate::require_leader::{LeaderMonitor, LeaderStatus};

/// Keep-alive answers waiting for the client to read them.
const OUTBOUND_BUFFER: usize = 16;

/// What serves leases (the node). Grants and revokes go through the log and so look at
/// the caller's credentials, as etcd's do; a revoke is made as the caller (it must be
/// able to write every key attached).
pub trait LeaseBackend: LeaderStatus + AuthGate {
    /// Grant a lease of `ttl` seconds with `id` (0: the server picks one); the id and the
    /// TTL granted.
    fn lease_grant(
        &self,
        id: i64,
        ttl: i64,
    ) -> impl Future<Output = Result<(ResponseHeader, i64, i64), Error>> + Send;
    /// Revoke a lease, deleting its keys.
    fn lease_revoke(
        &self,
        caller: Caller,
        id: i64,
    ) -> impl Future<Output = Result<ResponseHeader, Error>> + Send;
    /// Renew a lease: the TTL it was renewed for (0: no such lease).
    fn lease_keep_alive(&self, id: i64) -> impl Future<Output = Result<(ResponseHeader, i64), Error>> + Send;
    /// A lease's remaining and granted TTL and optionally its keys (TTL -1: no such lease).
    fn lease_time_to_live(
        &self,
        id: i64,
        keys: bool,
    ) -> impl Future<Output = Result<(ResponseHeader, LeaseInfo), Error>> + Send;
    /// Every lease's id.
    fn lease_list(&self) -> impl Future<Output = Result<(ResponseHeader, Vec<i64>), Error>> + Send;
}

/// The etcd Lease gRPC service.
pub struct LeaseService<B> {
    backend: Arc<B>,
}

impl<B: LeaseBackend> LeaseService<B> {
    /// Serve `backend`.
    pub fn new(backend: Arc<B>) -> Self {
        Self { backend }
    }
}

fn status(e: Error) -> Status {
    to_status(&e)
}

#[tonic::async_trait]
impl<B: LeaseBackend> pb::lease_server::Lease for LeaseService<B> {
    type LeaseKeepAliveStream = ReceiverStream<Result<pb::LeaseKeepAliveResponse, Status>>;

    #[tracing::instrument(level = "debug", skip_all)]
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        gate::admit(self.backend.as_ref(), &request, &[])
            .await
            .map_err(status)?;
        let req = request.into_inner();
        let (header, id, ttl) = self.backend.lease_grant(req.id, req.ttl).await.map_err(status)?;
        Ok(Response::new(pb::LeaseGrantResponse {
            header: Some(header.into()),
            id,
            ttl,
            error: String::new(),
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let caller = gate::admit(self.backend.as_ref(), &request, &[])
            .await
            .map_err(status)?;
        let header = self
            .backend
            .lease_revoke(caller, request.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::LeaseRevokeResponse {
            header: Some(header.into()),
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut monitor = LeaderMonitor::for_call(request.metadata(), self.backend.as_ref())?;
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER);
        let backend = self.backend.clone();
        tokio::spawn(
            async move {
                loop {
                    let next = tokio::select! {
                        next = inbound.message() => next,
                        () = tx.closed() => return,
                        () = LeaderMonitor::lost(&mut monitor, backend.as_ref()) => {
                            tracing::debug!("no leader for the require-leader keep-alive stream; ending it");
                            let _ = tx.send(Err(LeaderMonitor::lost_status())).await;
                            return;
                        }
                    };
                    let req = match next {
                        Ok(Some(req)) => req,
                        Ok(None) => return,
                        Err(e) => {
                            tracing::debug!(error = %e, "keep-alive stream ended");
                            return;
                        }
                    };
                    let answer = backend
                        .lease_keep_alive(req.id)
                        .await
                        .map(|(header, ttl)| pb::LeaseKeepAliveResponse {
                            header: Some(header.into()),
                            id: req.id,
                            ttl,
                        })
                        .map_err(status);
                    let failed = answer.is_err();
                    if tx.send(answer).await.is_err() || failed {
                        return;
                    }
                }
            }
            .instrument(tracing::debug_span!("lease_keep_alive_stream")),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let req = request.into_inner();
        let (header, info) = self
            .backend
            .lease_time_to_live(req.id, req.keys)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::LeaseTimeToLiveResponse {
            header: Some(header.into()),
            id: req.id,
            ttl: info.ttl,
            granted_ttl: info.granted_ttl,
            keys: info.keys,
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn lease_leases(
        &self,
        _request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let (header, ids) = self.backend.lease_list().await.map_err(status)?;
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: Some(header.into()),
            leases: ids.into_iter().map(|id| pb::LeaseStatus { id }).collect(),
        }))
    }
}
