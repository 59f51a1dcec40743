//! [`NodeBuilder`]: every setting a node starts with, and [`Bootstrap`], how it joins a
//! cluster on its first start. `start.rs` turns a builder into a running [`super::Node`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use raftkv_core::ProposerConfig;
use raftkv_core::types::NodeId;
use raftkv_core::validate::Limits;
use raftkv_net::tls::{ClientTls, ServerTls};
use raftkv_storage::{AutoDefrag, StoreOptions, WatchConfig};
use tokio::net::TcpListener;

use super::{DEFAULT_LEASE_CHECKPOINT_INTERVAL, DEFAULT_QUOTA_BYTES, DEFAULT_REQUEST_TIMEOUT};

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
pub(super) enum Listen {
    Addr(std::net::SocketAddr),
    Bound(std::net::TcpListener),
}

impl Listen {
    pub(super) async fn bind(self) -> std::io::Result<TcpListener> {
        match self {
            Listen::Addr(addr) => TcpListener::bind(addr).await,
            Listen::Bound(l) => {
                l.set_nonblocking(true)?;
                TcpListener::from_std(l)
            }
        }
    }
}

/// Configures and starts a [`Node`](super::Node).
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "multi_thread")]
/// # async fn main() -> raftkv::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let node = raftkv::Node::builder().id(1).data_dir(dir.path()).start().await?;
/// // One member on its own: it bootstraps a cluster of one on the first start and
/// // reopens it on the next. `initial_cluster` and `listen_peer` form larger ones.
/// node.put("greeting", "hello").await?;
/// assert_eq!(node.get("greeting").await?.map(|kv| kv.value), Some(b"hello".to_vec()));
/// node.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct NodeBuilder {
    pub(crate) id: NodeId,
    pub(super) data_dir: Option<PathBuf>,
    pub(super) limits: Limits,
    pub(super) proposer: ProposerConfig,
    pub(super) store: StoreOptions,
    pub(super) request_timeout: Duration,
    pub(super) heartbeat_interval: Duration,
    pub(super) election_timeout: (Duration, Duration),
    pub(super) peer_listen: Option<Listen>,
    /// Client and metrics listeners, each with whether it speaks TLS.
    pub(super) client_listen: Vec<(Listen, bool)>,
    pub(super) metrics_listen: Vec<(Listen, bool)>,
    /// TLS of the client (and https metrics) listeners.
    pub(super) client_tls: Option<ServerTls>,
    /// TLS of the peer listener.
    pub(super) peer_tls: Option<ServerTls>,
    /// TLS of connections to members with `https://` peer URLs.
    pub(super) peer_dial_tls: Option<ClientTls>,
    pub(super) advertise_peer_url: Option<String>,
    pub(super) advertise_client_urls: Vec<String>,
    pub(super) bootstrap: Bootstrap,
    pub(super) name: String,
    pub(super) quota_bytes: u64,
    pub(super) watch: WatchConfig,
    pub(super) lease_checkpoint_interval: Duration,
    pub(super) auto_compaction: crate::AutoCompaction,
    pub(super) metrics_extensive: bool,
    pub(super) auth: crate::api::auth_options::AuthOptions,
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
            auth: crate::api::auth_options::AuthOptions::default(),
        }
    }
}

impl NodeBuilder {
    /// How clients authenticate (bcrypt cost, token TTL, certificate common names).
    pub fn auth(mut self, options: crate::api::auth_options::AuthOptions) -> Self {
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
    ///
    /// # Example
    ///
    /// Serve etcd's v3 protocol and talk to it with `raftkv-client` (or `etcdctl`, or any
    /// etcd client):
    ///
    /// ```
    /// # #[tokio::main(flavor = "multi_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// let node = raftkv::Node::builder()
    ///     .id(1)
    ///     .data_dir(dir.path())
    ///     .listen_client("127.0.0.1:0".parse()?) // port 0: the system picks one
    ///     .start()
    ///     .await?;
    /// let client = raftkv_client::Client::connect(node.client_urls().to_vec()).await?;
    /// client.put("from/client", "hi").await?;
    /// assert_eq!(node.get("from/client").await?.map(|kv| kv.value), Some(b"hi".to_vec()));
    /// node.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
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
}
