//! [`PeerService`]: the server side of the peer protocol. It decodes openraft's messages
//! and feeds them to the local Raft, answers read-index requests when this node leads,
//! proposes writes that followers forward and answers the lease calls they forward.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use openraft::async_runtime::WatchReceiver;
use openraft::error::{LinearizableReadError, RaftError};
use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use openraft::vote::RaftLeaderId;
use raftkv_core::codec;
use raftkv_core::types::{
    KvStateMachine, NodeId, Raft, Snapshot, SnapshotData, SnapshotMeta, TypeConfig, Vote,
};
use raftkv_core::{Command, Error, LeaseAnswer, LeaseCall, MembershipChange, Response};
use raftkv_proto::raftkvpeer::raft_peer_server::RaftPeer;
use raftkv_proto::raftkvpeer::{RaftBytes, ReadIndexRequest, ReadIndexResponse, SnapshotChunk};
use tokio::io::AsyncWriteExt;
use tonic::{Request, Response as GrpcResponse, Status, Streaming};

use crate::peer_protocol::stamp_answer;
use crate::peer_traffic::{PeerCounters, PeerTraffic};

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
    /// A read index confirmed by this node as leader after the call started, for a
    /// follower's `ReadIndex` RPC (never passed on to another node). The node may share
    /// one heartbeat round among many callers; [`leader_read_index`] is one round each.
    fn read_index_forwarded(&self) -> impl Future<Output = Result<u64, Error>> + Send;
    /// An append (replication or heartbeat) arrived from a leader: the node counts a
    /// leader it knows as alive only while these keep coming.
    fn heard_from_leader(&self) {}
    /// Resolves once the node is shutting down. A forward stream never ends on its own:
    /// it stops taking writes then, answers those in flight and ends, so the server can
    /// drain (and a stopping leader does not hold its election back meanwhile).
    fn stopping(&self) -> impl Future<Output = ()> + Send + 'static;
}

/// Makes the file a snapshot from the leader is received into (the storage's snapshot
/// directory; openraft 0.10 leaves receiving to the network).
pub type SnapshotInbox = Arc<dyn Fn() -> std::io::Result<std::fs::File> + Send + Sync>;

/// The peer gRPC service.
pub struct PeerService<F, SM: KvStateMachine> {
    raft: Raft<SM>,
    forward: Arc<F>,
    inbox: SnapshotInbox,
    traffic: PeerTraffic,
}

impl<F: ForwardTarget, SM: KvStateMachine> PeerService<F, SM> {
    /// Serve the peer protocol for `raft`, proposing forwarded writes and answering
    /// followers' read-index requests through `forward`; snapshots are received into
    /// files from `inbox`. Raft's
    /// messages from a peer (appends, votes: they name their sender) and the answers to
    /// them are counted in `traffic`, as the bytes received from and sent to that peer.
    pub fn new(raft: Raft<SM>, forward: Arc<F>, inbox: SnapshotInbox, traffic: PeerTraffic) -> Self {
        Self {
            raft,
            forward,
            inbox,
            traffic,
        }
    }

    /// Count a Raft message of `bytes` from the member `vote` names (its leader or
    /// candidate); its counters, for the answer.
    fn received_from(&self, vote: &Vote, bytes: usize) -> Arc<PeerCounters> {
        let counters = self.traffic.peer(*vote.leader_id().node_id());
        counters.received(bytes);
        counters
    }

    /// Encode an answer to a counted message, counting it as sent.
    fn answer<T: serde::Serialize>(
        counters: &PeerCounters,
        answer: &T,
    ) -> Result<GrpcResponse<RaftBytes>, Status> {
        let encoded = encode(answer)?;
        counters.sent(encoded.data.len());
        Ok(stamp_answer(GrpcResponse::new(encoded)))
    }
}

/// Every member of `raft`'s membership (voters and learners) with its peer URL, as this
/// member knows it now.
pub fn member_peer_urls<SM: KvStateMachine>(raft: &Raft<SM>) -> Vec<(NodeId, String)> {
    raft.metrics()
        .borrow_watched()
        .membership_config
        .membership()
        .nodes()
        .map(|(id, node)| (*id, node.peer_url.clone()))
        .collect()
}

/// The read index this node can serve reads at as leader: openraft's read log id (the
/// greater of the commit index and the leader's first entry of its term), raised to
/// `floor`, the last log index the node had when it started.
///
/// Why the floor: openraft restores a leader that restarts with its own committed vote
/// as leader at once, in the same term, unless `enable_leader_restore` is off (raftkv
/// turns it off, but the floor costs nothing and guards the case). Such a leader's "first
/// entry of the term" is an old one, and the commit index it loaded is whatever
/// `save_committed` last left on disk, which is not synced: entries committed (and
/// acknowledged) just before the crash can lie above both. A read at that index missed an
/// acknowledged write under 0.9 (a full-restart fault test caught it). Waiting until the
/// log as it was at startup is applied closes the gap; a leader elected normally has its
/// new first entry above the floor anyway.
pub async fn leader_read_index<SM: KvStateMachine>(raft: &Raft<SM>, floor: u64) -> Result<u64, Error> {
    let (read, _applied) = raft
        .get_read_log_id(openraft::ReadPolicy::ReadIndex)
        .await
        .map_err(read_index_error)?;
    Ok(read.index().max(floor))
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
pub fn read_index_error(e: RaftError<TypeConfig, LinearizableReadError<TypeConfig>>) -> Error {
    match e {
        RaftError::APIError(LinearizableReadError::ForwardToLeader(f)) => Error::NotLeader {
            leader_id: f.leader_id,
            leader_client_urls: f.leader_node.map(|n| n.client_urls).unwrap_or_default(),
        },
        RaftError::APIError(LinearizableReadError::QuorumNotEnough(q)) => Error::Timeout(q.to_string()),
        RaftError::Fatal(f) => Error::Shutdown(f.to_string()),
    }
}

/// The answers of a pipelined append stream.
type AnswerStream = Pin<Box<dyn Stream<Item = Result<RaftBytes, Status>> + Send>>;

#[tonic::async_trait]
impl<F: ForwardTarget, SM: KvStateMachine> RaftPeer for PeerService<F, SM> {
    async fn append_entries(&self, request: Request<RaftBytes>) -> Result<GrpcResponse<RaftBytes>, Status> {
        let data = request.into_inner().data;
        let rpc: AppendEntriesRequest<TypeConfig> = decode(&data)?;
        let from = self.received_from(&rpc.vote, data.len());
        self.forward.heard_from_leader();
        let result = self.raft.append_entries(rpc).await;
        Self::answer(&from, &result)
    }

    type StreamAppendStream = AnswerStream;

    /// openraft answers each request in order; a message that does not decode ends the
    /// input there (the leader sees the stream end with parts unanswered, and starts over).
    async fn stream_append(
        &self,
        request: Request<Streaming<RaftBytes>>,
    ) -> Result<GrpcResponse<Self::StreamAppendStream>, Status> {
        let contact = self.forward.clone();
        // One leader per stream: its counters, once its first message names it.
        let from: Arc<std::sync::OnceLock<Arc<PeerCounters>>> = Arc::default();
        let (traffic, from_requests) = (self.traffic.clone(), from.clone());
        // The leader never ends this stream: it ends here when the node stops (openraft
        // answers what it took), or the server would wait out its drain deadline.
        let requests = request
            .into_inner()
            .take_until(self.forward.stopping())
            .map(move |message| match message {
                Ok(bytes) => match codec::decode::<AppendEntriesRequest<TypeConfig>>(&bytes.data) {
                    Ok(rpc) => {
                        from_requests
                            .get_or_init(|| traffic.peer(*rpc.vote.leader_id().node_id()))
                            .received(bytes.data.len());
                        contact.heard_from_leader();
                        Some(rpc)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "undecodable append in a peer stream: ending it");
                        None
                    }
                },
                Err(_) => None,
            })
            .take_while(|rpc| std::future::ready(rpc.is_some()))
            .filter_map(std::future::ready);
        let answers = self.raft.stream_append(requests).map(move |answer| {
            let encoded = encode(&answer);
            if let (Ok(bytes), Some(counters)) = (&encoded, from.get()) {
                counters.sent(bytes.data.len());
            }
            encoded
        });
        Ok(stamp_answer(GrpcResponse::new(Box::pin(answers))))
    }

    async fn vote(&self, request: Request<RaftBytes>) -> Result<GrpcResponse<RaftBytes>, Status> {
        let data = request.into_inner().data;
        let rpc: VoteRequest<TypeConfig> = decode(&data)?;
        let from = self.received_from(&rpc.vote, data.len());
        let result = self.raft.vote(rpc).await;
        Self::answer(&from, &result)
    }

    async fn pre_vote(&self, request: Request<RaftBytes>) -> Result<GrpcResponse<RaftBytes>, Status> {
        let data = request.into_inner().data;
        let rpc: VoteRequest<TypeConfig> = decode(&data)?;
        let from = self.received_from(&rpc.vote, data.len());
        let result = self.raft.pre_vote(rpc).await;
        Self::answer(&from, &result)
    }

    #[tracing::instrument(level = "info", skip_all)]
    async fn transfer_leader(&self, request: Request<RaftBytes>) -> Result<GrpcResponse<RaftBytes>, Status> {
        let rpc: TransferLeaderRequest<TypeConfig> = decode(&request.into_inner().data)?;
        let result = self.raft.handle_transfer_leader(rpc).await;
        Ok(stamp_answer(GrpcResponse::new(encode(&result)?)))
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
        let (vote, meta): (Vote, SnapshotMeta) = decode(&first.header)?;
        // Refuse a sender whose vote is below ours before writing anything to disk (openraft
        // would refuse it after the whole stream, which lets anyone fill the disk).
        let ours = self.raft.metrics().borrow_watched().vote;
        if vote < ours {
            let refused: Result<
                openraft::raft::SnapshotResponse<TypeConfig>,
                openraft::error::Fatal<TypeConfig>,
            > = Ok(openraft::raft::SnapshotResponse { vote: ours });
            return Ok(stamp_answer(GrpcResponse::new(encode(&refused)?)));
        }
        let inbox = self.inbox.clone();
        let file: SnapshotData = tokio::task::spawn_blocking(move || inbox())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map(tokio::fs::File::from_std)
            .map_err(|e| Status::unavailable(format!("no file to receive the snapshot into: {e}")))?;
        let mut file = file;
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
        Ok(stamp_answer(GrpcResponse::new(encode(&result)?)))
    }

    async fn read_index(
        &self,
        _request: Request<ReadIndexRequest>,
    ) -> Result<GrpcResponse<ReadIndexResponse>, Status> {
        let result: Result<u64, Error> = self.forward.read_index_forwarded().await;
        Ok(stamp_answer(GrpcResponse::new(ReadIndexResponse {
            data: encode(&result)?.data,
        })))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn forward(&self, request: Request<RaftBytes>) -> Result<GrpcResponse<RaftBytes>, Status> {
        let command: Command = decode(&request.into_inner().data)?;
        let result = self.forward.propose_forwarded(command).await;
        Ok(stamp_answer(GrpcResponse::new(encode(&result)?)))
    }

    type ForwardStreamStream = AnswerStream;

    /// Each forwarded write is proposed as it arrives, beside the others; answers go back
    /// as they complete, batched as they queue (`forward_pipe.rs` is the other end). A
    /// message that does not decode ends the input there; the writes in flight are still
    /// answered, then the stream ends.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn forward_stream(
        &self,
        request: Request<Streaming<RaftBytes>>,
    ) -> Result<GrpcResponse<Self::ForwardStreamStream>, Status> {
        let inbound = request.into_inner();
        let (out, answers) = tokio::sync::mpsc::channel(16);
        tokio::spawn(serve_forward_stream(self.forward.clone(), inbound, out));
        let answers = tokio_stream::wrappers::ReceiverStream::new(answers);
        Ok(stamp_answer(GrpcResponse::new(Box::pin(answers))))
    }

    #[tracing::instrument(level = "info", skip_all)]
    async fn change_membership(
        &self,
        request: Request<RaftBytes>,
    ) -> Result<GrpcResponse<RaftBytes>, Status> {
        let change: MembershipChange = decode(&request.into_inner().data)?;
        let result = self.forward.change_membership_forwarded(change).await;
        Ok(stamp_answer(GrpcResponse::new(encode(&result)?)))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn lease(&self, request: Request<RaftBytes>) -> Result<GrpcResponse<RaftBytes>, Status> {
        let call: LeaseCall = decode(&request.into_inner().data)?;
        let result = self.forward.lease_forwarded(call).await;
        Ok(stamp_answer(GrpcResponse::new(encode(&result)?)))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn members(&self, _request: Request<RaftBytes>) -> Result<GrpcResponse<RaftBytes>, Status> {
        let members = member_peer_urls(&self.raft);
        Ok(stamp_answer(GrpcResponse::new(encode(&members)?)))
    }

    async fn probe(&self, _request: Request<RaftBytes>) -> Result<GrpcResponse<RaftBytes>, Status> {
        Ok(stamp_answer(GrpcResponse::new(RaftBytes { data: Vec::new() })))
    }
}

/// The leader's side of one forward stream (see [`RaftPeer::forward_stream`]). The
/// proposals run inside this task (no task per write: each would cost a wake-up and a
/// hand-off back); a proposal submitted before the follower went away still completes
/// in the proposer, only its answer has nobody to go to.
async fn serve_forward_stream<F: ForwardTarget>(
    forward: Arc<F>,
    mut inbound: Streaming<RaftBytes>,
    out: tokio::sync::mpsc::Sender<Result<RaftBytes, Status>>,
) {
    use futures_util::FutureExt;
    let mut in_flight = futures_util::stream::FuturesUnordered::new();
    let mut reading = true;
    let stopping = forward.stopping();
    tokio::pin!(stopping);
    while reading || !in_flight.is_empty() {
        tokio::select! {
            () = &mut stopping, if reading => reading = false,
            message = inbound.message(), if reading => match message {
                Ok(Some(message)) => match codec::decode::<Vec<(u64, Command)>>(&message.data) {
                    Ok(writes) => {
                        for (id, command) in writes {
                            let forward = forward.clone();
                            in_flight.push(async move { (id, forward.propose_forwarded(command).await) });
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "undecodable message in a forward stream: ending its input");
                        reading = false;
                    }
                },
                Ok(None) | Err(_) => reading = false,
            },
            Some(first) = in_flight.next(), if !in_flight.is_empty() => {
                // Every answer ready now goes in one message, bounded like the follower's
                // batches (every answer fits a message alone).
                let mut bytes = codec::encoded_len(&first).unwrap_or(0);
                let mut batch = vec![first];
                while batch.len() < 1024 && bytes < 4 << 20 {
                    match in_flight.next().now_or_never() {
                        Some(Some(answer)) => {
                            bytes += codec::encoded_len(&answer).unwrap_or(0);
                            batch.push(answer);
                        }
                        _ => break,
                    }
                }
                if out.send(encode(&batch)).await.is_err() {
                    // The follower is gone: nobody is left to answer.
                    return;
                }
            }
        }
    }
}
