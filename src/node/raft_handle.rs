//! [`Raft`], the node's openraft handle, and what the parts of the node read from it
//! without needing the node itself (a member's peer URL). Below the node and its parts.

use openraft::async_runtime::WatchReceiver;
use raftkv_core::types::NodeId;
use raftkv_core::{Error, Result};

/// The Raft handle of a node: openraft over raftkv's state machine.
pub type Raft = raftkv_core::types::Raft<raftkv_storage::StateMachine>;

/// The peer URL of `id` in the current membership.
pub(crate) fn peer_url_of(raft: &Raft, id: NodeId) -> Result<String> {
    let metrics = raft.metrics();
    let url = metrics
        .borrow_watched()
        .membership_config
        .membership()
        .get_node(&id)
        .map(|n| n.peer_url.clone());
    url.filter(|u| !u.is_empty())
        .ok_or_else(|| Error::Internal(format!("member {id} has no peer url")))
}
