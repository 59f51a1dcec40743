//! One key of a history, ready to search: its operations with values interned as small
//! state numbers, what may go next, and how a failure is explained.

use super::*;

/// One key's operations, ready to search: values interned as small state numbers.
pub(crate) struct Register<'h> {
    pub(crate) history: &'h [Op],
    pub(crate) key: &'h [u8],
    /// Sorted by invocation.
    pub(crate) entries: Vec<Entry>,
    /// State number -> register value; 0 is `None`.
    pub(crate) values: Vec<Option<&'h [u8]>>,
    /// The optional writes' entries, by invocation, and as a bit set.
    pub(crate) optional: Vec<usize>,
    pub(crate) optional_bits: Vec<u64>,
    /// How many distinct values the optional writes carry.
    pub(crate) classes: usize,
}

pub(crate) struct Entry {
    pub(crate) index: usize,
    pub(crate) invoke: u64,
    pub(crate) complete: u64,
    pub(crate) action: Action,
    /// Set for an unknown write, which the search may leave out.
    pub(crate) optional: Option<Optional>,
}

#[derive(Clone, Copy)]
pub(crate) struct Optional {
    /// Its value's number among the values optional writes carry.
    pub(crate) class: usize,
    /// The last completion among the gets that read this write's value: ordered after
    /// that, it would be overwritten unobserved, the same as never happening.
    pub(crate) deadline: u64,
    /// The next optional write of the same value, by invocation.
    pub(crate) twin: Option<usize>,
}

#[derive(Clone, Copy)]
pub(crate) enum Action {
    Write(u32),
    Read(u32),
}

impl Action {
    /// The state after this action from `state`, or `None` if it cannot happen there.
    pub(crate) fn apply(self, state: u32) -> Option<u32> {
        match self {
            Action::Write(to) => Some(to),
            Action::Read(seen) => (seen == state).then_some(state),
        }
    }
}

/// The operations ordered so far, kept three ways.
#[derive(Clone)]
pub(crate) struct Progress {
    /// Every entry ordered or retired: what may still go next.
    pub(crate) ordered: Vec<u64>,
    /// Required entries ordered: with the state, the memo's key.
    pub(crate) required: Vec<u64>,
    /// How many optional writes of each class were ordered or retired.
    pub(crate) used: Vec<u32>,
}

/// Required sets and states already explored, with how many optional writes of each
/// class they had used. Optional writes of one value are interchangeable once they may
/// go (they share a deadline, and the horizon never moves back), so only their number
/// matters; and a state that used at least as many of every class as one already
/// explored has no future the other lacked (an unused write can still be left out), so
/// it is skipped. That keeps unknown writes from multiplying the search.
pub(crate) type Memo = HashMap<(usize, u32, Box<[u64]>), Vec<Box<[u32]>>>;

impl<'h> Register<'h> {
    pub(crate) fn new(
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
    pub(crate) fn search(&self, budget: usize) -> Result<usize, Violation> {
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
    pub(crate) fn twin_may_go(&self, optional: Optional, ordered: &[u64], horizon: u64) -> bool {
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

    pub(crate) fn start(&self) -> Progress {
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
    pub(crate) fn memo_key(&self, progress: &Progress, state: u32) -> (usize, u32, Box<[u64]>) {
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
    pub(crate) fn first_required_unordered(&self, progress: &Progress) -> usize {
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

    pub(crate) fn toggle(&self, progress: &mut Progress, i: usize) {
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
    pub(crate) fn retire(&self, progress: &mut Progress, i: usize) -> Vec<usize> {
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
    pub(crate) fn horizon(&self, ordered: &[u64], low: usize) -> u64 {
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

    pub(crate) fn explain(&self, deepest: &[usize]) -> String {
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
