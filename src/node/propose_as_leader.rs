//! [`Node::propose_as_leader`]: a proposal through this member's proposer while it leads, with
//! the one refusal a new leader makes retried at once.
//!
//! openraft refuses writes on a leader whose lease no quorum has acknowledged within the
//! maximum election timeout (`LeaseExpired`, which our proposer reports as `NotLeader`
//! with no leader named). A leader just elected has no acknowledgement at all until a
//! follower first answers it, so the writes that reach it in those first milliseconds were
//! refused, and the callers' retry loops waited up to their 100 ms poll for a leader
//! change that was not coming. Here such a refusal waits for the next quorum
//! acknowledgement and proposes again (nothing was appended, so a retry is safe); without
//! one within [`ACK_WAIT`] (a leader cut off from its quorum) or after a leader change,
//! the refusal stands and the caller follows leader changes as before.

use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use raftkv_core::proposer::Proposed;
use raftkv_core::{Command, Error, Result};
use tokio::time::Instant;

use crate::node::Node;

/// The longest wait for an acknowledgement before the refusal stands.
const ACK_WAIT: Duration = Duration::from_millis(100);

impl Node {
    /// Propose `command` (`size`: its encoded length) here, as leader, until `deadline`.
    /// `Err(Error::NotLeader)`: refused, nothing was appended (this member does not lead,
    /// or no quorum acknowledged it).
    /// `command` is cloned once per proposal (the retry needs it again).
    pub(crate) async fn propose_as_leader(
        &self,
        command: &Command,
        size: usize,
        deadline: Instant,
    ) -> Result<Proposed> {
        loop {
            let acked_before = self.inner.raft.metrics().borrow_watched().last_quorum_acked;
            let proposed =
                tokio::time::timeout_at(deadline, self.inner.proposer.propose(command.clone(), size))
                    .await
                    .map_err(|_| self.no_answer_in_time())?;
            match proposed {
                // Refused without a leader named while this member still leads: its lease.
                Err(Error::NotLeader { leader_id: None, .. })
                    if self.leads() && Instant::now() < deadline =>
                {
                    // Wait for a quorum acknowledgement later than the one before the
                    // proposal, at most ACK_WAIT: a leader just elected gets one within a
                    // round trip. None (a leader cut off from its quorum) or another
                    // leader: the refusal stands, and the caller follows leader changes.
                    let mut metrics = self.inner.raft.metrics();
                    let id = self.id();
                    let renewed = async {
                        loop {
                            {
                                let m = metrics.borrow_watched();
                                if m.current_leader != Some(id) {
                                    return false;
                                }
                                if m.last_quorum_acked.is_some() && m.last_quorum_acked != acked_before {
                                    return true;
                                }
                            }
                            if metrics.changed().await.is_err() {
                                return false;
                            }
                        }
                    };
                    let wait = tokio::time::timeout_at((Instant::now() + ACK_WAIT).min(deadline), renewed);
                    if !wait.await.unwrap_or(false) {
                        return proposed;
                    }
                }
                other => return other,
            }
        }
    }

    /// A write that got no answer within the request timeout: its outcome is unknown.
    pub(crate) fn no_answer_in_time(&self) -> Error {
        Error::Unknown(format!(
            "no answer within {:?} (no quorum, or the leader is unreachable); the write may or may not apply",
            self.inner.request_timeout
        ))
    }

    fn leads(&self) -> bool {
        self.inner.raft.metrics().borrow_watched().current_leader == Some(self.id())
    }
}
