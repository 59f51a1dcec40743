//! Replaying the event history for watchers that are behind: the `h` family (see
//! [`crate::keys`]) names the key changed at every (revision, sub-revision) and, since
//! layout 4, whether it was deleted; each put's key-value is its version record (inline
//! in the event since layout 5, a `v` record before), and
//! the key index which version was live before an event (its previous key-value) and,
//! for a single key, its events themselves. A watcher that starts in
//! the past, or fell behind because it did not keep up, reads its events from here in
//! bounded chunks until it reaches the applied revision (`watch/session/` drives that).
//!
//! **What is safe to read.** Physical compaction deletes (or, since layout 5, rewrites to
//! the versions still visible) history records below its target `T`, which never exceeds
//! the (published) compact revision `C`; versions above `T`, the newest version of a key
//! at or below `T` unless the key was deleted after it at or below `T`, the key index's
//! changes from there on, and the history records of `T` itself stay. So the events of every revision `>= C`
//! and their key-values are intact, and so are their previous key-values (read at
//! `rev - 1`) for revisions `> C`; an event of `C` itself has its previous key-value only
//! if compaction has not yet removed it (etcd's watch omits it there too). A chunk that
//! starts at or above `C` is complete if `C` is still at or below its start after the scan
//! (the same re-check as `mvcc/reader.rs`). The oldest revision a watch can start at is `C`,
//! which is what a compacted watcher is told, as on etcd.
//!
//! **Snapshot installs** switch the tree under a reader. The hub counts installs with a
//! seqlock-style epoch (odd while one runs); a chunk read while the epoch was odd or
//! changed is thrown away and read again ([`ReadOutcome::Retry`]).

use raftkv_core::codec;
use raftkv_core::kv::{KeyValue, Revision};
use raftkv_core::watch::{Event, EventType, WatchRequest};

use crate::error::{Error, Result};
use crate::mvcc::history_records::{self, EventKind, HistoryEvent};
use crate::mvcc::key_index::KeyIndex;
use crate::mvcc::{self, VersionRecord};
use crate::state::StateShared;
use crate::watch::key_range::KeyRange;

/// What a watcher wants from the history.
pub(crate) struct HistoryQuery<'a> {
    pub(crate) range: &'a KeyRange,
    pub(crate) request: &'a WatchRequest,
}

/// Bounds of one chunk: it ends at the first revision boundary past either.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChunkLimits {
    /// Events gathered.
    pub(crate) events: usize,
    /// History events or version records scanned, matching or not.
    pub(crate) records: usize,
}

impl Default for ChunkLimits {
    fn default() -> Self {
        Self {
            events: 1000,
            records: 10_000,
        }
    }
}

/// One chunk of replayed history.
#[derive(Debug)]
pub(crate) enum ReadOutcome {
    /// The watcher's events of revisions `[from, next)`, in order, each revision whole.
    Chunk { events: Vec<Event>, next: Revision },
    /// `from` is below this compact revision: the history it needs is gone.
    Compacted(Revision),
    /// A snapshot install overlapped the read: read again later.
    Retry,
}

/// Read the watcher's events from `from` up to at most `to` (a revision whose batch is
/// applied: the hub's published revision, read before this call).
pub(crate) fn read_chunk(
    shared: &StateShared,
    query: &HistoryQuery<'_>,
    from: Revision,
    to: Revision,
    limits: ChunkLimits,
) -> Result<ReadOutcome> {
    read_chunk_with_hook(shared, query, from, to, limits, &|| {})
}

/// [`read_chunk`] with `after_index` run by a single key's scan between reading its
/// changes from the key index and reading their versions from the tree (tests use it to
/// compact at exactly that point).
fn read_chunk_with_hook(
    shared: &StateShared,
    query: &HistoryQuery<'_>,
    from: Revision,
    to: Revision,
    limits: ChunkLimits,
    after_index: &dyn Fn(),
) -> Result<ReadOutcome> {
    let hub = &shared.watch_hub;
    let epoch = hub.install_epoch();
    if epoch % 2 == 1 {
        return Ok(ReadOutcome::Retry);
    }
    let compacted = shared.compact_revision();
    if from < compacted {
        return Ok(ReadOutcome::Compacted(compacted));
    }
    if from > to {
        return Ok(ReadOutcome::Chunk {
            events: Vec::new(),
            next: from,
        });
    }
    let tree = shared.tree();
    let index = &shared.key_index;
    let scanned = match query.range {
        KeyRange::Single(key) => scan_key(&tree, index, query, key, (from, to), limits, after_index)?,
        KeyRange::Range { .. } => scan_history(&tree, index, query, from, to, limits)?,
    };
    // See the module doc: the scan is complete only if nothing it needed was compacted
    // while it ran, and no install switched the tree (a version found missing is one way
    // such a race shows).
    let compacted = shared.compact_revision();
    if from < compacted {
        return Ok(ReadOutcome::Compacted(compacted));
    }
    if hub.install_epoch() != epoch {
        return Ok(ReadOutcome::Retry);
    }
    match scanned {
        Scanned::Events { events, next } => Ok(ReadOutcome::Chunk { events, next }),
        Scanned::Missing { key, rev } => Err(Error::Corrupt {
            what: "watch history",
            detail: format!("no version of {key:?} at its history revision {rev}"),
        }),
    }
}

/// What a scan found: the watcher's events of `[from, next)`, or a put whose version
/// record the tree lacks (a compaction or an install that raced the scan, which
/// `read_chunk` tells apart from damage by its re-checks).
enum Scanned {
    Events { events: Vec<Event>, next: Revision },
    Missing { key: Vec<u8>, rev: Revision },
}

/// A single key: its changes in `[from, to]` (the key index holds every one at or above
/// the compact revision, with its kind) are exactly its events; a put's key-value is its
/// version record.
fn scan_key(
    tree: &sled::Tree,
    index: &KeyIndex,
    query: &HistoryQuery<'_>,
    key: &[u8],
    (from, to): (Revision, Revision),
    limits: ChunkLimits,
    after_index: &dyn Fn(),
) -> Result<Scanned> {
    let mut events = Vec::new();
    let in_window = index.changes_between(key, from, to);
    after_index();
    for (scanned, change) in in_window.into_iter().enumerate() {
        let rev = change.revision();
        // One change per (key, revision): every change is its own revision.
        if events.len() >= limits.events || scanned >= limits.records {
            return Ok(Scanned::Events { events, next: rev });
        }
        let record = if change.is_put() {
            match version_record(tree, key, rev)? {
                Some(record) => Some(record),
                None => {
                    return Ok(Scanned::Missing {
                        key: key.to_vec(),
                        rev,
                    });
                }
            }
        } else {
            None
        };
        if let Some(event) = event_of(tree, index, query, key, rev, record)? {
            events.push(event);
        }
    }
    Ok(Scanned::Events { events, next: to + 1 })
}

/// The version record of `key` at `rev`, which its history event names (`None`: the
/// tree lacks it).
fn version_record(tree: &sled::Tree, key: &[u8], rev: Revision) -> Result<Option<VersionRecord>> {
    crate::mvcc::versions::record_at(tree, key, rev)
}

/// A range: walk the history by (revision, sub) and keep the keys in range.
fn scan_history(
    tree: &sled::Tree,
    index: &KeyIndex,
    query: &HistoryQuery<'_>,
    from: Revision,
    to: Revision,
    limits: ChunkLimits,
) -> Result<Scanned> {
    let mut events = Vec::new();
    let mut current: Option<Revision> = None;
    for (scanned, event) in history_records::events_between(tree, from, to).enumerate() {
        let HistoryEvent {
            revision: rev,
            key: user_key,
            kind,
            record: inline,
            ..
        } = event?;
        if current.is_some_and(|c| c != rev) && (events.len() >= limits.events || scanned >= limits.records) {
            return Ok(Scanned::Events { events, next: rev });
        }
        current = Some(rev);
        if !query.range.contains(&user_key) {
            continue;
        }
        let record = match (kind, inline) {
            (_, Some(bytes)) => Some(codec::decode(&bytes)?),
            (EventKind::Delete, None) => None,
            (EventKind::Put | EventKind::Unrecorded, None) => match version_record(tree, &user_key, rev)? {
                Some(record) => Some(record),
                None => return Ok(Scanned::Missing { key: user_key, rev }),
            },
        };
        if let Some(event) = event_of(tree, index, query, &user_key, rev, record)? {
            events.push(event);
        }
    }
    Ok(Scanned::Events { events, next: to + 1 })
}

/// The event of `key` at `rev`, a put or tombstone `record` or a delete without one
/// (`None`), if the watcher's filters keep it.
fn event_of(
    tree: &sled::Tree,
    index: &KeyIndex,
    query: &HistoryQuery<'_>,
    key: &[u8],
    rev: Revision,
    record: Option<VersionRecord>,
) -> Result<Option<Event>> {
    let (kind, kv) = match record {
        Some(VersionRecord::Put {
            create_revision,
            version,
            lease,
            value,
            ..
        }) => (
            EventType::Put,
            KeyValue {
                key: key.to_vec(),
                create_revision,
                mod_revision: rev,
                version,
                value,
                lease,
            },
        ),
        Some(VersionRecord::Delete { .. }) | None => (
            EventType::Delete,
            KeyValue {
                key: key.to_vec(),
                mod_revision: rev,
                ..KeyValue::default()
            },
        ),
    };
    if !query.request.admits(kind) {
        return Ok(None);
    }
    // A creation has no previous version worth reading (the key did not exist at rev - 1).
    let created_here = kind == EventType::Put && kv.create_revision == rev;
    let prev_kv = if query.request.prev_kv && !created_here {
        // By the index: the newest version record below `rev` may have been deleted since.
        mvcc::get_indexed_at(tree, index, key, rev - 1)?
    } else {
        None
    };
    Ok(Some(Event { kind, kv, prev_kv }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use raftkv_core::Command;
    use raftkv_core::kv::{CompactionRequest, PutRequest};

    use super::*;
    use crate::apply::lease_tests::entries;
    use crate::{Store, StoreOptions};

    /// A compaction that deletes versions between a single key's read of the index and
    /// its reads of the tree makes the chunk answer `Compacted` (the watcher is told the
    /// compact revision, as etcd tells it), not a storage error that cancels it.
    #[test]
    fn a_compaction_racing_a_single_key_replay_answers_compacted() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let puts = (1..=4)
            .map(|i| Command::Put(PutRequest::new("k", format!("v{i}"))))
            .collect();
        runtime
            .block_on(store.state_machine.apply_committed(entries(1, puts)))
            .unwrap();
        let current = store.shared.revision();
        assert_eq!(current, 5, "k at 2..=5");
        let range = KeyRange::Single(b"k".to_vec());
        let request = WatchRequest::key("k");
        let query = HistoryQuery {
            range: &range,
            request: &request,
        };
        let shared = store.shared.clone();
        let read =
            |hook: &dyn Fn()| read_chunk_with_hook(&shared, &query, 2, current, ChunkLimits::default(), hook);
        match read(&|| {}).unwrap() {
            ReadOutcome::Chunk { events, next } => assert_eq!((events.len(), next), (4, 6)),
            other => panic!("{other:?}"),
        }
        let state_machine = std::cell::RefCell::new(&mut store.state_machine);
        let compact = || {
            let command = Command::Compact(CompactionRequest {
                revision: current,
                physical: false,
            });
            runtime
                .block_on(
                    state_machine
                        .borrow_mut()
                        .apply_committed(entries(5, vec![command])),
                )
                .unwrap();
            runtime
                .block_on(
                    shared
                        .physically_compacted()
                        .wait_for_timeout(current as u64, Duration::from_secs(30)),
                )
                .unwrap();
        };
        match read(&compact).unwrap() {
            ReadOutcome::Compacted(c) => assert_eq!(c, current),
            other => panic!("{other:?}"),
        }
    }
}
