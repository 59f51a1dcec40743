//! Cluster membership on [`Node`]: add learners, promote them to voters, remove members,
//! list members. Changes go through openraft's joint consensus and must be made on the
//! leader; elsewhere they answer [`Error::NotLeader`] with the leader's id.

use std::collections::BTreeSet;

use openraft::ChangeMembers;
use raftkv_core::proposer::map_write_error;
use raftkv_core::types::{MemberNode, NodeId, Raft};
use raftkv_core::{Error, Result};

use crate::node::Node;

/// One member as the current membership and the published attributes describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Member id.
    pub id: NodeId,
    /// Published name (empty until published).
    pub name: String,
    /// Where peers reach it.
    pub peer_url: String,
    /// Where clients reach it (empty until published).
    pub client_urls: Vec<String>,
    /// A learner receives the log but does not vote.
    pub is_learner: bool,
}

/// The peer URL of `id` in the current membership.
pub(crate) fn peer_url_of(raft: &Raft, id: NodeId) -> Result<String> {
    let metrics = raft.metrics();
    let url = metrics
        .borrow()
        .membership_config
        .membership()
        .get_node(&id)
        .map(|n| n.peer_url.clone());
    url.filter(|u| !u.is_empty())
        .ok_or_else(|| Error::Internal(format!("member {id} has no peer url")))
}

impl Node {
    /// Add `id` (reachable at `peer_url`) as a learner and wait until it has caught up
    /// with the log.
    #[tracing::instrument(level = "info", skip(self))]
    pub async fn add_learner(&self, id: NodeId, peer_url: &str) -> Result<()> {
        self.inner
            .raft
            .add_learner(id, MemberNode::new(peer_url), true)
            .await
            .map(|_| ())
            .map_err(map_write_error)
    }

    /// Make the learners `ids` voters.
    #[tracing::instrument(level = "info", skip(self))]
    pub async fn promote(&self, ids: BTreeSet<NodeId>) -> Result<()> {
        self.change(ChangeMembers::AddVoterIds(ids)).await
    }

    /// Remove `ids` from the cluster entirely (voters and learners). A removed node stops
    /// receiving replication.
    #[tracing::instrument(level = "info", skip(self))]
    pub async fn remove(&self, ids: BTreeSet<NodeId>) -> Result<()> {
        let voters: BTreeSet<NodeId> = self
            .metrics()
            .voters
            .into_iter()
            .filter(|v| ids.contains(v))
            .collect();
        if !voters.is_empty() {
            self.change(ChangeMembers::RemoveVoters(voters)).await?;
        }
        self.change(ChangeMembers::RemoveNodes(ids)).await
    }

    async fn change(&self, change: ChangeMembers<NodeId, MemberNode>) -> Result<()> {
        self.inner
            .raft
            .change_membership(change, false)
            .await
            .map(|_| ())
            .map_err(map_write_error)
    }

    /// The current members.
    pub fn members(&self) -> Result<Vec<Member>> {
        let metrics = self.inner.raft.metrics();
        let membership = metrics.borrow().membership_config.clone();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let mut members = Vec::new();
        for (id, node) in membership.nodes() {
            let published = self.inner.reader.published_member(*id)?;
            let (name, client_urls) = published.unwrap_or_else(|| (String::new(), node.client_urls.clone()));
            members.push(Member {
                id: *id,
                name,
                peer_url: node.peer_url.clone(),
                client_urls,
                is_learner: !voters.contains(id),
            });
        }
        Ok(members)
    }
}
