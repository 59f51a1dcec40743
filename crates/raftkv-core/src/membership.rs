//! [`MembershipChange`]: a change of the cluster's members, as a follower forwards it to
//! the leader (membership changes go through openraft's joint consensus on the leader,
//! not through the state machine).

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

use crate::types::NodeId;

/// One membership change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Add a learner reachable at `peer_url`; `wait` blocks until it has caught up.
    AddLearner {
        /// The new member.
        id: NodeId,
        /// Its peer URL.
        peer_url: String,
        /// Wait for it to catch up with the log.
        wait: bool,
    },
    /// Make learners voters.
    Promote(BTreeSet<NodeId>),
    /// Remove members (voters and learners).
    Remove(BTreeSet<NodeId>),
    /// Change a member's peer URL.
    UpdatePeerUrl {
        /// The member.
        id: NodeId,
        /// Its new peer URL.
        peer_url: String,
    },
    /// Add a voter reachable at `peer_url` at once, running or not, as etcd's `MemberAdd`
    /// does (the quorum grows with it: start it soon). Last, so the older variants keep
    /// their encoding; a leader of an older build refuses it as undecodable.
    AddVoter {
        /// The new member.
        id: NodeId,
        /// Its peer URL.
        peer_url: String,
    },
}
