//! # raftkv: an embeddable, replicated, linearizable key-value store
//!
//! Link this crate, give the process a node id and a data directory, and get a
//! crash-safe key-value map with etcd v3's data model (revisions, MVCC reads,
//! transactions with compares):
//!
//! ```no_run
//! # async fn demo() -> raftkv::Result<()> {
//! let node = raftkv::Node::builder().id(1).data_dir("/tmp/raftkv-demo").start().await?;
//! node.put("greeting", "hello").await?;
//! let kv = node.get("greeting").await?.expect("present");
//! assert_eq!(kv.value, b"hello");
//! node.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Start with the [`guide`]: embedding a node, forming a cluster, read consistency,
//! watches, leases, locks with fencing, errors and retries, runtime and shutdown. Test an
//! application against a real cluster with [`testing::TestCluster`] (feature `testing`).
//!
//! ## Features
//! - `testing`: [`testing::TestCluster`], an in-process cluster for your tests (compiles
//!   network fault hooks into peer calls: for dev-dependencies only).
//! - `mimalloc` (default): the allocator of the `raftkv-server` binary; the library never
//!   sets one.
//! - `failpoints`: raftkv's own fault injection (storage failpoints, a fault admin
//!   service on the peer port); never for production builds.
//!
//! The crate is the facade over the workspace: `raftkv-core` (types, watermarks, group
//! commit), `raftkv-storage` (sled log store and MVCC state machine), `raftkv-net` (gRPC
//! peer network and etcd's KV service). See
//! `ARCHITECTURE.md` for the write and read paths end to end.
//!
//! Inside, `node/` assembles and runs a member, `api/` is the embedded API (methods of
//! [`Node`], one file per etcd service family), `grpc/` is the node as the gRPC services
//! see it, `tasks/` the member's background duties, `metrics/` its Prometheus text.
//!
//! A cluster: give each node a peer address and the same initial member list
//! (`NodeBuilder::initial_cluster`); writes on any node are forwarded to the leader,
//! linearizable reads on any node use the read-index protocol. With a client address the
//! node also serves etcd's KV and Watch gRPC APIs (`etcdctl` works against it).
//!
//! Watches (`Node::watch`, and etcd's Watch over gRPC) are served by every node from its
//! own applied history: events in revision order, no gaps, history replayed for a start
//! revision in the past, slow watchers replayed from the history instead of slowing
//! writes (see `api/watch.rs`).
//!
//! Locks and elections (`Node::lock`, `Node::campaign` and the rest; etcd's Lock and
//! Election gRPC services) are etcd's concurrency recipes on leases, a txn and a watch,
//! re-checking the lease after waiting (see `api/lock.rs`, `api/election.rs`). A lease lock is not
//! exclusive while its holder is paused past the lease's TTL: fence the protected writes
//! with a txn comparing the lock key's create revision ([`LockKey::fence`]).
//!
//! Auth (etcd's users, roles and key-range permissions, `Node::auth_change`, and etcd's
//! Auth gRPC service) is replicated through the log; while it is enabled, gRPC clients
//! must authenticate and are checked, while the embedded API stays trusted (see
//! `api/auth.rs`).
//!
//! ## Cancellation
//!
//! Dropping a future of the API before it finishes abandons the wait, not the request
//! (`tests/t44_cancellation.rs`, `tests/t23_lock_election/`):
//! - a write (`put`, `delete_range`, `txn`, `compact`) already handed to Raft may still
//!   commit, but whole: a txn is never applied in part. Read before retrying a write
//!   that is not idempotent;
//! - a dropped [`WatchStream`] unregisters its watcher;
//! - a dropped `lock` or `campaign` wait deletes the waiter's key; a lock already
//!   granted stays held until `unlock` or the end of its lease.
//!
//! ## Caveats
//! - A watch is served from the node it was made on, without a Raft round: on a lagging
//!   follower it lags too (its responses say how far it is). A [`WatchStream`] holds the
//!   node (and its store) until dropped, even after `shutdown` ended it.

#![deny(missing_docs)]

mod api;
mod blocking;
mod disk_usage;
mod failpoints;
mod grpc;
pub mod guide;
mod metrics;
mod node;
mod tasks;
#[cfg(feature = "testing")]
pub mod testing;

pub use api::auth_options::{AuthOptions, DEFAULT_BCRYPT_COST};
pub use api::election::LeaderKey;
pub use api::lease::LeaseGrant;
pub use api::lock::{LockKey, lock_key};
pub use api::membership::Member;
pub use api::watch::{WatchCounts, WatchStream};
pub use node::{
    Bootstrap, DEFAULT_LEASE_CHECKPOINT_INTERVAL, DEFAULT_QUOTA_BYTES, DEFAULT_REQUEST_TIMEOUT,
    MAX_APPLY_LAG, Node, NodeBuilder, NodeMetrics, StorageStats,
};
pub use raftkv_core::alarm::{
    ALARM_CORRUPT, ALARM_NONE, ALARM_NOSPACE, AlarmAction, AlarmMember, AlarmRequest,
};
pub use raftkv_core::auth::{AuthChange, AuthCommand, AuthError, AuthState, Permission, PermissionType};
pub use raftkv_core::informer::{
    Change, Informer, InformerError, InformerHandler, InformerStats, ListWatch, SourceError, WatchEvents,
};
pub use raftkv_core::kv::*;
pub use raftkv_core::lease::LeaseInfo;
pub use raftkv_core::validate::{DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_TXN_OPS, Limits};
pub use raftkv_core::watch::{Event, EventType, INVALID_WATCH_ID, WatchId, WatchRequest, WatchResponse};
pub use raftkv_core::{Error, IndexCell, ProposalMode, ProposerConfig, RequestError, Result, Watermark};
/// TLS for the client and peer ports ([`NodeBuilder::client_tls`], [`NodeBuilder::peer_tls`]).
pub use raftkv_net::tls;
pub use raftkv_storage::{AutoDefrag, DefragReport, StoreOptions, WatchConfig};
pub use tasks::auto_compaction::AutoCompaction;
