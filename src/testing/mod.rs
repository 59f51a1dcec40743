//! An in-process cluster for the tests of applications that embed raftkv (the `testing`
//! feature): real members on loopback, each with its own data directory and held ports,
//! started in one call, with the knobs such tests need.
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use raftkv::testing::TestCluster;
//!
//! let mut cluster = TestCluster::start(3).await?;
//! let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
//! let written = cluster.node(leader)?.put("config/mode", "blue").await?;
//!
//! // A follower goes down; the other two still make a quorum.
//! let follower = cluster.ids().into_iter().find(|id| *id != leader).unwrap_or(leader);
//! cluster.stop(follower).await?;
//! cluster.node(leader)?.put("config/mode", "green").await?;
//!
//! // Back on the same directory and ports, it catches up.
//! cluster.restart(follower).await?;
//! let latest = cluster.node(leader)?.metrics().applied;
//! cluster.wait_applied(latest, Duration::from_secs(10)).await?;
//! let seen = cluster.node(follower)?.get("config/mode").await?;
//! assert_eq!(seen.map(|kv| kv.value), Some(b"green".to_vec()));
//! assert!(written.header.revision > 0);
//! cluster.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! What it offers: [`TestCluster::start`] (or [`TestCluster::builder`] for the size,
//! Raft timing, a data directory of your choosing and any [`NodeBuilder`] setting),
//! [`stop`](TestCluster::stop) (graceful, as SIGTERM), [`kill`](TestCluster::kill)
//! (at once, as a crash of the process would look to the others) and
//! [`restart`](TestCluster::restart) a member, [`partition`](TestCluster::partition)
//! the peer network and [`heal`](TestCluster::heal) it, wait for an agreed leader or
//! for every member to apply an index, and each member's [`Node`] to call directly or
//! its client URL for `raftkv-client` or any etcd v3 client.
//!
//! Invariants and limits, stated so tests do not lean on more than there is:
//! - Ports are held by the cluster for its life (see `ports.rs`): a member restarts on the
//!   same URLs, and nothing else can take them meanwhile.
//! - A partition cuts the peer network only (replication, votes, forwarded writes);
//!   client connections still reach every running member, as with a real network split
//!   seen from a client on the same side as everyone. A member restarted while the
//!   network is partitioned comes back into the same partition.
//! - `kill` stops a member without the courtesies of `stop` (no drain of in-flight
//!   requests, no step back from elections) but in-process: what sled already buffered
//!   may still reach the disk as its handle drops. For crash-consistency tests, SIGKILL a
//!   real process (raftkv's own fault suite runs `raftkv-server` processes for that).
//! - Timing defaults suit a busy CI machine (heartbeat 100 ms, elections 0.8-1.6 s).
//!
//! Not for production builds: the feature compiles network fault hooks into every
//! peer call.

mod cluster;
mod partition;
mod ports;

pub use cluster::{TestCluster, TestClusterBuilder};

use raftkv_core::NodeId;

#[allow(unused_imports)] // For the links in the docs above.
use crate::{Node, NodeBuilder};

/// What can go wrong driving a [`TestCluster`].
#[derive(Debug, thiserror::Error)]
pub enum TestClusterError {
    /// No member has this id.
    #[error("no member {0} in the test cluster")]
    NoSuchMember(NodeId),
    /// The member is stopped or killed (restart it first).
    #[error("member {0} is not running")]
    NotRunning(NodeId),
    /// The member runs already (stop or kill it first).
    #[error("member {0} is already running")]
    AlreadyRunning(NodeId),
    /// A partition that names an unknown member or one member twice.
    #[error("invalid partition: {0}")]
    InvalidPartition(String),
    /// A wait ran out of time; the text says what was awaited and what was seen last.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A member failed to start.
    #[error("member {id} failed to start: {source}")]
    Start {
        /// The member.
        id: NodeId,
        /// Why.
        source: raftkv_core::Error,
    },
    /// Ports or directories could not be set up.
    #[error("test cluster set-up: {0}")]
    Io(#[from] std::io::Error),
}
