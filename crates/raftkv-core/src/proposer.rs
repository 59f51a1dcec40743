//! [`Proposer`]: group commit above openraft.
//!
//! openraft 0.9 turns every `client_write` into its own log append and syncs it before it
//! reports the write, so proposing each request alone costs one fsync per request and
//! caps throughput near 1/fsync. The proposer keeps at most `max_in_flight` proposals
//! open; every request that arrives while they are in flight waits in a channel, and the
//! next free slot takes all of them (up to `max_batch_requests` and
//! `max_batch_bytes`) as one [`Command::Batch`] entry. The state machine applies the
//! requests of a batch in order, each with its own revision, and answers with a
//! [`Response::Batch`] that the proposer splits back, one answer per caller.
//!
//! Under no load a request is proposed alone after a few scheduler turns (no timer; the
//! turns let requests already arriving join it, `gather_yields`); under load the batch
//! grows with the queue, which is what lifts throughput.
//!
//! With one proposal open, closed-loop callers split into two cohorts that take turns:
//! while one entry commits, the callers it answered last time come back and queue, and
//! when the slot frees they go alone, so 16 callers make entries of about 8 and every
//! member pays its per-entry work (a log sync, replication messages, an apply call) twice
//! as often as it must. So when the slot frees, the proposer expects the callers of the
//! entry that just completed back as well and holds the batch open for them, up to
//! `await_returns` (`proposer_gather.rs`).
//!
//! [`ProposalMode::Direct`] skips all of this for the ablation benchmark: each caller
//! calls openraft's `client_write` itself (openraft 0.10 merges concurrent writes into one
//! log append, but each request stays its own entry). The group-commit mode stays the
//! default while the ablation shows it earns its place (README, "Performance").

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::Instrument;

use crate::command::{Command, Response};
use crate::error::{Error, Result};
use crate::proposer_gather::{Batch, Gathered, Returns, Weighed, gather_until};
use crate::types::{KvStateMachine, LogId, Raft, TypeConfig};

/// Limits of group commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProposerConfig {
    /// Proposals open at once. Requests arriving while all are open are batched.
    ///
    /// Default 1: with openraft 0.10 the leader replicates an entry while its own log
    /// sync runs, so a second open proposal no longer hides a sync; it only splits the
    /// queue into smaller entries, and every entry costs each member the same fixed work
    /// (a log sync, replication messages, an apply call). Against 2, alternating runs of
    /// three-member clusters (`benches/ab-servers.sh`, 2026-12-07): 16 clients 1.03-1.09x
    /// the throughput at 0.88-0.92x the CPU per write, 64 clients 1.01-1.15x (one round
    /// of eight 0.91x) at 0.85-0.96x; one client is unaffected (it never waits for a slot).
    pub max_in_flight: usize,
    /// Most client requests packed into one entry.
    pub max_batch_requests: usize,
    /// Most encoded bytes packed into one entry (a single larger request still goes,
    /// alone).
    pub max_batch_bytes: usize,
    /// Times the proposer task yields to the scheduler between taking a batch's first
    /// request and gathering the rest: a yielded task runs again after the tasks queued
    /// before it and an I/O poll, so requests already arriving join the entry instead of
    /// waiting a whole commit for the next one.
    ///
    /// Default 3: against none, alternating runs (`benches/ab-servers.sh`, 2026-12-07,
    /// three rounds): 16 clients 1.08-1.19x the throughput at 0.84-0.91x the CPU per
    /// write; 64 clients 0.99-1.06x (their queue is never empty); one client through the
    /// leader within noise. The same gathering lifted linearizable reads (the read-index
    /// batcher).
    pub gather_yields: usize,
    /// Longest the proposer holds a batch open for the callers of the entry that just
    /// completed (`None`: never; see the module doc). The wait ends as soon as they are
    /// all back; after a wait that ran out it stops waiting for a while
    /// (`proposer_gather.rs`). Only with one proposal open (`max_in_flight` 1).
    pub await_returns: Option<Duration>,
    /// Requests that may wait for a slot before callers are held back.
    pub queue_capacity: usize,
    /// Batching on (the default) or off: off proposes every request as its own entry,
    /// for the ablation benchmark.
    pub batching: bool,
    /// Through the group-commit task (the default) or straight to openraft.
    pub mode: ProposalMode,
}

/// How requests reach openraft.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProposalMode {
    /// Queued, batched into entries by the proposer task.
    #[default]
    GroupCommit,
    /// Each caller calls `client_write` itself, one entry per request.
    Direct,
}

impl Default for ProposerConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 1,
            max_batch_requests: 1024,
            max_batch_bytes: 4 * 1024 * 1024,
            gather_yields: 3,
            await_returns: Some(DEFAULT_AWAIT_RETURNS),
            queue_capacity: 16 * 1024,
            batching: true,
            mode: ProposalMode::GroupCommit,
        }
    }
}

/// Default of [`ProposerConfig::await_returns`].
pub const DEFAULT_AWAIT_RETURNS: Duration = Duration::from_millis(2);

/// Counters that show group commit at work.
#[derive(Debug, Default)]
pub struct ProposerStats {
    /// Raft entries proposed.
    pub proposals: AtomicU64,
    /// Client requests carried by them.
    pub requests: AtomicU64,
    /// Batches held open until the previous entry's callers were back.
    pub returns_met: AtomicU64,
    /// Batches held open until `await_returns` ran out.
    pub returns_missed: AtomicU64,
}

/// A request's outcome: its own answer and the log id of the entry that carried it.
#[derive(Debug, Clone)]
pub struct Proposed {
    /// The state machine's answer to this request.
    pub response: Response,
    /// The entry that carried it (its term is the response header's `raft_term`).
    pub log_id: LogId,
}

struct Pending {
    command: Command,
    size: usize,
    reply: oneshot::Sender<Result<Proposed>>,
}

impl Weighed for Pending {
    fn bytes(&self) -> usize {
        self.size
    }
}

type WriteFuture = Pin<Box<dyn Future<Output = Result<Proposed>> + Send>>;

/// [`ProposalMode::Direct`]: one request straight to openraft.
type DirectWrite = Arc<dyn Fn(Command) -> WriteFuture + Send + Sync>;

/// Handle to the group-commit task. Cheap to clone.
#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::Sender<Pending>,
    stats: Arc<ProposerStats>,
    direct: Option<DirectWrite>,
}

impl Proposer {
    /// Start the proposer task for `raft`. It ends when every handle is dropped.
    pub fn spawn<SM: KvStateMachine>(raft: Raft<SM>, config: ProposerConfig) -> Self {
        let (queue, rx) = mpsc::channel(config.queue_capacity.max(1));
        let stats = Arc::new(ProposerStats::default());
        let direct = match config.mode {
            ProposalMode::Direct => {
                let write: DirectWrite = Arc::new(move |command| {
                    let raft = raft.clone();
                    Box::pin(async move { write_one(&raft, command).await })
                });
                Some(write)
            }
            ProposalMode::GroupCommit => {
                tokio::spawn(
                    run(raft, rx, config, stats.clone()).instrument(tracing::info_span!("proposer")),
                );
                None
            }
        };
        Self { queue, stats, direct }
    }

    /// Propose one client request (already validated; `size` is its encoded size) and
    /// wait for its answer.
    pub async fn propose(&self, command: Command, size: usize) -> Result<Proposed> {
        if let Some(write) = &self.direct {
            self.stats.proposals.fetch_add(1, Ordering::Relaxed);
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            return write(command).await;
        }
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending { command, size, reply })
            .await
            .map_err(|_| Error::Shutdown("proposer stopped".into()))?;
        answer
            .await
            .map_err(|_| Error::Unknown("proposer dropped the request".into()))?
    }

    /// Group-commit counters.
    pub fn stats(&self) -> &ProposerStats {
        &self.stats
    }
}

async fn run<SM: KvStateMachine>(
    raft: Raft<SM>,
    mut rx: mpsc::Receiver<Pending>,
    config: ProposerConfig,
    stats: Arc<ProposerStats>,
) {
    let slots = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
    let (max_requests, gather_yields) = if config.batching {
        (config.max_batch_requests.max(1), config.gather_yields)
    } else {
        (1, 0)
    };
    let mut carried: Option<Pending> = None;
    let one_open = config.max_in_flight <= 1;
    let mut returns = Returns::new(if config.batching && one_open {
        config.await_returns
    } else {
        None
    });
    // Requests queued when the last entry's callers were answered: they are not among
    // those callers (who need a round trip to come back).
    let mut queued_at_answer = 0;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let queued_at_slot =
            if one_open { queued_at_answer } else { rx.len() } + usize::from(carried.is_some());
        let first = match carried.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        for _ in 0..gather_yields {
            tokio::task::yield_now().await;
        }
        let mut batch = Batch::new(first, config.max_batch_bytes);
        while batch.len() < max_requests {
            match rx.try_recv() {
                Ok(next) => {
                    if let Some(over) = batch.push(next) {
                        carried = Some(over);
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        if let Some((target, limit)) = returns.wait_for(queued_at_slot, max_requests)
            && carried.is_none()
            && batch.len() < target
        {
            let gathered = gather_until(&mut rx, &mut batch, &mut carried, target, limit).await;
            let met = gathered != Gathered::RanOut;
            returns.waited(met);
            let counter = if met {
                &stats.returns_met
            } else {
                &stats.returns_missed
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let batch = batch.into_items();
        returns.proposed(batch.len());
        stats.proposals.fetch_add(1, Ordering::Relaxed);
        stats.requests.fetch_add(batch.len() as u64, Ordering::Relaxed);
        if one_open {
            // Nothing else may be proposed meanwhile: wait here, so the queue is read the
            // moment the callers are answered.
            propose_batch(&raft, batch).await;
            queued_at_answer = rx.len();
            drop(slot);
        } else {
            let raft = raft.clone();
            tokio::spawn(async move {
                propose_batch(&raft, batch).await;
                drop(slot);
            });
        }
    }
}

/// One request as its own entry, in the caller's task.
async fn write_one<SM: KvStateMachine>(raft: &Raft<SM>, command: Command) -> Result<Proposed> {
    let written = raft.client_write(command).await.map_err(map_write_error)?;
    Ok(Proposed {
        response: written.data,
        log_id: written.log_id,
    })
}

#[tracing::instrument(level = "debug", skip_all, fields(requests = batch.len()))]
async fn propose_batch<SM: KvStateMachine>(raft: &Raft<SM>, mut batch: Vec<Pending>) {
    let (command, replies): (Command, Vec<_>) = if batch.len() == 1 {
        let Some(single) = batch.pop() else { return };
        (single.command, vec![single.reply])
    } else {
        let (commands, replies) = batch.into_iter().map(|p| (p.command, p.reply)).unzip();
        (Command::Batch(commands), replies)
    };
    let outcome = raft.client_write(command).await;
    match outcome {
        Ok(written) => {
            let log_id = written.log_id;
            match (written.data, replies.len()) {
                (Response::Batch(answers), n) if n > 1 && answers.len() == n => {
                    for (reply, response) in replies.into_iter().zip(answers) {
                        let _ = reply.send(Ok(Proposed { response, log_id }));
                    }
                }
                (response, 1) => {
                    for reply in replies {
                        let _ = reply.send(Ok(Proposed {
                            response: response.clone(),
                            log_id,
                        }));
                    }
                }
                (other, n) => {
                    let error = Error::Internal(format!("batch of {n} answered with {other:?}"));
                    for reply in replies {
                        let _ = reply.send(Err(error.clone()));
                    }
                }
            }
        }
        Err(e) => {
            let error = map_write_error(e);
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

/// Map openraft's write error onto ours. A fatal error after the entry may have been
/// appended leaves the outcome unknown; a forward-to-leader means nothing was appended.
pub fn map_write_error(
    e: openraft::error::RaftError<TypeConfig, openraft::error::ClientWriteError<TypeConfig>>,
) -> Error {
    use openraft::error::{ClientWriteError, Fatal, RaftError};
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            if f.reason == openraft::errors::ForwardReason::LeaseExpired {
                // A leader no quorum acknowledged within the maximum election timeout: an
                // operator wants to see each one (`benches/steady-leader.sh` counts them).
                tracing::warn!(
                    "write refused by this leader: its lease lapsed (no quorum acknowledged it in time)"
                );
            }
            Error::NotLeader {
                leader_id: f.leader_id,
                leader_client_urls: f.leader_node.map(|n| n.client_urls).unwrap_or_default(),
            }
        }
        // Appended, then lost to another leader's log: it may still commit there.
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(f)) => {
            Error::Unknown(format!("leader changed while the write was in flight: {f}"))
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => Error::Internal(e.to_string()),
        RaftError::APIError(ClientWriteError::PreconditionFailed(e)) => Error::Internal(e.to_string()),
        RaftError::Fatal(Fatal::StorageError(e)) => Error::Storage(e.to_string()),
        RaftError::Fatal(f) => Error::Shutdown(f.to_string()),
    }
}
