//! # raftkv-net: raftkv over gRPC
//!
//! - [`PeerConnections`]: one long-lived HTTP/2 channel per peer URL, shared by everything
//!   that talks to that peer (replication, votes, snapshots, read index, forwarding), so no
//!   RPC opens a connection of its own.
//! - [`PeerNetwork`]: openraft's `RaftNetworkFactory` / `RaftNetworkV2` over tonic. Peer
//!   addresses come from the membership's node data ([`raftkv_core::MemberNode`]), so a node
//!   added later is reachable without restarting anyone. Replication is pipelined over one
//!   bidirectional stream per follower, bounded in parts and bytes in flight; append
//!   requests are split by bytes so no message exceeds [`MAX_PEER_MESSAGE_BYTES`].
//!   Pre-vote and leadership transfer are real RPCs (openraft's defaults would silently
//!   grant and refuse them). Per-RPC deadlines come from openraft's `RPCOption`;
//!   transport failures map to openraft's `Unreachable` (openraft backs off), the rest to
//!   `NetworkError`. Snapshots move as a client stream of bounded chunks.
//! - [`PeerService`]: the server side of the peer protocol, feeding openraft, answering
//!   read-index requests, proposing writes forwarded by followers and answering the lease
//!   calls (keep-alive, time-to-live) they forward.
//! - [`KvService`]: etcd's `KV` gRPC service over any [`KvBackend`] (the node implements
//!   it), with etcd's status codes and texts (`raftkv_proto::status`).
//! - [`LeaseService`]: etcd's `Lease` service over any [`LeaseBackend`]; keep-alives are a
//!   bidirectional stream answered in order, one task per stream, bounded.
//! - [`LockService`]: etcd's `v3lockpb.Lock` service over any [`LockBackend`]; a wait
//!   ends with the call's deadline or the client, and removes the waiter's key.
//! - [`ElectionService`]: etcd's `v3electionpb.Election` service over any
//!   [`ElectionBackend`], with etcd's "not leader" / "no leader" statuses.
//! - [`WatchService`]: etcd's `Watch` bidirectional stream over any [`WatchBackend`]: one
//!   task per stream drives the backend's watch session and writes the responses, in
//!   etcd's order, splitting them for watchers that asked for fragments; each event is
//!   encoded once for all the watchers that get it. [`WatchServer`] serves it (by hand,
//!   in place of the generated server, to send those pre-encoded responses).
//! - [`AuthService`]: etcd's `Auth` service over any [`AuthBackend`]; [`gate`]: who a
//!   client request comes from (token metadata, client certificate common name) and the
//!   checks the services make outside the log ([`AuthGate`]).
//!
//! - [`find_own_id`]: a member joining a running cluster asks the others for the id
//!   `MemberAdd` gave it, by its peer URL (etcd's `--initial-cluster-state existing`).
//! - [`HttpProbesLayer`]: etcd's HTTP health endpoints (`/health`, `/livez`, `/readyz`)
//!   and `/metrics` ([`MetricsSource`]) on the client port, in front of the gRPC services.
//! - [`AuthorityFix`]: lets etcdctl dial a member by its `http://` URL (grpc-go then sends
//!   an HTTP/2 `:authority` the `h2` crate refuses; the client listener repairs it).
//! - [`CoalescedWrites`]: a server connection whose frames of one flush leave in one
//!   write (a small gRPC response is one TCP segment, not two).
//! - [`tls`]: TLS on the client and peer ports as etcd configures it (rustls): mutual
//!   TLS between members, certificates re-read when renewed on disk.
//! - [`NetFaults`]: test-only network faults (loss, delay, duplication, partitions) that
//!   every outgoing peer call goes through; a zero-sized no-op unless the `net-faults`
//!   feature is on (switched in-process), or `failpoints`, which also serves
//!   `FaultService` on the peer port to switch them from another process.
//!
//! openraft's messages travel as bincode bytes inside protobuf (see `proto/peer.proto`).
//!
//! ## Caveats
//! - Without peer TLS (`https://` peer URLs and `--peer-client-cert-auth`), anyone who
//!   reaches a peer port can speak Raft to it: bind plaintext peer ports to trusted
//!   networks.

#![warn(missing_docs)]

mod append_split;
mod auth_service;
mod authority_fix;
mod cluster_service;
mod coalesced_writes;
mod connections;
mod election_service;
#[cfg(feature = "failpoints")]
mod fault_service;
mod faults;
mod forward_pipe;
pub mod gate;
mod grpc_methods;
mod grpc_metrics;
mod http_probes;
mod kv_service;
mod lease_service;
mod lock_service;
mod member_lookup;
mod network;
mod oversize_status;
mod peer_client;
pub mod peer_protocol;
mod peer_rpc;
mod peer_service;
mod peer_traffic;
mod require_leader;
mod stream_append;
pub mod tls;
mod watch_server;
mod watch_service;

pub use auth_service::{AuthBackend, AuthService};
pub use authority_fix::AuthorityFix;
pub use cluster_service::{
    API_VERSION, AlarmInfo, ClusterBackend, ClusterService, MemberInfo, SnapshotStream, StatusInfo,
};
pub use coalesced_writes::CoalescedWrites;
pub use connections::PeerConnections;
pub use election_service::{
    ELECTION_NO_LEADER, ELECTION_NOT_LEADER, ElectionBackend, ElectionService, LeaderKeyParts, ObserveStream,
};
#[cfg(feature = "failpoints")]
pub use fault_service::FaultService;
pub use faults::{FaultCounts, Lost, NetFaultPlan, NetFaults};
pub use gate::{AuthGate, Credentials, Need};
pub use grpc_metrics::GrpcCounters;
pub use http_probes::{HttpProbes, HttpProbesLayer, MetricsSource, ProbeBackend};
pub use kv_service::{KvBackend, KvService};
pub use lease_service::{LeaseBackend, LeaseService};
pub use lock_service::{LockBackend, LockService};
pub use member_lookup::{MemberLookupError, find_own_id};
pub use network::PeerNetwork;
pub use peer_client::PeerClient;
pub use peer_rpc::{PeerError, PeerRpcClient};
pub use peer_service::{
    ForwardTarget, PeerService, SnapshotInbox, leader_read_index, member_peer_urls, read_index_error,
};
pub use peer_traffic::{ETCD_PEER_RTT_BUCKETS, PROBE_INTERVAL, PeerCounters, PeerTraffic};
pub use require_leader::{LeaderStatus, MAX_NO_LEADER_TIMEOUTS, REQUIRE_LEADER_KEY, requires_leader};
pub use watch_server::WatchServer;
pub use watch_service::{WatchBackend, WatchService};

/// Largest gRPC message a peer sends or accepts (entries are bounded by openraft's
/// `max_payload_entries`; a single request is at most `max_request_bytes`).
pub const MAX_PEER_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
