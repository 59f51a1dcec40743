//! etcd's Cluster service: list, add, remove, update and promote members.
//!
//! MemberList is a read (retried on any transient failure); the four changes are writes,
//! retried only on proof that they were not applied (see the `retry` module). A member
//! change that ends in [`crate::ClientError::OutcomeUnknown`] may have happened: list the
//! members to find out before trying it again (adding the same peer URL twice fails with
//! [`crate::RequestError::PeerUrlExists`]).
//!
//! The server picks a new member's id (as etcd does). raftkv forwards every change to the
//! leader itself, so these calls need no leader hint.

use raftkv_core::kv::ResponseHeader;
use raftkv_proto::etcdserverpb as pb;

use crate::client::{Client, cluster};
use crate::error::Result;
use crate::retry::Mutability;

/// One member of the cluster, as the Cluster service reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Member {
    /// The member's id (never 0).
    pub id: u64,
    /// Its name; empty until the member has started and published it.
    pub name: String,
    /// The URLs its peers reach it at.
    pub peer_urls: Vec<String>,
    /// The URLs clients reach it at; empty until the member has started and published
    /// them.
    pub client_urls: Vec<String>,
    /// Whether it is a learner (receives the log, does not vote).
    pub is_learner: bool,
}

/// The members, and the header of the member that answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberListResponse {
    /// Header of the answering member.
    pub header: ResponseHeader,
    /// Every member, voters and learners.
    pub members: Vec<Member>,
}

impl From<pb::Member> for Member {
    fn from(m: pb::Member) -> Self {
        Self {
            id: m.id,
            name: m.name,
            peer_urls: m.peer_ur_ls,
            client_urls: m.client_ur_ls,
            is_learner: m.is_learner,
        }
    }
}

/// The header and members of any Cluster response.
fn member_list(header: Option<pb::ResponseHeader>, members: Vec<pb::Member>) -> MemberListResponse {
    MemberListResponse {
        header: header.map(Into::into).unwrap_or_default(),
        members: members.into_iter().map(Member::from).collect(),
    }
}

impl Client {
    /// Every member of the cluster (etcd's MemberList), as the answering member knows
    /// them.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn member_list(&self) -> Result<MemberListResponse> {
        let req = pb::MemberListRequest { linearizable: false };
        let resp = self
            .call(Mutability::Read, req, |ch, r| async move {
                cluster(ch).member_list(r).await
            })
            .await?;
        Ok(member_list(resp.header, resp.members))
    }

    /// Add a member reachable by its peers at `peer_urls` (raftkv takes exactly one), as
    /// a learner or a voter; the server picks its id. Returns the header, the new member
    /// (name and client URLs still empty: it has not started) and all members.
    ///
    /// Start the new node (joining) after this call. A voter added before it runs
    /// counts towards the quorum at once; adding a learner, then promoting it with
    /// [`Client::member_promote`] once it has caught up, keeps the quorum as it was.
    #[tracing::instrument(level = "debug", skip_all, fields(is_learner = is_learner))]
    pub async fn member_add(
        &self,
        peer_urls: impl IntoIterator<Item = impl Into<String>>,
        is_learner: bool,
    ) -> Result<(ResponseHeader, Member, Vec<Member>)> {
        let req = pb::MemberAddRequest {
            peer_ur_ls: peer_urls.into_iter().map(Into::into).collect(),
            is_learner,
        };
        let resp = self
            .call(Mutability::Write, req, |ch, r| async move {
                cluster(ch).member_add(r).await
            })
            .await?;
        let MemberListResponse { header, members } = member_list(resp.header, resp.members);
        let added = resp.member.map(Member::from).ok_or_else(|| {
            crate::ClientError::InvalidResponse("MemberAdd answered without the new member".into())
        })?;
        Ok((header, added, members))
    }

    /// Remove member `id` (a voter or a learner). Fails with
    /// [`crate::RequestError::MemberNotFound`] when there is no such member.
    #[tracing::instrument(level = "debug", skip_all, fields(id = id))]
    pub async fn member_remove(&self, id: u64) -> Result<MemberListResponse> {
        let req = pb::MemberRemoveRequest { id };
        let resp = self
            .call(Mutability::Write, req, |ch, r| async move {
                cluster(ch).member_remove(r).await
            })
            .await?;
        Ok(member_list(resp.header, resp.members))
    }

    /// Change the peer URLs of member `id` (raftkv takes exactly one).
    #[tracing::instrument(level = "debug", skip_all, fields(id = id))]
    pub async fn member_update(
        &self,
        id: u64,
        peer_urls: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<MemberListResponse> {
        let req = pb::MemberUpdateRequest {
            id,
            peer_ur_ls: peer_urls.into_iter().map(Into::into).collect(),
        };
        let resp = self
            .call(Mutability::Write, req, |ch, r| async move {
                cluster(ch).member_update(r).await
            })
            .await?;
        Ok(member_list(resp.header, resp.members))
    }

    /// Make learner `id` a voter. Fails with [`crate::RequestError::MemberNotLearner`]
    /// for a voter and with [`crate::RequestError::LearnerNotReady`] for a learner that
    /// has not caught up with the leader (try again once it has).
    #[tracing::instrument(level = "debug", skip_all, fields(id = id))]
    pub async fn member_promote(&self, id: u64) -> Result<MemberListResponse> {
        let req = pb::MemberPromoteRequest { id };
        let resp = self
            .call(Mutability::Write, req, |ch, r| async move {
                cluster(ch).member_promote(r).await
            })
            .await?;
        Ok(member_list(resp.header, resp.members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_map_field_by_field() {
        let wire = pb::Member {
            id: 7,
            name: "n7".into(),
            peer_ur_ls: vec!["http://10.0.0.7:2380".into()],
            client_ur_ls: vec!["http://10.0.0.7:2379".into()],
            is_learner: true,
        };
        let header = pb::ResponseHeader {
            cluster_id: 1,
            member_id: 2,
            revision: 3,
            raft_term: 4,
        };
        let list = member_list(Some(header), vec![wire]);
        assert_eq!(
            list.header,
            ResponseHeader {
                cluster_id: 1,
                member_id: 2,
                revision: 3,
                raft_term: 4,
            }
        );
        assert_eq!(
            list.members,
            [Member {
                id: 7,
                name: "n7".into(),
                peer_urls: vec!["http://10.0.0.7:2380".into()],
                client_urls: vec!["http://10.0.0.7:2379".into()],
                is_learner: true,
            }]
        );
        // A server that sends no header: the default, not an error.
        assert_eq!(member_list(None, vec![]), MemberListResponse::default());
    }
}
