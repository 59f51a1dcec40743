//! The leader's lease timers: every [`TICK`] the leader's manager follows leadership,
//! revokes leases whose deadline passed and checkpoints the remaining TTLs.
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
//! **Caveats.** A periodic checkpoint computed just before a renewal and proposed just
//! after it can still record the older remaining TTL (a window of one task spawn); the
//! next checkpoint corrects it. Revokes of expired leases are proposed at most
//! [`MAX_REVOKES_PER_TICK`] a tick and [`MAX_REVOKES_IN_FLIGHT`] at a time.

use openraft::async_runtime::WatchReceiver;
use std::collections::HashSet;
use std::time::Duration;

use raftkv_core::lease::MAX_CHECKPOINT_LEASES;
use raftkv_core::{Command, Error, RequestError, Response, Result};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::node::lease_deadlines::{Table, ceil_secs};
use crate::node::{Node, NodeInner};

/// How often the manager looks at deadlines and leadership.
const TICK: Duration = Duration::from_millis(200);

/// Most revokes of expired leases proposed per tick (etcd limits them too).
pub const MAX_REVOKES_PER_TICK: usize = 500;

/// Most revokes of expired leases proposed and not answered yet.
pub const MAX_REVOKES_IN_FLIGHT: usize = 2000;

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
        let deadline = Instant::now() + self.inner.request_timeout;
        let proposed = self.propose_as_leader(&command, size, deadline).await?;
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
            let mut table = self.inner.leases.table.lock();
            if table.term.is_some() {
                *table = Table::default();
            }
            return Ok(());
        }
        let ready = {
            let mut table = self.inner.leases.table.lock();
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
        let mut table = self.inner.leases.table.lock();
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
        table.next_checkpoint = Some(now + self.inner.leases.checkpoint_interval);
        tracing::info!(term, leases = table.deadlines.len(), "lease timers started");
        Ok(())
    }

    /// Follow grants and revokes applied since the last look.
    fn lease_refresh(&self, term: u64) -> Result<()> {
        let changes = self.inner.reader.lease_changes();
        if self.inner.leases.table.lock().seen_changes == changes {
            return Ok(());
        }
        let leases = self.inner.reader.leases()?;
        let now = Instant::now();
        let mut table = self.inner.leases.table.lock();
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
            let mut table = self.inner.leases.table.lock();
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
                let mut table = node.inner.leases.table.lock();
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
            let mut table = self.inner.leases.table.lock();
            match table.next_checkpoint {
                Some(at) if at <= now => {}
                _ => return,
            }
            table.next_checkpoint = Some(now + self.inner.leases.checkpoint_interval);
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
}
