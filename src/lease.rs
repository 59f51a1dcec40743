//! Leases on [`Node`]: the embedded lease API (grant, revoke, keep-alive, time-to-live,
//! list) and the leader's [`crate::lease_deadlines::LeaseManager`], which alone holds lease deadlines.
//!
//! **What is replicated and what is not.** The log carries grants (with the id chosen and
//! the TTL clamped before proposing, so every replica applies the same thing), revokes
//! and checkpoints of remaining TTLs. Deadlines live only in the leader's memory:
//! keep-alives renew them there (followers forward theirs over the peer protocol) and are
//! answered only after a read-index round has confirmed this node still leads.
//!
//! **Expiry** is the leader's decision, applied through the log: a lease whose deadline
//! passes is revoked with a `LeaseRevoke` entry, which deletes its keys in one revision on
//! every replica. No replica's clock expires anything by itself.
//!
//! **Leader changes.** A new leader starts no timer until it has applied its own term's
//! first entry (`ensure_linearizable`: a quorum confirmed it, and everything committed
//! before it is applied). It then starts each lease from its checkpointed remaining TTL,
//! which the leader proposes every `checkpoint_interval` for every lease. So a leader
//! change neither expires a lease early (its timer restarts from at least what was left
//! at the last checkpoint) nor resets it to its full TTL (etcd 3.4 resets it). A lease
//! not kept alive expires at most `checkpoint_interval` + the failover time later than
//! it would have without the change.
//!
//! A keep-alive of a lease whose last checkpoint recorded less than its full TTL also
//! proposes a checkpoint of the full TTL and is answered once that is applied, so a new
//! leader never resumes a renewed lease from a remaining TTL older than the renewal.
//!
//! **Caveats.** A periodic checkpoint computed just before a renewal and proposed just
//! after it can still record the older remaining TTL (a window of one task spawn); the
//! next checkpoint corrects it. Revokes of expired leases are proposed at most
//! [`MAX_REVOKES_PER_TICK`] a tick and [`MAX_REVOKES_IN_FLIGHT`] at a time.

use openraft::async_runtime::WatchReceiver;
use std::collections::HashSet;
use std::time::Duration;

use raftkv_core::auth::Caller;
use raftkv_core::kv::ResponseHeader;
use raftkv_core::lease::{self, LeaseInfo, MAX_CHECKPOINT_LEASES};
use raftkv_core::{Command, Error, LeaseAnswer, LeaseCall, RequestError, Response, Result};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::lease_deadlines::{LeaseManager, Table};
use crate::node::{Node, NodeInner};

/// How often the manager looks at deadlines and leadership.
const TICK: Duration = Duration::from_millis(200);

/// Most revokes of expired leases proposed per tick (etcd limits them too).
pub const MAX_REVOKES_PER_TICK: usize = 500;

/// Most revokes of expired leases proposed and not answered yet.
pub const MAX_REVOKES_IN_FLIGHT: usize = 2000;

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

fn ceil_secs(d: Duration) -> i64 {
    let secs = d.as_secs() as i64;
    if d.subsec_nanos() > 0 { secs + 1 } else { secs }
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

/// Run the manager until shutdown (or until every handle on the node is dropped: it
/// holds the node only during a tick): follow leadership, expire, checkpoint.
pub(crate) async fn run(node: std::sync::Weak<NodeInner>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let Some(inner) = node.upgrade() else {
            return;
        };
        let node = Node { inner };
        if let Err(e) = node.lease_tick().await {
            tracing::debug!(error = %e, "lease manager tick");
        }
    }
}

impl Node {
    fn leases_mgr(&self) -> &LeaseManager {
        &self.inner.leases
    }

    /// Propose `command` on this node only, if it leads: never forwarded. The manager's
    /// revokes and checkpoints are decisions of this leader's clock and must not reach a
    /// newer leader; forwarded lease writes were forwarded once already.
    pub(crate) async fn propose_here(&self, command: Command) -> Result<(Response, u64)> {
        let leader = self.inner.raft.metrics().borrow_watched().current_leader;
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
        .map_err(|_| Error::Unknown("the lease write was not committed in time".into()))??;
        Ok((proposed.response, proposed.log_id.leader_id.term))
    }

    /// One round of the manager.
    #[tracing::instrument(level = "trace", skip_all)]
    async fn lease_tick(&self) -> Result<()> {
        let (leader, term) = {
            let m = self.inner.raft.metrics();
            let m = m.borrow_watched();
            (m.current_leader, m.current_term)
        };
        if leader != Some(self.id()) {
            let mut table = self.leases_mgr().table.lock();
            if table.term.is_some() {
                *table = Table::default();
            }
            return Ok(());
        }
        let ready = {
            let mut table = self.leases_mgr().table.lock();
            if table.term != Some(term) {
                *table = Table {
                    term: Some(term),
                    ..Table::default()
                };
            }
            table.ready
        };
        if !ready {
            return self.lease_become_ready(term).await;
        }
        self.lease_refresh(term)?;
        self.lease_expire(term);
        self.lease_checkpoint(term);
        Ok(())
    }

    /// Wait until this term's first entry is applied (and the log this node started with:
    /// a leader restored at startup has an old first entry, `leader_read_index`), then
    /// start every lease's timer.
    async fn lease_become_ready(&self, term: u64) -> Result<()> {
        let timeout = self.inner.request_timeout;
        let index = tokio::time::timeout(
            timeout,
            raftkv_net::leader_read_index(&self.inner.raft, self.inner.read_floor),
        )
        .await
        .map_err(|_| Error::Timeout("confirming leadership for leases".into()))??;
        self.applied()
            .wait_for_timeout(index, timeout)
            .await
            .map_err(|e| Error::Timeout(format!("applying the log before starting leases: {e}")))?;
        let changes = self.inner.reader.lease_changes();
        let leases = self.inner.reader.leases()?;
        let now = Instant::now();
        let mut table = self.leases_mgr().table.lock();
        if table.term != Some(term) {
            return Ok(());
        }
        for (id, record) in leases {
            // A keep-alive answered meanwhile already set a fresher deadline.
            table
                .deadlines
                .entry(id)
                .or_insert(now + Duration::from_secs(record.resume_ttl().max(0) as u64));
        }
        table.seen_changes = changes;
        table.ready = true;
        table.next_checkpoint = Some(now + self.leases_mgr().checkpoint_interval);
        tracing::info!(term, leases = table.deadlines.len(), "lease timers started");
        Ok(())
    }

    /// Follow grants and revokes applied since the last look.
    fn lease_refresh(&self, term: u64) -> Result<()> {
        let changes = self.inner.reader.lease_changes();
        if self.leases_mgr().table.lock().seen_changes == changes {
            return Ok(());
        }
        let leases = self.inner.reader.leases()?;
        let now = Instant::now();
        let mut table = self.leases_mgr().table.lock();
        if table.term != Some(term) {
            return Ok(());
        }
        let present: HashSet<i64> = leases.iter().map(|(id, _)| *id).collect();
        table.deadlines.retain(|id, _| present.contains(id));
        for (id, record) in leases {
            table
                .deadlines
                .entry(id)
                .or_insert(now + Duration::from_secs(record.resume_ttl().max(0) as u64));
        }
        table.seen_changes = changes;
        Ok(())
    }

    /// Propose revokes of the leases whose deadline passed.
    fn lease_expire(&self, term: u64) {
        // A CORRUPT alarm refuses every revoke when applied: propose none until it is
        // disarmed (the leases stay expired and are revoked then).
        if self.inner.reader.alarm_mask() & raftkv_storage::apply::alarm_table::CORRUPT_ACTIVE != 0 {
            return;
        }
        let now = Instant::now();
        let expired: Vec<i64> = {
            let mut table = self.leases_mgr().table.lock();
            let room = MAX_REVOKES_IN_FLIGHT.saturating_sub(table.revoking.len());
            let expired: Vec<i64> = table
                .deadlines
                .iter()
                .filter(|(id, at)| **at <= now && !table.revoking.contains(id))
                .map(|(id, _)| *id)
                .take(MAX_REVOKES_PER_TICK.min(room))
                .collect();
            table.revoking.extend(&expired);
            expired
        };
        for id in expired {
            let node = self.clone();
            tokio::spawn(async move {
                tracing::info!(lease = id, term, "lease expired: revoking");
                let outcome = node.propose_here(Command::LeaseRevoke { id }).await;
                let done = matches!(
                    outcome,
                    Ok((Response::Done { .. }, _))
                        | Ok((Response::Rejected(RequestError::LeaseNotFound(_)), _))
                );
                let mut table = node.leases_mgr().table.lock();
                table.revoking.remove(&id);
                if done {
                    table.deadlines.remove(&id);
                } else {
                    tracing::warn!(
                        lease = id,
                        ?outcome,
                        "revoking an expired lease failed; will retry"
                    );
                }
            });
        }
    }

    /// Every `checkpoint_interval`, propose the remaining TTL of every lease.
    fn lease_checkpoint(&self, term: u64) {
        let now = Instant::now();
        let remaining: Vec<(i64, i64)> = {
            let mut table = self.leases_mgr().table.lock();
            match table.next_checkpoint {
                Some(at) if at <= now => {}
                _ => return,
            }
            table.next_checkpoint = Some(now + self.leases_mgr().checkpoint_interval);
            table
                .deadlines
                .iter()
                .filter(|(id, _)| !table.revoking.contains(id))
                .map(|(id, at)| (*id, ceil_secs(at.saturating_duration_since(now)).max(1)))
                .collect()
        };
        for chunk in remaining.chunks(MAX_CHECKPOINT_LEASES) {
            let node = self.clone();
            let command = Command::LeaseCheckpoint {
                remaining: chunk.to_vec(),
            };
            tokio::spawn(async move {
                if let Err(e) = node.propose_here(command).await {
                    tracing::debug!(error = %e, term, "lease checkpoint not applied");
                }
            });
        }
    }

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
                let table = self.leases_mgr().table.lock();
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
                    let mut table = self.leases_mgr().table.lock();
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
                    let table = self.leases_mgr().table.lock();
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
                    let url = crate::raft_handle::peer_url_of(&self.inner.raft, leader)?;
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
        Ok(lease::granted_ttl(ttl, self.leases_mgr().min_ttl)?)
    }

    /// Grant a lease of `ttl` seconds (raised to the minimum TTL, 1.5 election timeouts)
    /// with id `id`, or a fresh id if `id` is 0.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_ttl_rounds_up() {
        assert_eq!(ceil_secs(Duration::from_millis(0)), 0);
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_millis(4000)), 4);
        assert_eq!(ceil_secs(Duration::from_millis(4001)), 5);
    }
}
