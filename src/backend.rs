//! The node as the gRPC services see it: etcd's KV service calls the node's KV API
//! ([`KvBackend`]), the Cluster and Maintenance services its membership and maintenance
//! ([`ClusterBackend`]), the Lease service its leases ([`LeaseBackend`]), require-leader
//! streams ask it for its leader ([`LeaderStatus`]), and the peer service proposes what
//! followers forward ([`ForwardTarget`]).

use openraft::async_runtime::WatchReceiver;
use std::collections::BTreeSet;
use std::time::Duration;

use raftkv_core::auth::Caller;
use raftkv_core::kv::*;
use raftkv_core::lease::LeaseInfo;
use raftkv_core::{
    AlarmAction, AlarmMember, AlarmRequest, Command, Error, LeaseAnswer, LeaseCall, MembershipChange,
    RequestError, Response, Result, validate,
};
use raftkv_net::{
    AlarmInfo, ClusterBackend, ForwardTarget, KvBackend, LeaderStatus, LeaseBackend, MemberInfo,
    SnapshotStream, StatusInfo,
};

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
        let proposed = tokio::time::timeout(
            self.inner.request_timeout,
            self.inner.proposer.propose(command, size),
        )
        .await
        .map_err(|_| Error::Unknown("the leader did not commit the forwarded write in time".into()))??;
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

fn member_info(m: crate::Member) -> MemberInfo {
    MemberInfo {
        id: m.id,
        name: m.name,
        peer_urls: vec![m.peer_url],
        client_urls: m.client_urls,
        is_learner: m.is_learner,
    }
}

impl Node {
    fn member_infos(&self) -> Result<Vec<MemberInfo>> {
        Ok(self.members()?.into_iter().map(member_info).collect())
    }

    /// A fresh member id: derived from the peer URL and the clock, as etcd does, never 0
    /// and never one in use.
    fn new_member_id(&self, peer_url: &str) -> Result<u64> {
        let taken: BTreeSet<u64> = self.members()?.iter().map(|m| m.id).collect();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ nanos;
        for b in peer_url.bytes() {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        while hash == 0 || taken.contains(&hash) {
            hash = hash.wrapping_mul(0x0100_0000_01b3).wrapping_add(1);
        }
        Ok(hash)
    }
}

impl ClusterBackend for Node {
    fn member_list(&self) -> Result<(ResponseHeader, Vec<MemberInfo>)> {
        Ok((self.response_header(), self.member_infos()?))
    }

    async fn member_add(
        &self,
        peer_urls: Vec<String>,
        is_learner: bool,
    ) -> Result<(ResponseHeader, MemberInfo, Vec<MemberInfo>)> {
        let [peer_url] = peer_urls.as_slice() else {
            return Err(RequestError::InvalidPeerUrl(format!(
                "exactly one peer URL expected, got {peer_urls:?}"
            ))
            .into());
        };
        let id = self.new_member_id(peer_url)?;
        let change = if is_learner {
            // The new node is not running yet: do not wait for it to catch up.
            MembershipChange::AddLearner {
                id,
                peer_url: peer_url.clone(),
                wait: false,
            }
        } else {
            // etcd adds a voter at once; the quorum grows with it.
            MembershipChange::AddVoter {
                id,
                peer_url: peer_url.clone(),
            }
        };
        self.change_members(change).await?;
        let added = MemberInfo {
            id,
            name: String::new(),
            peer_urls: peer_urls.clone(),
            client_urls: Vec::new(),
            is_learner,
        };
        Ok((self.response_header(), added, self.member_infos()?))
    }

    async fn member_remove(&self, id: u64) -> Result<(ResponseHeader, Vec<MemberInfo>)> {
        self.remove(BTreeSet::from([id])).await?;
        Ok((self.response_header(), self.member_infos()?))
    }

    async fn member_update(
        &self,
        id: u64,
        peer_urls: Vec<String>,
    ) -> Result<(ResponseHeader, Vec<MemberInfo>)> {
        let [peer_url] = peer_urls.as_slice() else {
            return Err(RequestError::InvalidPeerUrl(format!(
                "exactly one peer URL expected, got {peer_urls:?}"
            ))
            .into());
        };
        self.update_peer_url(id, peer_url).await?;
        Ok((self.response_header(), self.member_infos()?))
    }

    async fn member_promote(&self, id: u64) -> Result<(ResponseHeader, Vec<MemberInfo>)> {
        self.promote(BTreeSet::from([id])).await?;
        Ok((self.response_header(), self.member_infos()?))
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
            // etcd lists every active alarm, as this member applied them.
            errors: self
                .alarms()
                .unwrap_or_default()
                .iter()
                .map(AlarmMember::status_text)
                .collect(),
        }
    }

    async fn alarm(
        &self,
        action: i32,
        member_id: u64,
        alarm: i32,
    ) -> Result<(ResponseHeader, Vec<AlarmInfo>)> {
        let Some(action) = AlarmAction::from_wire(action) else {
            return Err(RequestError::Unsupported(format!("alarm action {action}")).into());
        };
        let alarms = Node::alarm(
            self,
            AlarmRequest {
                action,
                member_id,
                alarm,
            },
        )
        .await?;
        let alarms = alarms
            .into_iter()
            .map(|a| AlarmInfo {
                member_id: a.member_id,
                alarm: a.alarm,
            })
            .collect();
        Ok((self.response_header(), alarms))
    }

    fn active_alarms(&self) -> Result<Vec<i32>> {
        Ok(self.alarms()?.into_iter().map(|a| a.alarm).collect())
    }

    async fn defragment(&self) -> Result<ResponseHeader> {
        Node::defragment(self).await?;
        Ok(self.response_header())
    }

    async fn move_leader(&self, target: u64) -> Result<ResponseHeader> {
        Node::transfer_leader(self, target).await?;
        Ok(self.response_header())
    }

    async fn hash(&self) -> Result<(ResponseHeader, u32)> {
        let reader = self.inner.reader.clone();
        let members = self.member_infos()?;
        let hash =
            crate::blocking::off_workers("hash", move || crate::hash_kv::hash_all(&reader, &members)).await?;
        Ok((self.response_header(), hash))
    }

    async fn hash_kv(&self, revision: i64) -> Result<(ResponseHeader, u32, i64)> {
        // A walk of the whole keyspace: off the async workers.
        let reader = self.inner.reader.clone();
        let (hash, scope) =
            crate::blocking::off_workers("hash", move || crate::hash_kv::hash_kv(&reader, revision)).await?;
        let header = ResponseHeader {
            revision: scope.current,
            ..self.response_header()
        };
        Ok((header, hash, crate::hash_kv::etcd_compact_revision(scope.compact)))
    }

    async fn snapshot(&self) -> Result<SnapshotStream> {
        let header = self.response_header();
        let applied = self.applied().get();
        let raft = &self.inner.raft;
        raft.trigger()
            .snapshot()
            .await
            .map_err(|e| Error::Shutdown(e.to_string()))?;
        let mut metrics = raft.metrics();
        let built = async {
            loop {
                if metrics
                    .borrow_watched()
                    .snapshot
                    .is_some_and(|s| s.index >= applied)
                {
                    return Ok::<(), Error>(());
                }
                metrics
                    .changed()
                    .await
                    .map_err(|_| Error::Shutdown("raft stopped".into()))?;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), built)
            .await
            .map_err(|_| Error::Timeout("building the snapshot took too long".into()))??;
        let snapshot = raft
            .get_snapshot()
            .await
            .map_err(|e| Error::Storage(e.to_string()))?
            .ok_or_else(|| Error::Internal("no snapshot after building one".into()))?;
        // Streamed in etcd's format (a bbolt file), so etcd's tools read it.
        let ours = snapshot.snapshot.into_std().await;
        let shared = self.inner.shared.clone();
        let (file, report) = crate::blocking::off_workers("snapshot export", move || {
            shared
                .export_etcd_snapshot(ours)
                .map_err(|e| Error::Storage(e.to_string()))
        })
        .await?;
        let size = file.metadata().map_err(|e| Error::Storage(e.to_string()))?.len();
        tracing::info!(
            revision = report.revision,
            versions = report.versions,
            size,
            "snapshot exported in etcd's format"
        );
        Ok(SnapshotStream {
            header,
            file: tokio::fs::File::from_std(file),
            size,
        })
    }
}
