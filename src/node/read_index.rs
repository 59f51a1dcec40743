//! [`ReadIndexBatcher`]: the read-index protocol, one confirmation round for many reads.
//!
//! A linearizable read needs a read index: a log index the leader has confirmed (with a
//! quorum heartbeat) it was leader at. Reads that arrive while a round is in flight wait
//! for it to finish and then share the next round, so read throughput is not one
//! heartbeat round per read. On the leader the round is openraft's `get_read_log_id()`;
//! on a follower it is a `ReadIndex` RPC to the leader. The caller then waits for its own
//! applied watermark to reach the index and reads locally.

use openraft::async_runtime::WatchReceiver;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use raftkv_core::types::NodeId;

use crate::node::raft_handle::Raft;
use raftkv_core::{Error, Result};
use raftkv_net::{PeerConnections, leader_read_index};
use tokio::sync::{mpsc, oneshot};

/// Handle to the batching task.
pub(crate) struct ReadIndexBatcher {
    queue: mpsc::Sender<oneshot::Sender<Result<u64>>>,
    stats: Arc<ReadIndexStats>,
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
        let (tx, rx) = oneshot::channel();
        self.queue
            .send(tx)
            .await
            .map_err(|_| Error::Shutdown("read-index task stopped".into()))?;
        rx.await
            .map_err(|_| Error::Shutdown("read-index task stopped".into()))?
    }
}

async fn run(round: Round, mut rx: mpsc::Receiver<oneshot::Sender<Result<u64>>>, stats: Arc<ReadIndexStats>) {
    while let Some(first) = rx.recv().await {
        let mut waiting = vec![first];
        while let Ok(next) = rx.try_recv() {
            waiting.push(next);
        }
        stats.rounds.fetch_add(1, Ordering::Relaxed);
        stats.reads.fetch_add(waiting.len() as u64, Ordering::Relaxed);
        let outcome = tokio::time::timeout(round.timeout, round.confirm())
            .await
            .unwrap_or_else(|_| Err(Error::Timeout("no leader confirmed the read in time".into())));
        for reply in waiting {
            let _ = reply.send(outcome.clone());
        }
    }
}

impl Round {
    /// One confirmation round: locally if this node leads, else at the leader.
    async fn confirm(&self) -> Result<u64> {
        let leader = self.raft.metrics().borrow_watched().current_leader;
        let leader = match leader {
            Some(leader) if leader != self.id => leader,
            _ => match leader_read_index(&self.raft, self.read_floor).await {
                Ok(read) => return Ok(read),
                Err(Error::NotLeader {
                    leader_id: Some(leader),
                    ..
                }) if leader != self.id => leader,
                Err(other) => return Err(other),
            },
        };
        let url = crate::node::raft_handle::peer_url_of(&self.raft, leader)?;
        match self.connections.read_index(&url, self.timeout).await {
            Ok(answer) => answer,
            Err(e) => Err(Error::Timeout(format!("read index from leader {leader}: {e}"))),
        }
    }
}
