//! Where a version's bytes live, and the one way to read the version of (key, revision):
//! inline in its history chunk since layout 5 (`mvcc/history_records.rs`), a `v` record
//! before. A data directory upgraded in place holds both, split by revision (every
//! revision's events are in one format: an apply call writes one), so the chunk that
//! would hold the event says which to read.

use std::ops::Range;

use raftkv_core::codec;
use raftkv_core::kv::Revision;
use sled::IVec;

use crate::error::{Error, Result};
use crate::keys;
use crate::mvcc::VersionRecord;
use crate::mvcc::history_records::{self, ChunkFormat, RawEvent, RawEvents};

/// The version record of `key` written at exactly `rev`, if the tree has it.
pub fn record_at(tree: &sled::Tree, key: &[u8], rev: Revision) -> Result<Option<VersionRecord>> {
    if let Some((chunk, event)) = find_inline(tree, key, rev)? {
        return chunk.decode(event);
    }
    v_record_at(tree, key, rev)
}

/// The version records of the (key, revision) pairs of `wanted` (a range's keys and the
/// versions the index names), in the same order. They are read in revision order, and a
/// version in the chunk the previous one was found in is read from it: versions written
/// together (a bulk load, a list's keys written in one sweep) cost one chunk lookup,
/// not one each.
pub fn records_at(tree: &sled::Tree, wanted: &[(Vec<u8>, Revision)]) -> Result<Vec<Option<VersionRecord>>> {
    let mut order: Vec<usize> = (0..wanted.len()).collect();
    order.sort_unstable_by_key(|&i| wanted[i].1);
    let mut out: Vec<Option<VersionRecord>> = std::iter::repeat_with(|| None).take(wanted.len()).collect();
    // The chunk the previous version was found in, and its last event's revision.
    let mut last_chunk: Option<(InlineChunk, Revision)> = None;
    for i in order {
        let (key, rev) = (&wanted[i].0, wanted[i].1);
        // Its events of `rev` from its key on are all in it if a later event follows
        // them there: then a key's last event at `rev`, if there, is the revision's.
        if let Some((chunk, last)) = &last_chunk
            && chunk.first <= rev
            && rev < *last
            && let Some(event) = chunk.event(key, rev)?
        {
            out[i] = chunk.decode(event)?;
            continue;
        }
        out[i] = match find_inline(tree, key, rev)? {
            Some((chunk, event)) => {
                let record = chunk.decode(event)?;
                let last = chunk.last()?;
                last_chunk = Some((chunk, last));
                record
            }
            None => v_record_at(tree, key, rev)?,
        };
    }
    Ok(out)
}

fn v_record_at(tree: &sled::Tree, key: &[u8], rev: Revision) -> Result<Option<VersionRecord>> {
    match tree.get(keys::version_key(key, rev))? {
        Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
        None => Ok(None),
    }
}

/// The tree key of the chunk that holds `key`'s inline put at `rev`, if one does.
pub(crate) fn inline_chunk_of(tree: &sled::Tree, key: &[u8], rev: Revision) -> Result<Option<IVec>> {
    Ok(find_inline(tree, key, rev)?
        .filter(|(_, event)| event.is_some())
        .map(|(chunk, _)| chunk.tree_key))
}

/// A layout-5 chunk read from the tree.
struct InlineChunk {
    tree_key: IVec,
    value: IVec,
    /// The revision of its key (at or before its first event's).
    first: Revision,
    sub: u32,
}

/// Where an event's inline record lies in its chunk's value (`None`: the event is a
/// delete).
type EventAt = Option<Range<usize>>;

impl InlineChunk {
    /// `tree_key`/`value` if a layout-5 chunk (`None`: a record of an older format or
    /// not a history record).
    fn read(tree_key: IVec, value: IVec) -> Option<Self> {
        let (first, sub, format) = history_records::split_key(&tree_key)?;
        (format == Some(ChunkFormat::Inline)).then_some(Self {
            tree_key,
            value,
            first,
            sub,
        })
    }

    fn events(&self) -> impl Iterator<Item = Result<RawEvent<'_>>> {
        RawEvents::new(ChunkFormat::Inline, self.first, &self.value).map(|event| {
            event.ok_or_else(|| Error::Corrupt {
                what: "history record",
                detail: format!("chunk at {}.{}", self.first, self.sub),
            })
        })
    }

    /// The last event of `key` at `rev` in this chunk, if it holds one: the last is what
    /// the revision did (a put and then a delete of one key in one request leaves both).
    /// Reads the events up to `rev` only.
    fn event(&self, key: &[u8], rev: Revision) -> Result<Option<EventAt>> {
        let mut found = None;
        for event in self.events() {
            let event = event?;
            if event.revision > rev {
                break;
            }
            if event.revision == rev && event.key == key {
                found = Some(event.record.map(|bytes| offset_in(&self.value, bytes)));
            }
        }
        Ok(found)
    }

    /// Its last event's revision.
    fn last(&self) -> Result<Revision> {
        let mut last = self.first;
        for event in self.events() {
            last = event?.revision;
        }
        Ok(last)
    }

    fn decode(&self, event: EventAt) -> Result<Option<VersionRecord>> {
        match event {
            Some(bytes) => Ok(Some(codec::decode(&self.value[bytes])?)),
            // The key was deleted at that revision: no version.
            None => Ok(None),
        }
    }
}

/// The chunk holding the event of `key` at `rev`, and the event, if a layout-5 chunk does.
///
/// The chunks that may hold the event are the newest one starting at or below `rev`'s
/// last sub-revision and, while they start at `rev` itself (a revision of many keys spans
/// chunks), those before it: usually one `get_lt` and a scan of a 4 KiB chunk without
/// copying it. A chunk of an older format means the revision's versions are `v` records.
fn find_inline(tree: &sled::Tree, key: &[u8], rev: Revision) -> Result<Option<(InlineChunk, EventAt)>> {
    // An `IVec` of a key this short lives inline: no allocation per read.
    let mut upper = IVec::from(&history_records::after_revision(rev)[..]);
    while let Some((tree_key, value)) = tree.get_lt(&upper)? {
        let Some(chunk) = InlineChunk::read(tree_key, value) else {
            break;
        };
        if let Some(event) = chunk.event(key, rev)? {
            return Ok(Some((chunk, event)));
        }
        if chunk.first < rev {
            break;
        }
        upper = chunk.tree_key;
    }
    Ok(None)
}

/// Where `part` (a slice of `whole`) lies in `whole`.
fn offset_in(whole: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - whole.as_ptr() as usize;
    start..start + part.len()
}

/// The newest put of `key` at or below `rev` that the tree holds, found without the key
/// index: every `v` record of the key and every history event up to `rev` are walked.
/// The fallback of a read whose index named a version the tree lacks (a bug, or a
/// compaction racing the read), and a look at the tree for tests: never a hot path.
pub fn newest_put_at(
    tree: &sled::Tree,
    key: &[u8],
    rev: Revision,
) -> Result<Option<(Revision, VersionRecord)>> {
    let lower = keys::version_key(key, 0);
    let upper = keys::version_key(key, rev);
    let mut newest = match tree.range(lower..=upper).next_back() {
        Some(item) => {
            let (tree_key, bytes) = item?;
            keys::split_version_key(&tree_key)
                .map(|(_, r)| codec::decode::<VersionRecord>(&bytes).map(|record| (r, record)))
                .transpose()?
        }
        None => None,
    };
    for event in history_records::events_between(tree, 0, rev) {
        let event = event?;
        if event.key != key || newest.as_ref().is_some_and(|(r, _)| *r > event.revision) {
            continue;
        }
        match (event.kind, event.record) {
            (_, Some(bytes)) => newest = Some((event.revision, codec::decode(&bytes)?)),
            (history_records::EventKind::Delete, None) => newest = None,
            _ => {}
        }
    }
    Ok(newest.filter(|(_, record)| matches!(record, VersionRecord::Put { .. })))
}

/// Stored versions (puts) of user keys in `[key, range_end)` (etcd's forms), of either
/// form: for tests and tools (walks the `v` family and the whole history).
pub fn count_versions(tree: &sled::Tree, key: &[u8], range_end: &[u8]) -> Result<usize> {
    let (lower, upper) = keys::version_bounds(key, range_end);
    let mut n = 0;
    for item in tree.range(lower..upper) {
        item?;
        n += 1;
    }
    let in_range = |k: &[u8]| {
        k >= key
            && (range_end == [0]
                || (range_end.is_empty() && k == key)
                || (!range_end.is_empty() && k < range_end))
    };
    for event in history_records::events_between(tree, 0, Revision::MAX) {
        let event = event?;
        if event.record.is_some() && in_range(&event.key) {
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::mvcc::history_records::{EventKind, HistoryEvent, encode_chunk, encode_events};
    use crate::test_store::temporary_tree;

    fn put_record(value: &str, sub: u32) -> VersionRecord {
        VersionRecord::Put {
            create_revision: 1,
            version: 1,
            lease: 0,
            value: value.as_bytes().to_vec(),
            sub,
        }
    }

    fn inline(revision: Revision, sub: u32, key: &str, value: Option<&str>) -> HistoryEvent {
        HistoryEvent {
            revision,
            sub,
            kind: if value.is_some() {
                EventKind::Put
            } else {
                EventKind::Delete
            },
            key: key.as_bytes().to_vec(),
            record: value.map(|v| codec::encode(&put_record(v, sub)).unwrap()),
        }
    }

    fn value_at(tree: &sled::Tree, key: &str, rev: Revision) -> Option<String> {
        match record_at(tree, key.as_bytes(), rev).unwrap()? {
            VersionRecord::Put { value, .. } => Some(String::from_utf8(value).unwrap()),
            VersionRecord::Delete { .. } => Some("tombstone".into()),
        }
    }

    #[test]
    fn a_version_is_found_in_whichever_chunk_or_family_holds_it() {
        let tree = temporary_tree();
        // Layout 4 below: revision 3's put is a `v` record, its event in a kinded chunk.
        let (k, v) = encode_chunk([(3, 0, EventKind::Put, &b"old"[..])]).unwrap();
        tree.insert(&k[..], v).unwrap();
        tree.insert(
            keys::version_key(b"old", 3),
            codec::encode(&put_record("from v", 0)).unwrap(),
        )
        .unwrap();
        // Layout 5 above: revision 5 spans two chunks (its sub 0 and 1, then 2 and 3),
        // and one of its keys was put and then deleted within it.
        let first = [
            inline(4, 0, "x", Some("x4")),
            inline(5, 0, "a", Some("a5")),
            inline(5, 1, "b", Some("b5")),
        ];
        let second = [
            inline(5, 2, "c", Some("c5")),
            inline(5, 3, "b", None),
            inline(6, 0, "a", Some("a6")),
        ];
        for events in [&first[..], &second[..]] {
            let (k, v) = encode_events(ChunkFormat::Inline, events).unwrap();
            tree.insert(&k[..], v).unwrap();
        }
        assert_eq!(value_at(&tree, "old", 3).as_deref(), Some("from v"));
        assert_eq!(value_at(&tree, "x", 4).as_deref(), Some("x4"));
        // Found by walking back from the chunk that starts at (5, 2).
        assert_eq!(value_at(&tree, "a", 5).as_deref(), Some("a5"));
        assert_eq!(value_at(&tree, "c", 5).as_deref(), Some("c5"));
        assert_eq!(value_at(&tree, "a", 6).as_deref(), Some("a6"));
        // The revision's last event of the key is what it did.
        assert_eq!(value_at(&tree, "b", 5), None);
        // Not written there.
        assert_eq!(value_at(&tree, "a", 4), None);
        assert_eq!(value_at(&tree, "x", 5), None);
        assert_eq!(value_at(&tree, "old", 4), None);
        assert_eq!(
            inline_chunk_of(&tree, b"c", 5).unwrap().as_deref(),
            Some(&history_records::chunk_key(5, 2, ChunkFormat::Inline)[..])
        );
        assert_eq!(inline_chunk_of(&tree, b"old", 3).unwrap(), None, "a `v` record");
        assert_eq!(inline_chunk_of(&tree, b"b", 5).unwrap(), None, "deleted there");
        // Without the index, the newest put at or below a revision; a delete hides it.
        let newest = |key: &str, rev| newest_put_at(&tree, key.as_bytes(), rev).unwrap().map(|(r, _)| r);
        assert_eq!(newest("a", 5), Some(5));
        assert_eq!(newest("a", 100), Some(6));
        assert_eq!(newest("b", 100), None);
        assert_eq!(newest("old", 100), Some(3));
        assert_eq!(count_versions(&tree, b"", &[0]).unwrap(), 6);
        assert_eq!(count_versions(&tree, b"a", b"").unwrap(), 2);
        // Many at once (a range: the chunk of the previous one reused where it holds the
        // next) read what one at a time reads, also b's delete at 5, which follows its put
        // across the chunk boundary.
        let wanted: Vec<(Vec<u8>, Revision)> = [
            ("x", 4),
            ("a", 5),
            ("b", 5),
            ("c", 5),
            ("old", 3),
            ("a", 6),
            ("a", 4),
        ]
        .iter()
        .map(|(k, r)| (k.as_bytes().to_vec(), *r))
        .collect();
        let each: Vec<_> = wanted
            .iter()
            .map(|(k, r)| record_at(&tree, k, *r).unwrap())
            .collect();
        assert_eq!(records_at(&tree, &wanted).unwrap(), each);
        assert_eq!(each.iter().filter(|r| r.is_some()).count(), 5);
    }

    #[test]
    fn a_damaged_chunk_is_corrupt_not_a_missing_version() {
        let tree = temporary_tree();
        let (k, mut v) = encode_events(ChunkFormat::Inline, &[inline(5, 0, "a", Some("a5"))]).unwrap();
        v.truncate(v.len() - 1);
        tree.insert(&k[..], v).unwrap();
        assert!(matches!(record_at(&tree, b"a", 5), Err(Error::Corrupt { .. })));
    }
}
