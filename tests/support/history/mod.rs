//! Linearizability checking of key-value histories recorded by concurrent test clients.
//!
//! # What is recorded
//!
//! Each client operation is an [`Op`]: who issued it, when it was invoked and when it
//! completed (nanoseconds on one monotonic clock), what it asked for ([`OpKind`]: put,
//! get or delete of one key) and what came back ([`Outcome`]). A [`Recorder`] hands out
//! those timestamps: `invoke` is stamped before the request leaves and `complete` after
//! the answer arrives, so the real effect happened somewhere inside the interval.
//! Outcomes come in three kinds, and the checker gives each its honest meaning:
//!
//! - `Ok`: the operation took effect exactly once inside its interval (a get carries the
//!   value it read, `None` for an absent key).
//! - `Failed`: it definitely did not take effect (the server refused it before proposing
//!   it). Deciding that is the caller's job; when unsure, say `Unknown`.
//! - `Unknown`: a timeout, a dropped connection, a handle dropped without completing. A
//!   write may take effect at any moment after its invocation, even long after the
//!   client gave up (a proposal still in a Raft log), or never: it completes at
//!   +infinity and is optional. An unknown get constrains nothing and is dropped.
//!
//! # The model and the algorithm
//!
//! A key is a register holding `Option<value>`, `None` at the start: put sets it, delete
//! clears it, get must return it. Keys are independent registers, so the history is
//! split by key and each key is checked alone (linearizability is compositional); this
//! is what keeps the search small. A key's history is linearizable if its operations can
//! be put in one order that respects real time (an operation that completed before
//! another was invoked comes first) and in which every get returns the last write.
//!
//! The search is Wing & Gong's, with Lowe's improvements (as in Knossos and Porcupine):
//! depth-first, extending a prefix by one operation at a time. Only an operation invoked
//! no later than the earliest completion among the operations still outside the prefix
//! may go next; otherwise the operation that completed first would be ordered after one
//! that began after it ended. Every (set of ordered operations, register value) pair is
//! remembered, and a pair seen before is not explored again: two prefixes that ordered
//! the same operations and left the same value have the same futures. The search ends
//! when every required operation is ordered. A failure reports the longest prefix found,
//! the value it leaves, and each operation that could have gone next with the reason it
//! could not: usually the stale or time-travelling read itself. A read of a value no
//! write to that key carried is reported at once, as [`Violation::NeverWritten`].
//!
//! Each of these cuts the search without losing a linearization (each is an exchange
//! argument; a test compares the checker with an exhaustive search on small histories):
//!
//! - A read of the value the register holds, if it may go next, is the only choice
//!   tried: any order that puts it later stays valid with it moved forward.
//! - Unknown writes are optional. One whose value no get returned is dropped at once;
//!   one whose value was read is only ordered right before a read (followed by a write
//!   it would change nothing), and once an operation invoked after the last read of its
//!   value is ordered, it is retired. Unknown writes of one value are interchangeable
//!   once they may go, so the memo counts how many of each value were used rather than
//!   which, only the latest eligible is tried, and a state that used more of every value
//!   than one already explored is skipped. Required operations are tried first.
//!
//! [`final_state_check`] is a cheaper, weaker test for the end of a run: the value read
//! back for each key must be that of a write that could have been last.
//!
//! # Caveats
//!
//! - The search is exponential in the number of operations that overlap in time on one
//!   key. Measured in a debug build, with 10% deletes and 10% unknown outcomes: eight
//!   clients on one key, 800 operations, take 10 ms to accept and up to 0.2 s to reject;
//!   at 2,800 operations on one key some rejections exceed the default
//!   [`CheckOptions::max_states_per_key`] (after about 2 s). Many clients per key, or
//!   many unknown deletes (every delete writes the same value, `None`, so reads cannot
//!   tell them apart), are what costs: write unique values, spread clients over keys.
//!   Past the budget, [`Violation::SearchBudgetExceeded`] says so, with the longest
//!   prefix found (usually showing the culprit), instead of hanging.
//! - Only single-key put/get/delete. Transactions, ranges, revisions, leases and watches
//!   are not modelled. A range read can be recorded as one get per key, which checks
//!   each key's value but not that the range was one atomic snapshot.
//! - `Failed` is trusted to mean "not applied"; a caller that marks a write failed when
//!   it may have been applied (say, after a leader change) makes correct histories fail.
//! - Timestamps are trusted: all clients must share the recorder's clock (one process).
//! - The final-state check does not order the final read against the other operations;
//!   for the full guarantee, record the final reads as gets in the history and [`check`].

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

mod record;
mod register;
mod search;

pub use record::{Op, OpKind, Outcome, Recorder};
use register::*;
use search::*;

/// Completion time of an operation that may take effect at any time: +infinity.
const NEVER: u64 = u64::MAX;
/// How many operations an explanation lists in each section.
const SHOW: usize = 6;

/// Why a history is not linearizable, naming the key and the operations involved.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// No order of this key's operations explains what the gets returned.
    NotLinearizable { key: Vec<u8>, explanation: String },
    /// A get returned a value that no (not failed) write to this key carried.
    NeverWritten { key: Vec<u8>, explanation: String },
    /// The search gave up after exploring `explored` states of a key with `ops` operations.
    /// The explanation is as for `NotLinearizable`, for the longest prefix found so far:
    /// often the culprit, but not proof of a violation.
    SearchBudgetExceeded {
        key: Vec<u8>,
        ops: usize,
        explored: usize,
        explanation: String,
    },
    /// The value read at the end cannot be the last write's (a lost or invented write).
    FinalState { key: Vec<u8>, explanation: String },
}

impl Violation {
    pub fn key(&self) -> &[u8] {
        match self {
            Violation::NotLinearizable { key, .. }
            | Violation::NeverWritten { key, .. }
            | Violation::SearchBudgetExceeded { key, .. }
            | Violation::FinalState { key, .. } => key,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = show(Some(self.key()));
        match self {
            Violation::NotLinearizable { explanation, .. } => {
                write!(f, "key {key} is not linearizable: {explanation}")
            }
            Violation::NeverWritten { explanation, .. } => {
                write!(f, "key {key}: read of a value never written: {explanation}")
            }
            Violation::SearchBudgetExceeded {
                ops,
                explored,
                explanation,
                ..
            } => write!(
                f,
                "key {key}: search budget exceeded after {explored} states over {ops} operations \
                 (too much overlap on one key: raise CheckOptions::max_states_per_key, or use \
                 fewer clients per key and unique values); so far, {explanation}"
            ),
            Violation::FinalState { explanation, .. } => {
                write!(f, "key {key}: final state wrong: {explanation}")
            }
        }
    }
}

impl std::error::Error for Violation {}

/// Limits of [`check_with`].
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Distinct (ordered set, value) states remembered per key before giving up; each
    /// costs about 100 bytes for a key with a few hundred operations.
    pub max_states_per_key: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            max_states_per_key: 200_000,
        }
    }
}

/// What a successful check looked at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub keys: usize,
    /// Operations the search had to order (including kept unknown writes).
    pub ops_checked: usize,
    /// Failed operations, unknown gets, and unknown writes nobody read.
    pub ops_dropped: usize,
    /// Unknown writes kept as optional because some get returned their value.
    pub unknown_writes_kept: usize,
    pub states_explored: usize,
    /// The most states one key needed: compare with the budget.
    pub largest_search: usize,
}

/// [`check_with`] the default budget.
pub fn check(history: &[Op]) -> Result<Stats, Violation> {
    check_with(history, &CheckOptions::default())
}

/// Check that the history is linearizable for a map of independent registers; the first
/// key (in byte order) that is not is reported.
pub fn check_with(history: &[Op], options: &CheckOptions) -> Result<Stats, Violation> {
    let mut by_key: BTreeMap<&[u8], Vec<usize>> = BTreeMap::new();
    for (index, op) in history.iter().enumerate() {
        by_key.entry(op.kind.key()).or_default().push(index);
    }
    let mut stats = Stats {
        keys: by_key.len(),
        ..Stats::default()
    };
    for (key, indices) in by_key {
        let register = Register::new(history, key, &indices, &mut stats)?;
        let explored = register.search(options.max_states_per_key)?;
        stats.states_explored += explored;
        stats.largest_search = stats.largest_search.max(explored);
    }
    Ok(stats)
}

/// Check the values read back at the end of a run (after every client stopped) against
/// the writes of the history: each must be the value of a write that could have been
/// last, or `None` if no write was acknowledged. Keys missing from `final_reads` are not
/// checked. Weaker than recording the final reads as gets and calling [`check`].
pub fn final_state_check(
    history: &[Op],
    final_reads: &BTreeMap<Vec<u8>, Option<Vec<u8>>>,
) -> Result<(), Violation> {
    for (key, read) in final_reads {
        let writes: Vec<(usize, &Op)> = history
            .iter()
            .enumerate()
            .filter(|(_, op)| op.kind.key() == key.as_slice() && op.kind.written().is_some())
            .filter(|(_, op)| op.outcome != Outcome::Failed)
            .collect();
        let acked = |op: &Op| matches!(op.outcome, Outcome::Ok(_));
        // A write could be last unless an acknowledged write was invoked after it
        // completed; an unknown write may take effect at any time, so it always could.
        let latest_acked_invoke = writes
            .iter()
            .filter(|(_, op)| acked(op))
            .map(|(_, op)| op.invoke)
            .max();
        let mut could_be_last: Vec<&(usize, &Op)> = writes
            .iter()
            .filter(|(_, op)| {
                !acked(op) || latest_acked_invoke.is_none_or(|latest| op.complete.unwrap_or(NEVER) >= latest)
            })
            .collect();
        could_be_last.sort_by_key(|(_, op)| !acked(op)); // acknowledged ones first
        let read = read.as_deref();
        let initial_possible = latest_acked_invoke.is_none() && read.is_none();
        if initial_possible
            || could_be_last
                .iter()
                .any(|(_, op)| op.kind.written() == Some(read))
        {
            continue;
        }
        let explanation = if read.is_some() && !writes.iter().any(|(_, op)| op.kind.written() == Some(read)) {
            format!(
                "the final read returned {}, which no write to this key carried",
                show(read)
            )
        } else {
            let mut out = format!(
                "the final read returned {}, but an acknowledged write was lost: the writes that could be last are",
                show(read)
            );
            for (index, _) in could_be_last.iter().take(SHOW) {
                out += &format!("\n  {}", describe(history, *index));
            }
            if could_be_last.len() > SHOW {
                out += &format!("\n  ... and {} more", could_be_last.len() - SHOW);
            }
            out
        };
        return Err(Violation::FinalState {
            key: key.clone(),
            explanation,
        });
    }
    Ok(())
}

/// Record a visit; false if an earlier visit with the same key used no more optional
/// writes of any class (the earlier one could do everything this one can).
fn first_visit(memo: &mut Memo, key: (usize, u32, Box<[u64]>), used: &[u32]) -> bool {
    let subset = |a: &[u32], b: &[u32]| a.iter().zip(b).all(|(a, b)| a <= b);
    let earlier = memo.entry(key).or_default();
    if earlier.iter().any(|e| subset(e, used)) {
        return false;
    }
    earlier.retain(|e| !subset(used, e));
    earlier.push(used.into());
    true
}

fn is_set(bits: &[u64], i: usize) -> bool {
    bits[i / 64] & (1 << (i % 64)) != 0
}

fn flip(bits: &mut [u64], i: usize) {
    bits[i / 64] ^= 1 << (i % 64);
}

/// `#12 client 3 put "k" = "v" [1.2ms, 1.5ms] ok`
fn describe(history: &[Op], index: usize) -> String {
    let op = &history[index];
    let what = match &op.kind {
        OpKind::Put { key, value } => format!("put {} = {}", show(Some(key)), show(Some(value))),
        OpKind::Get { key } => format!("get {}", show(Some(key))),
        OpKind::Delete { key } => format!("delete {}", show(Some(key))),
    };
    let result = match (&op.kind, &op.outcome) {
        (OpKind::Get { .. }, Outcome::Ok(seen)) => format!("-> {}", show(seen.as_deref())),
        (_, Outcome::Ok(_)) => "ok".to_string(),
        (_, Outcome::Failed) => "failed".to_string(),
        (_, Outcome::Unknown) => "unknown".to_string(),
    };
    let complete = op.complete.map_or_else(|| "?".to_string(), at);
    format!(
        "#{index} client {} {what} [{}, {complete}] {result}",
        op.client,
        at(op.invoke)
    )
}

fn show(value: Option<&[u8]>) -> String {
    let Some(bytes) = value else {
        return "none".to_string();
    };
    let text = String::from_utf8_lossy(bytes);
    if text.chars().count() > 40 {
        format!("{:?}...", text.chars().take(40).collect::<String>())
    } else {
        format!("{text:?}")
    }
}

fn at(nanos: u64) -> String {
    format!("{:?}", Duration::from_nanos(nanos))
}
