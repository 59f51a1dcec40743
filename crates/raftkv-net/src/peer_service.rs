//! [`PeerService`]: the server side of the peer protocol. It decodes openraft's messages
//! and feeds them to the local Raft, answers read-index requests when this node leads,
//! proposes writes that followers forward and answers the lease calls they forward.

use std::future::Future;
use std::sync::Arc;

use openraft::Snapshot;
use openraft::error::{CheckIsLeaderError, RaftError};
use raftkv_core::codec;
use raftkv_core::types::{MemberNode, NodeId, Raft, TypeConfig};
use raftkv_core::{Command, Error, LeaseAnswer, LeaseCall, MembershipChange, Response};
use raftkv_proto::raftkvpeer::raft_peer_server::RaftPeer;
use raftkv_proto::raftkvpeer::{RaftBytes, ReadIndexRequest, ReadIndexResponse, SnapshotChunk};
use tokio::io::AsyncWriteExt;
use tonic::{Request, Response as GrpcResponse, Status, Streaming};

/// Where forwarded writes go: the local node's proposer (validated again here: a leader
/// does not trust a follower's checks).
pub trait ForwardTarget: Send + Sync + 'static {
    /// Propose `command` on this node; the answer and the term of its entry.
    fn propose_forwarded(
        &self,
        command: Command,
    ) -> impl Future<Output = Result<(Response, u64), Error>> + Send;
    /// Make a membership change forwarded by a follower (only if this node leads).
    fn change_membership_forwarded(
        &self,
        change: MembershipChange,
    ) -> impl Future<Output = Result<(), Error>> + Send;
    /// Answer a lease call a follower forwarded (only if this node leads; never forwarded
    /// again).
    fn lease_forwarded(&self, call: LeaseCall) -> impl Future<Output = Result<LeaseAnswer, Error>> + Send;
}

/// The peer gRPC service.
pub struct PeerService<F> {
    raft: Raft,
    forward: Arc<F>,
    read_floor: u64,
}

impl<F: ForwardTarget> PeerService<F> {
    /// Serve the peer protocol for `raft`, proposing forwarded writes through `forward`;
    /// read indexes it answers as leader are at least `read_floor` (see
    /// [`leader_read_index`]).
    pub fn new(raft: Raft, forward: Arc<F>, read_floor: u64) -> Self {
        Self {
            raft,
            forward,
            read_floor,
        }
    }
}

/// The read index this node can serve reads at as leader: openraft's read log id (the
/// greater of the commit index and the leader's first entry of its term), raised to
/// `floor`, the last log index the node had when it started.
///
/// Why the floor: openraft 0.9 restores a leader that restarts with its own committed
/// vote as leader at once, in the same term (`Engine::startup`). Its "first entry of the
/// term" is then an old one, and the commit index it loaded is whatever `save_committed`
/// last left on disk, which is not synced: entries committed (and acknowledged) just
/// before the crash can lie above both. A read at that index missed an acknowledged
/// write (a full-restart fault test caught it). Every entry that may have been committed
/// before the restart is in the leader's log (openraft syncs the leader's own append
/// before it counts it), so waiting until the log as it was at startup is applied closes
/// the gap; a leader elected normally has its new first entry above the floor anyway.
pub async fn leader_read_index(raft: &Raft, floor: u64) -> Result<u64, Error> {
    let (read, _applied) = raft.get_read_log_id().await.map_err(read_index_error)?;
    Ok(read.map_or(0, |l| l.index).max(floor))
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Status> {
    codec::decode(bytes).map_err(|e| Status::invalid_argument(format!("undecodable peer message: {e}")))
}

fn encode<T: serde::Serialize>(value: &T) -> Result<RaftBytes, Status> {
    codec::encode(value)
        .map(|data| RaftBytes { data })
        .map_err(|e| Status::internal(e.to_string()))
}

/// openraft's answer to a leadership check, as raftkv's error.
pub fn read_index_error(e: RaftError<NodeId, CheckIsLeaderError<NodeId, MemberNode>>) -> Error {
    match e {
        RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)) => Error::NotLeader {
            leader_id: f.leader_id,
            leader_client_urls: f.leader_node.map(|n| n.client_urls).unwrap_or_default(),
        },
        RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)) => Error::Timeout(q.to_string()),
        RaftError::Fatal(f) => Error::Shutdown(f.to_string()),
    }
}

#[tonic::async_trait]
impl<F: ForwardTarget> RaftPeer for PeerService<F> {
    async fn append_entries(&self, request: Request<RaftBytes>) -> Result<GrpcResponse<RaftBytes>, Status> {
        let rpc: openraft::raft::AppendEntriesRequest<TypeConfig> = decode(&request.into_inner().data)?;
        let result = self.raft.append_entries(rpc).await;
        Ok(GrpcResponse::new(encode(&result)?))
    }

    async fn vote(&self, request: Request<RaftBytes>) -> Result<GrpcResponse<RaftBytes>, Status> {
        let rpc: openraft::raft::VoteRequest<NodeId> = decode(&request.into_inner().data)?;
        let result = self.raft.vote(rpc).await;
        Ok(GrpcResponse::new(encode(&result)?))
    }

    #[tracing::instrument(level = "info", skip_all)]
    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<GrpcResponse<RaftBytes>, Status> {
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let (vote, meta): (openraft::Vote<NodeId>, openraft::SnapshotMeta<NodeId, MemberNode>) =
            decode(&first.header)?;
        // Refuse a sender whose vote is below ours before writing anything to disk (openraft
        // would refuse it after the whole stream, which lets anyone fill the disk).
        let ours = self.raft.metrics().borrow().vote;
        if vote < ours {
            let refused: Result<openraft::raft::SnapshotResponse<NodeId>, openraft::error::Fatal<NodeId>> =
                Ok(openraft::raft::SnapshotResponse { vote: ours });
            return Ok(GrpcResponse::new(encode(&refused)?));
        }
        let mut file = self
            .raft
            .begin_receiving_snapshot()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let io = |e: std::io::Error| Status::internal(format!("writing the received snapshot: {e}"));
        file.write_all(&first.data).await.map_err(io)?;
        let mut bytes = first.data.len() as u64;
        while let Some(chunk) = stream.message().await? {
            file.write_all(&chunk.data).await.map_err(io)?;
            bytes += chunk.data.len() as u64;
        }
        file.flush().await.map_err(io)?;
        tracing::info!(bytes, last_log_id = ?meta.last_log_id, "snapshot received");
        let result = self
            .raft
            .install_full_snapshot(vote, Snapshot { meta, snapshot: file })
            .await;
        Ok(GrpcResponse::new(encode(&result)?))
    }

    async fn read_index(
        &self,
        _request: Request<ReadIndexRequest>,
    ) -> Result<GrpcResponse<ReadIndexResponse>, Status> {
        let result: Result<u64, Error> = leader_read_index(&self.raft, self.read_floor).await;
        Ok(GrpcResponse::new(ReadIndexResponse {
            data: encode(&result)?.data,
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn forward(&self, request: Request<RaftBytes>) -> Result<GrpcResponse<RaftBytes>, Status> {
        let command: Command = decode(&request.into_inner().data)?;
        let result = self.forward.propose_forwarded(command).await;
        Ok(GrpcResponse::new(encode(&result)?))
    }

    #[tracing::instrument(level = "info", skip_all)]
    async fn change_membership(
        &self,
        request: Request<RaftBytes>,
    ) -> Result<GrpcResponse<RaftBytes>, Status> {
        let change: MembershipChange = decode(&request.into_inner().data)?;
        let result = self.forward.change_membership_forwarded(change).await;
        Ok(GrpcResponse::new(encode(&result)?))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn lease(&self, request: Request<RaftBytes>) -> Result<GrpcResponse<RaftBytes>, Status> {
        let call: LeaseCall = decode(&request.into_inner().data)?;
        let result = self.forward.lease_forwarded(call).await;
        Ok(GrpcResponse::new(encode(&result)?))
    }
}
