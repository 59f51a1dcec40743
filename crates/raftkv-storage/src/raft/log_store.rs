//! [`LogStore`]: openraft's `RaftLogStorage` on sled.
//!
//! Entries live in the `entries` tree keyed by big-endian index (so sled's order is log
//! order); the vote, the committed log id and the last purged log id live in `meta`.
//!
//! **Durability.** `append` inserts the entries and hands the completion callback to the
//! `Syncer` thread (`raft/log_threads.rs`), which flushes sled and fdatasyncs its files ([`DurableDb::sync`])
//! before it fires the callback: openraft learns an entry is durable only once it is.
//! The syncer drains every callback queued while a sync was running and covers them all
//! with the next one, so concurrent appends share an fsync. `save_vote` waits for a sync
//! before it returns. `truncate` is not synced on its own: a later append's sync covers it,
//! and until then a crash just brings back entries that nobody acknowledged.
//!
//! **No sled batches.** `append`, `truncate` and the purger write one key at a time, in
//! an order that keeps the log contiguous whatever prefix of the writes survives a crash
//! (append: ascending; truncate: descending; purge: ascending). sled recovers a prefix of
//! one thread's writes to one database (its log replay stops at the first torn message),
//! and an unacknowledged tail is anyway for Raft to overwrite. `apply_batch` would give
//! atomicity we do not need, at a price: it seals and writes sled's I/O buffer around
//! the batch (each with a `sync_file_range`), and its first use routes every later
//! operation of the process through a global lock.
//!
//! **Purge order.** Before entries are deleted, the last purged id is written and the
//! state machine is synced up to at least the purged index: the state machine may lag the
//! disk (it is rebuilt from the log), but not once the log it would be rebuilt from is
//! gone.
//!
//! **Purge off the critical path.** openraft awaits `purge` inline, between appends: a
//! snapshot every 10,000 entries purged ~9,000 entries in one sled batch, which held up
//! appends and heartbeats for 100-190 ms. So `purge` only records the purged id, syncs
//! the state machine and raises the first readable index (reads never return an entry
//! below it); the `Purger` thread (`raft/log_threads.rs`) deletes the entries in small batches behind it. A
//! crash before it finishes leaves entries below the purged id on disk, unread; the next
//! open hands them to the purger again.

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use raftkv_core::Watermark;
use raftkv_core::codec;
use raftkv_core::types::{Entry, LogId, TypeConfig, Vote};
use tokio::sync::oneshot;

use crate::disk::durable::DurableDb;
use crate::error::{Result, log_read, log_write, vote_read, vote_write};
use crate::raft::log_threads::{Purger, Syncer, index_key, index_of};
use crate::state::StateShared;

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";
/// Layout version of the log database.
pub(crate) const SCHEMA: &[u8] = b"schema";

/// Remove every entry above the first missing index at or after `from`; how many.
///
/// Appends are single inserts (module doc), so what a crash leaves is contiguous but for
/// one case: an entry large enough to be a sled blob file whose file did not reach the
/// disk (power loss before our sync) is skipped by sled's recovery while later entries
/// survive. Nothing above such a hole was acknowledged (acknowledging needs a sync that
/// covers the blob too), so it goes: highest first, as `truncate` does.
fn cut_at_first_hole(entries: &sled::Tree, from: u64) -> sled::Result<usize> {
    let mut expected = None;
    let mut above_hole = Vec::new();
    for key in entries.range(index_key(from)..).keys() {
        let key = key?;
        let index = index_of(&key);
        if !above_hole.is_empty() || expected.is_some_and(|e| e != index) {
            above_hole.push(key);
        }
        expected = Some(index + 1);
    }
    for key in above_hole.iter().rev() {
        entries.remove(key)?;
    }
    Ok(above_hole.len())
}

/// Counters of the log store.
#[derive(Debug, Default)]
pub struct LogStats {
    /// `append` calls.
    pub appends: AtomicU64,
    /// Entries appended.
    pub entries_appended: AtomicU64,
}

/// Reads entries and the vote; cheap to clone.
#[derive(Clone)]
pub struct LogReader {
    entries: sled::Tree,
    meta: sled::Tree,
    first_readable: Arc<AtomicU64>,
}

/// The Raft log store.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DurableDb>,
    entries: sled::Tree,
    meta: sled::Tree,
    syncer: Arc<Syncer>,
    purger: Arc<Purger>,
    /// The index after the last purged one: entries below it may still be on disk
    /// until the purger deletes them, but are never read.
    first_readable: Arc<AtomicU64>,
    committed: Arc<Watermark>,
    state: Arc<StateShared>,
    stats: Arc<LogStats>,
}

impl LogStore {
    pub(crate) fn open(db: Arc<DurableDb>, state: Arc<StateShared>) -> Result<Self> {
        let entries = db.db().open_tree("entries")?;
        let meta = db.db().open_tree("meta")?;
        let committed: Option<LogId> = get(&meta, COMMITTED)?;
        let last_purged: Option<LogId> = get(&meta, LAST_PURGED)?;
        let cut = cut_at_first_hole(&entries, last_purged.map_or(0, |p| p.index + 1))?;
        if cut > 0 {
            tracing::warn!(
                cut,
                "the log had a hole after a crash: dropped the unacknowledged entries above it"
            );
        }
        let syncer = Arc::new(Syncer::spawn(db.clone())?);
        let purger = Arc::new(Purger::spawn(db.clone(), entries.clone())?);
        if let Some(purged) = last_purged {
            // Whatever a crash kept of the purged entries goes now.
            purger.submit(purged.index)?;
        }
        Ok(Self {
            db,
            entries,
            meta,
            syncer,
            purger,
            first_readable: Arc::new(AtomicU64::new(last_purged.map_or(0, |p| p.index + 1))),
            committed: Arc::new(Watermark::new(committed.map_or(0, |c| c.index))),
            state,
            stats: Arc::new(LogStats::default()),
        })
    }

    /// The commit-index watermark (advanced by `save_committed`).
    pub fn committed(&self) -> &Arc<Watermark> {
        &self.committed
    }

    /// Sync counters of the log database.
    pub fn sync_stats(&self) -> &crate::disk::durable::SyncStats {
        self.db.stats()
    }

    /// Entries stored on disk, purged ones not yet deleted included. Counts them all
    /// (sled keeps no count): for tests and diagnostics.
    pub fn entries_on_disk(&self) -> usize {
        self.entries.len()
    }

    /// Append counters.
    pub fn stats(&self) -> &Arc<LogStats> {
        &self.stats
    }

    /// Wait until everything written so far is durable.
    async fn sync_now(&self) -> std::io::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.syncer.submit(Box::new(move |r| {
            let _ = tx.send(r);
        }))?;
        rx.await
            .map_err(|_| std::io::Error::other("log sync thread stopped"))?
    }
}

fn get<T: serde::de::DeserializeOwned>(tree: &sled::Tree, key: &[u8]) -> Result<Option<T>> {
    match tree.get(key)? {
        Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
        None => Ok(None),
    }
}

/// The entries in `range` from `first_readable` on (those below are purged).
fn read_range<RB: RangeBounds<u64>>(
    entries: &sled::Tree,
    first_readable: u64,
    range: RB,
) -> Result<Vec<Entry>> {
    use std::ops::Bound;
    let start = match range.start_bound() {
        Bound::Included(&i) => i,
        Bound::Excluded(&i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    }
    .max(first_readable);
    let end = match range.end_bound() {
        Bound::Included(&i) => Bound::Included(index_key(i)),
        Bound::Excluded(&i) => Bound::Excluded(index_key(i)),
        Bound::Unbounded => Bound::Unbounded,
    };
    let mut out = Vec::new();
    for item in entries.range((Bound::Included(index_key(start)), end)) {
        let (_, bytes) = item?;
        out.push(codec::decode::<Entry>(&bytes)?);
    }
    Ok(out)
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> std::io::Result<Vec<Entry>> {
        read_range(&self.entries, self.first_readable.load(Ordering::Acquire), range).map_err(log_read)
    }

    async fn read_vote(&mut self) -> std::io::Result<Option<Vote>> {
        get(&self.meta, VOTE).map_err(vote_read)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> std::io::Result<Vec<Entry>> {
        read_range(&self.entries, self.first_readable.load(Ordering::Acquire), range).map_err(log_read)
    }

    async fn read_vote(&mut self) -> std::io::Result<Option<Vote>> {
        get(&self.meta, VOTE).map_err(vote_read)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> std::io::Result<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId> = get(&self.meta, LAST_PURGED).map_err(log_read)?;
        let last_entry = match self.entries.last().map_err(log_read)? {
            Some((_, bytes)) => Some(codec::decode::<Entry>(&bytes).map_err(log_read)?.log_id),
            None => None,
        };
        // An install purges past the last entry; the purger may not have deleted it yet.
        let last = last_entry.max(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader {
            entries: self.entries.clone(),
            meta: self.meta.clone(),
            first_readable: self.first_readable.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> std::io::Result<()> {
        let bytes = codec::encode(vote).map_err(vote_write)?;
        self.meta.insert(VOTE, bytes).map_err(vote_write)?;
        crate::failpoints::check("vote-save").map_err(vote_write)?;
        self.sync_now().await.map_err(vote_write)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> std::io::Result<()> {
        match committed {
            Some(c) => {
                let bytes = codec::encode(&c).map_err(log_write)?;
                self.meta.insert(COMMITTED, bytes).map_err(log_write)?;
                self.committed.advance(c.index);
            }
            None => {
                self.meta.remove(COMMITTED).map_err(log_write)?;
            }
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> std::io::Result<Option<LogId>> {
        get(&self.meta, COMMITTED).map_err(log_read)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> std::io::Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Encode everything first: an entry that does not encode writes nothing.
        let mut encoded: Vec<(u64, Vec<u8>)> = Vec::new();
        for entry in entries {
            encoded.push((entry.log_id.index, codec::encode(&entry).map_err(log_write)?));
        }
        let count = encoded.len() as u64;
        // In index order, one insert each (module doc, "No sled batches").
        for (index, bytes) in encoded {
            crate::failpoints::check_write("log-write").map_err(log_write)?;
            self.entries.insert(index_key(index), bytes).map_err(log_write)?;
        }
        self.stats.appends.fetch_add(1, Ordering::Relaxed);
        self.stats.entries_appended.fetch_add(count, Ordering::Relaxed);
        self.syncer
            .submit(Box::new(move |outcome| callback.io_completed(outcome)))
            .map_err(log_write)
    }

    async fn truncate_after(&mut self, last_kept: Option<LogId>) -> std::io::Result<()> {
        // Highest first (module doc, "No sled batches"): a crash part-way leaves a
        // shorter log, never one with a hole.
        let from = last_kept.map_or(0, |l| l.index + 1);
        let keys: Vec<sled::IVec> = self
            .entries
            .range(index_key(from)..)
            .keys()
            .collect::<sled::Result<_>>()
            .map_err(log_write)?;
        for key in keys.into_iter().rev() {
            self.entries.remove(key).map_err(log_write)?;
        }
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn purge(&mut self, log_id: LogId) -> std::io::Result<()> {
        // 1. Record what is purged, so the log state stays right whatever happens next.
        let bytes = codec::encode(&log_id).map_err(log_write)?;
        self.meta.insert(LAST_PURGED, bytes).map_err(log_write)?;
        // 2. The state machine must be durable past the purged index before the entries
        //    it would be rebuilt from disappear.
        let state = self.state.clone();
        let synced = tokio::task::spawn_blocking(move || state.sync_durable())
            .await
            .map_err(|e| log_write(std::io::Error::other(e.to_string())))?
            .map_err(log_write)?;
        if synced < log_id.index {
            // openraft purges only what the state machine has applied; the storage
            // conformance suite purges a log that was never applied. Nothing to protect.
            tracing::debug!(synced, purge = log_id.index, "purging past the applied index");
        }
        // 3. Only now stop reading them, and have them deleted.
        self.first_readable.fetch_max(log_id.index + 1, Ordering::AcqRel);
        self.purger.submit(log_id.index).map_err(log_write)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tree_with(indexes: &[u64]) -> (tempfile::TempDir, sled::Tree) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let tree = db.open_tree("entries").unwrap();
        for i in indexes {
            tree.insert(index_key(*i), b"entry".to_vec()).unwrap();
        }
        (dir, tree)
    }

    fn left(tree: &sled::Tree) -> Vec<u64> {
        tree.iter().keys().map(|k| index_of(&k.unwrap())).collect()
    }

    #[test]
    fn a_hole_cuts_everything_above_it() {
        let (_dir, tree) = tree_with(&[1, 2, 3, 5, 6, 8]);
        assert_eq!(cut_at_first_hole(&tree, 0).unwrap(), 3);
        assert_eq!(left(&tree), vec![1, 2, 3]);
    }

    #[test]
    fn a_contiguous_log_and_purged_leftovers_are_kept() {
        let (_dir, tree) = tree_with(&[4, 5, 6, 7]);
        assert_eq!(cut_at_first_hole(&tree, 0).unwrap(), 0);
        // Entries below the first readable index (purged, not yet deleted) may have
        // holes of their own: only the readable part is checked.
        let (_dir2, tree) = tree_with(&[1, 3, 10, 11, 12]);
        assert_eq!(cut_at_first_hole(&tree, 10).unwrap(), 0);
        assert_eq!(left(&tree), vec![1, 3, 10, 11, 12]);
    }
}
