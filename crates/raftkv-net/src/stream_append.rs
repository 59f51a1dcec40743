//! Pipelined replication to one follower: openraft's `stream_append` over one gRPC
//! bidirectional stream.
//!
//! openraft hands a stream of append requests and wants one answer per request, in
//! order. A sender task splits each request by bytes (`append_split`), puts each part on
//! the gRPC stream and records it; the answer stream reads the follower's answers in the
//! same order and folds a request's parts into its one answer. Several requests are in
//! flight at once, bounded by count ([`MAX_IN_FLIGHT_PARTS`]) and by bytes
//! ([`MAX_IN_FLIGHT_BYTES`], one oversized part may go alone), so a slow follower holds
//! memory bounded and its own stream only: every follower has its own.
//!
//! Anything short of full success ends the stream after its answer (openraft then starts
//! a new one from what the follower matched); so do a transport error, a timeout waiting
//! for an answer ([`MIN_ANSWER_WAIT`] at least) and the test-only network faults: a part the
//! fault plan loses, or an answer it loses, fails the stream, never skips a message in it.
//! A duplicate cannot travel on the stream itself (the follower would answer it, and
//! openraft wants exactly one answer per request), so a part the plan duplicates is sent
//! again beside the stream, later, as a unary `AppendEntries` whose answer is ignored:
//! the stale, out-of-order copy Raft must tolerate, as on the unary path.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use openraft::base::BoxStream;
use openraft::error::{NetworkError, RPCError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{AppendEntriesRequest, StreamAppendResult};
use raftkv_core::codec;
use raftkv_core::types::{LogId, TypeConfig};
use raftkv_proto::raftkvpeer::RaftBytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tonic::Streaming;

use crate::append_split::{PART_BYTES, fold_stream_part, last_log_id, split_by_bytes};
use crate::faults::NetFaults;
use crate::peer_client::{PeerClient, RaftRpc, from_status, network, send_duplicate};
use crate::peer_rpc::{PeerRpcClient, checked};
use crate::peer_traffic::PeerCounters;

/// Parts sent and not yet answered, at most.
pub(crate) const MAX_IN_FLIGHT_PARTS: usize = 64;
/// Bytes sent and not yet answered, at most (but one part always may go).
pub(crate) const MAX_IN_FLIGHT_BYTES: usize = 32 * 1024 * 1024;
/// How long the stream may go without an answer while parts are in flight before it
/// counts as stuck, at least. openraft's per-request time (`soft_ttl`, 3/4 of a heartbeat
/// interval: 75 ms by default) is shorter than a follower's fsync on a busy 2-core
/// machine, and failing the stream there restarts replication with a backoff (seen:
/// check perf timing out). Liveness is the heartbeats' job, not this timer's.
const MIN_ANSWER_WAIT: Duration = Duration::from_secs(1);

type RpcError = RPCError<TypeConfig>;
type Answer = Result<StreamAppendResult<TypeConfig>, RpcError>;

/// What the sender put on the stream, for the answer side to match in order.
enum Sent {
    Part {
        last: Option<LogId>,
        first: bool,
        final_part: bool,
        _bytes: OwnedSemaphorePermit,
    },
    /// The sender stopped on an error: the stream fails with it once earlier parts are
    /// answered.
    Failed(RpcError),
}

/// Open the stream to `client`'s target and start sending `input`.
pub(crate) async fn open<'s, S>(
    client: &'s mut PeerClient,
    input: S,
    option: RPCOption,
) -> Result<BoxStream<'s, Answer>, RpcError>
where
    S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
{
    let mut grpc = client.client().map_err(RPCError::Unreachable)?;
    let (wire_tx, wire_rx) = mpsc::channel::<RaftBytes>(MAX_IN_FLIGHT_PARTS);
    let (sent_tx, sent_rx) = mpsc::channel::<Sent>(MAX_IN_FLIGHT_PARTS);
    let wait = option.soft_ttl().max(MIN_ANSWER_WAIT);
    let peer = Peer {
        faults: client.faults.clone(),
        url: client.peer_url.clone(),
        traffic: client.traffic.clone(),
    };
    let sender = tokio::spawn(send_parts(input, wire_tx, sent_tx, grpc.clone(), peer, wait));
    let guard = AbortOnDrop(sender);
    let answers = grpc
        .stream_append(tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(
            wire_rx,
        )))
        .await
        .map_err(|status| {
            client.traffic.failed();
            from_status(status)
        })?;
    let answers = checked(answers).map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
    let state = Answers {
        answers,
        sent: sent_rx,
        faults: client.faults.clone(),
        peer_url: client.peer_url.clone(),
        wait,
        traffic: client.traffic.clone(),
        previous_last: None,
        _sender: guard,
    };
    Ok(Box::pin(futures_util::stream::unfold(
        Some(state),
        |state| async move {
            let mut state = state?;
            let (answer, go_on) = state.next().await?;
            Some((answer, go_on.then_some(state)))
        },
    )))
}

/// The follower's side of things both halves need: its URL, the fault plan and its
/// traffic counters.
struct Peer {
    faults: NetFaults,
    url: String,
    traffic: Arc<PeerCounters>,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn send_parts<S>(
    mut input: S,
    wire: mpsc::Sender<RaftBytes>,
    sent: mpsc::Sender<Sent>,
    // For the fault plan's out-of-band duplicates only.
    grpc: PeerRpcClient,
    peer: Peer,
    wait: Duration,
) where
    S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Unpin,
{
    let budget = Arc::new(Semaphore::new(MAX_IN_FLIGHT_BYTES));
    while let Some(request) = input.next().await {
        let parts = match split_by_bytes(request, PART_BYTES) {
            Ok(parts) => parts,
            Err(e) => {
                let _ = sent.send(Sent::Failed(network(&e))).await;
                return;
            }
        };
        let count = parts.len();
        for (i, part) in parts.into_iter().enumerate() {
            let last = last_log_id(&part);
            let data = match codec::encode(&part) {
                Ok(data) => data,
                Err(e) => {
                    let _ = sent.send(Sent::Failed(network(&e))).await;
                    return;
                }
            };
            match peer.faults.before_request(&peer.url, wait, true).await {
                Ok(None) => {}
                Ok(Some(after)) => {
                    send_duplicate(RaftRpc::AppendEntries, grpc.clone(), data.clone(), after, wait)
                }
                Err(lost) => {
                    let _ = sent.send(Sent::Failed(network(&lost))).await;
                    return;
                }
            }
            let permits = data.len().clamp(1, MAX_IN_FLIGHT_BYTES) as u32;
            let Ok(bytes) = budget.clone().acquire_many_owned(permits).await else {
                return;
            };
            let record = Sent::Part {
                last,
                first: i == 0,
                final_part: i + 1 == count,
                _bytes: bytes,
            };
            peer.traffic.sent(data.len());
            if sent.send(record).await.is_err() || wire.send(RaftBytes { data }).await.is_err() {
                return;
            }
        }
    }
}

struct Answers {
    answers: Streaming<RaftBytes>,
    sent: mpsc::Receiver<Sent>,
    faults: NetFaults,
    peer_url: String,
    wait: Duration,
    traffic: Arc<PeerCounters>,
    /// The last log id of the request's parts answered so far.
    previous_last: Option<LogId>,
    _sender: AbortOnDrop,
}

impl Answers {
    /// The next answer for openraft and whether the stream goes on after it; `None` once
    /// the input is exhausted and everything sent is answered.
    async fn next(&mut self) -> Option<(Answer, bool)> {
        loop {
            let (last, first, final_part, in_flight) = match self.sent.recv().await? {
                Sent::Failed(e) => return Some((Err(e), false)),
                Sent::Part {
                    last,
                    first,
                    final_part,
                    _bytes,
                } => (last, first, final_part, _bytes),
            };
            let answer = match self.read_answer().await {
                Ok(answer) => answer,
                Err(e) => {
                    self.traffic.failed();
                    return Some((Err(e), false));
                }
            };
            // Answered: its bytes no longer count against the in-flight budget.
            drop(in_flight);
            if first {
                self.previous_last = None;
            }
            match fold_stream_part(self.previous_last, first, answer, last, final_part) {
                None => self.previous_last = last,
                Some((result, stop)) => return Some((Ok(result), !stop)),
            }
        }
    }

    async fn read_answer(&mut self) -> Result<StreamAppendResult<TypeConfig>, RpcError> {
        let message = tokio::time::timeout(self.wait, self.answers.message())
            .await
            .map_err(|_| RPCError::Network(NetworkError::new(&Timeout(self.wait))))?
            .map_err(from_status)?
            .ok_or_else(|| network(&StreamEnded))?;
        self.traffic.received(message.data.len());
        self.faults
            .after_response(&self.peer_url)
            .map_err(|lost| network(&lost))?;
        let answer: Result<StreamAppendResult<TypeConfig>, openraft::error::Fatal<TypeConfig>> =
            codec::decode(&message.data).map_err(|e| network(&e))?;
        answer.map_err(|e| network(&e))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("no append answer within {0:?}")]
struct Timeout(Duration);

#[derive(Debug, thiserror::Error)]
#[error("the follower ended the append stream with parts unanswered")]
struct StreamEnded;
