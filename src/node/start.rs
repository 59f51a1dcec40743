//! [`NodeBuilder::start`]: open the store, start openraft, the proposer and the
//! background tasks, serve the peer protocol and etcd's services on their listeners,
//! bootstrap or join, publish this member's client URLs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt as _;
use raftkv_core::types::{MemberNode, NodeId};
use raftkv_core::{Error, Proposer, Result};
use raftkv_net::WatchServer;
use raftkv_net::tls::ServerTls;
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
use raftkv_storage::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::node::lease_deadlines::LeaseManager;
use crate::node::quota::Quota;
use crate::node::read_index::ReadIndexBatcher;

use super::builder::{Bootstrap, NodeBuilder};
use super::{LeaderContact, Node, NodeInner, Raft};

impl NodeBuilder {
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
            // `tasks/snapshot_trigger.rs` decides when (openraft counts only entries).
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
            counters: crate::node::server_counters::ServerCounters::default(),
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
                let delay = super::bootstrap::initialize_delay(self.id, &members, self.election_timeout.1);
                if delay.is_zero() {
                    super::bootstrap::initialize(&raft, members).await?;
                } else {
                    super::bootstrap::initialize_later(raft.clone(), members, delay);
                }
            }
        }
        crate::tasks::start_all(
            &node,
            self.auto_compaction,
            self.name.clone(),
            client_urls,
            shutdown_rx,
        );
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
    /// `io` as the server reads and writes it: the authority repaired as needed, the
    /// frames of each flush written at once.
    fn wrap<IO: tokio::io::AsyncWrite>(
        self,
        io: IO,
    ) -> raftkv_net::AuthorityFix<raftkv_net::CoalescedWrites<IO>> {
        let io = raftkv_net::CoalescedWrites::new(io);
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
