//! [`ElectionService`]: etcd's `v3electionpb.Election` gRPC service over an
//! [`ElectionBackend`]. It translates, and answers etcd's statuses for a proclaim by a
//! campaigner that no longer leads (`FailedPrecondition`, "etcdserver: election: not
//! leader") and for a leader query of an election without one (`Unavailable`,
//! "etcdserver: election: no leader"). Observe is a server stream fed by the backend's
//! bounded channel; the client going away drops it, which ends the observation.
//!
//! A `Campaign` waits until it leads, the call's deadline passes or the client goes away
//! (the last two remove the campaigner's key). Leadership held through a lease is not
//! exclusive while the leader is paused past its TTL (etcd issue 11457): fence the
//! leader's writes with a txn comparing the leader key's create revision (`rev`).

use std::future::Future;
use std::sync::Arc;

use raftkv_core::Error;
use raftkv_core::kv::{KeyValue, ResponseHeader, prefix_end};
use raftkv_proto::status::to_status;
use raftkv_proto::v3electionpb as pb;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::gate::{self, AuthGate, Need};
use crate::lock_service::waiter_key;

/// etcd's status text for a proclaim by a campaigner that no longer leads.
pub const ELECTION_NOT_LEADER: &str = "etcdserver: election: not leader";
/// etcd's status text for a leader query of an election without a leader.
pub const ELECTION_NO_LEADER: &str = "etcdserver: election: no leader";

/// A leader key's parts: name, key, create revision, lease.
pub type LeaderKeyParts = (Vec<u8>, Vec<u8>, i64, i64);

/// What serves elections (the node).
pub trait ElectionBackend: Send + Sync + 'static {
    /// Campaign until leading.
    fn campaign(
        &self,
        name: Vec<u8>,
        lease: i64,
        value: Vec<u8>,
    ) -> impl Future<Output = Result<(ResponseHeader, LeaderKeyParts), Error>> + Send;
    /// Set the leader's value; `None` if it no longer leads.
    fn proclaim(
        &self,
        leader: LeaderKeyParts,
        value: Vec<u8>,
    ) -> impl Future<Output = Result<Option<ResponseHeader>, Error>> + Send;
    /// The current leader's key-value, `None` if there is none.
    fn leader(
        &self,
        name: Vec<u8>,
    ) -> impl Future<Output = Result<(ResponseHeader, Option<KeyValue>), Error>> + Send;
    /// Each new leader or value, until the receiver is dropped.
    fn observe(&self, name: Vec<u8>) -> mpsc::Receiver<Result<(ResponseHeader, KeyValue), Error>>;
    /// Give up leadership.
    fn resign(&self, leader: LeaderKeyParts) -> impl Future<Output = Result<ResponseHeader, Error>> + Send;
}

/// The etcd Election gRPC service.
pub struct ElectionService<B> {
    backend: Arc<B>,
}

impl<B: ElectionBackend> ElectionService<B> {
    /// Serve `backend`.
    pub fn new(backend: Arc<B>) -> Self {
        Self { backend }
    }
}

impl<B: AuthGate> ElectionService<B> {
    /// Identify the caller and check `needs` (etcd checks the same through the KV calls
    /// its election makes).
    async fn admit<T>(&self, request: &Request<T>, needs: &[Need<'_>]) -> Result<(), Status> {
        gate::admit(self.backend.as_ref(), request, needs)
            .await
            .map(drop)
            .map_err(|e| to_status(&e))
    }
}

/// The key of a leader (empty if none was given: refused later as etcd refuses it).
fn leader_key_of(leader: Option<&pb::LeaderKey>) -> Vec<u8> {
    leader.map(|l| l.key.clone()).unwrap_or_default()
}

impl<B: AuthGate> ElectionService<B> {
    /// A leader's own calls (proclaim, resign): a txn comparing its key, then writing it.
    async fn admit_leader<T>(&self, request: &Request<T>, key: &[u8]) -> Result<(), Status> {
        self.admit(request, &[Need::Read(key, &[]), Need::Write(key, &[])])
            .await
    }

    /// Looking at an election (leader, observe): reading its prefix.
    async fn admit_observer<T>(&self, request: &Request<T>, name: &[u8]) -> Result<(), Status> {
        let (prefix, _) = waiter_key(name, 0);
        self.admit(request, &[Need::Read(&prefix, &prefix_end(&prefix))])
            .await
    }
}

fn parts(leader: Option<pb::LeaderKey>) -> Result<LeaderKeyParts, Status> {
    let leader = leader.ok_or_else(|| Status::invalid_argument("leader key is not provided"))?;
    Ok((leader.name, leader.key, leader.rev, leader.lease))
}

fn leader_response(header: ResponseHeader, kv: KeyValue) -> pb::LeaderResponse {
    pb::LeaderResponse {
        header: Some(header.into()),
        kv: Some(kv.into()),
    }
}

/// The stream Observe answers with.
pub type ObserveStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::LeaderResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl<B: ElectionBackend + AuthGate> pb::election_server::Election for ElectionService<B> {
    type ObserveStream = ObserveStream;

    #[tracing::instrument(level = "debug", skip_all)]
    async fn campaign(
        &self,
        request: Request<pb::CampaignRequest>,
    ) -> Result<Response<pb::CampaignResponse>, Status> {
        let req = request.get_ref();
        let (prefix, key) = waiter_key(&req.name, req.lease);
        let end = prefix_end(&prefix);
        self.admit(
            &request,
            &[
                Need::Read(&prefix, &end),
                Need::Write(&key, &[]),
                Need::LeaseKeys(req.lease),
            ],
        )
        .await?;
        let req = request.into_inner();
        let (header, (name, key, rev, lease)) = self
            .backend
            .campaign(req.name, req.lease, req.value)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::CampaignResponse {
            header: Some(header.into()),
            leader: Some(pb::LeaderKey {
                name,
                key,
                rev,
                lease,
            }),
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn proclaim(
        &self,
        request: Request<pb::ProclaimRequest>,
    ) -> Result<Response<pb::ProclaimResponse>, Status> {
        let key = leader_key_of(request.get_ref().leader.as_ref());
        self.admit_leader(&request, &key).await?;
        let req = request.into_inner();
        match self.backend.proclaim(parts(req.leader)?, req.value).await {
            Ok(Some(header)) => Ok(Response::new(pb::ProclaimResponse {
                header: Some(header.into()),
            })),
            Ok(None) => Err(Status::failed_precondition(ELECTION_NOT_LEADER)),
            Err(e) => Err(to_status(&e)),
        }
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn leader(
        &self,
        request: Request<pb::LeaderRequest>,
    ) -> Result<Response<pb::LeaderResponse>, Status> {
        self.admit_observer(&request, &request.get_ref().name).await?;
        match self.backend.leader(request.into_inner().name).await {
            Ok((header, Some(kv))) => Ok(Response::new(leader_response(header, kv))),
            Ok((_, None)) => Err(Status::unavailable(ELECTION_NO_LEADER)),
            Err(e) => Err(to_status(&e)),
        }
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn observe(&self, request: Request<pb::LeaderRequest>) -> Result<Response<ObserveStream>, Status> {
        self.admit_observer(&request, &request.get_ref().name).await?;
        let rx = self.backend.observe(request.into_inner().name);
        let stream = ReceiverStream::new(rx).map(|item| match item {
            Ok((header, kv)) => Ok(leader_response(header, kv)),
            Err(e) => Err(to_status(&e)),
        });
        Ok(Response::new(Box::pin(stream)))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn resign(
        &self,
        request: Request<pb::ResignRequest>,
    ) -> Result<Response<pb::ResignResponse>, Status> {
        let key = leader_key_of(request.get_ref().leader.as_ref());
        self.admit_leader(&request, &key).await?;
        let header = self
            .backend
            .resign(parts(request.into_inner().leader)?)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::ResignResponse {
            header: Some(header.into()),
        }))
    }
}
