//! [`Node`] and [`NodeBuilder`]: opening the store, starting openraft, initialising the
//! cluster on first start, and shutting down.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use raftkv_core::types::{MemberNode, NodeId, Raft};
use raftkv_core::validate::Limits;
use raftkv_core::{Error, Proposer, ProposerConfig, Result, Watermark};
use raftkv_storage::{KvReader, LogStore, StateShared, Store, StoreOptions};

use crate::network::SingleNodeNetwork;

/// Configures and starts a [`Node`].
#[derive(Debug, Clone)]
pub struct NodeBuilder {
    id: NodeId,
    data_dir: Option<PathBuf>,
    limits: Limits,
    proposer: ProposerConfig,
    store: StoreOptions,
    request_timeout: Duration,
    heartbeat_interval: Duration,
    election_timeout: (Duration, Duration),
    snapshot_every_entries: u64,
}

impl Default for NodeBuilder {
    fn default() -> Self {
        Self {
            id: 1,
            data_dir: None,
            limits: Limits::default(),
            proposer: ProposerConfig::default(),
            store: StoreOptions::default(),
            request_timeout: Duration::from_secs(5),
            // etcd's defaults: robust on a busy 2-core machine.
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: (Duration::from_millis(1000), Duration::from_millis(2000)),
            snapshot_every_entries: 10_000,
        }
    }
}

impl NodeBuilder {
    /// This node's member id (non-zero).
    pub fn id(mut self, id: NodeId) -> Self {
        self.id = id;
        self
    }

    /// Where the log, the state machine and snapshots live.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Largest request accepted (default 1.5 MiB, as etcd).
    pub fn max_request_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_request_bytes = bytes;
        self
    }

    /// Most operations per transaction branch (default 128, as etcd).
    pub fn max_txn_ops(mut self, ops: usize) -> Self {
        self.limits.max_txn_ops = ops;
        self
    }

    /// Group-commit settings.
    pub fn proposer(mut self, config: ProposerConfig) -> Self {
        self.proposer = config;
        self
    }

    /// sled cache sizes.
    pub fn store_options(mut self, options: StoreOptions) -> Self {
        self.store = options;
        self
    }

    /// Deadline of one request (default 5 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Build a snapshot (and purge the log behind it) every this many entries.
    pub fn snapshot_every_entries(mut self, entries: u64) -> Self {
        self.snapshot_every_entries = entries;
        self
    }

    /// Open the data directory, start Raft and, on the very first start, initialise a
    /// single-node cluster. On later starts the node reopens what is on disk.
    pub async fn start(self) -> Result<Node> {
        if self.id == 0 {
            return Err(Error::Internal("node id must be non-zero".into()));
        }
        let data_dir = self
            .data_dir
            .clone()
            .ok_or_else(|| Error::Internal("data_dir is required".into()))?;
        let store_options = self.store;
        let store = tokio::task::spawn_blocking(move || Store::open(&data_dir, store_options))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(|e| Error::Storage(e.to_string()))?;
        let log = store.log.clone();
        let config = openraft::Config {
            cluster_name: "raftkv".into(),
            heartbeat_interval: self.heartbeat_interval.as_millis() as u64,
            election_timeout_min: self.election_timeout.0.as_millis() as u64,
            election_timeout_max: self.election_timeout.1.as_millis() as u64,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every_entries),
            max_in_snapshot_log_to_keep: 1000,
            ..openraft::Config::default()
        }
        .validate()
        .map_err(|e| Error::Internal(e.to_string()))?;
        let raft = Raft::new(
            self.id,
            Arc::new(config),
            SingleNodeNetwork,
            store.log,
            store.state_machine,
        )
        .await
        .map_err(|e| Error::Storage(e.to_string()))?;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| Error::Shutdown(e.to_string()))?;
        if !initialized {
            let members = BTreeMap::from([(self.id, MemberNode::default())]);
            raft.initialize(members)
                .await
                .map_err(|e| Error::Internal(format!("initialize: {e}")))?;
        }
        let proposer = Proposer::spawn(raft.clone(), self.proposer);
        Ok(Node {
            inner: Arc::new(NodeInner {
                id: self.id,
                raft,
                proposer,
                reader: store.reader,
                shared: store.shared,
                log,
                limits: self.limits,
                request_timeout: self.request_timeout,
            }),
        })
    }
}

pub(crate) struct NodeInner {
    pub(crate) id: NodeId,
    pub(crate) raft: Raft,
    pub(crate) proposer: Proposer,
    pub(crate) reader: KvReader,
    pub(crate) shared: Arc<StateShared>,
    pub(crate) log: LogStore,
    pub(crate) limits: Limits,
    pub(crate) request_timeout: Duration,
}

/// A raftkv node: the KV API (see the methods in `kv.rs`), metrics, shutdown.
/// Cheap to clone; every clone is the same node.
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<NodeInner>,
}

/// A point-in-time view of the node's Raft state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeMetrics {
    /// This node.
    pub id: NodeId,
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// Current term.
    pub term: u64,
    /// Commit index (the commit watermark).
    pub committed: u64,
    /// Applied index (the applied watermark).
    pub applied: u64,
    /// Newest applied store revision.
    pub revision: i64,
}

/// Durability counters: they show group commit and the sync discipline at work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageStats {
    /// Raft entries proposed by the group-commit proposer.
    pub proposals: u64,
    /// Client requests those entries carried.
    pub proposed_requests: u64,
    /// Real syncs (flush + fdatasync) of the log database.
    pub log_syncs: u64,
    /// Log `append` calls.
    pub log_appends: u64,
    /// Real syncs of the state-machine database.
    pub state_syncs: u64,
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

    /// The commit-index watermark.
    pub fn committed(&self) -> &Arc<Watermark> {
        self.inner.log.committed()
    }

    /// The applied-index watermark.
    pub fn applied(&self) -> &Arc<Watermark> {
        self.inner.shared.applied()
    }

    /// Raft state right now.
    pub fn metrics(&self) -> NodeMetrics {
        let metrics = self.inner.raft.metrics();
        // Never hold the borrow across an await.
        let (leader, term) = {
            let m = metrics.borrow();
            (m.current_leader, m.current_term)
        };
        NodeMetrics {
            id: self.inner.id,
            leader,
            term,
            committed: self.committed().get(),
            applied: self.applied().get(),
            revision: self.inner.reader.revision(),
        }
    }

    /// Durability and group-commit counters.
    pub fn storage_stats(&self) -> StorageStats {
        let proposer = self.inner.proposer.stats();
        StorageStats {
            proposals: proposer.proposals.load(Ordering::Relaxed),
            proposed_requests: proposer.requests.load(Ordering::Relaxed),
            log_syncs: self.inner.log.sync_stats().syncs.load(Ordering::Relaxed),
            log_appends: self.inner.log.stats().appends.load(Ordering::Relaxed),
            state_syncs: self.inner.shared.sync_stats().syncs.load(Ordering::Relaxed),
        }
    }

    /// Wait until this node sees a leader (itself, for a single node), up to `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId> {
        let mut metrics = self.inner.raft.metrics();
        let wait = async {
            loop {
                if let Some(leader) = metrics.borrow().current_leader {
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

    /// Stop Raft and release the data directory (once every clone is dropped). In-flight
    /// requests fail with [`Error::Shutdown`]; acknowledged writes are already durable.
    pub async fn shutdown(&self) {
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}
