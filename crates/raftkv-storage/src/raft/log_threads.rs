//! The log store's two threads: the [`Syncer`], which makes appends durable with one sync
//! for every batch of waiters, and the [`Purger`], which deletes purged entries behind
//! the first readable index, in small batches. Why each exists is in
//! `raft/log_store.rs` ("Durability", "Purge off the critical path").

use std::sync::Arc;

use crossbeam::channel;

use crate::disk::durable::DurableDb;
use crate::error::Result;

/// The key of the entry at `index`: big-endian, so sled's order is log order.
pub(crate) fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// The index an entry key encodes (keys are written only by [`index_key`]; a key of
/// another length reads as index 0 and is treated as out of sequence).
pub(crate) fn index_of(key: &[u8]) -> u64 {
    key.try_into().map_or(0, u64::from_be_bytes)
}

type SyncDone = Box<dyn FnOnce(std::io::Result<()>) + Send>;

/// The thread that makes log writes durable, one sync for every batch of waiters.
pub(crate) struct Syncer {
    jobs: channel::Sender<SyncDone>,
}

impl Syncer {
    pub(crate) fn spawn(db: Arc<DurableDb>) -> Result<Self> {
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

    pub(crate) fn submit(&self, done: SyncDone) -> std::io::Result<()> {
        self.jobs
            .send(done)
            .map_err(|_| std::io::Error::other("log sync thread stopped"))
    }
}

/// Entries the purger deletes per sled batch: small, so appends never wait long.
const PURGE_BATCH_ENTRIES: usize = 256;

/// The thread that deletes purged entries (`raft/log_store.rs`, "Purge off the critical path").
pub(crate) struct Purger {
    up_to: channel::Sender<u64>,
}

impl Purger {
    /// `db` is held until the thread ends: it owns the store's hold on the data directory.
    pub(crate) fn spawn(db: Arc<DurableDb>, entries: sled::Tree) -> Result<Self> {
        let (up_to, rx) = channel::unbounded::<u64>();
        std::thread::Builder::new()
            .name("raftkv-log-purge".into())
            .spawn(move || {
                // Ends when every sender (every LogStore clone) is gone.
                while let Ok(first) = rx.recv() {
                    let index = rx.try_iter().fold(first, u64::max);
                    if let Err(e) = delete_up_to(&entries, index) {
                        // The entries stay, unread; the next purge covers them again.
                        tracing::warn!(error = %e, index, "deleting purged log entries failed");
                    }
                }
                drop(entries);
                drop(db);
            })?;
        Ok(Self { up_to })
    }

    pub(crate) fn submit(&self, index: u64) -> std::io::Result<()> {
        self.up_to
            .send(index)
            .map_err(|_| std::io::Error::other("log purge thread stopped"))
    }
}

/// Delete every entry at or below `index`, [`PURGE_BATCH_ENTRIES`] at a time, lowest
/// first, one remove each (`raft/log_store.rs`, "No sled batches"): a crash leaves the
/// entries above some index, never a hole.
fn delete_up_to(entries: &sled::Tree, index: u64) -> sled::Result<()> {
    loop {
        let keys: Vec<sled::IVec> = entries
            .range(..=index_key(index))
            .keys()
            .take(PURGE_BATCH_ENTRIES)
            .collect::<sled::Result<_>>()?;
        if keys.is_empty() {
            return Ok(());
        }
        for key in keys {
            entries.remove(key)?;
        }
    }
}
