//! The `h` family: which key changed at each (revision, sub), how (put or delete), and
//! since layout 5 the put's version itself, as records of the tree, and the one way to
//! write and read them.
//!
//! Since layout version 3 apply writes a **chunk** per run of consecutive events (up to
//! [`CHUNK_BYTES`] of encoding): key `h` rev(8, BE) sub(4, BE) mark, the (revision, sub)
//! of its first event; value the events in (revision, sub) order. Before, every event was
//! its own record (`h` rev sub, value the user key: 13-byte keys, which layout 2 data
//! directories and snapshots still hold and readers still accept). One record per event
//! cost every put and every deleted key a second sled insert, next to its version record;
//! the requests of one apply call share chunks (a request's events continue the call's
//! open chunk), so a call of 30 single-key puts writes one history record instead of 30,
//! and a 200,000-key delete about 1,000 instead of 200,000.
//!
//! The key's last byte names the chunk's format (`history_records/chunk_codec.rs`):
//! - [`ChunkFormat::Inline`] (layout 5, written today): each event has its kind, and a
//!   put carries its version record. The chunk is where a version lives: a put costs no
//!   sled insert of its own (a `v` record per put was about a quarter of the CPU a write
//!   cost at 64 clients), and a delete has no record but its event (since layout 4). A
//!   point read finds the chunk by the revision ([`crate::mvcc::versions`]); physical
//!   compaction rewrites chunks to the versions still visible
//!   (`maintenance/compaction_chunk.rs`).
//! - [`ChunkFormat::Kinded`] (layout 4): kinds; a put's version is a `v` record.
//! - [`ChunkFormat::Plain`] (layout 3): no kinds ([`EventKind::Unrecorded`]): its deletes
//!   are tombstone records of the `v` family, which every reader still accepts.
//!
//! Older formats are never rewritten at open: a data directory upgraded in place holds
//! `v` records below some revision and inline versions above it, and compaction drains
//! the old ones as their keys move on.
//!
//! A chunk closes once it reaches [`CHUNK_BYTES`], so a sled leaf of chunks of small
//! values stays below the size at which sled moves a page to a blob file (a value as large
//! as the request limit makes a chunk of its own that size, as its `v` record did before,
//! and the blob files are synced: `disk/blob_watch.rs`). Chunks never span two apply
//! calls (a `HistoryChunks` belongs to one batch), so a record never straddles an applied
//! revision: the rollback, a snapshot's revision filter and physical compaction can still
//! treat a record as a unit where they need to (each of them says how it handles a record
//! that straddles its own boundary).

mod chunk_codec;

use raftkv_core::kv::Revision;
use sled::IVec;

use crate::error::{Error, Result};
use crate::keys;
use chunk_codec::ChunkWriter;
pub use chunk_codec::{ChunkFormat, RawEvent, RawEvents};

/// A chunk is closed once its encoding reaches this many bytes (a single event may make
/// it longer: a key or value as large as the request limit gets a chunk of its own).
pub const CHUNK_BYTES: usize = 4096;

/// How an event changed its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A put: its version record is inline (layout 5) or a `v` record.
    Put,
    /// A delete: no version record (the event is the tombstone).
    Delete,
    /// A record of layout 2 or 3, which did not record the kind: the version record at
    /// (key, revision) says (a put, or a tombstone record).
    Unrecorded,
}

/// One event of the history: `key` changed (put or deleted) at (`revision`, `sub`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEvent {
    /// The main revision.
    pub revision: Revision,
    /// The order within the revision.
    pub sub: u32,
    /// Put or delete, if the record says.
    pub kind: EventKind,
    /// The user key.
    pub key: Vec<u8>,
    /// A put's encoded version record, where it is inline (layout 5).
    pub record: Option<Vec<u8>>,
}

impl HistoryEvent {
    fn of_raw(raw: RawEvent<'_>) -> Self {
        Self {
            revision: raw.revision,
            sub: raw.sub,
            kind: match raw.deleted {
                None => EventKind::Unrecorded,
                Some(true) => EventKind::Delete,
                Some(false) => EventKind::Put,
            },
            key: raw.key.to_vec(),
            record: raw.record.map(<[u8]>::to_vec),
        }
    }
}

/// A history record of the tree with its events.
#[derive(Debug)]
pub struct HistoryRecord {
    /// Its key in the tree.
    pub tree_key: IVec,
    /// Its chunk format (`None`: a one-event record of layout 2).
    pub format: Option<ChunkFormat>,
    /// Its events in (revision, sub) order; never empty.
    pub events: Vec<HistoryEvent>,
}

impl HistoryRecord {
    /// The revision of its last event.
    pub fn last_revision(&self) -> Revision {
        self.events.last().map_or(0, |e| e.revision)
    }

    /// The record cut to its events at or below `revision`, as a chunk's key and value
    /// (`None`: no event is). It keeps its key: the cut record is written in place of
    /// the whole one.
    pub fn up_to(&self, revision: Revision) -> Option<([u8; 14], Vec<u8>)> {
        self.keeping(|e| e.revision <= revision)
    }

    /// The record with only the events `keep` keeps, as a chunk's key and value (`None`:
    /// none is kept), under its own key even where its first event goes: a key only has to
    /// sort at or before its events (readers take the first event's revision from the
    /// key plus a step), so a rewrite is one overwrite in place, which a crash or a
    /// concurrent scan sees whole or not at all. A one-event record of layout 2 becomes a
    /// layout-3 chunk, under a chunk key (the one key that changes).
    pub fn keeping(&self, keep: impl Fn(&HistoryEvent) -> bool) -> Option<([u8; 14], Vec<u8>)> {
        let (revision, sub, format) = split_key(&self.tree_key)?;
        let format = format.unwrap_or(ChunkFormat::Plain);
        // `finish` writes the chunk key of (revision, sub) and `format`.
        let mut writer = ChunkWriter::under_key(format, revision, sub);
        let mut any = false;
        for event in self.events.iter().filter(|e| keep(e)) {
            writer.push(event.revision, event.sub, &event.key, put_of(event));
            any = true;
        }
        any.then(|| finish(writer)).flatten()
    }

    /// Decode a record read from the tree.
    pub fn decode(tree_key: IVec, value: &[u8]) -> Result<Self> {
        let corrupt = |detail: String| Error::Corrupt {
            what: "history record",
            detail,
        };
        let (revision, sub, format) =
            split_key(&tree_key).ok_or_else(|| corrupt(format!("key {tree_key:?}")))?;
        let events = match format {
            None => vec![HistoryEvent {
                revision,
                sub,
                kind: EventKind::Unrecorded,
                key: value.to_vec(),
                record: None,
            }],
            Some(format) => RawEvents::new(format, revision, value)
                .map(|raw| raw.map(HistoryEvent::of_raw))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| corrupt(format!("chunk at {revision}.{sub}")))?,
        };
        if events.is_empty() {
            return Err(corrupt(format!("empty chunk at {revision}.{sub}")));
        }
        Ok(Self {
            tree_key,
            format,
            events,
        })
    }
}

/// (revision, sub) of a history key of either form, and its chunk format (`None`: a
/// one-event record of layout 2).
pub fn split_key(tree_key: &[u8]) -> Option<(Revision, u32, Option<ChunkFormat>)> {
    if tree_key.first() != Some(&keys::HISTORY) {
        return None;
    }
    let format = match tree_key.len() {
        13 => None,
        14 => Some(ChunkFormat::of_mark(tree_key[13])?),
        _ => return None,
    };
    let revision = keys::history_revision(tree_key)?;
    let sub: [u8; 4] = tree_key.get(9..13)?.try_into().ok()?;
    Some((revision, u32::from_be_bytes(sub), format))
}

/// The tree key of a chunk of `format` whose first event is at (`revision`, `sub`).
pub fn chunk_key(revision: Revision, sub: u32, format: ChunkFormat) -> [u8; 14] {
    let mut out = [0u8; 14];
    out[..13].copy_from_slice(&keys::history_key(revision, sub));
    out[13] = format.mark();
    out
}

/// A bound above every history key of `revision` and below those of later revisions.
pub fn after_revision(revision: Revision) -> [u8; 14] {
    let mut out = chunk_key(revision, u32::MAX, ChunkFormat::Inline);
    out[13] = u8::MAX;
    out
}

/// Encode `events` (in (revision, sub) order) as a chunk of `format`: its tree key and
/// value (`None`: no events).
pub fn encode_events<'a>(
    format: ChunkFormat,
    events: impl IntoIterator<Item = &'a HistoryEvent>,
) -> Option<([u8; 14], Vec<u8>)> {
    let mut writer = ChunkWriter::new(format);
    for event in events {
        writer.push(event.revision, event.sub, &event.key, put_of(event));
    }
    finish(writer)
}

/// What a chunk writer takes of `event`: its inline record if a put (empty where the
/// record is elsewhere), `None` if a delete.
fn put_of(event: &HistoryEvent) -> Option<&[u8]> {
    match event.kind {
        EventKind::Delete => None,
        EventKind::Put | EventKind::Unrecorded => Some(event.record.as_deref().unwrap_or_default()),
    }
}

/// Encode `events` (in (revision, sub) order) as a chunk without inline versions: the
/// first event's kind picks the format: a recorded kind layout 4's (an `Unrecorded`
/// event after it is written as a put), `Unrecorded` layout 3's. For tests and tools
/// that write the older formats.
pub fn encode_chunk<'a>(
    events: impl IntoIterator<Item = (Revision, u32, EventKind, &'a [u8])>,
) -> Option<([u8; 14], Vec<u8>)> {
    let mut events = events.into_iter().peekable();
    let format = match events.peek()?.2 {
        EventKind::Unrecorded => ChunkFormat::Plain,
        _ => ChunkFormat::Kinded,
    };
    let mut writer = ChunkWriter::new(format);
    for (revision, sub, kind, key) in events {
        let put = (kind != EventKind::Delete).then_some(&[][..]);
        writer.push(revision, sub, key, put);
    }
    finish(writer)
}

fn finish(writer: ChunkWriter) -> Option<([u8; 14], Vec<u8>)> {
    let (revision, sub) = writer.first?;
    Some((chunk_key(revision, sub, writer.format), writer.bytes))
}

/// The history events of one batch, encoded into chunks as they are staged.
#[derive(Debug, Default)]
pub(crate) struct HistoryChunks {
    closed: Vec<(IVec, IVec)>,
    open: ChunkWriter,
    events: u64,
    bytes: u64,
}

impl HistoryChunks {
    /// Stage the event `key` at (`revision`, `sub`): a put whose encoded version record
    /// is `put`, or a delete (`None`). Events come in (revision, sub) order (one out of
    /// order starts a new record rather than encode a negative step).
    pub(crate) fn push(&mut self, revision: Revision, sub: u32, key: &[u8], put: Option<&[u8]>) {
        if self.open.first.is_some() && revision < self.open.previous {
            self.close();
        }
        self.open.push(revision, sub, key, put);
        self.events += 1;
        self.bytes += (key.len() + put.map_or(0, <[u8]>::len)) as u64 + 4;
        if self.open.bytes.len() >= CHUNK_BYTES {
            self.close();
        }
    }

    fn close(&mut self) {
        if let Some((key, value)) = finish(std::mem::take(&mut self.open)) {
            self.closed.push((IVec::from(&key[..]), IVec::from(value)));
        }
    }

    /// Stage everything `other` staged, after what is staged here. An apply call stages
    /// each request apart and appends it to the call's batch, so a request's events
    /// continue the open chunk: the call's single-key puts share chunks instead of
    /// writing a record each.
    pub(crate) fn append(&mut self, mut other: HistoryChunks) {
        self.events += other.events;
        self.bytes += other.bytes;
        let in_order = match (self.open.first, other.open.first) {
            (Some(_), Some((first, _))) => first >= self.open.previous,
            _ => true,
        };
        let fits = self.open.bytes.len() + other.open.bytes.len() < CHUNK_BYTES;
        if other.closed.is_empty() && in_order && fits {
            self.open.extend(other.open);
            return;
        }
        self.close();
        if self.closed.is_empty() {
            self.closed = std::mem::take(&mut other.closed);
        } else {
            self.closed.append(&mut other.closed);
        }
        self.open = other.open;
    }

    /// Whether no event is staged.
    pub(crate) fn is_empty(&self) -> bool {
        self.events == 0
    }

    /// Approximate bytes the events add to the tree.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The records to write, in order.
    pub(crate) fn into_records(mut self) -> Vec<(IVec, IVec)> {
        self.close();
        self.closed
    }
}

/// The record `tree_key`/`value` as a snapshot at `revision` holds it: only its events at
/// or below `revision` (`None`: none). A record never spans two applies, so a snapshot
/// taken between them keeps or drops it whole; the rewrite is for any that does not.
pub fn clip(tree_key: IVec, value: &[u8], revision: Revision) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
    let first = keys::history_revision(&tree_key).unwrap_or(Revision::MAX);
    if first > revision {
        return Ok(None);
    }
    if tree_key.len() == 13 {
        return Ok(Some((tree_key.to_vec(), value.to_vec())));
    }
    let record = HistoryRecord::decode(tree_key, value)?;
    if record.last_revision() <= revision {
        return Ok(Some((record.tree_key.to_vec(), value.to_vec())));
    }
    Ok(record.up_to(revision).map(|(k, v)| (k.to_vec(), v)))
}

/// Every history record that holds an event at or above `from`, in order: the one that
/// starts below `from` but reaches it (a chunk), then those that start at or above it.
pub fn records_from(
    tree: &sled::Tree,
    from: Revision,
) -> impl Iterator<Item = Result<HistoryRecord>> + use<> {
    records_after(tree, from, false)
}

/// [`records_from`], and the record that starts last below `from` whatever its last event:
/// physical compaction's walk, which may have cut events off the end of the record its
/// previous chunk stopped in (`maintenance/compaction_chunk.rs`) and must come back to
/// what is left of it.
pub fn records_from_previous(
    tree: &sled::Tree,
    from: Revision,
) -> impl Iterator<Item = Result<HistoryRecord>> + use<> {
    records_after(tree, from, true)
}

fn records_after(
    tree: &sled::Tree,
    from: Revision,
    previous_always: bool,
) -> impl Iterator<Item = Result<HistoryRecord>> + use<> {
    let start = keys::history_key(from, 0);
    let before = tree
        .range(vec![keys::HISTORY]..start.to_vec())
        .next_back()
        .map(|item| {
            item.map_err(Error::from)
                .and_then(|(k, v)| HistoryRecord::decode(k, &v))
        })
        .filter(move |record| previous_always || record.as_ref().map_or(true, |r| r.last_revision() >= from));
    let after = tree.range(start.to_vec()..vec![keys::HISTORY + 1]).map(|item| {
        item.map_err(Error::from)
            .and_then(|(k, v)| HistoryRecord::decode(k, &v))
    });
    before.into_iter().chain(after)
}

/// Every history event with `from <= revision <= to`, in (revision, sub) order.
pub fn events_between(
    tree: &sled::Tree,
    from: Revision,
    to: Revision,
) -> impl Iterator<Item = Result<HistoryEvent>> + use<> {
    records_from(tree, from)
        .take_while(move |record| {
            record
                .as_ref()
                .map_or(true, |r| r.events.first().is_some_and(|e| e.revision <= to))
        })
        .flat_map(move |record| {
            // The record's own event list, filtered as it is consumed (no copy per record).
            let (events, error) = match record {
                Ok(r) => (r.events, None),
                Err(e) => (Vec::new(), Some(e)),
            };
            error.map(Err).into_iter().chain(
                events
                    .into_iter()
                    .filter(move |e| e.revision >= from && e.revision <= to)
                    .map(Ok),
            )
        })
}

#[cfg(test)]
mod tests;
