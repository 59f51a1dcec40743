//! The `h` family: which key changed at each (revision, sub), and since layout 4 how
//! (put or delete), as records of the tree, and the one way to write and read them.
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
//! Two chunk formats, told apart by the key's last byte:
//! - [`KINDED_CHUNK_MARK`] (layout 4, written today): each event is varint(revision -
//!   previous revision) varint(sub << 1 | deleted) varint(key length) key. A delete lives
//!   only here: it writes no version record (a tombstone in the `v` family cost every
//!   deleted key a sled insert of its escaped key; a 200,000-key delete spent most of its
//!   apply there), so the history and the key index are where deletes are known.
//! - [`CHUNK_MARK`] (layout 3): varint(step) varint(sub) varint(key length) key, no kind
//!   ([`EventKind::Unrecorded`]): its deletes are tombstone records of the `v` family,
//!   which every reader still accepts.
//!
//! The first event's previous revision is the one in the key. Chunks are small enough
//! ([`CHUNK_BYTES`]) that a sled leaf of them stays far below the size at which sled moves
//! a page to an unsynced blob file, and never span two apply calls (a `HistoryChunks`
//! belongs to one batch), so a record never straddles an applied revision: the rollback,
//! a snapshot's revision filter and physical compaction can still treat a record as a unit
//! where they need to (each of them says how it handles a record that straddles its own
//! boundary).

use raftkv_core::kv::Revision;
use sled::IVec;

use crate::error::{Error, Result};
use crate::keys;

/// The last byte of a layout-3 chunk's tree key (events without their kinds): tells it
/// apart from a one-event record of layout 2.
pub const CHUNK_MARK: u8 = 1;

/// The last byte of a chunk's tree key whose events carry their kinds (layout 4).
pub const KINDED_CHUNK_MARK: u8 = 2;

/// A chunk is closed once its encoding reaches this many bytes (a single event may make
/// it longer: a key as large as the request limit gets a chunk of its own).
pub const CHUNK_BYTES: usize = 4096;

/// How an event changed its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A put: its version record holds what was written.
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
}

/// A history record of the tree with its events.
#[derive(Debug)]
pub struct HistoryRecord {
    /// Its key in the tree.
    pub tree_key: IVec,
    /// Its events in (revision, sub) order; never empty.
    pub events: Vec<HistoryEvent>,
}

impl HistoryRecord {
    /// The revision of its last event.
    pub fn last_revision(&self) -> Revision {
        self.events.last().map_or(0, |e| e.revision)
    }

    /// The record cut to its events at or below `revision`, as a chunk's key and value
    /// (`None`: no event is). Its first event stays, so does its key: the cut record is
    /// written in place of the whole one.
    pub fn up_to(&self, revision: Revision) -> Option<([u8; 14], Vec<u8>)> {
        let kept = self.events.iter().filter(|e| e.revision <= revision);
        encode_chunk(kept.map(|e| (e.revision, e.sub, e.kind, e.key.as_slice())))
    }

    /// Decode a record read from the tree.
    pub fn decode(tree_key: IVec, value: &[u8]) -> Result<Self> {
        let corrupt = |detail: String| Error::Corrupt {
            what: "history record",
            detail,
        };
        let (revision, sub) = split_key(&tree_key).ok_or_else(|| corrupt(format!("key {tree_key:?}")))?;
        let events = match tree_key.len() {
            13 => vec![HistoryEvent {
                revision,
                sub,
                kind: EventKind::Unrecorded,
                key: value.to_vec(),
            }],
            _ => {
                let kinded = tree_key.get(13) == Some(&KINDED_CHUNK_MARK);
                decode_chunk(revision, kinded, value)
                    .ok_or_else(|| corrupt(format!("chunk at {revision}.{sub}")))?
            }
        };
        if events.is_empty() {
            return Err(corrupt(format!("empty chunk at {revision}.{sub}")));
        }
        Ok(Self { tree_key, events })
    }
}

/// (revision, sub) of a history key of either form.
fn split_key(tree_key: &[u8]) -> Option<(Revision, u32)> {
    let valid = tree_key.first() == Some(&keys::HISTORY)
        && (tree_key.len() == 13
            || (tree_key.len() == 14 && matches!(tree_key[13], CHUNK_MARK | KINDED_CHUNK_MARK)));
    if !valid {
        return None;
    }
    let revision = keys::history_revision(tree_key)?;
    let sub: [u8; 4] = tree_key.get(9..13)?.try_into().ok()?;
    Some((revision, u32::from_be_bytes(sub)))
}

/// The tree key of a chunk whose first event is at (`revision`, `sub`), its events with
/// their kinds (`kinded`) or without (layout 3).
pub fn chunk_key(revision: Revision, sub: u32, kinded: bool) -> [u8; 14] {
    let mut out = [0u8; 14];
    out[..13].copy_from_slice(&keys::history_key(revision, sub));
    out[13] = if kinded { KINDED_CHUNK_MARK } else { CHUNK_MARK };
    out
}

/// Encode `events` (in (revision, sub) order) as a chunk: its tree key and value. The
/// first event's kind picks the format: a recorded kind the kinded one (an `Unrecorded`
/// event after it is written as a put), `Unrecorded` the layout-3 one (later kinds are
/// dropped); the records this re-encodes never mix the two.
pub fn encode_chunk<'a>(
    events: impl IntoIterator<Item = (Revision, u32, EventKind, &'a [u8])>,
) -> Option<([u8; 14], Vec<u8>)> {
    let mut events = events.into_iter().peekable();
    let kinded = events.peek()?.2 != EventKind::Unrecorded;
    let mut writer = ChunkWriter::new(kinded);
    for (revision, sub, kind, key) in events {
        writer.push(revision, sub, kind == EventKind::Delete, key);
    }
    writer.finish()
}

/// Builds one chunk.
#[derive(Debug)]
struct ChunkWriter {
    kinded: bool,
    first: Option<(Revision, u32)>,
    previous: Revision,
    bytes: Vec<u8>,
}

impl Default for ChunkWriter {
    /// A chunk of today's format.
    fn default() -> Self {
        Self::new(true)
    }
}

impl ChunkWriter {
    fn new(kinded: bool) -> Self {
        Self {
            kinded,
            first: None,
            previous: 0,
            bytes: Vec::new(),
        }
    }

    fn push(&mut self, revision: Revision, sub: u32, deleted: bool, key: &[u8]) {
        if self.first.is_none() {
            self.first = Some((revision, sub));
            self.previous = revision;
        }
        put_varint(&mut self.bytes, revision.saturating_sub(self.previous) as u64);
        if self.kinded {
            put_varint(&mut self.bytes, u64::from(sub) << 1 | u64::from(deleted));
        } else {
            put_varint(&mut self.bytes, u64::from(sub));
        }
        put_varint(&mut self.bytes, key.len() as u64);
        self.bytes.extend_from_slice(key);
        self.previous = revision;
    }

    /// Continue this chunk with the events of `other`, which follow this chunk's last
    /// (the caller checks the order). Only `other`'s first event is re-encoded: its step
    /// was from its own chunk's first revision (zero), now it is from this chunk's last;
    /// the steps after it are unchanged.
    fn extend(&mut self, other: ChunkWriter) {
        let Some((revision, _)) = other.first else {
            return;
        };
        debug_assert_eq!(self.kinded, other.kinded);
        if self.first.is_none() {
            *self = other;
            return;
        }
        // The first event's step is zero by construction: one byte.
        debug_assert_eq!(other.bytes.first(), Some(&0));
        let rest = other.bytes.get(1..).unwrap_or_default();
        put_varint(&mut self.bytes, revision.saturating_sub(self.previous) as u64);
        self.bytes.extend_from_slice(rest);
        self.previous = other.previous;
    }

    fn finish(self) -> Option<([u8; 14], Vec<u8>)> {
        let (revision, sub) = self.first?;
        Some((chunk_key(revision, sub, self.kinded), self.bytes))
    }
}

fn decode_chunk(first: Revision, kinded: bool, mut bytes: &[u8]) -> Option<Vec<HistoryEvent>> {
    let mut events = Vec::new();
    let mut revision = first;
    while !bytes.is_empty() {
        revision = revision.checked_add(Revision::try_from(take_varint(&mut bytes)?).ok()?)?;
        let sub_and_kind = take_varint(&mut bytes)?;
        let (sub, kind) = if kinded {
            let kind = if sub_and_kind & 1 == 1 {
                EventKind::Delete
            } else {
                EventKind::Put
            };
            (sub_and_kind >> 1, kind)
        } else {
            (sub_and_kind, EventKind::Unrecorded)
        };
        let sub = u32::try_from(sub).ok()?;
        let len = usize::try_from(take_varint(&mut bytes)?).ok()?;
        let key = bytes.get(..len)?.to_vec();
        bytes = &bytes[len..];
        events.push(HistoryEvent {
            revision,
            sub,
            kind,
            key,
        });
    }
    Some(events)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn take_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
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
    /// Stage the event `key` at (`revision`, `sub`), a delete if `deleted`; events come in
    /// (revision, sub) order (one out of order starts a new record rather than encode a
    /// negative step).
    pub(crate) fn push(&mut self, revision: Revision, sub: u32, deleted: bool, key: &[u8]) {
        if self.open.first.is_some() && revision < self.open.previous {
            self.close();
        }
        self.open.push(revision, sub, deleted, key);
        self.events += 1;
        self.bytes += key.len() as u64 + 3;
        if self.open.bytes.len() >= CHUNK_BYTES {
            self.close();
        }
    }

    fn close(&mut self) {
        if let Some((key, value)) = std::mem::take(&mut self.open).finish() {
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
    let start = keys::history_key(from, 0);
    let before = tree
        .range(vec![keys::HISTORY]..start.to_vec())
        .next_back()
        .map(|item| {
            item.map_err(Error::from)
                .and_then(|(k, v)| HistoryRecord::decode(k, &v))
        })
        .filter(|record| record.as_ref().map_or(true, |r| r.last_revision() >= from));
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
