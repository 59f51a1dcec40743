//! One key's depth-first search (Wing & Gong with Lowe's improvements, see the parent
//! module): the current prefix, and the states already explored.

use super::*;

/// One key's depth-first search: the current prefix, and the states already explored.
pub(crate) struct Search<'r, 'h> {
    pub(crate) register: &'r Register<'h>,
    pub(crate) progress: Progress,
    pub(crate) memo: Memo,
    pub(crate) explored: usize,
    pub(crate) budget: usize,
    pub(crate) prefix: Vec<Frame>,
    /// The longest prefix that got stuck, for the explanation.
    pub(crate) deepest: Vec<usize>,
    /// The register's value after the prefix.
    pub(crate) state: u32,
    pub(crate) required_done: usize,
}

/// One operation of the prefix.
pub(crate) struct Frame {
    pub(crate) entry: usize,
    /// Where the scan for the next candidate resumes if this choice fails.
    pub(crate) resume: usize,
    pub(crate) state_before: u32,
    /// Optional writes this choice retired, to undo with it.
    pub(crate) retired: Vec<usize>,
}

/// A scan position past every candidate: nothing left to try.
pub(crate) const DONE: usize = usize::MAX;

impl Search<'_, '_> {
    pub(crate) fn run(&mut self) -> Result<(), Violation> {
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
    pub(crate) fn matching_read(&self, low: usize, horizon: u64) -> Option<usize> {
        let entries = self.register.entries.iter().enumerate().skip(low);
        let mut candidates = entries.take_while(|(_, e)| e.invoke <= horizon);
        candidates
            .find(|&(i, e)| {
                matches!(e.action, Action::Read(v) if v == self.state) && !is_set(&self.progress.ordered, i)
            })
            .map(|(i, _)| i)
    }

    /// Extend the prefix with entry `i` if it fits and leads to a state not explored yet.
    pub(crate) fn try_order(&mut self, i: usize, resume: usize) -> Result<bool, Violation> {
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
