//! Chunk encoding, all three formats, and reading events back.
#![allow(clippy::unwrap_used)]
use super::*;

use crate::test_store::temporary_tree as tree;

/// A put whose (stand-in) version record is the key's bytes reversed.
fn event(revision: Revision, sub: u32, key: &str) -> HistoryEvent {
    HistoryEvent {
        revision,
        sub,
        kind: EventKind::Put,
        key: key.as_bytes().to_vec(),
        record: Some(record_of(key.as_bytes())),
    }
}

fn record_of(key: &[u8]) -> Vec<u8> {
    key.iter().rev().copied().collect()
}

const PUT: EventKind = EventKind::Put;
const OLD: EventKind = EventKind::Unrecorded;

#[test]
fn a_chunk_round_trips_and_large_revision_gaps_and_keys_survive() {
    let big = vec![0xabu8; 300];
    let events = [
        (5, 0, PUT, &b"a"[..]),
        (5, 1, EventKind::Delete, &b""[..]),
        (6, 0, PUT, &big[..]),
        (1 << 40, u32::MAX, EventKind::Delete, &b"z"[..]),
    ];
    let (key, value) = encode_chunk(events).unwrap();
    assert_eq!(key[13], ChunkFormat::Kinded.mark());
    let record = HistoryRecord::decode(IVec::from(&key[..]), &value).unwrap();
    let decoded: Vec<_> = record
        .events
        .iter()
        .map(|e| (e.revision, e.sub, e.kind, e.key.clone()))
        .collect();
    let want: Vec<_> = events
        .iter()
        .map(|&(r, s, kind, k)| (r, s, kind, k.to_vec()))
        .collect();
    assert_eq!(decoded, want);
    assert_eq!(record.last_revision(), 1 << 40);

    // A layout-3 chunk: same events, no kinds; cut at a revision, it keeps its format.
    let (old_key, old_value) = encode_chunk(events.map(|(r, s, _, k)| (r, s, OLD, k))).unwrap();
    assert_eq!(old_key[13], ChunkFormat::Plain.mark());
    let old = HistoryRecord::decode(IVec::from(&old_key[..]), &old_value).unwrap();
    assert!(old.events.iter().all(|e| e.kind == OLD));
    assert_eq!(old.events.len(), 4);
    let (cut_key, cut_value) = old.up_to(6).unwrap();
    assert_eq!(cut_key, old_key);
    let cut = HistoryRecord::decode(IVec::from(&cut_key[..]), &cut_value).unwrap();
    assert_eq!(cut.events, old.events[..3]);
    let (cut_key, cut_value) = record.up_to(5).unwrap();
    let cut = HistoryRecord::decode(IVec::from(&cut_key[..]), &cut_value).unwrap();
    assert_eq!(cut.events, record.events[..2]);
}

#[test]
fn damaged_records_are_corrupt_not_misread() {
    let events = [event(5, 0, "abc"), event(6, 0, "de")];
    let (key, value) = encode_events(ChunkFormat::Inline, &events).unwrap();
    let key = IVec::from(&key[..]);
    for cut in 1..value.len() {
        let damaged = HistoryRecord::decode(key.clone(), &value[..cut]);
        // A cut on an event boundary is a shorter valid chunk; any other is an error.
        if let Ok(record) = damaged {
            assert_eq!(record.events, vec![event(5, 0, "abc")]);
        }
    }
    assert!(HistoryRecord::decode(key.clone(), &[]).is_err(), "empty chunk");
    assert!(
        HistoryRecord::decode(IVec::from(&b"h123"[..]), b"k").is_err(),
        "short key"
    );
    assert!(HistoryRecord::decode(key, &[0xff; 12]).is_err(), "endless varint");
}

#[test]
fn staged_events_are_cut_into_chunks_by_size() {
    let mut chunks = HistoryChunks::default();
    let key = vec![b'k'; 100];
    for i in 0..200 {
        chunks.push(10 + i, 0, &key, Some(b"record"));
    }
    let mut more = HistoryChunks::default();
    more.push(300, 0, b"x", None);
    chunks.append(more);
    let records = chunks.into_records();
    assert!(
        records.len() >= 5 && records.len() <= 7,
        "{} records",
        records.len()
    );
    assert!(records.iter().all(|(_, v)| v.len() < CHUNK_BYTES + 120));
    let tree = tree();
    for (k, v) in &records {
        tree.insert(k, v.clone()).unwrap();
    }
    let all: Vec<_> = events_between(&tree, 0, Revision::MAX)
        .map(|e| e.unwrap())
        .map(|e| (e.revision, e.kind))
        .collect();
    let want: Vec<_> = (10..210)
        .map(|r| (r, PUT))
        .chain([(300, EventKind::Delete)])
        .collect();
    assert_eq!(all, want);
}

#[test]
fn appended_requests_continue_the_open_chunk() {
    // An apply call appends each request's staging: one-event requests share a chunk.
    let mut call = HistoryChunks::default();
    for revision in 20..30 {
        let mut request = HistoryChunks::default();
        let key = format!("key{revision}");
        request.push(revision, 0, key.as_bytes(), Some(&record_of(key.as_bytes())));
        if revision == 25 {
            request.push(revision, 1, b"second", Some(&record_of(b"second")));
        }
        call.append(request);
    }
    let records = call.into_records();
    assert_eq!(records.len(), 1, "one chunk for the whole call");
    let record = HistoryRecord::decode(records[0].0.clone(), &records[0].1).unwrap();
    let mut want: Vec<HistoryEvent> = (20..30).map(|r| event(r, 0, &format!("key{r}"))).collect();
    want.insert(6, event(25, 1, "second"));
    assert_eq!(record.events, want);

    // A request that would overflow the open chunk starts a new one; so does one
    // out of order (never the case in apply, but not encoded as a negative step).
    let mut call = HistoryChunks::default();
    let big = vec![b'b'; CHUNK_BYTES - 8];
    for (revision, key) in [(40, &b"a"[..]), (41, &big[..]), (42, b"c"), (39, b"d")] {
        let mut request = HistoryChunks::default();
        request.push(revision, 0, key, Some(b""));
        call.append(request);
    }
    let firsts: Vec<Revision> = call
        .into_records()
        .iter()
        .map(|(k, _)| keys::history_revision(k).unwrap())
        .collect();
    assert_eq!(firsts, vec![40, 41, 42, 39]);
}

#[test]
fn reading_from_a_revision_inside_a_chunk_starts_at_that_revision() {
    let tree = tree();
    // Layout 2 records (one event each) below, chunks above.
    tree.insert(keys::history_key(2, 0), &b"old"[..]).unwrap();
    tree.insert(keys::history_key(3, 0), &b"old2"[..]).unwrap();
    for chunk in [
        [(4, 0, OLD, &b"a"[..]), (5, 0, OLD, b"b")],
        [(5, 1, PUT, &b"c"[..]), (7, 0, EventKind::Delete, b"d")],
    ] {
        let (k, v) = encode_chunk(chunk).unwrap();
        tree.insert(&k[..], v).unwrap();
    }
    let keys_between = |from, to| -> Vec<(Revision, u32, String)> {
        events_between(&tree, from, to)
            .map(|e| e.unwrap())
            .map(|e| (e.revision, e.sub, String::from_utf8(e.key).unwrap()))
            .collect()
    };
    let all = keys_between(0, 100);
    assert_eq!(all.len(), 6);
    assert_eq!(keys_between(5, 5), vec![(5, 0, "b".into()), (5, 1, "c".into())]);
    assert_eq!(keys_between(6, 7), vec![(7, 0, "d".into())]);
    assert_eq!(
        keys_between(3, 4),
        vec![(3, 0, "old2".into()), (4, 0, "a".into())]
    );
    assert!(keys_between(8, 100).is_empty());
    assert_eq!(records_from(&tree, 6).count(), 1, "the chunk that reaches 7");
    assert_eq!(records_from(&tree, 8).count(), 0);
}

#[test]
fn inline_chunks_carry_each_puts_record_and_keep_their_format_when_cut() {
    let big_value = vec![7u8; 3000];
    let mut events = vec![event(5, 0, "a"), event(5, 1, "b")];
    events.push(HistoryEvent {
        revision: 6,
        sub: 0,
        kind: EventKind::Delete,
        key: b"a".to_vec(),
        record: None,
    });
    events.push(HistoryEvent {
        record: Some(big_value.clone()),
        ..event(9, 0, "c")
    });
    let (key, value) = encode_events(ChunkFormat::Inline, &events).unwrap();
    assert_eq!(key, chunk_key(5, 0, ChunkFormat::Inline));
    let record = HistoryRecord::decode(IVec::from(&key[..]), &value).unwrap();
    assert_eq!(record.format, Some(ChunkFormat::Inline));
    assert_eq!(record.events, events);
    // The borrowed parse sees the same, without copying.
    let raw: Vec<_> = RawEvents::new(ChunkFormat::Inline, 5, &value)
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.revision,
                e.deleted,
                e.key.to_vec(),
                e.record.map(<[u8]>::to_vec),
            )
        })
        .collect();
    assert_eq!(raw[3], (9, Some(false), b"c".to_vec(), Some(big_value)));
    assert_eq!(raw[2], (6, Some(true), b"a".to_vec(), None));
    // Cut at a revision (a snapshot's filter), the records stay inline.
    let (cut_key, cut_value) = record.up_to(6).unwrap();
    assert_eq!(cut_key, key);
    let cut = HistoryRecord::decode(IVec::from(&cut_key[..]), &cut_value).unwrap();
    assert_eq!(cut.events, events[..3]);
    // The same events as a layout-4 chunk lose their records, not their kinds.
    let (old_key, old_value) = encode_events(ChunkFormat::Kinded, &events).unwrap();
    let old = HistoryRecord::decode(IVec::from(&old_key[..]), &old_value).unwrap();
    assert!(old.events.iter().all(|e| e.record.is_none()));
    assert_eq!(old.events[2].kind, EventKind::Delete);
    // A key that is not a chunk of a known format is refused.
    let mut unknown = key;
    unknown[13] = 4;
    assert!(HistoryRecord::decode(IVec::from(&unknown[..]), &value).is_err());
}

#[test]
fn the_bound_after_a_revision_is_above_its_records_and_below_the_next() {
    let after = after_revision(7);
    for format in [ChunkFormat::Plain, ChunkFormat::Kinded, ChunkFormat::Inline] {
        assert!(chunk_key(7, u32::MAX, format)[..] < after[..]);
        assert!(chunk_key(8, 0, format)[..] > after[..]);
    }
    assert!(keys::history_key(7, u32::MAX)[..] < after[..]);
}

#[test]
fn a_record_keeping_some_events_keeps_its_key_even_without_its_first_event() {
    let events = [event(5, 0, "a"), event(5, 1, "b"), event(9, 0, "c")];
    let (key, value) = encode_events(ChunkFormat::Inline, &events).unwrap();
    let record = HistoryRecord::decode(IVec::from(&key[..]), &value).unwrap();
    let (kept_key, kept_value) = record.keeping(|e| e.key != b"a").unwrap();
    assert_eq!(kept_key, key, "rewritten in place");
    let kept = HistoryRecord::decode(IVec::from(&kept_key[..]), &kept_value).unwrap();
    assert_eq!(kept.events, events[1..]);
    let (_, last_only) = record.keeping(|e| e.revision == 9).unwrap();
    let last = HistoryRecord::decode(IVec::from(&key[..]), &last_only).unwrap();
    assert_eq!(
        last.events,
        events[2..],
        "the first step is from the key's revision"
    );
    assert!(record.keeping(|_| false).is_none());
    // Readers that seek by revision still find what is left.
    let tree = tree();
    tree.insert(&key[..], last_only).unwrap();
    let found: Vec<_> = events_between(&tree, 9, 9).map(|e| e.unwrap()).collect();
    assert_eq!(found, events[2..]);
    assert_eq!(records_from(&tree, 6).count(), 1, "the record reaching 9");
}
