//! # The node's assembly: [`Node`] and [`NodeBuilder`]
//!
//! Opening the store, starting openraft and the gRPC servers (peer protocol, and etcd's
//! KV, Watch, Cluster and Maintenance services when a client address is given),
//! bootstrapping or joining a cluster, shutdown. `builder.rs` holds the builder and its
//! settings, `start.rs` what `start` does with them (store, Raft, servers, bootstrap, the
//! tasks of `tasks/`), this file the running node and what it holds: its openraft handle
//! (`raft_handle.rs`), the read-index batcher (`read_index.rs`), the leader's lease
//! deadlines (`lease_deadlines.rs`), the disk quota (`quota.rs`) and the counters its
//! metrics read (`server_counters.rs`). Those parts sit below the node: none of them
//! names it. What the node does for callers is `api/`; what the gRPC services see of
//! it, `grpc/`.

mod bootstrap;
mod builder;
#[cfg(feature = "testing")]
mod kill;
pub(crate) mod lease_deadlines;
mod propose_as_leader;
pub(crate) mod quota;
pub(crate) mod raft_handle;
pub(crate) mod read_index;
pub(crate) mod server_counters;
mod start;

pub use builder::{Bootstrap, NodeBuilder};

use openraft::Instant as _;
use openraft::async_runtime::WatchReceiver;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use raftkv_core::types::NodeId;
use raftkv_core::validate::Limits;
use raftkv_core::{Error, Proposer, Result, Watermark};
use raftkv_net::PeerConnections;
use raftkv_storage::{DefragReport, KvReader, LogStore, StateShared};
use tokio::sync::watch;

use crate::node::lease_deadlines::LeaseManager;
use crate::node::quota::Quota;
use crate::node::read_index::ReadIndexBatcher;

pub use crate::node::raft_handle::Raft;

/// The time of the last append from a leader, as milliseconds since the node started:
/// an atomic, written by every append the peer service receives.
pub(crate) struct LeaderContact {
    started: std::time::Instant,
    last_ms: AtomicU64,
}

impl LeaderContact {
    fn new() -> Self {
        // A node that starts knowing a leader (from its vote) trusts it for one lease.
        Self {
            started: std::time::Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    pub(crate) fn touch(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(now, Ordering::Relaxed);
    }

    fn within(&self, lease: Duration) -> bool {
        let now = self.started.elapsed().as_millis() as u64;
        now.saturating_sub(self.last_ms.load(Ordering::Relaxed)) <= lease.as_millis() as u64
    }
}

pub(crate) struct NodeInner {
    pub(crate) id: NodeId,
    pub(crate) raft: Raft,
    pub(crate) proposer: Proposer,
    pub(crate) read_index: ReadIndexBatcher,
    /// The last log index when this node started: the least read index it serves as
    /// leader (`raftkv_net::leader_read_index`).
    pub(crate) read_floor: u64,
    pub(crate) reader: KvReader,
    pub(crate) shared: Arc<StateShared>,
    pub(crate) log: LogStore,
    pub(crate) limits: Limits,
    pub(crate) request_timeout: Duration,
    pub(crate) connections: PeerConnections,
    pub(crate) peer_url: String,
    pub(crate) client_urls: Vec<String>,
    /// Set to true once: stops the servers and background tasks.
    pub(crate) shutdown: watch::Sender<bool>,
    /// The gRPC servers, awaited on shutdown so in-flight requests drain. Locked only to
    /// push or take the handles, never across an `.await`.
    pub(crate) servers: parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>,

    pub(crate) quota: Quota,
    /// The leader's lease deadlines (`node/lease_deadlines.rs`, kept by `tasks/lease_timers.rs`).
    pub(crate) leases: LeaseManager,
    /// When an append from a leader last arrived ([`Node::current_leader`]).
    pub(crate) leader_contact: LeaderContact,
    /// Proposals and leader changes, for `/metrics` (`metrics/mod.rs`).
    pub(crate) counters: crate::node::server_counters::ServerCounters,
    /// gRPC calls on the client port, for `/metrics`.
    pub(crate) grpc_counters: Arc<raftkv_net::GrpcCounters>,
    /// How clients authenticate (`api/auth.rs`).
    pub(crate) auth: crate::api::auth_options::AuthOptions,
}

/// Default deadline of one request, etcd's: it gives a proposal 5 s for queueing,
/// computation and disk, plus two election timeouts of its default 1 s for a leader
/// change. Clients give up sooner (etcdctl and our client after 5 s); what the longer
/// server deadline buys is that a slow request the client still waits for (one prefix
/// delete of 200,000 keys takes ~3.5 s to apply here) is answered, not "outcome unknown".
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(7);

/// Default interval of lease checkpoints.
pub const DEFAULT_LEASE_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);

/// etcd's default backend quota.
pub const DEFAULT_QUOTA_BYTES: u64 = 2 << 30;

/// Applied may lag committed by this many entries before writes are refused with "too
/// many requests" (etcd's bound).
pub const MAX_APPLY_LAG: u64 = 5000;

/// A raftkv node: the KV API (`api/kv.rs`), cluster membership (`api/membership.rs`), metrics,
/// shutdown.
///
/// A handle: `Clone + Send + Sync + 'static` (checked at compile time below), cheap to
/// clone, and every clone is the same member, so hand clones to tasks and threads freely.
/// Start it on a multi-threaded Tokio runtime: its servers and background tasks run on
/// the runtime it was started on. Stop it with [`Node::shutdown`].
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<NodeInner>,
}

// `Node` is a handle that callers share across tasks and threads: keep it so.
const _: () = {
    const fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<Node>();
};

/// A point-in-time view of the node's Raft state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeMetrics {
    /// This node.
    pub id: NodeId,
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// Current term.
    pub term: u64,
    /// Last log index.
    pub last_log_index: u64,
    /// Commit index (the commit watermark).
    pub committed: u64,
    /// Applied index (the applied watermark).
    pub applied: u64,
    /// Newest applied store revision.
    pub revision: i64,
    /// On the leader: how many entries each follower is behind the leader's last log index.
    pub replication_lag: BTreeMap<NodeId, u64>,
    /// Last log id covered by this node's current snapshot (built or installed).
    pub snapshot_index: Option<u64>,
    /// Last purged log index.
    pub purged_index: Option<u64>,
    /// Voters of the current membership.
    pub voters: Vec<NodeId>,
    /// Learners of the current membership.
    pub learners: Vec<NodeId>,
}

/// Durability counters: they show group commit and the sync discipline at work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageStats {
    /// Raft entries proposed by the group-commit proposer.
    pub proposals: u64,
    /// Client requests those entries carried.
    pub proposed_requests: u64,
    /// Batches the proposer held open until the previous entry's callers were back.
    pub proposer_returns_met: u64,
    /// Batches it held open until its wait for them ran out.
    pub proposer_returns_missed: u64,
    /// Real syncs (flush + fdatasync) of the log database.
    pub log_syncs: u64,
    /// Log `append` calls.
    pub log_appends: u64,
    /// Real syncs of the state-machine database.
    pub state_syncs: u64,
    /// Read-index confirmation rounds run for linearizable reads.
    pub read_index_rounds: u64,
    /// Linearizable reads those rounds served.
    pub read_index_reads: u64,
}

impl Node {
    /// Start configuring a node.
    pub fn builder() -> NodeBuilder {
        NodeBuilder::default()
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The cluster id (0 until the first membership entry is applied).
    pub fn cluster_id(&self) -> u64 {
        self.inner.reader.cluster_id()
    }

    /// The URL peers reach this node at.
    pub fn peer_url(&self) -> &str {
        &self.inner.peer_url
    }

    /// The URLs clients reach this node at (empty if it serves no clients).
    pub fn client_urls(&self) -> &[String] {
        &self.inner.client_urls
    }

    /// The commit-index watermark.
    pub fn committed(&self) -> &Arc<Watermark> {
        self.inner.log.committed()
    }

    /// The applied-index watermark.
    pub fn applied(&self) -> &Arc<Watermark> {
        self.inner.shared.applied()
    }

    /// The underlying openraft handle (for tools and tests).
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// The leader as this node sees it now, counted only while it is in touch (within
    /// `election_timeout_max`, the leader lease): a follower's leader while its appends
    /// or heartbeats keep arriving; this node, when it leads, while a quorum has
    /// acknowledged it (alone in the membership it is its own quorum). With pre-vote, a
    /// member cut off from the cluster keeps its last leader in openraft's metrics (a
    /// failed pre-vote changes nothing), and a leader cut off keeps calling itself
    /// leader until it hears of a newer term; etcd's members forget the leader after an
    /// election timeout and its leaders step down (CheckQuorum), and probes and clients
    /// that require a leader rely on that.
    pub fn current_leader(&self) -> Option<NodeId> {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow_watched();
        let leader = m.current_leader?;
        let lease = Duration::from_millis(self.inner.raft.config().election_timeout_max);
        let in_touch = if leader == self.id() {
            let voters = m.membership_config.membership().voter_ids().count();
            voters <= 1
                || m.last_quorum_acked
                    .as_ref()
                    .is_some_and(|acked| acked.elapsed() < lease)
        } else {
            self.inner.leader_contact.within(lease)
        };
        in_touch.then_some(leader)
    }

    /// Raft state right now.
    pub fn metrics(&self) -> NodeMetrics {
        let metrics = self.inner.raft.metrics();
        // Never hold the borrow across an await.
        let m = metrics.borrow_watched().clone();
        let last_log_index = m.last_log_index.unwrap_or(0);
        let replication_lag = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .filter(|(id, _)| **id != self.inner.id)
                    .map(|(id, matched)| (*id, last_log_index.saturating_sub(matched.map_or(0, |l| l.index))))
                    .collect()
            })
            .unwrap_or_default();
        let membership = m.membership_config.membership();
        NodeMetrics {
            id: self.inner.id,
            leader: self.current_leader(),
            term: m.current_term,
            last_log_index,
            committed: self.committed().get(),
            applied: self.applied().get(),
            revision: self.inner.reader.revision(),
            replication_lag,
            snapshot_index: m.snapshot.map(|s| s.index),
            purged_index: m.purged.map(|p| p.index),
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
        }
    }

    /// The header fields this node fills (no request revision: the current one).
    pub(crate) fn response_header(&self) -> raftkv_core::kv::ResponseHeader {
        raftkv_core::kv::ResponseHeader {
            cluster_id: self.cluster_id(),
            member_id: self.id(),
            revision: self.inner.reader.revision(),
            raft_term: self.inner.raft.metrics().borrow_watched().current_term,
        }
    }

    /// Rewrite this member's state database into a fresh one, giving back the disk space
    /// sled keeps after churn (etcd's `Defragment`; see `raftkv-storage`'s `maintenance/defrag.rs`).
    /// Writes on this member wait while the live data is copied; reads go on.
    #[tracing::instrument(level = "info", skip_all)]
    pub async fn defragment(&self) -> Result<DefragReport> {
        let shared = self.inner.shared.clone();
        crate::blocking::off_workers("defragmentation", move || {
            shared.defragment().map_err(|e| Error::Storage(e.to_string()))
        })
        .await
    }

    /// Durability and group-commit counters.
    pub fn storage_stats(&self) -> StorageStats {
        let proposer = self.inner.proposer.stats();
        StorageStats {
            proposals: proposer.proposals.load(Ordering::Relaxed),
            proposed_requests: proposer.requests.load(Ordering::Relaxed),
            proposer_returns_met: proposer.returns_met.load(Ordering::Relaxed),
            proposer_returns_missed: proposer.returns_missed.load(Ordering::Relaxed),
            log_syncs: self.inner.log.sync_stats().syncs.load(Ordering::Relaxed),
            log_appends: self.inner.log.stats().appends.load(Ordering::Relaxed),
            state_syncs: self.inner.shared.sync_stats().syncs.load(Ordering::Relaxed),
            read_index_rounds: self.inner.read_index.stats().rounds.load(Ordering::Relaxed),
            read_index_reads: self.inner.read_index.stats().reads.load(Ordering::Relaxed),
        }
    }

    /// Wait until this node knows a leader, up to `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId> {
        let mut metrics = self.inner.raft.metrics();
        let wait = async {
            loop {
                if let Some(leader) = metrics.borrow_watched().current_leader {
                    return Ok(leader);
                }
                metrics
                    .changed()
                    .await
                    .map_err(|_| Error::Shutdown("raft stopped".into()))?;
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| Error::Timeout(format!("no leader after {timeout:?}")))?
    }

    /// Resolves when Raft stopped on a fatal error (a storage failure, typically): from
    /// then on the node acknowledges nothing, and only a restart (which recovers from
    /// what is durable) brings it back. Also resolves if Raft was shut down.
    pub async fn fatal_error(&self) -> String {
        // Wait on the server metrics (vote, role, leader, membership): the full metrics
        // change several times per write, and every change would wake this task. Both
        // channels close when the Raft core stops, after it recorded why.
        let mut server = self.inner.raft.server_metrics();
        loop {
            if let Err(fatal) = &self.inner.raft.metrics().borrow_watched().running_state {
                return fatal.to_string();
            }
            if server.changed().await.is_err() {
                break;
            }
        }
        match &self.inner.raft.metrics().borrow_watched().running_state {
            Err(fatal) => fatal.to_string(),
            Ok(()) => "raft stopped".into(),
        }
    }

    /// Stop the servers and Raft and release the data directory (once every clone is
    /// dropped). In-flight requests fail; acknowledged writes are already durable.
    pub async fn shutdown(&self) {
        // A member on its way out never stands for election: while its servers drain it
        // stops hearing the leader, and a campaign then could make it leader for a moment
        // (taking the others' votes) just before it goes.
        self.inner.raft.runtime_config().elect(false);
        let _ = self.inner.shutdown.send(true);
        // Watch streams never finish on their own: end them, so the servers can drain.
        self.inner.shared.watch_hub().close();
        // The servers stop accepting and finish the requests in flight (bounded).
        let servers: Vec<_> = self.inner.servers.lock().drain(..).collect();
        for server in servers {
            if tokio::time::timeout(self.inner.request_timeout, server)
                .await
                .is_err()
            {
                tracing::warn!("a server did not drain in time");
            }
        }
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}
