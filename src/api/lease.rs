//! Leases on [`Node`]: the embedded lease API (grant, revoke, keep-alive, time-to-live,
//! list). The leader's timers that expire and checkpoint leases are `tasks/lease_timers.rs`;
//! the deadlines they keep, [`crate::node::lease_deadlines::LeaseManager`].
//!
//! **What is replicated and what is not.** The log carries grants (with the id chosen and
//! the TTL clamped before proposing, so every replica applies the same thing), revokes
//! and checkpoints of remaining TTLs. Deadlines live only in the leader's memory:
//! keep-alives renew them there (followers forward theirs over the peer protocol) and are
//! answered only after a read-index round has confirmed this node still leads.
//!
//! A keep-alive of a lease whose last checkpoint recorded less than its full TTL also
//! proposes a checkpoint of the full TTL and is answered once that is applied, so a new
//! leader never resumes a renewed lease from a remaining TTL older than the renewal.

use openraft::async_runtime::WatchReceiver;
use std::time::Duration;

use raftkv_core::auth::Caller;
use raftkv_core::kv::ResponseHeader;
use raftkv_core::lease::{self, LeaseInfo};
use raftkv_core::{Command, Error, LeaseAnswer, LeaseCall, RequestError, Response, Result};
use tokio::time::Instant;

use crate::node::Node;
use crate::node::lease_deadlines::ceil_secs;

/// Attempts at a fresh server-chosen id that collides with an existing lease.
const GRANT_ATTEMPTS: u32 = 3;

/// The answer to a grant or a keep-alive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseGrant {
    /// Header of the answering member.
    pub header: ResponseHeader,
    /// The lease id.
    pub id: i64,
    /// The TTL granted or renewed, seconds (0 for a keep-alive of a lease that does not
    /// exist, as etcd).
    pub ttl: i64,
}

/// The `Lease` peer call that carries `command` to the leader, if it is a lease command.
pub(crate) fn forwarded_as_lease_call(command: &Command) -> Option<LeaseCall> {
    match command {
        Command::LeaseGrant { id, ttl } => Some(LeaseCall::Grant { id: *id, ttl: *ttl }),
        Command::LeaseRevoke { id } => Some(LeaseCall::Revoke { id: *id }),
        _ => None,
    }
}

/// The state machine's answer and the entry's term, from a forwarded grant or revoke.
pub(crate) fn written(answer: LeaseAnswer) -> Result<(Response, u64)> {
    match answer {
        LeaseAnswer::Written { response, term } => Ok((response, term)),
        other => Err(Error::Internal(format!(
            "unexpected answer to a lease write: {other:?}"
        ))),
    }
}

impl Node {
    /// Confirm leadership for a lease call: a read-index round (a quorum confirms this
    /// node leads), the applied index caught up with it, and the manager's timers started
    /// for the current term. Returns the term.
    async fn lease_confirm_leader(&self) -> Result<u64> {
        let deadline = Instant::now() + self.inner.request_timeout;
        let index = self.inner.read_index.read_index().await?;
        self.applied()
            .wait_for_timeout(index, self.inner.request_timeout)
            .await
            .map_err(|e| Error::Timeout(e.to_string()))?;
        loop {
            let (leader, term) = {
                let m = self.inner.raft.metrics();
                let m = m.borrow_watched();
                (m.current_leader, m.current_term)
            };
            if leader != Some(self.id()) {
                return Err(Error::NotLeader {
                    leader_id: leader,
                    leader_client_urls: Vec::new(),
                });
            }
            {
                let table = self.inner.leases.table.lock();
                if table.term == Some(term) && table.ready {
                    return Ok(term);
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout("lease timers not started in time".into()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Answer a lease call here, as the leader.
    pub(crate) async fn lease_call_here(&self, call: LeaseCall) -> Result<LeaseAnswer> {
        let term = self.lease_confirm_leader().await?;
        match call {
            LeaseCall::KeepAlive { id } => {
                let Some(record) = self.inner.reader.lease(id)? else {
                    return Ok(LeaseAnswer::KeepAlive { ttl: 0 });
                };
                {
                    let mut table = self.inner.leases.table.lock();
                    if table.term != Some(term) {
                        return Err(Error::NotLeader {
                            leader_id: None,
                            leader_client_urls: Vec::new(),
                        });
                    }
                    if table.revoking.contains(&id) {
                        // Expired already: its revoke is on its way.
                        return Ok(LeaseAnswer::KeepAlive { ttl: 0 });
                    }
                    table
                        .deadlines
                        .insert(id, Instant::now() + Duration::from_secs(record.ttl.max(0) as u64));
                }
                if record.remaining > 0 && record.remaining < record.ttl {
                    // A checkpoint recorded less than the full TTL: record the renewal
                    // before answering, or a leader elected before the next periodic
                    // checkpoint would resume the lease from the older, shorter TTL and
                    // expire it before the deadline this answer promises (etcd 3.5 does
                    // the same; at most one such entry per lease per checkpoint interval).
                    self.propose_here(Command::LeaseCheckpoint {
                        remaining: vec![(id, record.ttl)],
                    })
                    .await?;
                }
                Ok(LeaseAnswer::KeepAlive { ttl: record.ttl })
            }
            LeaseCall::TimeToLive { id, keys } => {
                let Some(record) = self.inner.reader.lease(id)? else {
                    return Ok(LeaseAnswer::TimeToLive(LeaseInfo {
                        id,
                        ttl: -1,
                        ..LeaseInfo::default()
                    }));
                };
                let remaining = {
                    let table = self.inner.leases.table.lock();
                    match table.deadlines.get(&id) {
                        Some(at) => ceil_secs(at.saturating_duration_since(Instant::now())),
                        None => record.resume_ttl(),
                    }
                };
                let keys = if keys {
                    self.inner.reader.lease_keys(id)?
                } else {
                    Vec::new()
                };
                Ok(LeaseAnswer::TimeToLive(LeaseInfo {
                    id,
                    ttl: remaining,
                    granted_ttl: record.ttl,
                    keys,
                }))
            }
            LeaseCall::Grant { .. } | LeaseCall::Revoke { .. } => Err(RequestError::Unsupported(
                "lease writes are proposed, not answered from the lease table".into(),
            )
            .into()),
        }
    }

    /// Answer a lease call at the leader: here, or forwarded to it (a lease call changes
    /// no state that a retry could double, so any failure is retried until the deadline).
    async fn lease_call(&self, call: LeaseCall) -> Result<LeaseAnswer> {
        let deadline = Instant::now() + self.inner.request_timeout;
        loop {
            let leader = self.inner.raft.metrics().borrow_watched().current_leader;
            let outcome = match leader {
                Some(leader) if leader == self.id() => self.lease_call_here(call.clone()).await,
                Some(leader) => {
                    let url = crate::node::raft_handle::peer_url_of(&self.inner.raft, leader)?;
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    match self.inner.connections.lease(&url, &call, remaining).await {
                        Ok(answer) => answer,
                        Err(e) => Err(Error::Timeout(format!("lease call at leader {leader}: {e}"))),
                    }
                }
                None => Err(Error::NotLeader {
                    leader_id: None,
                    leader_client_urls: Vec::new(),
                }),
            };
            match outcome {
                Ok(answer) => return Ok(answer),
                Err(e @ (Error::NotLeader { .. } | Error::Timeout(_))) => {
                    if Instant::now() >= deadline {
                        return Err(e);
                    }
                    tracing::debug!(error = %e, "lease call: retrying at the leader");
                    self.wait_for_new_leader(leader, deadline).await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A fresh lease id: positive, never 0, not one this member knows.
    fn new_lease_id(&self) -> Result<i64> {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ nanos;
        for b in self.id().to_be_bytes().into_iter().chain(
            COUNTER
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                .to_be_bytes(),
        ) {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        loop {
            let id = (hash & (i64::MAX as u64)) as i64;
            if id != 0 && self.inner.reader.lease(id)?.is_none() {
                return Ok(id);
            }
            hash = hash.wrapping_mul(0x0100_0000_01b3).wrapping_add(1);
        }
    }

    /// The TTL a grant of `ttl` seconds gets on this node (see
    /// [`raftkv_core::lease::granted_ttl`]).
    pub(crate) fn lease_ttl(&self, ttl: i64) -> Result<i64> {
        Ok(lease::granted_ttl(ttl, self.inner.leases.min_ttl)?)
    }

    /// Grant a lease of `ttl` seconds (raised to the minimum TTL, 1.5 election timeouts)
    /// with id `id`, or a fresh id if `id` is 0.
    ///
    /// # Example
    ///
    /// ```
    /// # #[tokio::main(flavor = "multi_thread")]
    /// # async fn main() -> raftkv::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let node = raftkv::Node::builder().id(1).data_dir(dir.path()).start().await?;
    /// use raftkv::PutRequest;
    /// // id 0: the node picks one. A lease lives for its TTL unless kept alive.
    /// let lease = node.lease_grant(0, 30).await?;
    /// node.put_with(PutRequest { lease: lease.id, ..PutRequest::new("session/worker-1", "up") }).await?;
    /// // Revoking the lease deletes every key attached to it, in one revision.
    /// node.lease_revoke(lease.id).await?;
    /// assert!(node.get("session/worker-1").await?.is_none());
    /// node.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn lease_grant(&self, id: i64, ttl: i64) -> Result<LeaseGrant> {
        let ttl = self.lease_ttl(ttl)?;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let chosen = if id == 0 { self.new_lease_id()? } else { id };
            match self
                .propose_command(Command::LeaseGrant { id: chosen, ttl })
                .await?
            {
                (Response::Done { revision }, term) => {
                    let mut header = self.response_header();
                    header.revision = revision;
                    header.raft_term = term;
                    return Ok(LeaseGrant {
                        header,
                        id: chosen,
                        ttl,
                    });
                }
                (Response::Rejected(RequestError::LeaseExists(_)), _)
                    if id == 0 && attempts < GRANT_ATTEMPTS => {}
                (Response::Rejected(e), _) => return Err(e.into()),
                (other, _) => {
                    return Err(Error::Internal(format!(
                        "unexpected answer to a grant: {other:?}"
                    )));
                }
            }
        }
    }

    /// Revoke lease `id`: its keys are deleted in one revision.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn lease_revoke(&self, id: i64) -> Result<ResponseHeader> {
        self.lease_revoke_as(None, id).await
    }

    /// [`Node::lease_revoke`] as `caller` made it (`None`: the embedded API).
    pub(crate) async fn lease_revoke_as(&self, caller: Option<Caller>, id: i64) -> Result<ResponseHeader> {
        match self
            .propose_command(self.as_caller(caller, Command::LeaseRevoke { id }))
            .await?
        {
            (Response::Done { revision }, term) => {
                let mut header = self.response_header();
                header.revision = revision;
                header.raft_term = term;
                Ok(header)
            }
            (Response::Rejected(e), _) => Err(e.into()),
            (other, _) => Err(Error::Internal(format!(
                "unexpected answer to a revoke: {other:?}"
            ))),
        }
    }

    /// Renew lease `id` (at the leader, after it confirmed its leadership): the TTL it was
    /// renewed for, 0 if there is no such lease.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn lease_keep_alive(&self, id: i64) -> Result<LeaseGrant> {
        match self.lease_call(LeaseCall::KeepAlive { id }).await? {
            LeaseAnswer::KeepAlive { ttl } => Ok(LeaseGrant {
                header: self.response_header(),
                id,
                ttl,
            }),
            other => Err(Error::Internal(format!(
                "unexpected answer to a keep-alive: {other:?}"
            ))),
        }
    }

    /// How long lease `id` has left (TTL -1: no such lease), with its keys if asked.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn lease_time_to_live(&self, id: i64, keys: bool) -> Result<(ResponseHeader, LeaseInfo)> {
        match self.lease_call(LeaseCall::TimeToLive { id, keys }).await? {
            LeaseAnswer::TimeToLive(info) => Ok((self.response_header(), info)),
            other => Err(Error::Internal(format!(
                "unexpected answer to time-to-live: {other:?}"
            ))),
        }
    }

    /// Every lease's id (a linearizable read).
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn leases(&self) -> Result<(ResponseHeader, Vec<i64>)> {
        let index = self.inner.read_index.read_index().await?;
        self.applied()
            .wait_for_timeout(index, self.inner.request_timeout)
            .await
            .map_err(|e| Error::Timeout(e.to_string()))?;
        let ids = self
            .inner
            .reader
            .leases()?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        Ok((self.response_header(), ids))
    }
}
