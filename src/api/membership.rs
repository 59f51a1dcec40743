//! Cluster membership on [`Node`]: add learners, promote them to voters, remove members,
//! change a member's peer URL, list members. Changes go through openraft's joint
//! consensus on the leader; a follower forwards them to the leader's peer port.

use openraft::async_runtime::WatchReceiver;
use std::collections::BTreeSet;

use openraft::ChangeMembers;
use raftkv_core::proposer::map_write_error;
use raftkv_core::types::{MemberNode, NodeId};

use crate::node::raft_handle::peer_url_of;
use raftkv_core::{Error, MembershipChange, RequestError, Result};
use tokio::time::Instant;

use crate::node::Node;

/// A learner this far behind the leader's log cannot be promoted yet (etcd refuses to
/// promote a learner that is not in sync).
const PROMOTE_MAX_LAG: u64 = 1000;

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

fn check_peer_url(url: &str) -> Result<()> {
    // scheme://host:port, as etcd requires of member URLs.
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    let valid = rest
        .and_then(|r| r.trim_end_matches('/').rsplit_once(':'))
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0));
    if valid {
        Ok(())
    } else {
        Err(RequestError::InvalidPeerUrl(url.to_string()).into())
    }
}

impl Node {
    /// Add `id` (reachable at `peer_url`) as a learner and wait until it has caught up
    /// with the log.
    #[tracing::instrument(level = "info", skip(self))]
    pub async fn add_learner(&self, id: NodeId, peer_url: &str) -> Result<()> {
        self.change_members(MembershipChange::AddLearner {
            id,
            peer_url: peer_url.to_string(),
            wait: true,
        })
        .await
    }

    /// Make the learners `ids` voters.
    #[tracing::instrument(level = "info", skip(self))]
    pub async fn promote(&self, ids: BTreeSet<NodeId>) -> Result<()> {
        self.change_members(MembershipChange::Promote(ids)).await
    }

    /// Remove `ids` from the cluster entirely (voters and learners). A removed node stops
    /// receiving replication.
    #[tracing::instrument(level = "info", skip(self))]
    pub async fn remove(&self, ids: BTreeSet<NodeId>) -> Result<()> {
        self.change_members(MembershipChange::Remove(ids)).await
    }

    /// Change member `id`'s peer URL.
    #[tracing::instrument(level = "info", skip(self))]
    pub async fn update_peer_url(&self, id: NodeId, peer_url: &str) -> Result<()> {
        self.change_members(MembershipChange::UpdatePeerUrl {
            id,
            peer_url: peer_url.to_string(),
        })
        .await
    }

    /// Make `change` on the leader: here if this node leads, else forwarded. Follows leader
    /// changes until the request deadline while nothing can have been changed.
    pub(crate) async fn change_members(&self, change: MembershipChange) -> Result<()> {
        let deadline = Instant::now() + self.inner.request_timeout;
        loop {
            let leader = self.inner.raft.metrics().borrow_watched().current_leader;
            match leader {
                Some(leader) if leader == self.id() => match self.change_members_here(change.clone()).await {
                    Err(Error::NotLeader { .. }) => {}
                    other => return other,
                },
                Some(leader) => {
                    let url = peer_url_of(&self.inner.raft, leader)?;
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    match self
                        .inner
                        .connections
                        .change_membership(&url, &change, remaining)
                        .await
                    {
                        Ok(Err(Error::NotLeader { .. })) => {}
                        Ok(other) => return other,
                        Err(e) if e.not_sent() => {}
                        Err(e) => return Err(Error::Unknown(e.to_string())),
                    }
                }
                None => {}
            }
            self.wait_for_new_leader(leader, deadline).await?;
        }
    }

    /// Make `change` on this node, which must lead.
    pub(crate) async fn change_members_here(&self, change: MembershipChange) -> Result<()> {
        let metrics = self.metrics();
        // openraft's view, not the lease-checked one: a leader just elected may not have
        // heard its quorum's first acknowledgement yet, and openraft refuses the change
        // itself if it is no longer leader.
        let raft_leader = self.inner.raft.metrics().borrow_watched().current_leader;
        if raft_leader != Some(self.id()) {
            return Err(Error::NotLeader {
                leader_id: metrics.leader,
                leader_client_urls: Vec::new(),
            });
        }
        let known = |id: &NodeId| metrics.voters.contains(id) || metrics.learners.contains(id);
        let raft = &self.inner.raft;
        let outcome = match change {
            MembershipChange::AddLearner { id, peer_url, wait } => {
                self.check_new_peer_url(id, &peer_url)?;
                raft.add_learner(id, MemberNode::new(peer_url), wait)
                    .await
                    .map(|_| ())
            }
            MembershipChange::AddVoter { id, peer_url } => {
                // No in-sync check, unlike Promote: etcd adds the voter before it runs.
                // Openraft adds members as learners first; the learner need not answer.
                self.check_new_peer_url(id, &peer_url)?;
                raft.add_learner(id, MemberNode::new(peer_url), false)
                    .await
                    .map_err(map_write_error)?;
                raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                    .await
                    .map(|_| ())
            }
            MembershipChange::Promote(ids) => {
                for id in &ids {
                    if !known(id) {
                        return Err(RequestError::MemberNotFound(*id).into());
                    }
                    if !metrics.learners.contains(id) {
                        return Err(RequestError::MemberNotLearner.into());
                    }
                    // In sync: the leader has seen the learner acknowledge entries, and it is
                    // not far behind. A learner that never answered is not ready.
                    let matched = self
                        .inner
                        .raft
                        .metrics()
                        .borrow_watched()
                        .replication
                        .as_ref()
                        .and_then(|r| r.get(id).copied().flatten());
                    match matched {
                        Some(m) if metrics.last_log_index.saturating_sub(m.index) <= PROMOTE_MAX_LAG => {}
                        _ => return Err(RequestError::LearnerNotReady.into()),
                    }
                }
                raft.change_membership(ChangeMembers::AddVoterIds(ids), false)
                    .await
                    .map(|_| ())
            }
            MembershipChange::Remove(ids) => {
                if let Some(missing) = ids.iter().find(|id| !known(id)) {
                    return Err(RequestError::MemberNotFound(*missing).into());
                }
                let voters: BTreeSet<NodeId> = metrics
                    .voters
                    .iter()
                    .copied()
                    .filter(|v| ids.contains(v))
                    .collect();
                if !voters.is_empty() {
                    raft.change_membership(ChangeMembers::RemoveVoters(voters), false)
                        .await
                        .map_err(map_write_error)?;
                }
                raft.change_membership(ChangeMembers::RemoveNodes(ids), false)
                    .await
                    .map(|_| ())
            }
            MembershipChange::UpdatePeerUrl { id, peer_url } => {
                check_peer_url(&peer_url)?;
                if !known(&id) {
                    return Err(RequestError::MemberNotFound(id).into());
                }
                let nodes = [(id, MemberNode::new(peer_url))].into_iter().collect();
                raft.change_membership(ChangeMembers::SetNodes(nodes), true)
                    .await
                    .map(|_| ())
            }
        };
        outcome.map_err(map_write_error)
    }

    /// A new member's peer URL: well formed and nobody else's.
    fn check_new_peer_url(&self, id: NodeId, peer_url: &str) -> Result<()> {
        check_peer_url(peer_url)?;
        if self
            .members()?
            .iter()
            .any(|m| m.peer_url == peer_url && m.id != id)
        {
            return Err(RequestError::PeerUrlExists.into());
        }
        Ok(())
    }

    /// The current members.
    pub fn members(&self) -> Result<Vec<Member>> {
        let metrics = self.inner.raft.metrics();
        let membership = metrics.borrow_watched().membership_config.clone();
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
