//! The first start of a member of a new cluster: openraft's `initialize`, staggered by
//! member id.
//!
//! `initialize` writes the membership entry and starts an election at once. Called by
//! every member of a cluster started together, it made all of them candidates of term 1
//! within a millisecond; openraft orders votes of one term by node id, so a leader of
//! term 1 that then heard the vote request of a higher id stepped down, and the cluster
//! had no leader until an election timeout later (4 fresh clusters in 8 on the
//! development machine, started together; writes waited meanwhile). etcd starts every
//! member as a follower instead. Here the member with the lowest id initializes at
//! once, the member of rank `r` only if the cluster has not reached it within `r`
//! maximum election timeouts (a vote request or the membership entry makes it
//! initialized), so any quorum of the initial members still forms the cluster when the
//! others never start.

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::error::{InitializeError, RaftError};
use raftkv_core::types::{MemberNode, NodeId};
use raftkv_core::{Error, Result};

use super::Raft;

/// How long the member `id` waits for the cluster to reach it before it initializes
/// itself: its rank among the initial members' ids times `election_timeout_max`.
pub(super) fn initialize_delay(
    id: NodeId,
    members: &BTreeMap<NodeId, MemberNode>,
    election_timeout_max: Duration,
) -> Duration {
    let rank = members.keys().take_while(|m| **m < id).count() as u32;
    election_timeout_max * rank
}

/// Initialize `raft` with `members` now, unless another member's vote or log reached it
/// first (then it is part of that cluster already).
pub(super) async fn initialize(raft: &Raft, members: BTreeMap<NodeId, MemberNode>) -> Result<()> {
    match raft.initialize(members).await {
        Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
        Err(e) => Err(Error::Internal(format!("initialize: {e}"))),
    }
}

/// [`initialize`] after `delay`, unless the cluster reached this member meanwhile (it
/// voted, or has the membership entry). Runs in the background: the member serves, and
/// answers "no leader" until a leader is elected.
pub(super) fn initialize_later(raft: Raft, members: BTreeMap<NodeId, MemberNode>, delay: Duration) {
    tokio::spawn(async move {
        let reached = raft
            .wait(Some(delay))
            .metrics(
                |m| m.current_term > 0 || m.last_log_index.is_some(),
                "the cluster reached this member",
            )
            .await;
        match reached {
            Err(openraft::metrics::WaitError::Timeout(..)) => {}
            // Reached, or the member is shutting down.
            _ => return,
        }
        match initialize(&raft, members).await {
            Ok(()) => tracing::info!(
                ?delay,
                "no other member reached this one in time: initialized the cluster"
            ),
            Err(e) => tracing::error!(error = %e, "bootstrap failed"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_id_initializes_at_once_and_the_others_wait_by_rank() {
        let members: BTreeMap<NodeId, MemberNode> = [3, 7, 12]
            .into_iter()
            .map(|id| (id, MemberNode::new(format!("http://127.0.0.1:{id}"))))
            .collect();
        let unit = Duration::from_millis(700);
        assert_eq!(initialize_delay(3, &members, unit), Duration::ZERO);
        assert_eq!(initialize_delay(7, &members, unit), unit);
        assert_eq!(initialize_delay(12, &members, unit), unit * 2);
    }
}
