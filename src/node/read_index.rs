//! [`ReadIndexBatcher`]: the read-index protocol, one confirmation round for many reads.
//!
//! A linearizable read needs a read index: a log index the leader has confirmed (with a
//! quorum heartbeat) it was leader at. Reads that arrive while a round is in flight wait
//! for it to finish and then share the next round, so read throughput is not one
//! heartbeat round per read. On the leader the round is openraft's `get_read_log_id()`;
//! on a follower it is a `ReadIndex` RPC to the leader. The caller then waits for its own
//! applied watermark to reach the index and reads locally.
//!
//! A round starts a few scheduler turns after its first read (`GATHER_YIELDS`), so the
//! reads already arriving share it: on 2 cores with 64 clients, 14 reads per leader round
//! instead of 9, and a third more reads per second.
//!
//! The followers' `ReadIndex` RPCs join the leader's rounds too
//! ([`ReadIndexBatcher::read_index_as_leader`]): each used to start a heartbeat round of
//! its own, so with reads spread over three members the leader ran up to three at once.
//! Such a request is answered only from a local round (never passed on: no loops).

use openraft::async_runtime::WatchReceiver;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use raftkv_core::types::NodeId;

use crate::node::raft_handle::Raft;
use raftkv_core::{Error, Result};
use raftkv_net::{PeerConnections, leader_read_index};
use tokio::sync::{mpsc, oneshot};

/// Times the batching task yields to the scheduler between the first read of a round and
/// the start of the round. A yielded task runs again only after the tasks queued before
/// it and an I/O poll, so reads that have arrived but not yet reached the queue share the
/// round. Measured on 2 cores, 64 clients (`benches/ab-servers.sh`, `get-lin`, three
/// alternating rounds each): one yield against none 1.11-1.27x the throughput at
/// 0.79-0.89x the CPU per read; three against one 1.15-1.25x; eight against three
/// 0.90-0.99x. One client's read: within noise (p50 +0.02 ms).
const GATHER_YIELDS: usize = 3;

/// Handle to the batching task.
pub(crate) struct ReadIndexBatcher {
    queue: mpsc::Sender<Waiter>,
    stats: Arc<ReadIndexStats>,
}

/// A caller waiting for the next round.
struct Waiter {
    reply: oneshot::Sender<Result<u64>>,
    /// Asked by a follower: answer only from this node's own leadership.
    as_leader: bool,
}

/// Counters that show reads sharing confirmation rounds.
#[derive(Debug, Default)]
pub(crate) struct ReadIndexStats {
    pub(crate) rounds: AtomicU64,
    pub(crate) reads: AtomicU64,
}

/// Where a round confirms the read index.
struct Round {
    id: NodeId,
    raft: Raft,
    connections: PeerConnections,
    timeout: Duration,
    /// This node's last log index when it started (`raftkv_net::leader_read_index`).
    read_floor: u64,
}

impl ReadIndexBatcher {
    pub(crate) fn spawn(
        id: NodeId,
        raft: Raft,
        connections: PeerConnections,
        timeout: Duration,
        read_floor: u64,
    ) -> Self {
        let (queue, rx) = mpsc::channel(16 * 1024);
        let stats = Arc::new(ReadIndexStats::default());
        let round = Round {
            id,
            raft,
            connections,
            timeout,
            read_floor,
        };
        tokio::spawn(run(round, rx, stats.clone()));
        Self { queue, stats }
    }

    pub(crate) fn stats(&self) -> &ReadIndexStats {
        &self.stats
    }

    /// A read index confirmed after this call started.
    pub(crate) async fn read_index(&self) -> Result<u64> {
        self.wait(false).await
    }

    /// A read index this node confirmed as leader after this call started (a follower's
    /// `ReadIndex` RPC); `NotLeader` if it does not lead.
    pub(crate) async fn read_index_as_leader(&self) -> Result<u64> {
        self.wait(true).await
    }

    async fn wait(&self, as_leader: bool) -> Result<u64> {
        let (reply, rx) = oneshot::channel();
        self.queue
            .send(Waiter { reply, as_leader })
            .await
            .map_err(|_| Error::Shutdown("read-index task stopped".into()))?;
        rx.await
            .map_err(|_| Error::Shutdown("read-index task stopped".into()))?
    }
}

async fn run(round: Round, mut rx: mpsc::Receiver<Waiter>, stats: Arc<ReadIndexStats>) {
    while let Some(first) = rx.recv().await {
        // Let the requests already on their way in (parsed in the tasks queued behind
        // this one, or read by the next I/O poll) join this round, not the next.
        for _ in 0..GATHER_YIELDS {
            tokio::task::yield_now().await;
        }
        let mut waiting = vec![first];
        while let Ok(next) = rx.try_recv() {
            waiting.push(next);
        }
        stats.rounds.fetch_add(1, Ordering::Relaxed);
        stats.reads.fetch_add(waiting.len() as u64, Ordering::Relaxed);
        let any_as_leader = waiting.iter().any(|w| w.as_leader);
        let (own, passed_on) = tokio::time::timeout(round.timeout, round.confirm(any_as_leader))
            .await
            .unwrap_or_else(|_| {
                let late = Err(Error::Timeout("no leader confirmed the read in time".into()));
                (late.clone(), late)
            });
        for waiter in waiting {
            let outcome = if waiter.as_leader { &own } else { &passed_on };
            let _ = waiter.reply.send(outcome.clone());
        }
    }
}

impl Round {
    /// One confirmation round: locally if this node leads, else at the leader. Answers
    /// (this node's own answer, the answer for callers that may be passed on): they differ
    /// only when another node leads. `ask_locally`: some caller wants this node's own
    /// answer, so ask openraft even if the metrics name another leader.
    async fn confirm(&self, ask_locally: bool) -> (Result<u64>, Result<u64>) {
        loop {
            let leader = self.raft.metrics().borrow_watched().current_leader;
            if leader.is_none() && !ask_locally {
                // An election is on: wait for its leader (within the round's deadline), as
                // etcd's read loop retries until one answers, instead of failing the read.
                leader_known(&self.raft).await;
                continue;
            }
            let own = match leader {
                Some(leader) if leader != self.id && !ask_locally => Err(Error::NotLeader {
                    leader_id: Some(leader),
                    leader_client_urls: Vec::new(),
                }),
                _ => leader_read_index(&self.raft, self.read_floor).await,
            };
            let leader = match &own {
                Ok(_) => return (own.clone(), own),
                Err(Error::NotLeader {
                    leader_id: Some(leader),
                    ..
                }) if *leader != self.id => *leader,
                Err(_) => return (own.clone(), own),
            };
            let url = match crate::node::raft_handle::peer_url_of(&self.raft, leader) {
                Ok(url) => url,
                Err(e) => return (own, Err(e)),
            };
            // A leader that stops answering (paused, partitioned) would hold this round,
            // and every read queued behind it, until the timeout, even after this node
            // follows a new leader or became leader itself: ask again as soon as the
            // leader changes.
            tokio::select! {
                answer = self.connections.read_index(&url, self.timeout) => {
                    let passed_on = answer.unwrap_or_else(|e| {
                        Err(Error::Timeout(format!("read index from leader {leader}: {e}")))
                    });
                    return (own, passed_on);
                }
                () = leader_changed_from(&self.raft, leader) => continue,
            }
        }
    }
}

/// Resolves once `raft` names a leader; never if Raft stops.
async fn leader_known(raft: &Raft) {
    let mut server = raft.server_metrics();
    loop {
        if server.borrow_watched().current_leader.is_some() {
            return;
        }
        if server.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Resolves once `raft` names a leader other than `leader` (or none) after this call;
/// never if Raft stops. Only a change counts, so a leader the metrics have not caught up
/// with yet cannot spin the round.
async fn leader_changed_from(raft: &Raft, leader: NodeId) {
    // The server metrics change only with vote, role, leader or membership, not with
    // every write as the full metrics do.
    let mut server = raft.server_metrics();
    loop {
        if server.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        if server.borrow_watched().current_leader != Some(leader) {
            return;
        }
    }
}
