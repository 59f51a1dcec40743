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

/// Completion time of an operation that may take effect at any time: +infinity.
const NEVER: u64 = u64::MAX;
/// How many operations an explanation lists in each section.
const SHOW: usize = 6;

/// What a client asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    Put { key: Vec<u8>, value: Vec<u8> },
    Get { key: Vec<u8> },
    Delete { key: Vec<u8> },
}

impl OpKind {
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        OpKind::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    pub fn get(key: impl Into<Vec<u8>>) -> Self {
        OpKind::Get { key: key.into() }
    }

    pub fn delete(key: impl Into<Vec<u8>>) -> Self {
        OpKind::Delete { key: key.into() }
    }

    pub fn key(&self) -> &[u8] {
        match self {
            OpKind::Put { key, .. } | OpKind::Get { key } | OpKind::Delete { key } => key,
        }
    }

    /// For a write, the register value it leaves (`Some(None)` for a delete).
    pub fn written(&self) -> Option<Option<&[u8]>> {
        match self {
            OpKind::Put { value, .. } => Some(Some(value)),
            OpKind::Delete { .. } => Some(None),
            OpKind::Get { .. } => None,
        }
    }
}

/// What came back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Took effect once. A get carries what it read (`None`: absent); a write, `None`.
    Ok(Option<Vec<u8>>),
    /// Definitely did not take effect.
    Failed,
    /// May or may not have taken effect (timeout, lost connection, never completed).
    Unknown,
}

impl Outcome {
    /// A get that found `value`.
    pub fn found(value: impl Into<Vec<u8>>) -> Self {
        Outcome::Ok(Some(value.into()))
    }
}

/// One operation of a history; its position in the history is its name (`#12`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    pub client: u64,
    /// Nanoseconds since the recorder started, stamped before the request was sent.
    pub invoke: u64,
    /// Stamped after the answer arrived; `None` if it never did.
    pub complete: Option<u64>,
    pub kind: OpKind,
    pub outcome: Outcome,
}

/// Records a history from many threads or tasks: `invoke` before sending a request,
/// `complete` with what came back. Share it in an `Arc`.
pub struct Recorder {
    start: Instant,
    /// A std mutex: held only to push or update one entry, never across `.await`, so it
    /// is safe and cheap to take from tokio tasks. Timestamps are taken under it, which
    /// only widens intervals (safe) and keeps `invoke` times in history order.
    ops: Mutex<Vec<Op>>,
}

/// An operation in flight. Dropping it without [`Recorder::complete`] leaves the
/// operation's outcome unknown, which is right for a cancelled or timed-out request.
#[must_use = "complete it, or drop it to leave the outcome unknown"]
pub struct Pending {
    index: usize,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Recorder {
            start: Instant::now(),
            ops: Mutex::new(Vec::new()),
        }
    }

    pub fn invoke(&self, client: u64, kind: OpKind) -> Pending {
        let mut ops = self.lock();
        let invoke = self.now();
        ops.push(Op {
            client,
            invoke,
            complete: None,
            kind,
            outcome: Outcome::Unknown,
        });
        Pending { index: ops.len() - 1 }
    }

    pub fn complete(&self, pending: Pending, outcome: Outcome) {
        let mut ops = self.lock();
        let complete = self.now();
        if let Some(op) = ops.get_mut(pending.index) {
            op.complete = Some(complete);
            op.outcome = outcome;
        }
    }

    /// A copy of everything recorded so far; operations still in flight are unknown.
    pub fn history(&self) -> Vec<Op> {
        self.lock().clone()
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(NEVER - 1)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Op>> {
        // A client thread that panicked mid-push left no torn state behind: a Vec push
        // or a field update either happened or did not.
        self.ops.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

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

/// One key's operations, ready to search: values interned as small state numbers.
struct Register<'h> {
    history: &'h [Op],
    key: &'h [u8],
    /// Sorted by invocation.
    entries: Vec<Entry>,
    /// State number -> register value; 0 is `None`.
    values: Vec<Option<&'h [u8]>>,
    /// The optional writes' entries, by invocation, and as a bit set.
    optional: Vec<usize>,
    optional_bits: Vec<u64>,
    /// How many distinct values the optional writes carry.
    classes: usize,
}

struct Entry {
    index: usize,
    invoke: u64,
    complete: u64,
    action: Action,
    /// Set for an unknown write, which the search may leave out.
    optional: Option<Optional>,
}

#[derive(Clone, Copy)]
struct Optional {
    /// Its value's number among the values optional writes carry.
    class: usize,
    /// The last completion among the gets that read this write's value: ordered after
    /// that, it would be overwritten unobserved, the same as never happening.
    deadline: u64,
    /// The next optional write of the same value, by invocation.
    twin: Option<usize>,
}

#[derive(Clone, Copy)]
enum Action {
    Write(u32),
    Read(u32),
}

impl Action {
    /// The state after this action from `state`, or `None` if it cannot happen there.
    fn apply(self, state: u32) -> Option<u32> {
        match self {
            Action::Write(to) => Some(to),
            Action::Read(seen) => (seen == state).then_some(state),
        }
    }
}

/// The operations ordered so far, kept three ways.
#[derive(Clone)]
struct Progress {
    /// Every entry ordered or retired: what may still go next.
    ordered: Vec<u64>,
    /// Required entries ordered: with the state, the memo's key.
    required: Vec<u64>,
    /// How many optional writes of each class were ordered or retired.
    used: Vec<u32>,
}

/// Required sets and states already explored, with how many optional writes of each
/// class they had used. Optional writes of one value are interchangeable once they may
/// go (they share a deadline, and the horizon never moves back), so only their number
/// matters; and a state that used at least as many of every class as one already
/// explored has no future the other lacked (an unused write can still be left out), so
/// it is skipped. That keeps unknown writes from multiplying the search.
type Memo = HashMap<(usize, u32, Box<[u64]>), Vec<Box<[u32]>>>;

impl<'h> Register<'h> {
    fn new(
        history: &'h [Op],
        key: &'h [u8],
        indices: &[usize],
        stats: &mut Stats,
    ) -> Result<Self, Violation> {
        let mut values = vec![None];
        let mut numbers: HashMap<Option<&[u8]>, u32> = HashMap::from([(None, 0)]);
        for op in indices.iter().map(|&i| &history[i]) {
            if let Some(value) = op.kind.written()
                && op.outcome != Outcome::Failed
            {
                numbers.entry(value).or_insert_with(|| {
                    values.push(value);
                    u32::try_from(values.len() - 1).unwrap_or(u32::MAX)
                });
            }
        }
        let mut entries = Vec::new();
        // State number -> the last completion of a get that read it.
        let mut last_read: HashMap<u32, u64> = HashMap::new();
        for &index in indices {
            let op = &history[index];
            let (OpKind::Get { .. }, Outcome::Ok(seen)) = (&op.kind, &op.outcome) else {
                continue;
            };
            let Some(&state) = numbers.get(&seen.as_deref()) else {
                let explanation = format!(
                    "{} (failed writes count as never written)",
                    describe(history, index)
                );
                return Err(Violation::NeverWritten {
                    key: key.to_vec(),
                    explanation,
                });
            };
            let complete = op.complete.unwrap_or(NEVER).max(op.invoke);
            let last = last_read.entry(state).or_default();
            *last = complete.max(*last);
            entries.push(Entry {
                index,
                invoke: op.invoke,
                complete,
                action: Action::Read(state),
                optional: None,
            });
        }
        for &index in indices {
            let op = &history[index];
            // Failed writes were not numbered (unless another write carries their value).
            let Some(&state) = op.kind.written().and_then(|value| numbers.get(&value)) else {
                continue;
            };
            let (complete, optional) = match (&op.outcome, last_read.get(&state)) {
                (Outcome::Ok(_), _) => (op.complete.unwrap_or(NEVER).max(op.invoke), None),
                (Outcome::Unknown, Some(&deadline)) => (
                    NEVER,
                    Some(Optional {
                        class: 0,
                        deadline,
                        twin: None,
                    }),
                ),
                // Failed, or unknown and never read: leaving it out explains as much.
                _ => continue,
            };
            entries.push(Entry {
                index,
                invoke: op.invoke,
                complete,
                action: Action::Write(state),
                optional,
            });
        }
        entries.sort_by_key(|e| (e.invoke, e.complete));
        let optional: Vec<usize> = (0..entries.len())
            .filter(|&i| entries[i].optional.is_some())
            .collect();
        let mut classes: HashMap<u32, usize> = HashMap::new();
        let mut last_of_value: HashMap<u32, usize> = HashMap::new();
        for &i in optional.iter().rev() {
            let Action::Write(value) = entries[i].action else {
                continue;
            };
            let next_class = classes.len();
            let class = *classes.entry(value).or_insert(next_class);
            let twin = last_of_value.insert(value, i);
            entries[i].optional = entries[i].optional.map(|o| Optional { class, twin, ..o });
        }
        let mut optional_bits = vec![0; entries.len().div_ceil(64)];
        optional.iter().for_each(|&i| flip(&mut optional_bits, i));
        stats.ops_checked += entries.len();
        stats.ops_dropped += indices.len() - entries.len();
        stats.unknown_writes_kept += optional.len();
        Ok(Register {
            history,
            key,
            entries,
            values,
            optional,
            optional_bits,
            classes: classes.len(),
        })
    }

    /// Depth-first search for a linearization; returns the number of states explored.
    fn search(&self, budget: usize) -> Result<usize, Violation> {
        let mut search = Search {
            register: self,
            progress: self.start(),
            memo: Memo::new(),
            explored: 0,
            budget,
            prefix: Vec::new(),
            deepest: Vec::new(),
            state: 0,
            required_done: 0,
        };
        search.run()?;
        Ok(search.explored)
    }

    /// Whether a later optional write of the same value may go next instead: of two such,
    /// ordering the later one leaves the more flexible one unused, so only it is tried.
    fn twin_may_go(&self, optional: Optional, ordered: &[u64], horizon: u64) -> bool {
        let mut twin = optional.twin;
        while let Some(j) = twin
            && self.entries[j].invoke <= horizon
        {
            if !is_set(ordered, j) {
                return true;
            }
            twin = self.entries[j].optional.and_then(|o| o.twin);
        }
        false
    }

    fn start(&self) -> Progress {
        let words = self.entries.len().div_ceil(64);
        Progress {
            ordered: vec![0; words],
            required: vec![0; words],
            used: vec![0; self.classes],
        }
    }

    /// A canonical, compact name for a set of required entries and a register value: the
    /// first entry neither ordered nor optional, then only the words from it to the last
    /// ordered one (the ordered set is almost always a prefix plus a few in flight).
    fn memo_key(&self, progress: &Progress, state: u32) -> (usize, u32, Box<[u64]>) {
        let low = self.first_required_unordered(progress);
        let end = progress
            .required
            .iter()
            .rposition(|&word| word != 0)
            .map_or(0, |last| last + 1);
        let words = (low / 64).min(end)..end;
        let bits = words
            .map(|w| progress.required[w] | self.optional_bits[w])
            .collect();
        (low, state, bits)
    }

    /// Where scans start: optional writes left unordered must not hold them back.
    fn first_required_unordered(&self, progress: &Progress) -> usize {
        let words = progress
            .required
            .iter()
            .zip(&self.optional_bits)
            .map(|(r, o)| r | o);
        let full = words.clone().take_while(|&word| word == u64::MAX).count();
        full * 64
            + words
                .clone()
                .nth(full)
                .map_or(0, |word| word.trailing_ones() as usize)
    }

    fn toggle(&self, progress: &mut Progress, i: usize) {
        flip(&mut progress.ordered, i);
        match self.entries[i].optional {
            Some(optional) if is_set(&progress.ordered, i) => progress.used[optional.class] += 1,
            Some(optional) => progress.used[optional.class] -= 1,
            None => flip(&mut progress.required, i),
        }
    }

    /// Once required entry `i` is ordered, optional writes not yet ordered whose deadline
    /// is before its invocation can no longer matter: mark them used (so that prefixes
    /// with and without them meet in the memo) and return them, to undo on backtracking.
    /// Only required entries retire, so that what is retired depends on `required` alone.
    fn retire(&self, progress: &mut Progress, i: usize) -> Vec<usize> {
        if self.entries[i].optional.is_some() {
            return Vec::new();
        }
        let invoked = self.entries[i].invoke;
        let expired = |&&j: &&usize| {
            !is_set(&progress.ordered, j) && self.entries[j].optional.is_some_and(|o| o.deadline < invoked)
        };
        let retired: Vec<usize> = self.optional.iter().filter(expired).copied().collect();
        retired.iter().for_each(|&j| self.toggle(progress, j));
        retired
    }

    /// The earliest completion among operations not yet ordered (`low` is the first):
    /// nothing invoked after it may be ordered before that operation. Entries are sorted
    /// by invocation and complete after they are invoked, so the scan stops at the first
    /// one invoked after the earliest completion seen so far.
    fn horizon(&self, ordered: &[u64], low: usize) -> u64 {
        let mut horizon = NEVER;
        for (i, entry) in self.entries.iter().enumerate().skip(low) {
            if entry.invoke > horizon {
                break;
            }
            if !is_set(ordered, i) {
                horizon = horizon.min(entry.complete);
            }
        }
        horizon
    }

    fn explain(&self, deepest: &[usize]) -> String {
        let mut progress = self.start();
        let mut state = 0;
        for &i in deepest {
            self.toggle(&mut progress, i);
            self.retire(&mut progress, i);
            state = self.entries[i].action.apply(state).unwrap_or(state);
        }
        let ordered = progress.ordered.clone();
        let mut out = format!(
            "of its {} operations, the longest prefix that fits a register orders {}",
            self.entries.len(),
            deepest.len()
        );
        let shown = deepest.len().saturating_sub(SHOW);
        if shown > 0 {
            out += &format!("\n  ... {shown} earlier");
        }
        for &i in &deepest[shown..] {
            out += &format!("\n  {}", describe(self.history, self.entries[i].index));
        }
        let holds = show(self.values[state as usize]);
        out += &format!("\nthe register then holds {holds}, and no operation that may go next fits:");
        let horizon = self.horizon(&ordered, self.first_required_unordered(&progress));
        // The operations that must happen first, then the optional ones (unknown writes,
        // which may never have happened and so rarely explain anything).
        let next = self
            .entries
            .iter()
            .enumerate()
            .filter(|&(i, e)| !is_set(&ordered, i) && e.invoke <= horizon);
        let (required, optional): (Vec<_>, Vec<_>) = next.partition(|(_, e)| e.optional.is_none());
        for (_, entry) in required.into_iter().chain(optional).take(SHOW) {
            let why = match entry.action {
                Action::Read(seen) if seen != state => {
                    format!("it read {}, not {holds}", show(self.values[seen as usize]))
                }
                _ => "it fits here, but every order continuing from it fails later".to_string(),
            };
            out += &format!("\n  {} <- {why}", describe(self.history, entry.index));
        }
        let first = self
            .entries
            .iter()
            .enumerate()
            .find(|&(i, e)| !is_set(&ordered, i) && e.complete == horizon);
        if let Some((_, first)) = first.filter(|_| horizon != NEVER) {
            out += &format!(
                "\n(#{} completed at {}: everything invoked after that must be ordered after it)",
                first.index,
                at(horizon)
            );
        }
        out
    }
}

/// One key's depth-first search: the current prefix, and the states already explored.
struct Search<'r, 'h> {
    register: &'r Register<'h>,
    progress: Progress,
    memo: Memo,
    explored: usize,
    budget: usize,
    prefix: Vec<Frame>,
    /// The longest prefix that got stuck, for the explanation.
    deepest: Vec<usize>,
    /// The register's value after the prefix.
    state: u32,
    required_done: usize,
}

/// One operation of the prefix.
struct Frame {
    entry: usize,
    /// Where the scan for the next candidate resumes if this choice fails.
    resume: usize,
    state_before: u32,
    /// Optional writes this choice retired, to undo with it.
    retired: Vec<usize>,
}

/// A scan position past every candidate: nothing left to try.
const DONE: usize = usize::MAX;

impl Search<'_, '_> {
    fn run(&mut self) -> Result<(), Violation> {
        let register = self.register;
        let (n, required) = (
            register.entries.len(),
            register.entries.len() - register.optional.len(),
        );
        let mut cursor = 0;
        while self.required_done < required {
            let low = register.first_required_unordered(&self.progress);
            let horizon = register.horizon(&self.progress.ordered, low);
            let mut advanced = false;
            // A read of the value the register holds can go first without loss: any order
            // that puts it later stays valid with it moved here (it changes nothing, and
            // nothing must precede it, or it would not be a candidate). So it is the only
            // choice tried.
            if cursor == 0
                && let Some(i) = self.matching_read(low, horizon)
            {
                advanced = self.try_order(i, DONE)?;
                cursor = DONE;
            }
            // Otherwise candidates are scanned in two passes, required entries by
            // invocation, then optional ones: trying states that use fewer optional writes
            // first lets the memo skip those that use more.
            let read_next = self
                .prefix
                .last()
                .is_some_and(|f| register.entries[f.entry].optional.is_some());
            let mut position = cursor.max(low);
            while !advanced && position < n + register.optional.len() {
                let required_pass = position < n;
                let i = if required_pass {
                    position
                } else {
                    register.optional[position - n]
                };
                let entry = &register.entries[i];
                if entry.invoke > horizon {
                    // Sorted by invocation: nothing later in this pass may go next either.
                    position = if required_pass { n } else { DONE };
                    continue;
                }
                position += 1;
                let skip = is_set(&self.progress.ordered, i)
                    || required_pass == entry.optional.is_some()
                    // An optional write is only worth ordering right before a read of its
                    // value (followed by a write, it could as well never have happened),
                    // and not over the same value.
                    || (read_next && matches!(entry.action, Action::Write(_)))
                    || (entry.optional.is_some() && matches!(entry.action, Action::Write(v) if v == self.state))
                    || entry.optional.is_some_and(|o| register.twin_may_go(o, &self.progress.ordered, horizon));
                if !skip {
                    advanced = self.try_order(i, position)?;
                }
            }
            if advanced {
                cursor = 0;
                continue;
            }
            if self.prefix.len() > self.deepest.len() || self.deepest.is_empty() {
                self.deepest = self.prefix.iter().map(|f| f.entry).collect();
            }
            let Some(frame) = self.prefix.pop() else {
                let explanation = register.explain(&self.deepest);
                return Err(Violation::NotLinearizable {
                    key: register.key.to_vec(),
                    explanation,
                });
            };
            frame
                .retired
                .iter()
                .chain([&frame.entry])
                .for_each(|&j| register.toggle(&mut self.progress, j));
            self.state = frame.state_before;
            self.required_done -= usize::from(register.entries[frame.entry].optional.is_none());
            cursor = frame.resume;
        }
        Ok(())
    }

    /// An unordered required read of the register's value that may go next.
    fn matching_read(&self, low: usize, horizon: u64) -> Option<usize> {
        let entries = self.register.entries.iter().enumerate().skip(low);
        let mut candidates = entries.take_while(|(_, e)| e.invoke <= horizon);
        candidates
            .find(|&(i, e)| {
                matches!(e.action, Action::Read(v) if v == self.state) && !is_set(&self.progress.ordered, i)
            })
            .map(|(i, _)| i)
    }

    /// Extend the prefix with entry `i` if it fits and leads to a state not explored yet.
    fn try_order(&mut self, i: usize, resume: usize) -> Result<bool, Violation> {
        let register = self.register;
        let Some(after) = register.entries[i].action.apply(self.state) else {
            return Ok(false);
        };
        register.toggle(&mut self.progress, i);
        let retired = register.retire(&mut self.progress, i);
        if !first_visit(
            &mut self.memo,
            register.memo_key(&self.progress, after),
            &self.progress.used,
        ) {
            retired
                .iter()
                .chain([&i])
                .for_each(|&j| register.toggle(&mut self.progress, j));
            return Ok(false);
        }
        self.explored += 1;
        if self.explored > self.budget {
            let (key, ops, explored) = (register.key.to_vec(), register.entries.len(), self.explored);
            let explanation = register.explain(&self.deepest);
            return Err(Violation::SearchBudgetExceeded {
                key,
                ops,
                explored,
                explanation,
            });
        }
        self.prefix.push(Frame {
            entry: i,
            resume,
            state_before: self.state,
            retired,
        });
        self.state = after;
        self.required_done += usize::from(register.entries[i].optional.is_none());
        Ok(true)
    }
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
