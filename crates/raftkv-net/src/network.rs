//! [`PeerNetwork`] / [`PeerClient`]: openraft's network (`RaftNetworkV2`) over the peer
//! gRPC protocol: unary append (split by bytes), pipelined append (`stream_append.rs`),
//! vote and pre-vote, leadership transfer, and snapshots streamed in bounded chunks.

use std::future::Future;
use std::time::Duration;

use futures_util::Stream;
use openraft::base::{BoxFuture, BoxStream};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use raftkv_core::codec;
use raftkv_core::types::{MemberNode, NodeId, Snapshot, SnapshotData, TypeConfig, Vote};
use raftkv_proto::raftkvpeer::SnapshotChunk;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::append_split::{PART_BYTES, UnaryFold, last_log_id, split_by_bytes};
use crate::connections::PeerConnections;
use crate::peer_client::{PeerClient, RaftRpc, RpcError, from_status, network};
use crate::peer_rpc::checked;

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

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &MemberNode) -> Self::Network {
        PeerClient {
            target,
            peer_url: node.peer_url.clone(),
            client: self.connections.client(&node.peer_url),
            faults: self.connections.faults().clone(),
            traffic: self.connections.traffic().peer_at(target, &node.peer_url),
        }
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotData;

    /// One request, split by bytes into parts sent one after another (`append_split`).
    #[tracing::instrument(level = "trace", skip_all, fields(target = self.target))]
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RpcError> {
        let parts = split_by_bytes(rpc, PART_BYTES).map_err(|e| network(&e))?;
        let mut fold = UnaryFold::new();
        let mut answer = AppendEntriesResponse::Success;
        for part in parts {
            let last = last_log_id(&part);
            let reply: AppendEntriesResponse<TypeConfig> = self
                .unary::<_, _, openraft::error::RaftError<TypeConfig>>(
                    RaftRpc::AppendEntries,
                    &part,
                    option.hard_ttl(),
                )
                .await?;
            if let Some(decided) = fold.next(reply, last) {
                answer = decided;
                break;
            }
        }
        Ok(answer)
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RpcError>>, RpcError>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + openraft::OptionalSend + Unpin + 'static,
    {
        Box::pin(crate::stream_append::open(self, input, option))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(target = self.target))]
    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RpcError> {
        self.unary::<_, _, openraft::error::RaftError<TypeConfig>>(RaftRpc::Vote, &rpc, option.hard_ttl())
            .await
    }

    /// Sent for real: openraft's default grants every pre-vote, which would make pre-vote
    /// a no-op.
    #[tracing::instrument(level = "debug", skip_all, fields(target = self.target))]
    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RpcError> {
        self.unary::<_, _, openraft::error::RaftError<TypeConfig>>(RaftRpc::PreVote, &rpc, option.hard_ttl())
            .await
    }

    /// Sent for real: openraft's default answers "unreachable", which would make every
    /// leadership transfer wait out an election.
    #[tracing::instrument(level = "info", skip_all, fields(target = self.target))]
    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RpcError> {
        self.unary::<_, _, openraft::error::Fatal<TypeConfig>>(
            RaftRpc::TransferLeader,
            &req,
            option.hard_ttl(),
        )
        .await
    }

    #[tracing::instrument(level = "info", skip_all, fields(target = self.target, last_log_id = ?snapshot.meta.last_log_id))]
    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
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
        let traffic = self.traffic.clone();
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
                traffic.sent(filled + header.as_ref().map_or(0, Vec::len));
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
        let answer = sent.map_err(|status| {
            self.traffic.failed();
            match from_status(status) {
                RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                RPCError::Network(n) => StreamingError::Network(n),
                other => StreamingError::Network(NetworkError::new(&other)),
            }
        })?;
        self.faults
            .after_response(&self.peer_url)
            .map_err(|lost| NetworkError::new(&lost))?;
        let answer = checked(answer).map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))?;
        let result: Result<SnapshotResponse<TypeConfig>, openraft::error::Fatal<TypeConfig>> =
            codec::decode(&answer.data).map_err(|e| NetworkError::new(&e))?;
        result.map_err(|e| StreamingError::Network(NetworkError::new(&e)))
    }
}
