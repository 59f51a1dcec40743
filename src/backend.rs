//! The node as the gRPC services see it: etcd's KV service calls the node's KV API
//! ([`KvBackend`]), and the peer service proposes writes forwarded by followers
//! ([`ForwardTarget`]).

use raftkv_core::kv::*;
use raftkv_core::{Command, Error, Response, Result, validate};
use raftkv_net::{ClusterBackend, ForwardTarget, KvBackend, MemberInfo, StatusInfo};

use crate::node::Node;

impl KvBackend for Node {
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        Node::range(self, req).await
    }

    async fn put(&self, req: PutRequest) -> Result<PutResponse> {
        self.put_with(req).await
    }

    async fn delete_range(&self, req: DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        Node::delete_range(self, req).await
    }

    async fn txn(&self, req: TxnRequest) -> Result<TxnResponse> {
        Node::txn(self, req).await
    }

    async fn compact(&self, req: CompactionRequest) -> Result<CompactionResponse> {
        Node::compact(self, req.revision).await
    }
}

impl ForwardTarget for Node {
    async fn propose_forwarded(&self, command: Command) -> Result<(Response, u64)> {
        // A leader does not trust a follower's checks; internal commands are allowed.
        if matches!(
            command,
            Command::Put(_) | Command::DeleteRange(_) | Command::Txn(_)
        ) {
            validate::check_command(&command, &self.inner.limits)?;
        }
        // Only propose here: a forwarded request is never forwarded again (no loops).
        let leader = self.inner.raft.metrics().borrow().current_leader;
        if leader != Some(self.id()) {
            return Err(Error::NotLeader {
                leader_id: leader,
                leader_client_urls: Vec::new(),
            });
        }
        let size = raftkv_core::codec::encoded_len(&command).map_err(|e| Error::Internal(e.to_string()))?;
        let proposed = tokio::time::timeout(
            self.inner.request_timeout,
            self.inner.proposer.propose(command, size),
        )
        .await
        .map_err(|_| Error::Unknown("the leader did not commit the forwarded write in time".into()))??;
        Ok((proposed.response, proposed.log_id.leader_id.term))
    }
}

impl ClusterBackend for Node {
    fn member_list(&self) -> Result<(ResponseHeader, Vec<MemberInfo>)> {
        let members = self
            .members()?
            .into_iter()
            .map(|m| MemberInfo {
                id: m.id,
                name: m.name,
                peer_urls: vec![m.peer_url],
                client_urls: m.client_urls,
                is_learner: m.is_learner,
            })
            .collect();
        Ok((self.response_header(), members))
    }

    fn status(&self) -> StatusInfo {
        let m = self.metrics();
        StatusInfo {
            header: self.response_header(),
            leader: m.leader.unwrap_or(0),
            raft_index: m.committed,
            raft_term: m.term,
            raft_applied_index: m.applied,
            db_size: self.disk_usage() as i64,
            is_learner: m.learners.contains(&self.id()),
        }
    }
}
