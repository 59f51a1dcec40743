//! [`LogStore`]: openraft's `RaftLogStorage` on sled.
//!
//! Entries live in the `entries` tree keyed by big-endian index (so sled's order is log
//! order); the vote, the committed log id and the last purged log id live in `meta`.
//!
//! **Durability.** `append` inserts the entries and hands the completion callback to the
//! [`Syncer`] thread, which flushes sled and fdatasyncs its files ([`DurableDb::sync`])
//! before it fires the callback: openraft learns an entry is durable only once it is.
//! The syncer drains every callback queued while a sync was running and covers them all
//! with the next one, so concurrent appends share an fsync. `save_vote` waits for a sync
//! before it returns. `truncate` is not synced on its own: a later append's sync covers it,
//! and until then a crash just brings back entries that nobody acknowledged.
//!
//! **Purge order.** Before entries are deleted, the last purged id is written and the
//! state machine is synced up to at least the purged index: the state machine may lag the
//! disk (it is rebuilt from the log), but not once the log it would be rebuilt from is
//! gone.

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam::channel;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader, Vote};
use raftkv_core::Watermark;
use raftkv_core::codec;
use raftkv_core::types::{Entry, LogId, NodeId, StorageError, TypeConfig};
use tokio::sync::oneshot;

use crate::durable::DurableDb;
use crate::error::{Result, log_read, log_write, vote_read, vote_write};
use crate::state::StateShared;

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";
/// Layout version of the log database.
pub(crate) const SCHEMA: &[u8] = b"schema";

type SyncDone = Box<dyn FnOnce(std::io::Result<()>) + Send>;

/// The thread that makes log writes durable, one sync for every batch of waiters.
struct Syncer {
    jobs: channel::Sender<SyncDone>,
}

impl Syncer {
    fn spawn(db: Arc<DurableDb>) -> Result<Self> {
        let (jobs, rx) = channel::unbounded::<SyncDone>();
        std::thread::Builder::new()
            .name("raftkv-log-sync".into())
            .spawn(move || {
                // Ends when every sender (every LogStore clone) is gone.
                while let Ok(first) = rx.recv() {
                    let mut waiting = vec![first];
                    waiting.extend(rx.try_iter());
                    let outcome = crate::failpoints::check("log-flush")
                        .and_then(|()| db.sync().map_err(|e| std::io::Error::other(e.to_string())));
                    for done in waiting {
                        done(match &outcome {
                            Ok(()) => Ok(()),
                            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
                        });
                    }
                }
            })?;
        Ok(Self { jobs })
    }

    fn submit(&self, done: SyncDone) -> std::io::Result<()> {
        self.jobs
            .send(done)
            .map_err(|_| std::io::Error::other("log sync thread stopped"))
    }
}

/// Counters of the log store.
#[derive(Debug, Default)]
pub struct LogStats {
    /// `append` calls.
    pub appends: AtomicU64,
    /// Entries appended.
    pub entries_appended: AtomicU64,
}

/// Reads entries; cheap to clone.
#[derive(Clone)]
pub struct LogReader {
    entries: sled::Tree,
}

/// The Raft log store.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DurableDb>,
    entries: sled::Tree,
    meta: sled::Tree,
    syncer: Arc<Syncer>,
    committed: Arc<Watermark>,
    state: Arc<StateShared>,
    stats: Arc<LogStats>,
}

impl LogStore {
    pub(crate) fn open(db: Arc<DurableDb>, state: Arc<StateShared>) -> Result<Self> {
        let entries = db.db().open_tree("entries")?;
        let meta = db.db().open_tree("meta")?;
        let committed: Option<LogId> = get(&meta, COMMITTED)?;
        let syncer = Arc::new(Syncer::spawn(db.clone())?);
        Ok(Self {
            db,
            entries,
            meta,
            syncer,
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
    pub fn sync_stats(&self) -> &crate::durable::SyncStats {
        self.db.stats()
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

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn read_range<RB: RangeBounds<u64>>(entries: &sled::Tree, range: RB) -> Result<Vec<Entry>> {
    use std::ops::Bound;
    let start = match range.start_bound() {
        Bound::Included(&i) => i,
        Bound::Excluded(&i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    };
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
    ) -> Result<Vec<Entry>, StorageError> {
        read_range(&self.entries, range).map_err(log_read)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        read_range(&self.entries, range).map_err(log_read)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = get(&self.meta, LAST_PURGED).map_err(log_read)?;
        let last = match self.entries.last().map_err(log_read)? {
            Some((_, bytes)) => Some(codec::decode::<Entry>(&bytes).map_err(log_read)?.log_id),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader {
            entries: self.entries.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let bytes = codec::encode(vote).map_err(vote_write)?;
        self.meta.insert(VOTE, bytes).map_err(vote_write)?;
        crate::failpoints::check("vote-save").map_err(vote_write)?;
        self.sync_now().await.map_err(vote_write)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        get(&self.meta, VOTE).map_err(vote_read)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
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

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        get(&self.meta, COMMITTED).map_err(log_read)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        let mut count = 0u64;
        for entry in entries {
            let bytes = codec::encode(&entry).map_err(log_write)?;
            batch.insert(&index_key(entry.log_id.index), bytes);
            count += 1;
        }
        self.entries.apply_batch(batch).map_err(log_write)?;
        self.stats.appends.fetch_add(1, Ordering::Relaxed);
        self.stats.entries_appended.fetch_add(count, Ordering::Relaxed);
        self.syncer
            .submit(Box::new(move |outcome| callback.log_io_completed(outcome)))
            .map_err(log_write)
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for item in self.entries.range(index_key(log_id.index)..) {
            let (key, _) = item.map_err(log_write)?;
            batch.remove(key);
        }
        self.entries.apply_batch(batch).map_err(log_write)
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
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
        // 3. Only now delete.
        let mut batch = sled::Batch::default();
        for item in self.entries.range(..=index_key(log_id.index)) {
            let (key, _) = item.map_err(log_write)?;
            batch.remove(key);
        }
        self.entries.apply_batch(batch).map_err(log_write)
    }
}
