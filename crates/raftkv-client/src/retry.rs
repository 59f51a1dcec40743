//! When a failed attempt may be retried, and how long to wait first. Pure functions, no
//! I/O: [`crate::client`] runs the loop, this module makes every decision in it.
//!
//! ## What one failed attempt tells us
//! [`classify_status`] reads a `tonic::Status` as one of three [`Failure`]s:
//!
//! - [`Failure::NotSent`]: the connection could not be established, so the request never
//!   left this process. tonic reports this as `Unavailable` with a `tonic::ConnectError`
//!   in the status's source chain (connection refused, connect timeout, DNS failure).
//! - [`Failure::Answered`]: a server sent this status (it has no local source), read back
//!   as a [`raftkv_core::Error`] with `raftkv_proto::status::from_status`.
//! - [`Failure::Lost`]: the request may have reached a server but no answer came back: a
//!   reset or closed connection after the request was written, an HTTP/2 error, or the
//!   client's own per-attempt timer.
//!
//! ## The policy
//! - **Request errors** (`Error::Request`: empty key, compacted revision, member not
//!   found, learner not ready, not supported, ...) are the request's fault: returned at
//!   once, never retried.
//! - **"database space exceeded"** (`Error::NoSpace`: the member's NOSPACE alarm is
//!   raised) is a refusal before proposing, so nothing was applied; it is returned at once
//!   and not retried, because only an operator disarming the alarm ends it.
//! - **Reads** (Range, and a Txn with no Put/DeleteRange in any branch, nested included)
//!   change nothing, so they are retried on anything transient: a connect failure, a
//!   lost attempt, `Unavailable`, `DeadlineExceeded`, not-leader / no-leader, "request
//!   timed out", "server stopped".
//! - **Writes** (Put, DeleteRange, a Txn with a write anywhere, Compact) are retried only
//!   when the failure proves the request was not applied: the connection could not be
//!   established ([`Failure::NotSent`]), the server refused it because it is not the
//!   leader or has none ("not leader", "no leader": refused before proposing), or it was
//!   shed before proposing ("too many requests"). Every other failure after the request
//!   was sent — a lost attempt, `Unknown`, `DeadlineExceeded`, "request timed out" (the
//!   entry was proposed and may still commit), "server stopped" (the node stops while
//!   waiting on a proposal), a storage or internal error — ends the call with
//!   [`ClientError::OutcomeUnknown`]. The client never retries a write blindly.
//! - **Cluster and Maintenance calls** follow the same two classes. Reads: MemberList,
//!   Status, Alarm GET, HashKV, and Snapshot (which is retried only until its first
//!   message arrives: after that, bytes are in the caller's writer). Writes: MemberAdd,
//!   MemberRemove, MemberUpdate, MemberPromote, Alarm ACTIVATE / DEACTIVATE, Defragment,
//!   MoveLeader.
//! - A not-leader answer that names the leader's URL is followed at once (the URL joins
//!   the endpoint set if it is new); every other retry moves to the next endpoint and
//!   waits first.
//!
//! ## Waiting
//! [`Backoff`] is exponential backoff with full jitter: before retry `n` the client waits
//! a uniformly random time in `[0, min(backoff_max, backoff_initial * 2^n)]`. No wait
//! runs past the call's deadline: [`wait_within_deadline`] shortens a wait so at least
//! [`MIN_ATTEMPT_TIME`] is left for the next attempt, and gives up (the call returns
//! [`ClientError::DeadlineExceeded`]) when not even that is left. The random numbers come
//! from a xorshift generator seeded from the clock, a per-process counter and an address:
//! jitter needs spread, not cryptographic quality.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use raftkv_core::Error;
use raftkv_core::kv::{RequestOp, TxnRequest};
use tonic::{Code, Status};

use crate::error::ClientError;

/// An attempt is not started with less time than this before the deadline: it could not
/// finish, and a write cut short by the client's own timer ends as "outcome unknown".
pub(crate) const MIN_ATTEMPT_TIME: Duration = Duration::from_millis(10);

/// etcd's "too many requests": refused before proposing (the apply lags the commit).
const TOO_MANY_REQUESTS: &str = "etcdserver: too many requests";

/// Whether a request may change the store; decides how failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mutability {
    /// Changes nothing: safe to retry on any transient failure.
    Read,
    /// May change the store: retried only on proof it was not applied.
    Write,
}

/// Whether `txn` only reads: no Put or DeleteRange in either branch, at any depth.
pub(crate) fn txn_mutability(txn: &TxnRequest) -> Mutability {
    fn writes(ops: &[RequestOp]) -> bool {
        ops.iter().any(|op| match op {
            RequestOp::Range(_) => false,
            RequestOp::Put(_) | RequestOp::DeleteRange(_) => true,
            RequestOp::Txn(t) => writes(&t.success) || writes(&t.failure),
        })
    }
    if writes(&txn.success) || writes(&txn.failure) {
        Mutability::Write
    } else {
        Mutability::Read
    }
}

/// What one failed attempt tells us about the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The connection could not be established; the request never left.
    NotSent(String),
    /// A server answered with this status.
    Answered {
        /// The status code as sent.
        code: Code,
        /// The status read as raftkv's error.
        error: Error,
    },
    /// The request may have reached a server; no answer came back.
    Lost(String),
}

/// Read a failed attempt's status.
pub(crate) fn classify_status(status: &Status) -> Failure {
    if never_sent(status) {
        return Failure::NotSent(format!("connect failed: {}", describe(status)));
    }
    if std::error::Error::source(status).is_some() {
        // Made on this side from a transport error: the server never answered.
        return Failure::Lost(format!("{:?}: {}", status.code(), describe(status)));
    }
    Failure::Answered {
        code: status.code(),
        error: raftkv_proto::status::from_status(status),
    }
}

/// The status's message and, when it has a local source, the innermost cause (the
/// message alone is often just "tcp connect error" or "transport error").
fn describe(status: &Status) -> String {
    let mut cause = None;
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        cause = Some(e);
        source = e.source();
    }
    match cause.map(ToString::to_string) {
        Some(cause) if !status.message().contains(&cause) => format!("{}: {cause}", status.message()),
        _ => status.message().to_string(),
    }
}

/// Whether `status` says the connection could not be established.
fn never_sent(status: &Status) -> bool {
    if status.code() != Code::Unavailable {
        return false;
    }
    let mut source = std::error::Error::source(status);
    let has_source = source.is_some();
    while let Some(e) = source {
        if e.is::<tonic::ConnectError>() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        source = e.source();
    }
    // Fallback for a transport that wraps the errors differently: its texts.
    let message = status.message();
    has_source
        && [
            "tcp connect error",
            "Connection refused",
            "error trying to connect",
        ]
        .iter()
        .any(|t| message.contains(t))
}

/// What the retry loop does after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Stop and return this error.
    Fail(ClientError),
    /// The server is not the leader: go to the leader at one of `urls` now (when it names
    /// none, behave as [`Decision::TryNext`]).
    FollowLeader {
        /// The leader's client URLs (possibly empty).
        urls: Vec<String>,
        /// What the server said, for the final error.
        reason: String,
    },
    /// Move to the next endpoint, wait, try again.
    TryNext {
        /// What the attempt failed with, for the final error.
        reason: String,
    },
}

/// Decide what to do after `failure` of a request with `mutability`.
pub(crate) fn decide(mutability: Mutability, failure: Failure) -> Decision {
    match failure {
        Failure::NotSent(reason) => Decision::TryNext { reason },
        Failure::Lost(reason) => match mutability {
            Mutability::Read => Decision::TryNext { reason },
            Mutability::Write => Decision::Fail(ClientError::OutcomeUnknown(reason)),
        },
        Failure::Answered { code, error } => decide_answer(mutability, code, error),
    }
}

fn decide_answer(mutability: Mutability, code: Code, error: Error) -> Decision {
    let reason = error.to_string();
    match error {
        Error::Request(_) => Decision::Fail(ClientError::Server(error)),
        Error::NotLeader {
            leader_client_urls, ..
        } => Decision::FollowLeader {
            urls: leader_client_urls,
            reason,
        },
        // Refused (before proposing, or when applied: nothing written), and it lasts
        // until an operator disarms the alarm.
        Error::NoSpace | Error::Corrupt => Decision::Fail(ClientError::Server(error)),
        // Refused before proposing (apply lags commit): safe to retry, reads and writes.
        Error::TooManyRequests { .. } => Decision::TryNext { reason },
        // The same, from a server whose status text `from_status` does not map.
        Error::Unknown(ref text) if text.ends_with(TOO_MANY_REQUESTS) => Decision::TryNext { reason },
        error => match mutability {
            Mutability::Read => {
                // `Cancelled` is what a tonic server answers when the deadline the call
                // carried (`grpc-timeout`) expires while it waits, e.g. for a read index
                // without a quorum: for a read, the same as our deadline passing.
                let transient = matches!(error, Error::Timeout(_) | Error::Shutdown(_))
                    || matches!(code, Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled);
                if transient {
                    Decision::TryNext { reason }
                } else {
                    Decision::Fail(ClientError::Server(error))
                }
            }
            Mutability::Write => Decision::Fail(ClientError::OutcomeUnknown(format!(
                "{code:?} after the request was sent: {reason}"
            ))),
        },
    }
}

/// Exponential backoff with full jitter.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    /// Retries waited for so far; the exponent.
    retries: u32,
    /// xorshift64 state; never zero.
    rng: u64,
}

impl Backoff {
    /// A backoff starting at `initial`, capped at `max`, seeded afresh.
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Self::with_seed(initial, max, fresh_seed())
    }

    /// A backoff with a given seed (tests).
    pub(crate) fn with_seed(initial: Duration, max: Duration, seed: u64) -> Self {
        Self {
            initial,
            max,
            retries: 0,
            rng: splitmix64(seed) | 1,
        }
    }

    /// The next wait: uniform in `[0, cap]` for the current exponent, which then grows.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let cap = backoff_cap(self.initial, self.max, self.retries);
        self.retries = self.retries.saturating_add(1);
        full_jitter(cap, self.next_random())
    }

    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

/// `min(max, initial * 2^retries)`, without overflow.
pub(crate) fn backoff_cap(initial: Duration, max: Duration, retries: u32) -> Duration {
    let factor = 1u32.checked_shl(retries.min(31)).unwrap_or(u32::MAX);
    initial.checked_mul(factor).unwrap_or(max).min(max)
}

/// A point of `[0, cap]` chosen by `random` (uniform when `random` is).
pub(crate) fn full_jitter(cap: Duration, random: u64) -> Duration {
    // Waits beyond u64::MAX nanoseconds (584 years) are not a concern; capping there
    // keeps the product within u128.
    let cap_nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
    let nanos = u128::from(cap_nanos) * u128::from(random) / u128::from(u64::MAX);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)).min(cap)
}

/// How long to actually wait for a `delay` when `remaining` is left before the
/// deadline: at most `remaining - MIN_ATTEMPT_TIME`, or `None` (give up) when less than
/// [`MIN_ATTEMPT_TIME`] would be left for the next attempt.
pub(crate) fn wait_within_deadline(delay: Duration, remaining: Duration) -> Option<Duration> {
    let usable = remaining.checked_sub(MIN_ATTEMPT_TIME)?;
    Some(delay.min(usable))
}

fn fresh_seed() -> u64 {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let clock = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let local = 0u8;
    let address = std::ptr::addr_of!(local) as usize as u64;
    clock ^ call.rotate_left(32) ^ address
}

fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests;
