//! openraft's type configuration and the node type stored in the membership.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::command::{Command, Response};

pub use crate::ids::NodeId;

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
    /// openraft's type configuration for raftkv. Terms are `u64` and a leader id is
    /// (term, node id), openraft's defaults, which encode as 0.9's did: a data dir written
    /// by the 0.9 build reads unchanged (`tests/t27_data_dir_upgrade.rs`). Snapshots are
    /// files (the state machine's `SnapshotData`), so a snapshot of any size moves in
    /// bounded memory.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = MemberNode,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The snapshot payload: a file, built and received through a temporary file.
pub type SnapshotData = tokio::fs::File;
/// A Raft log id of this type configuration.
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
/// The committed leader id (term, node id) a log id carries.
pub type CommittedLeaderId = openraft::type_config::alias::CommittedLeaderIdOf<TypeConfig>;
/// The leader id of `node` in `term` as log ids carry it.
pub fn leader_id(term: u64, node: NodeId) -> CommittedLeaderId {
    CommittedLeaderId { term, node_id: node }
}

/// A vote of this type configuration.
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
/// A Raft log entry of this type configuration.
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
/// The Raft handle of this type configuration over the state machine `SM` (openraft 0.10
/// names the state machine in the handle's type; the storage crate provides the one
/// raftkv runs, and the crates below it stay generic over it).
pub type Raft<SM> = openraft::Raft<TypeConfig, SM>;

/// What every raftkv Raft handle's state machine is: openraft's state machine whose
/// snapshots are files. Implemented for every such type.
pub trait KvStateMachine:
    openraft::storage::RaftStateMachine<TypeConfig, SnapshotData = SnapshotData>
{
}

impl<T> KvStateMachine for T where
    T: openraft::storage::RaftStateMachine<TypeConfig, SnapshotData = SnapshotData>
{
}
/// Membership as stored by the state machine.
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
/// A snapshot's metadata.
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
/// A snapshot with its file.
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;
