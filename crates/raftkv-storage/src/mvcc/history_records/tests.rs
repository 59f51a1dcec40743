//! Chunk encoding, both formats, and reading events back.
#![allow(clippy::unwrap_used)]
use super::*;

use crate::test_store::temporary_tree as tree;

fn event(revision: Revision, sub: u32, key: &str) -> HistoryEvent {
    HistoryEvent {
        revision,
        sub,
        kind: EventKind::Put,
        key: key.as_bytes().to_vec(),
    }
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
    assert_eq!(key[13], KINDED_CHUNK_MARK);
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
    assert_eq!(old_key[13], CHUNK_MARK);
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
    let (key, value) = encode_chunk([(5, 0, PUT, &b"abc"[..]), (6, 0, PUT, &b"de"[..])]).unwrap();
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
        chunks.push(10 + i, 0, false, &key);
    }
    let mut more = HistoryChunks::default();
    more.push(300, 0, true, b"x");
    chunks.append(more);
    let records = chunks.into_records();
    assert!(
        records.len() >= 5 && records.len() <= 7,
        "{} records",
        records.len()
    );
    assert!(records.iter().all(|(_, v)| v.len() < CHUNK_BYTES + 110));
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
        request.push(revision, 0, false, format!("key{revision}").as_bytes());
        if revision == 25 {
            request.push(revision, 1, false, b"second");
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
        request.push(revision, 0, false, key);
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
