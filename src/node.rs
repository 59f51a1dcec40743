//! [`Node`] and [`NodeBuilder`]: opening the store, starting openraft and the gRPC
//! servers (peer protocol, and etcd's KV, Watch, Cluster and Maintenance services when a
//! client address is given),
//! bootstrapping or joining a cluster, publishing this member's client URLs, shutdown.

use openraft::Instant as _;
use openraft::async_runtime::WatchReceiver;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::TryStreamExt as _;
use raftkv_core::types::{MemberNode, NodeId};
use raftkv_core::validate::Limits;
use raftkv_core::{Error, Proposer, ProposerConfig, Result, Watermark};
use raftkv_net::WatchServer;
use raftkv_net::tls::{ClientTls, ServerTls};
use raftkv_net::{
    ClusterService, ElectionService, KvService, LeaseService, LockService, PeerConnections, PeerNetwork,
    PeerService, WatchService,
};
use raftkv_proto::etcdserverpb::cluster_server::ClusterServer;
use raftkv_proto::etcdserverpb::kv_server::KvServer;
use raftkv_proto::etcdserverpb::lease_server::LeaseServer;
use raftkv_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use raftkv_proto::raftkvpeer::raft_peer_server::RaftPeerServer;
use raftkv_proto::v3electionpb::election_server::ElectionServer;
use raftkv_proto::v3lockpb::lock_server::LockServer;
use raftkv_storage::{
    AutoDefrag, DefragReport, KvReader, LogStore, StateShared, Store, StoreOptions, WatchConfig,
};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::alarms::Quota;
use crate::lease::LeaseManager;
use crate::read_index::ReadIndexBatcher;

/// The Raft handle of a node: openraft over raftkv's state machine.
pub type Raft = raftkv_core::types::Raft<raftkv_storage::StateMachine>;

/// How a node becomes part of a cluster on its very first start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// A cluster of this node alone (the default).
    SingleNode,
    /// A cluster of these members (id -> peer URL), the same on every member.
    Cluster(BTreeMap<NodeId, String>),
    /// Nothing: the node waits until a member adds it (`add_learner`, then promote).
    Join,
}

/// Where a server listens: an address to bind, or a listener bound by the caller (tests
/// bind port 0 and read the port back).
#[derive(Debug)]
enum Listen {
    Addr(std::net::SocketAddr),
    Bound(std::net::TcpListener),
}

impl Listen {
    async fn bind(self) -> std::io::Result<TcpListener> {
        match self {
            Listen::Addr(addr) => TcpListener::bind(addr).await,
            Listen::Bound(l) => {
                l.set_nonblocking(true)?;
                TcpListener::from_std(l)
            }
        }
    }
}

/// Configures and starts a [`Node`].
#[derive(Debug)]
pub struct NodeBuilder {
    pub(crate) id: NodeId,
    data_dir: Option<PathBuf>,
    limits: Limits,
    proposer: ProposerConfig,
    store: StoreOptions,
    request_timeout: Duration,
    heartbeat_interval: Duration,
    election_timeout: (Duration, Duration),
    peer_listen: Option<Listen>,
    /// Client and metrics listeners, each with whether it speaks TLS.
    client_listen: Vec<(Listen, bool)>,
    metrics_listen: Vec<(Listen, bool)>,
    /// TLS of the client (and https metrics) listeners.
    client_tls: Option<ServerTls>,
    /// TLS of the peer listener.
    peer_tls: Option<ServerTls>,
    /// TLS of connections to members with `https://` peer URLs.
    peer_dial_tls: Option<ClientTls>,
    advertise_peer_url: Option<String>,
    advertise_client_urls: Vec<String>,
    bootstrap: Bootstrap,
    name: String,
    quota_bytes: u64,
    watch: WatchConfig,
    lease_checkpoint_interval: Duration,
    auto_compaction: crate::AutoCompaction,
    metrics_extensive: bool,
    auth: crate::AuthOptions,
}

impl Default for NodeBuilder {
    fn default() -> Self {
        Self {
            id: 1,
            data_dir: None,
            limits: Limits::default(),
            proposer: ProposerConfig::default(),
            store: StoreOptions::default(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            // Chosen from measurements on a busy 2-core machine (README "Failover"): a
            // follower stands 1.05-1.4 s after the last heartbeat (openraft waits the
            // lease, the maximum, then the randomized timeout); the leader refuses writes
            // only after 700 ms without a quorum's acknowledgement.
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: (Duration::from_millis(350), Duration::from_millis(700)),
            peer_listen: None,
            client_listen: Vec::new(),
            metrics_listen: Vec::new(),
            client_tls: None,
            peer_tls: None,
            peer_dial_tls: None,
            advertise_peer_url: None,
            advertise_client_urls: Vec::new(),
            bootstrap: Bootstrap::SingleNode,
            name: String::new(),
            quota_bytes: DEFAULT_QUOTA_BYTES,
            watch: WatchConfig::default(),
            lease_checkpoint_interval: DEFAULT_LEASE_CHECKPOINT_INTERVAL,
            auto_compaction: crate::AutoCompaction::Off,
            metrics_extensive: false,
            auth: crate::AuthOptions::default(),
        }
    }
}

impl NodeBuilder {
    /// How clients authenticate (bcrypt cost, token TTL, certificate common names).
    pub fn auth(mut self, options: crate::AuthOptions) -> Self {
        self.auth = options;
        self
    }

    /// This node's member id (non-zero).
    pub fn id(mut self, id: NodeId) -> Self {
        self.id = id;
        self
    }

    /// A human-readable member name (published with the client URLs).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Where the log, the state machine and snapshots live.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Serve the peer protocol on `addr`.
    pub fn listen_peer(mut self, addr: std::net::SocketAddr) -> Self {
        self.peer_listen = Some(Listen::Addr(addr));
        self
    }

    /// Serve the peer protocol on an already bound listener.
    pub fn peer_listener(mut self, listener: std::net::TcpListener) -> Self {
        self.peer_listen = Some(Listen::Bound(listener));
        self
    }

    /// Serve etcd's gRPC API on `addr`. May be given more than once (etcd's
    /// `--listen-client-urls` often lists a loopback and a public address).
    pub fn listen_client(mut self, addr: std::net::SocketAddr) -> Self {
        self.client_listen.push((Listen::Addr(addr), false));
        self
    }

    /// Serve etcd's gRPC API on an already bound listener.
    pub fn client_listener(mut self, listener: std::net::TcpListener) -> Self {
        self.client_listen.push((Listen::Bound(listener), false));
        self
    }

    /// [`NodeBuilder::listen_client`] over TLS ([`NodeBuilder::client_tls`]): an
    /// `https://` client URL.
    pub fn listen_client_tls(mut self, addr: std::net::SocketAddr) -> Self {
        self.client_listen.push((Listen::Addr(addr), true));
        self
    }

    /// [`NodeBuilder::client_listener`] over TLS.
    pub fn client_listener_tls(mut self, listener: std::net::TcpListener) -> Self {
        self.client_listen.push((Listen::Bound(listener), true));
        self
    }

    /// The TLS of the `_tls` client and metrics listeners: etcd's `--cert-file`,
    /// `--key-file`, `--trusted-ca-file`, `--client-cert-auth`.
    pub fn client_tls(mut self, tls: ServerTls) -> Self {
        self.client_tls = Some(tls);
        self
    }

    /// TLS on the peer listener (etcd's `--peer-cert-file`, `--peer-key-file`,
    /// `--peer-trusted-ca-file`, `--peer-client-cert-auth`): it accepts only TLS, and
    /// the default advertised peer URL is `https://`.
    pub fn peer_tls(mut self, server: ServerTls) -> Self {
        self.peer_tls = Some(server);
        self
    }

    /// How members with `https://` peer URLs are dialed: the member's peer certificate
    /// as its client certificate, theirs checked against the peer CA.
    pub fn peer_dial_tls(mut self, client: ClientTls) -> Self {
        self.peer_dial_tls = Some(client);
        self
    }

    /// Serve etcd's HTTP health endpoints (`/health`, `/livez`, `/readyz`) on `addr` as
    /// well as on the client address: etcd's `--listen-metrics-urls`, where probes go
    /// when the client port is for clients alone. May be given more than once.
    pub fn listen_metrics(mut self, addr: std::net::SocketAddr) -> Self {
        self.metrics_listen.push((Listen::Addr(addr), false));
        self
    }

    /// [`NodeBuilder::listen_metrics`] on an already bound listener.
    pub fn metrics_listener(mut self, listener: std::net::TcpListener) -> Self {
        self.metrics_listen.push((Listen::Bound(listener), false));
        self
    }

    /// [`NodeBuilder::listen_metrics`] over the client TLS (an `https://` metrics URL).
    pub fn listen_metrics_tls(mut self, addr: std::net::SocketAddr) -> Self {
        self.metrics_listen.push((Listen::Addr(addr), true));
        self
    }

    /// The peer URL other members use (default: `http://` + the bound peer address).
    pub fn advertise_peer_url(mut self, url: impl Into<String>) -> Self {
        self.advertise_peer_url = Some(url.into());
        self
    }

    /// The client URLs published for this member (default: `http://` + the bound client
    /// address).
    pub fn advertise_client_urls(mut self, urls: Vec<String>) -> Self {
        self.advertise_client_urls = urls;
        self
    }

    /// Bootstrap a cluster of these members (id, peer URL) on first start. Every member
    /// must be given the same list.
    pub fn initial_cluster(mut self, members: impl IntoIterator<Item = (NodeId, String)>) -> Self {
        self.bootstrap = Bootstrap::Cluster(members.into_iter().collect());
        self
    }

    /// Do not bootstrap: wait to be added by an existing member.
    pub fn join(mut self) -> Self {
        self.bootstrap = Bootstrap::Join;
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

    /// sled's page cache of the state database: writes to a state larger than it page
    /// nodes in and out of the database file.
    pub fn state_cache_bytes(mut self, bytes: u64) -> Self {
        self.store.state_cache_bytes = bytes;
        self
    }

    /// sled cache sizes, automatic defragmentation and the snapshot cadence (replaces
    /// what [`NodeBuilder::snapshot_every_entries`] set).
    pub fn store_options(mut self, options: StoreOptions) -> Self {
        self.store = options;
        self
    }

    /// Also serve `grpc_server_handling_seconds`, the handling-time histogram of every
    /// gRPC method (etcd's `--metrics extensive`; default off: two clock reads per call).
    pub fn metrics_extensive(mut self, extensive: bool) -> Self {
        self.metrics_extensive = extensive;
        self
    }

    /// What the leader compacts by itself, as etcd's `--auto-compaction-mode` and
    /// `--auto-compaction-retention` (default: nothing, only on request).
    pub fn auto_compaction(mut self, mode: crate::AutoCompaction) -> Self {
        self.auto_compaction = mode;
        self
    }

    /// When the state database is rewritten to give disk space back (default: once its
    /// file is 2x its size at the last rewrite, taken as at least 64 MiB;
    /// [`AutoDefrag::OFF`]: only on `Defragment`). Writes wait only for the final
    /// catch-up of what they wrote during the copy.
    pub fn auto_defrag(mut self, auto: AutoDefrag) -> Self {
        self.store.auto_defrag = auto;
        self
    }

    /// Deadline of one request (default [`DEFAULT_REQUEST_TIMEOUT`], 7 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Raft heartbeat interval and election timeout range (defaults 100 ms, 350-700 ms).
    pub fn raft_timing(
        mut self,
        heartbeat: Duration,
        election_min: Duration,
        election_max: Duration,
    ) -> Self {
        self.heartbeat_interval = heartbeat;
        self.election_timeout = (election_min, election_max);
        self
    }

    /// Disk quota: past it the NOSPACE alarm is raised and writes that add data are
    /// refused until the alarm is disarmed (default 2 GiB, as etcd).
    pub fn quota_backend_bytes(mut self, bytes: u64) -> Self {
        self.quota_bytes = bytes;
        self
    }

    /// Watch limits: events and bytes one watcher may have queued before it is moved to
    /// history replay, and the progress-notification interval (defaults: 1024 events,
    /// 4 MiB, 10 minutes as etcd).
    pub fn watch_config(mut self, config: WatchConfig) -> Self {
        self.watch = config;
        self
    }

    /// How often the leader records every lease's remaining TTL in the log (default 5 s),
    /// so a new leader resumes leases from there instead of their full TTL. A lease not
    /// kept alive expires at most this much plus the failover time late after a leader
    /// change.
    pub fn lease_checkpoint_interval(mut self, interval: Duration) -> Self {
        self.lease_checkpoint_interval = interval.max(Duration::from_millis(100));
        self
    }

    /// Build a snapshot (and purge the log behind it) after at least this many entries,
    /// and once as many bytes were written as the last snapshot holds
    /// ([`raftkv_storage::SnapshotCadence`]).
    pub fn snapshot_every_entries(mut self, entries: u64) -> Self {
        self.store.snapshot_every_entries = entries;
        self
    }

    /// Open the data directory, start Raft and the servers, and bootstrap on the very first
    /// start (see [`Bootstrap`]). On later starts the node reopens what is on disk.
    pub async fn start(self) -> Result<Node> {
        if self.id == 0 {
            return Err(Error::Internal("node id must be non-zero".into()));
        }
        let data_dir = self
            .data_dir
            .clone()
            .ok_or_else(|| Error::Internal("data_dir is required".into()))?;
        let io = |what: &str, e: std::io::Error| Error::Internal(format!("{what}: {e}"));
        let peer_listener = match self.peer_listen {
            Some(l) => Some(l.bind().await.map_err(|e| io("binding the peer address", e))?),
            None => None,
        };
        let client_tls = |secure: bool| -> Result<Option<ServerTls>> {
            match (secure, &self.client_tls) {
                (false, _) => Ok(None),
                (true, Some(tls)) => Ok(Some(tls.clone())),
                (true, None) => Err(Error::Internal(
                    "a TLS client or metrics listener needs NodeBuilder::client_tls".into(),
                )),
            }
        };
        let mut client_listeners = Vec::new();
        for (l, secure) in self.client_listen {
            let tls = client_tls(secure)?;
            client_listeners.push((
                l.bind().await.map_err(|e| io("binding a client address", e))?,
                tls,
            ));
        }
        let mut metrics_listeners = Vec::new();
        for (l, secure) in self.metrics_listen {
            let tls = client_tls(secure)?;
            metrics_listeners.push((
                l.bind().await.map_err(|e| io("binding a metrics address", e))?,
                tls,
            ));
        }
        let scheme = |tls: bool| if tls { "https" } else { "http" };
        let peer_url = match (&self.advertise_peer_url, &peer_listener) {
            (Some(url), _) => url.clone(),
            (None, Some(l)) => format!(
                "{}://{}",
                scheme(self.peer_tls.is_some()),
                l.local_addr().map_err(|e| io("peer address", e))?
            ),
            (None, None) => String::new(),
        };
        let client_urls = if self.advertise_client_urls.is_empty() {
            client_listeners
                .iter()
                .map(|(l, tls)| {
                    Ok(format!(
                        "{}://{}",
                        scheme(tls.is_some()),
                        l.local_addr().map_err(|e| io("client address", e))?
                    ))
                })
                .collect::<Result<Vec<_>>>()?
        } else {
            self.advertise_client_urls.clone()
        };

        let data_dir_for_quota = data_dir.clone();
        let store_options = self.store;
        let store = tokio::task::spawn_blocking(move || Store::open(&data_dir, store_options))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(|e| Error::Storage(e.to_string()))?;
        let log = store.log.clone();
        store.shared.watch_hub().configure(self.watch);
        // Reads this node serves as leader wait for its log as it is now to be applied
        // (`raftkv_net::leader_read_index` says why).
        let read_floor = {
            use openraft::storage::RaftLogStorage;
            let mut log = log.clone();
            let state = log
                .get_log_state()
                .await
                .map_err(|e| Error::Storage(e.to_string()))?;
            state.last_log_id.map_or(0, |id| id.index)
        };
        let config = openraft::Config {
            cluster_name: "raftkv".into(),
            heartbeat_interval: self.heartbeat_interval.as_millis() as u64,
            election_timeout_min: self.election_timeout.0.as_millis() as u64,
            election_timeout_max: self.election_timeout.1.as_millis() as u64,
            // `snapshot_trigger.rs` decides when (openraft counts only entries).
            snapshot_policy: openraft::SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: 1000,
            // Entries per append request; the network splits a request by bytes as well
            // (entries are batches of up to 4 MiB), so no message exceeds the peer limit.
            max_payload_entries: 64,
            // A member stands for election only if a quorum would vote for it: a member
            // cut off and back does not depose a healthy leader.
            enable_pre_vote: Some(true),
            // A restarted leader is elected again rather than resuming: the state machine
            // is not synced on apply, and an election proves its log is the newest.
            enable_leader_restore: Some(false),
            ..openraft::Config::default()
        }
        .validate()
        .map_err(|e| Error::Internal(e.to_string()))?;
        let peer_server_tls = self.peer_tls.clone();
        let connections =
            PeerConnections::new(Duration::from_millis(500)).with_tls(self.peer_dial_tls.clone());
        let network = PeerNetwork::new(connections.clone());
        let raft = Raft::new(self.id, Arc::new(config), network, store.log, store.state_machine)
            .await
            .map_err(|e| Error::Storage(e.to_string()))?;
        let proposer = Proposer::spawn(raft.clone(), self.proposer);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let inner = Arc::new(NodeInner {
            id: self.id,
            read_floor,
            read_index: ReadIndexBatcher::spawn(
                self.id,
                raft.clone(),
                connections.clone(),
                self.request_timeout,
                read_floor,
            ),
            raft: raft.clone(),
            proposer,
            reader: store.reader,
            shared: store.shared,
            log,
            limits: self.limits,
            request_timeout: self.request_timeout,
            connections,
            peer_url: peer_url.clone(),
            client_urls: client_urls.clone(),
            shutdown,
            servers: parking_lot::Mutex::new(Vec::new()),
            quota: Quota::new(
                self.quota_bytes,
                crate::disk_usage::DiskUsage::new(data_dir_for_quota),
            ),
            leases: LeaseManager::new(self.lease_checkpoint_interval, self.election_timeout.1),
            leader_contact: LeaderContact::new(),
            counters: crate::metrics::ServerCounters::default(),
            grpc_counters: Arc::new(if self.metrics_extensive {
                raftkv_net::GrpcCounters::extensive()
            } else {
                raftkv_net::GrpcCounters::default()
            }),
            auth: self.auth,
        });
        inner.shared.tokens().set_ttl(self.auth.token_ttl);
        let node = Node { inner };

        if let Some(listener) = peer_listener {
            let service = RaftPeerServer::new(PeerService::new(
                raft.clone(),
                Arc::new(node.clone()),
                read_floor,
                {
                    let shared = node.inner.shared.clone();
                    Arc::new(move || shared.receiving_snapshot_file())
                },
                node.inner.connections.traffic().clone(),
            ))
            .max_decoding_message_size(raftkv_net::MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(raftkv_net::MAX_PEER_MESSAGE_BYTES);
            // A member of a build with another peer protocol is refused before Raft
            // sees its message (`raftkv_net::peer_protocol`).
            let service = tonic::service::interceptor::InterceptedService::new(
                service,
                raftkv_net::peer_protocol::refuse_other_versions,
            );
            let router = tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .add_service(service);
            // Test-only: switch network faults and storage failpoints at run time.
            #[cfg(feature = "failpoints")]
            let router = router.add_service(raftkv_proto::raftkvfaults::faults_server::FaultsServer::new(
                raftkv_net::FaultService::new(
                    node.inner.connections.faults().clone(),
                    [
                        raftkv_storage::failpoints::FAILPOINTS,
                        crate::failpoints::FAILPOINTS,
                    ]
                    .concat(),
                    raftkv_storage::failpoints::fired,
                ),
            ));
            spawn_server(
                &node,
                "peer",
                router,
                (listener, peer_server_tls),
                Clients::Ours,
                shutdown_rx.clone(),
            );
        }
        for listener in client_listeners {
            let backend = Arc::new(node.clone());
            let cluster = ClusterService::new(backend.clone());
            // etcd's gRPC limit: a request may be up to `max_request_bytes` (refused after
            // decoding with "request is too large") plus its 512 KiB of gRPC overhead;
            // beyond that the server refuses it undecoded, ResourceExhausted.
            let limit = node.inner.limits.max_request_bytes + GRPC_OVERHEAD_BYTES;
            // HTTP/1.1 too: curl, load balancers and Kubernetes probe the health
            // endpoints with it (`raftkv_net::HttpProbesLayer`); gRPC stays HTTP/2.
            let router = tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .accept_http1(true)
                .layer(
                    raftkv_net::HttpProbesLayer::new(backend.clone())
                        .counting_grpc(node.inner.grpc_counters.clone()),
                )
                .add_service(KvServer::new(KvService::new(backend.clone())).max_decoding_message_size(limit))
                .add_service(WatchServer::new(WatchService::new(backend.clone())))
                .add_service(
                    LeaseServer::new(LeaseService::new(backend.clone())).max_decoding_message_size(limit),
                )
                .add_service(
                    LockServer::new(LockService::new(backend.clone())).max_decoding_message_size(limit),
                )
                .add_service(
                    ElectionServer::new(ElectionService::new(backend.clone()))
                        .max_decoding_message_size(limit),
                )
                .add_service(ClusterServer::new(cluster.clone()).max_decoding_message_size(limit))
                .add_service(MaintenanceServer::new(cluster).max_decoding_message_size(limit))
                .add_service(
                    raftkv_proto::etcdserverpb::auth_server::AuthServer::new(raftkv_net::AuthService::new(
                        backend.clone(),
                    ))
                    .max_decoding_message_size(limit),
                );
            spawn_server(
                &node,
                "client",
                router,
                listener,
                Clients::Etcd,
                shutdown_rx.clone(),
            );
        }
        for listener in metrics_listeners {
            // The probes alone: no gRPC service is routed here.
            let router = tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .accept_http1(true)
                .layer(raftkv_net::HttpProbesLayer::new(Arc::new(node.clone())))
                .add_routes(tonic::service::Routes::default());
            spawn_server(
                &node,
                "metrics",
                router,
                listener,
                Clients::Ours,
                shutdown_rx.clone(),
            );
        }

        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| Error::Shutdown(e.to_string()))?;
        if !initialized {
            let members: BTreeMap<NodeId, MemberNode> = match &self.bootstrap {
                Bootstrap::SingleNode => BTreeMap::from([(
                    self.id,
                    MemberNode {
                        peer_url,
                        client_urls: client_urls.clone(),
                    },
                )]),
                // Identical on every member: peer URLs only; client URLs are published.
                Bootstrap::Cluster(members) => {
                    if !members.contains_key(&self.id) {
                        return Err(Error::Internal(format!(
                            "initial cluster does not contain node {}",
                            self.id
                        )));
                    }
                    members
                        .iter()
                        .map(|(id, url)| (*id, MemberNode::new(url.clone())))
                        .collect()
                }
                Bootstrap::Join => BTreeMap::new(),
            };
            if !members.is_empty() {
                match raft.initialize(members).await {
                    Ok(()) => {}
                    // Another member's vote or log reached us first: we are part of it.
                    Err(openraft::error::RaftError::APIError(
                        openraft::error::InitializeError::NotAllowed(_),
                    )) => {}
                    Err(e) => return Err(Error::Internal(format!("initialize: {e}"))),
                }
            }
        }
        tokio::spawn(crate::snapshot_trigger::run(
            raft.clone(),
            node.inner.shared.clone(),
            shutdown_rx.clone(),
        ));
        tokio::spawn(crate::lease::run(
            Arc::downgrade(&node.inner),
            shutdown_rx.clone(),
        ));
        tokio::spawn(crate::metrics::count_leader_changes(
            Arc::downgrade(&node.inner),
            shutdown_rx.clone(),
        ));
        tokio::spawn(crate::metrics::probe_peers(
            Arc::downgrade(&node.inner),
            shutdown_rx.clone(),
        ));
        tokio::spawn(crate::auto_compaction::run(
            Arc::downgrade(&node.inner),
            self.auto_compaction,
            shutdown_rx.clone(),
        ));
        if !client_urls.is_empty() {
            tokio::spawn(crate::publish::publish_client_urls(
                node.clone(),
                self.name.clone(),
                client_urls,
                shutdown_rx,
            ));
        }
        Ok(node)
    }
}

/// What etcd allows a client request beyond `--max-request-bytes` (its
/// `grpcOverheadBytes`).
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// How long a client has to finish its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which clients a listener serves: on the client port, etcd's Go clients may send an
/// `:authority` that must be repaired first ([`raftkv_net::AuthorityFix`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Clients {
    Etcd,
    Ours,
}

impl Clients {
    fn wrap<IO>(self, io: IO) -> raftkv_net::AuthorityFix<IO> {
        match self {
            Clients::Etcd => raftkv_net::AuthorityFix::new(io),
            Clients::Ours => raftkv_net::AuthorityFix::passthrough(io),
        }
    }
}

fn spawn_server<L, ResBody>(
    node: &Node,
    what: &'static str,
    router: tonic::transport::server::Router<L>,
    (listener, tls): (TcpListener, Option<ServerTls>),
    clients: Clients,
    mut shutdown: watch::Receiver<bool>,
) where
    L: tower_layer::Layer<tonic::service::Routes> + Send + 'static,
    L::Service: tower_service::Service<http::Request<tonic::body::Body>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    <L::Service as tower_service::Service<http::Request<tonic::body::Body>>>::Future: Send,
    <L::Service as tower_service::Service<http::Request<tonic::body::Body>>>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let handle = tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        let served = match tls {
            Some(tls) => {
                let (incoming, accepting) = raftkv_net::tls::incoming(listener, tls, TLS_HANDSHAKE_TIMEOUT);
                let incoming = incoming.map_ok(move |io| clients.wrap(io));
                let served = router.serve_with_incoming_shutdown(incoming, stop).await;
                // The incoming stream is gone: the accept task closes the port; wait for
                // it, so the port is free once the node's shutdown returns.
                let _ = accepting.await;
                served
            }
            None => {
                let incoming = tonic::transport::server::TcpIncoming::from(listener)
                    .with_nodelay(Some(true))
                    .map_ok(move |io| clients.wrap(io));
                router.serve_with_incoming_shutdown(incoming, stop).await
            }
        };
        if let Err(e) = served {
            tracing::error!(server = what, error = %e, "server stopped");
        }
    });
    node.inner.servers.lock().push(handle);
}

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
    /// The leader's lease deadlines (`lease.rs`).
    pub(crate) leases: LeaseManager,
    /// When an append from a leader last arrived ([`Node::current_leader`]).
    pub(crate) leader_contact: LeaderContact,
    /// Proposals and leader changes, for `/metrics` (`metrics.rs`).
    pub(crate) counters: crate::metrics::ServerCounters,
    /// gRPC calls on the client port, for `/metrics`.
    pub(crate) grpc_counters: Arc<raftkv_net::GrpcCounters>,
    /// How clients authenticate (`auth.rs`).
    pub(crate) auth: crate::AuthOptions,
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

/// A raftkv node: the KV API (`kv.rs`), cluster membership (`membership.rs`), metrics,
/// shutdown. Cheap to clone; every clone is the same node.
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
    /// sled keeps after churn (etcd's `Defragment`; see `raftkv-storage`'s `defrag.rs`).
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
