//! Writes to the live state-machine tree: the gate they pass ([`WriteGate`]) and the batch
//! they are made of ([`TreeBatch`]), which remembers its keys.
//!
//! Every write to the live tree (an applied batch, a compaction chunk's commit) is
//! committed while holding the gate, and so is a switch of generations (a snapshot
//! install, the end of a defragmentation). A defragmentation copies the live tree while
//! writes go on; to catch up it asks the gate to record the key of every write committed
//! from then on ([`WriteGate::track`]), and re-copies just those keys under the gate
//! before it switches (`defrag.rs`). So writes wait only for that short catch-up, not for
//! the whole copy.

use std::collections::HashSet;

use sled::IVec;

/// What the tree-writers gate guards: the keys written while a defragmentation copies.
#[derive(Debug, Default)]
pub(crate) struct WriteGate {
    tracked: Option<HashSet<IVec>>,
}

impl WriteGate {
    /// Start recording the keys of every write committed from now on.
    pub(crate) fn track(&mut self) {
        self.tracked = Some(HashSet::new());
    }

    /// Stop recording; the keys written since [`WriteGate::track`].
    pub(crate) fn take_tracked(&mut self) -> HashSet<IVec> {
        self.tracked.take().unwrap_or_default()
    }

    fn record(&mut self, keys: Vec<IVec>) {
        if let Some(tracked) = &mut self.tracked {
            tracked.extend(keys);
        }
    }
}

/// A sled batch that remembers the keys it writes, committed through the gate.
#[derive(Debug, Default)]
pub(crate) struct TreeBatch {
    batch: sled::Batch,
    keys: Vec<IVec>,
}

impl TreeBatch {
    /// Stage writing `value` at `key`.
    pub(crate) fn insert(&mut self, key: impl Into<IVec>, value: impl Into<IVec>) {
        let key = key.into();
        self.keys.push(key.clone());
        self.batch.insert(key, value);
    }

    /// Stage deleting `key`.
    pub(crate) fn remove(&mut self, key: impl Into<IVec>) {
        let key = key.into();
        self.keys.push(key.clone());
        self.batch.remove(key);
    }

    /// Whether nothing is staged.
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Apply the batch to `tree` atomically; `gate` (held by the caller) records its keys
    /// if a defragmentation is copying.
    pub(crate) fn commit(self, tree: &sled::Tree, gate: &mut WriteGate) -> sled::Result<()> {
        tree.apply_batch(self.batch)?;
        gate.record(self.keys);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_writes_committed_while_tracking_are_recorded() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let mut gate = WriteGate::default();
        let mut before = TreeBatch::default();
        before.insert(b"a", b"1");
        before.commit(&db, &mut gate).unwrap();
        gate.track();
        let mut during = TreeBatch::default();
        during.insert(b"b", b"2");
        during.remove(b"a");
        during.commit(&db, &mut gate).unwrap();
        let tracked = gate.take_tracked();
        assert_eq!(tracked, [IVec::from(b"a"), IVec::from(b"b")].into());
        let mut after = TreeBatch::default();
        after.insert(b"c", b"3");
        after.commit(&db, &mut gate).unwrap();
        assert!(gate.take_tracked().is_empty());
        assert_eq!(db.get(b"a").unwrap(), None);
    }
}
