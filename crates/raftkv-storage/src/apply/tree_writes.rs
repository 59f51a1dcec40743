//! Writes to the live state-machine tree: the gate they pass ([`WriteGate`]) and the batch
//! they are made of ([`TreeBatch`]), which remembers its keys.
//!
//! A batch is written as plain sled inserts and removes, in the order it was staged, not
//! with `apply_batch`: sled's first batch or transaction turns on a process-wide
//! reader-writer lock for every later operation of the process, and seals and writes its
//! IO buffer around each batch (each write with its own `sync_file_range`); a log flush
//! and an apply then wait on each other. What a crash leaves of a batch written this way
//! is a prefix of its writes (sled recovers its log in order and stops at the first torn
//! message), so every writer orders its writes to make any prefix safe: apply writes the
//! record naming its applied index last and `apply/rollback.rs` undoes the rest at open; a
//! compaction chunk writes its progress last, and its deletions are redone by the next.
//!
//! Every write to the live tree (an applied batch, a compaction chunk's commit) is
//! committed while holding the gate, and so is a switch of generations (a snapshot
//! install, the end of a defragmentation). A defragmentation copies the live tree while
//! writes go on; to catch up it asks the gate to record the key of every write committed
//! from then on ([`WriteGate::track`]), and re-copies just those keys under the gate
//! before it switches (`maintenance/defrag.rs`). So writes wait only for that short catch-up, not for
//! the whole copy.
//!
//! A batch also counts the records it adds and deletes into its generation's churn
//! ([`Generation::record_churn`]): automatic defragmentation rewrites only a database
//! from which enough has been deleted to be worth it. Overwrites of the few fixed
//! metadata keys ([`TreeBatch::overwrite`]) count as neither.

use std::collections::HashSet;

use sled::IVec;

use crate::disk::generation::Generation;
use crate::mvcc::history_records::HistoryChunks;

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

    /// Whether keys are being recorded.
    pub(crate) fn is_tracking(&self) -> bool {
        self.tracked.is_some()
    }

    fn record(&mut self, keys: Vec<IVec>) {
        if let Some(tracked) = &mut self.tracked {
            tracked.extend(keys);
        }
    }
}

/// The key of a staged write: taken as it comes, without a copy (sled copies the key into
/// its node on insert anyway; a key built for the write, such as a version key, is moved
/// in, and a key read from the tree is shared).
#[derive(Debug)]
pub(crate) enum StagedKey {
    /// A key built for this write.
    Owned(Vec<u8>),
    /// A key read from sled.
    Shared(IVec),
}

impl AsRef<[u8]> for StagedKey {
    fn as_ref(&self) -> &[u8] {
        match self {
            StagedKey::Owned(key) => key,
            StagedKey::Shared(key) => key,
        }
    }
}

impl From<Vec<u8>> for StagedKey {
    fn from(key: Vec<u8>) -> Self {
        StagedKey::Owned(key)
    }
}

impl From<IVec> for StagedKey {
    fn from(key: IVec) -> Self {
        StagedKey::Shared(key)
    }
}

impl From<&[u8]> for StagedKey {
    fn from(key: &[u8]) -> Self {
        StagedKey::Owned(key.to_vec())
    }
}

impl<const N: usize> From<&[u8; N]> for StagedKey {
    fn from(key: &[u8; N]) -> Self {
        StagedKey::Owned(key.to_vec())
    }
}

impl From<&IVec> for StagedKey {
    fn from(key: &IVec) -> Self {
        StagedKey::Shared(key.clone())
    }
}

impl<const N: usize> From<[u8; N]> for StagedKey {
    fn from(key: [u8; N]) -> Self {
        StagedKey::Owned(key.to_vec())
    }
}

/// Staged tree writes in order, committed through the gate.
#[derive(Debug, Default)]
pub(crate) struct TreeBatch {
    /// `None`: remove the key.
    writes: Vec<(StagedKey, Option<IVec>)>,
    inserted: u64,
    removed: u64,
    /// Key and value bytes of the inserted records (the snapshot cadence counts them).
    inserted_bytes: u64,
    /// History events, written as chunk records BEFORE every staged write (see
    /// [`TreeBatch::history`]).
    history: HistoryChunks,
}

impl TreeBatch {
    /// Stage the history event `key` at (`revision`, `sub`) (in order): a put whose
    /// encoded version record is `put` (written inline, in the chunk), or a delete
    /// (`None`: no other record). The batch writes its history records
    /// ([`crate::mvcc::history_records`]) before everything else it stages: a crash keeps
    /// a prefix of a batch, and the history is how `apply/rollback.rs` finds what an
    /// unfinished apply wrote.
    pub(crate) fn history(
        &mut self,
        revision: raftkv_core::kv::Revision,
        sub: u32,
        key: &[u8],
        put: Option<&[u8]>,
    ) {
        self.history.push(revision, sub, key, put);
    }

    /// Stage writing `value` at `key`, a record of the keyspace (a version, a lease): it
    /// counts as added.
    pub(crate) fn insert(&mut self, key: impl Into<StagedKey>, value: impl Into<IVec>) {
        let (key, value) = (key.into(), value.into());
        self.inserted += 1;
        self.inserted_bytes += (key.as_ref().len() + value.len()) as u64;
        self.stage(key, Some(value));
    }

    /// Stage replacing the value of a fixed metadata key (applied index, revision, ...),
    /// which always exists: it counts as neither added nor deleted.
    pub(crate) fn overwrite(&mut self, key: impl Into<StagedKey>, value: impl Into<IVec>) {
        self.stage(key.into(), Some(value.into()));
    }

    /// Stage replacing the record at `key` with a smaller one (compaction dropping part of
    /// a history chunk): it counts as one deleted and one added.
    pub(crate) fn rewrite(&mut self, key: impl Into<StagedKey>, value: impl Into<IVec>) {
        self.removed += 1;
        self.insert(key, value);
    }

    /// Stage deleting a bookkeeping key (an undo record): it counts as neither.
    pub(crate) fn discard(&mut self, key: impl Into<StagedKey>) {
        self.stage(key.into(), None);
    }

    /// The distinct keys staged whose records are overwritten in place
    /// ([`crate::keys::overwritten_in_place`]).
    pub(crate) fn keys_overwritten_in_place(&self) -> std::collections::BTreeSet<IVec> {
        self.writes
            .iter()
            .map(|(key, _)| key.as_ref())
            .filter(|key| crate::keys::overwritten_in_place(key))
            .map(IVec::from)
            .collect()
    }

    /// Make room for `additional` more writes (a large delete stages one per key; growing
    /// the list as it goes copies it, and each copy faults in fresh pages).
    pub(crate) fn reserve(&mut self, additional: usize) {
        self.writes.reserve(additional);
    }

    /// Stage everything `other` staged, after what is staged here.
    pub(crate) fn append(&mut self, other: TreeBatch) {
        if self.writes.is_empty() {
            self.writes = other.writes;
        } else {
            self.writes.extend(other.writes);
        }
        self.history.append(other.history);
        self.inserted += other.inserted;
        self.removed += other.removed;
        self.inserted_bytes += other.inserted_bytes;
    }

    /// Stage deleting `key`: it counts as deleted.
    pub(crate) fn remove(&mut self, key: impl Into<StagedKey>) {
        self.removed += 1;
        self.stage(key.into(), None);
    }

    fn stage(&mut self, key: StagedKey, value: Option<IVec>) {
        self.writes.push((key, value));
    }

    /// Key and value bytes of the records staged as added ([`TreeBatch::insert`]).
    pub(crate) fn inserted_bytes(&self) -> u64 {
        self.inserted_bytes + self.history.bytes()
    }

    /// Whether nothing is staged.
    pub(crate) fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.history.is_empty()
    }

    /// Write the batch to `tree` in staged order (see the module doc: a crash keeps a
    /// prefix) and count its churn; `gate` (held by the caller) records its keys if a
    /// defragmentation is copying.
    pub(crate) fn commit(self, tree: &Generation, gate: &mut WriteGate) -> crate::error::Result<()> {
        let history = self.history.into_records();
        let inserted = self.inserted + history.len() as u64;
        let mut tracked = gate.is_tracking().then(Vec::new);
        let history = history
            .into_iter()
            .map(|(key, value)| (StagedKey::Shared(key), Some(value)));
        for (key, value) in history.chain(self.writes) {
            crate::failpoints::check_write("sm-write")?;
            match value {
                Some(value) => tree.insert(key.as_ref(), value)?,
                None => tree.remove(key.as_ref())?,
            };
            if let Some(tracked) = &mut tracked {
                tracked.push(IVec::from(key.as_ref()));
            }
        }
        tree.record_churn(inserted, self.removed);
        if let Some(tracked) = tracked {
            gate.record(tracked);
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn generation(dir: &tempfile::TempDir) -> Generation {
        Generation::create(
            dir.path(),
            0,
            1 << 20,
            Default::default(),
            crate::disk::data_dir_lock::DataDirLock::acquire(dir.path(), std::time::Duration::ZERO).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn only_writes_committed_while_tracking_are_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let db = generation(&dir);
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

    #[test]
    fn churn_counts_records_added_and_deleted_not_metadata_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let db = generation(&dir);
        let mut gate = WriteGate::default();
        let mut batch = TreeBatch::default();
        batch.insert(b"a", b"1");
        batch.insert(b"b", b"2");
        batch.overwrite(b"meta", b"7");
        batch.commit(&db, &mut gate).unwrap();
        let mut batch = TreeBatch::default();
        batch.remove(b"a");
        batch.overwrite(b"meta", b"8");
        batch.commit(&db, &mut gate).unwrap();
        assert_eq!(db.churn(), (2, 1));
        assert_eq!(db.get(b"meta").unwrap().unwrap(), b"8");
    }
}
