//! openraft's type configuration and the node type stored in the membership.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::command::{Command, Response};

/// A member id. `u64`, as etcd's member ids are.
pub type NodeId = u64;

/// What the membership records about each node: where peers reach it and where clients
/// reach it. Stored in the Raft log (membership entries), so a node added later is
/// reachable by everyone without a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberNode {
    /// Peer (Raft) address, e.g. `http://127.0.0.1:2380`. Empty for a single-node store
    /// that never talks to peers.
    pub peer_url: String,
    /// Client URLs, e.g. `http://127.0.0.1:2379`. May start empty and be published
    /// through the log once the node serves clients.
    pub client_urls: Vec<String>,
}

impl MemberNode {
    /// A member reachable by peers at `peer_url`, with no client URLs yet.
    pub fn new(peer_url: impl Into<String>) -> Self {
        Self {
            peer_url: peer_url.into(),
            client_urls: Vec::new(),
        }
    }
}

impl fmt::Display for MemberNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer={} clients={:?}", self.peer_url, self.client_urls)
    }
}

openraft::declare_raft_types!(
    /// openraft's type configuration for raftkv. Snapshots are files: they are built and
    /// received through a temporary file, so a snapshot of any size moves in bounded
    /// memory.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = MemberNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A Raft log id of this type configuration.
pub type LogId = openraft::LogId<NodeId>;
/// A Raft log entry of this type configuration.
pub type Entry = openraft::Entry<TypeConfig>;
/// The Raft handle of this type configuration.
pub type Raft = openraft::Raft<TypeConfig>;
/// Membership as stored by the state machine.
pub type StoredMembership = openraft::StoredMembership<NodeId, MemberNode>;
/// Storage errors as openraft wants them.
pub type StorageError = openraft::StorageError<NodeId>;
