//! [`PeerNetwork`] / [`PeerClient`]: openraft's network over the peer gRPC protocol.

use std::future::Future;
use std::time::Duration;

use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{Snapshot, Vote};
use raftkv_core::codec;
use raftkv_core::types::{MemberNode, NodeId, TypeConfig};
use raftkv_proto::raftkvpeer::raft_peer_client::RaftPeerClient;
use raftkv_proto::raftkvpeer::{RaftBytes, SnapshotChunk};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tonic::Code;
use tonic::transport::Channel;

use crate::connections::{PeerConnections, PeerError};
use crate::faults::NetFaults;

/// Snapshot chunk size: big enough to stream fast, small enough to bound memory.
const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

/// openraft's network factory: a [`PeerClient`] per target, over shared channels.
#[derive(Clone)]
pub struct PeerNetwork {
    connections: PeerConnections,
}

impl PeerNetwork {
    /// A network over `connections`.
    pub fn new(connections: PeerConnections) -> Self {
        Self { connections }
    }
}

/// The client side of the peer protocol towards one target.
pub struct PeerClient {
    target: NodeId,
    peer_url: String,
    client: Result<RaftPeerClient<Channel>, PeerError>,
    faults: NetFaults,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &MemberNode) -> Self::Network {
        PeerClient {
            target,
            peer_url: node.peer_url.clone(),
            client: self.connections.client(&node.peer_url),
            faults: self.connections.faults().clone(),
        }
    }
}

type RpcError<E = openraft::error::Infallible> = RPCError<NodeId, MemberNode, E>;

fn network<E: std::error::Error>(e: &(impl std::error::Error + 'static)) -> RpcError<E> {
    RPCError::Network(NetworkError::new(e))
}

/// Map a failed call: unreachable peers make openraft back off, oversized messages make it
/// send fewer entries, anything else is a plain network error.
fn from_status<E: std::error::Error>(status: tonic::Status, entries: u64) -> RpcError<E> {
    match status.code() {
        Code::Unavailable => RPCError::Unreachable(Unreachable::new(&status)),
        Code::ResourceExhausted | Code::OutOfRange
            if status.message().contains("message length too large") =>
        {
            RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint((entries / 2).max(1)))
        }
        _ => network(&status),
    }
}

/// The unary Raft RPCs (snapshots stream through `full_snapshot`).
#[derive(Clone, Copy)]
enum RaftRpc {
    AppendEntries,
    Vote,
}

impl RaftRpc {
    async fn send(
        self,
        mut client: RaftPeerClient<Channel>,
        request: tonic::Request<RaftBytes>,
    ) -> Result<tonic::Response<RaftBytes>, tonic::Status> {
        match self {
            RaftRpc::AppendEntries => client.append_entries(request).await,
            RaftRpc::Vote => client.vote(request).await,
        }
    }
}

impl PeerClient {
    fn client(&self) -> Result<RaftPeerClient<Channel>, Unreachable> {
        self.client.clone().map_err(|e| Unreachable::new(&e))
    }

    async fn unary<Req, Resp, E>(
        &mut self,
        rpc: RaftRpc,
        request: &Req,
        timeout: Duration,
        entries: u64,
    ) -> Result<Resp, RpcError<RaftError<NodeId, E>>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        E: std::error::Error + serde::de::DeserializeOwned,
    {
        let client = self.client().map_err(RPCError::Unreachable)?;
        let data = codec::encode(request).map_err(|e| network(&e))?;
        let duplicate = self
            .faults
            .before_request(&self.peer_url, timeout, true)
            .await
            .map_err(|lost| network(&lost))?;
        if let Some(after) = duplicate {
            // Test-only: the same message again, later and out of order; its answer is
            // ignored, as a duplicated packet's would be.
            let (client, data) = (client.clone(), data.clone());
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let mut req = tonic::Request::new(RaftBytes { data });
                req.set_timeout(timeout);
                let _ = rpc.send(client, req).await;
            });
        }
        let mut req = tonic::Request::new(RaftBytes { data });
        req.set_timeout(timeout);
        let answer = rpc.send(client, req).await.map_err(|s| from_status(s, entries))?;
        self.faults
            .after_response(&self.peer_url)
            .map_err(|lost| network(&lost))?;
        let result: Result<Resp, RaftError<NodeId, E>> =
            codec::decode(&answer.into_inner().data).map_err(|e| network(&e))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    #[tracing::instrument(level = "trace", skip_all, fields(target = self.target))]
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError<RaftError<NodeId>>> {
        let entries = rpc.entries.len() as u64;
        self.unary(RaftRpc::AppendEntries, &rpc, option.hard_ttl(), entries)
            .await
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcError<RaftError<NodeId, InstallSnapshotError>>> {
        // Snapshots go through `full_snapshot` as one stream; openraft 0.9 does not call
        // the chunk-per-RPC path when `full_snapshot` is provided.
        Err(network(&PeerError::Rpc {
            code: Code::Unimplemented,
            message: "chunked install_snapshot is not used; see full_snapshot".into(),
        }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(target = self.target))]
    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcError<RaftError<NodeId>>> {
        self.unary(RaftRpc::Vote, &rpc, option.hard_ttl(), 0).await
    }

    #[tracing::instrument(level = "info", skip_all, fields(target = self.target, snapshot = %snapshot.meta.snapshot_id))]
    async fn full_snapshot(
        &mut self,
        vote: Vote<NodeId>,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let mut client = self.client().map_err(StreamingError::Unreachable)?;
        self.faults
            .before_request(&self.peer_url, option.hard_ttl(), false)
            .await
            .map_err(|lost| NetworkError::new(&lost))?;
        let header = codec::encode(&(vote, snapshot.meta.clone())).map_err(|e| NetworkError::new(&e))?;
        let mut file = snapshot.snapshot;
        file.rewind().await.map_err(|e| NetworkError::new(&e))?;
        let total = file.metadata().await.map_err(|e| NetworkError::new(&e))?.len();
        let chunk_bytes = option
            .snapshot_chunk_size()
            .unwrap_or(SNAPSHOT_CHUNK_BYTES)
            .max(64 * 1024);
        // Two chunks in flight at most: memory stays bounded whatever the snapshot size.
        let (tx, rx) = tokio::sync::mpsc::channel::<SnapshotChunk>(2);
        let reader = tokio::spawn(async move {
            let mut header = Some(header);
            loop {
                let mut data = vec![0u8; chunk_bytes];
                let mut filled = 0;
                while filled < chunk_bytes {
                    let n = file.read(&mut data[filled..]).await?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                data.truncate(filled);
                let last = filled < chunk_bytes;
                let chunk = SnapshotChunk {
                    header: header.take().unwrap_or_default(),
                    data,
                };
                if tx.send(chunk).await.is_err() || last {
                    return Ok::<(), std::io::Error>(());
                }
            }
        });
        // The whole transfer gets a deadline proportional to its size (one hard TTL per
        // chunk, at least 30 s), so a stuck peer cannot hold replication forever.
        let chunks = total / chunk_bytes as u64 + 1;
        let deadline = (option.hard_ttl() * chunks as u32).max(Duration::from_secs(30));
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        request.set_timeout(deadline);
        let sent = tokio::select! {
            closed = cancel => {
                reader.abort();
                return Err(StreamingError::Closed(closed));
            }
            sent = client.install_snapshot(request) => sent,
        };
        match reader.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(StreamingError::Network(NetworkError::new(&e))),
            Err(e) => return Err(StreamingError::Network(NetworkError::new(&e))),
        }
        let answer = sent.map_err(|status| match from_status::<Fatal<NodeId>>(status, 0) {
            RPCError::Unreachable(u) => StreamingError::Unreachable(u),
            RPCError::Network(n) => StreamingError::Network(n),
            other => StreamingError::Network(NetworkError::new(&other)),
        })?;
        self.faults
            .after_response(&self.peer_url)
            .map_err(|lost| NetworkError::new(&lost))?;
        let result: Result<SnapshotResponse<NodeId>, Fatal<NodeId>> =
            codec::decode(&answer.into_inner().data).map_err(|e| NetworkError::new(&e))?;
        result.map_err(|e| StreamingError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl std::fmt::Debug for PeerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PeerClient({} at {})", self.target, self.peer_url)
    }
}
