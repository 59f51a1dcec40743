//! The node as the gRPC services see it: etcd's KV service calls the node's KV API
//! ([`KvBackend`]), the Lease service its leases ([`LeaseBackend`]), require-leader
//! streams ask it for its leader ([`LeaderStatus`]), and the peer service proposes what
//! followers forward ([`ForwardTarget`]). The Cluster and Maintenance services' side is
//! `grpc/cluster_backend.rs`.

use openraft::async_runtime::WatchReceiver;
use std::time::Duration;

use raftkv_core::auth::Caller;
use raftkv_core::kv::*;
use raftkv_core::lease::LeaseInfo;
use raftkv_core::{
    Command, Error, LeaseAnswer, LeaseCall, MembershipChange, RequestError, Response, Result, validate,
};
use raftkv_net::{ForwardTarget, KvBackend, LeaderStatus, LeaseBackend};

use crate::node::Node;

/// A range whose end sorts at or before its key (and is not etcd's "to the end" form).
/// The embedded API refuses it with a typed error; on the wire etcd answers it as an
/// empty range, and so do we, since etcd clients cannot tell the two apart otherwise.
fn empty_interval(key: &[u8], range_end: &[u8]) -> bool {
    !key.is_empty() && !range_end.is_empty() && range_end != [0] && range_end <= key
}

impl KvBackend for Node {
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        if empty_interval(&req.key, &req.range_end) {
            return Ok(RangeResponse {
                header: self.response_header(),
                ..RangeResponse::default()
            });
        }
        Node::range(self, req).await
    }

    async fn read_barrier(&self) -> Result<()> {
        Node::read_barrier(self).await
    }

    async fn put(&self, caller: Caller, req: PutRequest) -> Result<PutResponse> {
        self.put_as(Some(caller), req).await
    }

    async fn delete_range(&self, caller: Caller, req: DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        if empty_interval(&req.key, &req.range_end) {
            // Answered without the log: checked here as etcd's apply would.
            raftkv_net::AuthGate::authorize(
                self,
                &caller,
                raftkv_net::Need::Write(&req.key, &req.range_end),
            )?;
            return Ok(DeleteRangeResponse {
                header: self.response_header(),
                ..DeleteRangeResponse::default()
            });
        }
        self.delete_range_as(Some(caller), req).await
    }

    async fn txn(&self, caller: Caller, req: TxnRequest) -> Result<TxnResponse> {
        self.txn_as(Some(caller), req).await
    }

    // A compaction needs no permission (etcd's neither); the caller's token was checked.
    async fn compact(&self, _caller: Caller, req: CompactionRequest) -> Result<CompactionResponse> {
        self.compact_with(req).await
    }
}

impl ForwardTarget for Node {
    fn stopping(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut shutdown = self.inner.shutdown.subscribe();
        async move {
            // An error means the node is gone: stopping too.
            let _ = shutdown.wait_for(|stopping| *stopping).await;
        }
    }

    async fn read_index_forwarded(&self) -> Result<u64> {
        self.inner.read_index.read_index_as_leader().await
    }

    async fn propose_forwarded(&self, command: Command) -> Result<(Response, u64)> {
        // A leader does not trust a follower's checks. Followers forward client requests,
        // compactions and their own published client URLs; batches are made only by the
        // leader's proposer, and lease commands travel through the `Lease` call.
        match &command {
            Command::Put(_) | Command::DeleteRange(_) | Command::Txn(_) => {
                validate::check_command(&command, &self.inner.limits)?;
            }
            Command::Compact(_) | Command::Alarm(_) | Command::Auth(_) => {}
            Command::PublishMember { .. } => {}
            Command::AsUser { command: inner, .. } => match inner.as_ref() {
                Command::Put(_) | Command::DeleteRange(_) | Command::Txn(_) => {
                    validate::check_command(inner, &self.inner.limits)?;
                }
                Command::Auth(_) | Command::LeaseRevoke { .. } => {}
                _ => {
                    return Err(RequestError::Unsupported("this command cannot be forwarded".into()).into());
                }
            },
            Command::Batch(_) => {
                return Err(RequestError::Unsupported("a batch cannot be forwarded".into()).into());
            }
            _ => {
                return Err(RequestError::Unsupported("this command cannot be forwarded".into()).into());
            }
        }
        // Only propose here: a forwarded request is never forwarded again (no loops).
        let leader = self.inner.raft.metrics().borrow_watched().current_leader;
        if leader != Some(self.id()) {
            return Err(Error::NotLeader {
                leader_id: leader,
                leader_client_urls: Vec::new(),
            });
        }
        // Only a member publishes, and only its own URLs (peers are trusted, but a stray
        // id must not land in the member table clients follow hints from).
        if let Command::PublishMember { id, .. } = &command
            && !self.members()?.iter().any(|m| m.id == *id)
        {
            return Err(RequestError::MemberNotFound(*id).into());
        }
        self.admit_write(&command)?;
        let size = raftkv_core::codec::encoded_len(&command).map_err(|e| Error::Internal(e.to_string()))?;
        let deadline = tokio::time::Instant::now() + self.inner.request_timeout;
        let proposed = self.propose_as_leader(&command, size, deadline).await?;
        Ok((proposed.response, proposed.log_id.leader_id.term))
    }

    async fn change_membership_forwarded(&self, change: MembershipChange) -> Result<()> {
        self.change_members_here(change).await
    }

    fn heard_from_leader(&self) {
        self.inner.leader_contact.touch();
    }

    async fn lease_forwarded(&self, call: LeaseCall) -> Result<LeaseAnswer> {
        // Answered here or not at all: a forwarded call is never forwarded again.
        let leader = self.inner.raft.metrics().borrow_watched().current_leader;
        if leader != Some(self.id()) {
            return Err(Error::NotLeader {
                leader_id: leader,
                leader_client_urls: Vec::new(),
            });
        }
        match call {
            LeaseCall::Grant { id, ttl } => {
                if id == 0 {
                    return Err(
                        RequestError::Unsupported("a forwarded grant must name its lease id".into()).into(),
                    );
                }
                if self.lease_ttl(ttl)? != ttl {
                    return Err(RequestError::Unsupported(format!(
                        "a forwarded grant's TTL of {ttl} s is out of range"
                    ))
                    .into());
                }
                let command = Command::LeaseGrant { id, ttl };
                self.admit_write(&command)?;
                let (response, term) = self.propose_here(command).await?;
                Ok(LeaseAnswer::Written { response, term })
            }
            LeaseCall::Revoke { id } => {
                let command = Command::LeaseRevoke { id };
                self.admit_write(&command)?;
                let (response, term) = self.propose_here(command).await?;
                Ok(LeaseAnswer::Written { response, term })
            }
            call => self.lease_call_here(call).await,
        }
    }
}

impl raftkv_net::MetricsSource for Node {
    fn prometheus_text(&self) -> String {
        crate::metrics::render(self)
    }
}

impl LeaderStatus for Node {
    fn has_leader(&self) -> bool {
        self.current_leader().is_some()
    }

    fn election_timeout(&self) -> Duration {
        Duration::from_millis(self.inner.raft.config().election_timeout_max)
    }
}

impl LeaseBackend for Node {
    async fn lease_grant(&self, id: i64, ttl: i64) -> Result<(ResponseHeader, i64, i64)> {
        let granted = Node::lease_grant(self, id, ttl).await?;
        Ok((granted.header, granted.id, granted.ttl))
    }

    async fn lease_revoke(&self, caller: Caller, id: i64) -> Result<ResponseHeader> {
        self.lease_revoke_as(Some(caller), id).await
    }

    async fn lease_keep_alive(&self, id: i64) -> Result<(ResponseHeader, i64)> {
        let renewed = Node::lease_keep_alive(self, id).await?;
        Ok((renewed.header, renewed.ttl))
    }

    async fn lease_time_to_live(&self, id: i64, keys: bool) -> Result<(ResponseHeader, LeaseInfo)> {
        Node::lease_time_to_live(self, id, keys).await
    }

    async fn lease_list(&self) -> Result<(ResponseHeader, Vec<i64>)> {
        Node::leases(self).await
    }
}
