//! Unit tests of [`super::KeyIndex`]: building from the tree, what reads at a revision
//! see, updates and replays, pruning, and range reads across lock holds. The property
//! test against the tree is `mvcc/key_index_tests.rs`.

#![allow(clippy::unwrap_used)]

use super::*;

fn put() -> Vec<u8> {
    put_of(1, 1, 0)
}

fn put_of(create_revision: Revision, version: i64, lease: i64) -> Vec<u8> {
    codec::encode(&VersionRecord::Put {
        create_revision,
        version,
        lease,
        value: b"x".to_vec(),
        sub: 0,
    })
    .unwrap()
}

fn delete() -> Vec<u8> {
    codec::encode(&VersionRecord::Delete { sub: 0 }).unwrap()
}

#[test]
fn build_keeps_every_change_and_the_newest_put_of_each_live_key() {
    let tree = crate::test_store::temporary_tree();
    for (key, rev, record) in [
        (&b"a"[..], 2, put()),
        (b"a", 5, put()),
        (b"a\x00", 3, put()), // escaping: "a" and "a\0" are different keys
        (b"b", 4, put()),
        (b"b", 6, delete()),
        (b"c", 7, delete()),
        (b"c", 8, put_of(8, 1, 77)),
    ] {
        tree.insert(keys::version_key(key, rev), record).unwrap();
    }
    tree.insert(keys::history_key(9, 0), b"a".to_vec()).unwrap();
    let index = KeyIndex::build(&tree, Revision::MAX, 0).unwrap();
    assert_eq!(index.len(), 3);
    assert_eq!(index.keys_held(), 4);
    assert_eq!(index.newest(b"a"), Some(5));
    assert_eq!(index.newest(b"a\x00"), Some(3));
    assert_eq!(index.newest(b"b"), None);
    assert_eq!(index.changes(b"b"), vec![Change::put(4), Change::delete(6)]);
    assert_eq!(index.newest(b"c"), Some(8));
    let c = KeyMeta {
        mod_revision: 8,
        create_revision: 8,
        version: 1,
        lease: 77,
    };
    assert_eq!(index.meta(b"c"), Some(c));
    // What a read at each revision sees.
    assert_eq!(index.visible_at(b"a", 1), None);
    assert_eq!(index.visible_at(b"a", 4), Some(2));
    assert_eq!(index.visible_at(b"a", 9), Some(5));
    assert_eq!(index.visible_at(b"b", 5), Some(4));
    assert_eq!(index.visible_at(b"b", 6), None);
    assert_eq!(index.visible_at(b"c", 7), None);
    assert_eq!(
        index.range_at(b"", &[0], 5),
        (
            vec![(b"a".to_vec(), 5), (b"a\x00".to_vec(), 3), (b"b".to_vec(), 4)],
            7
        )
    );
    assert_eq!(
        index.range_at(b"a", b"c", 9),
        (vec![(b"a".to_vec(), 5), (b"a\x00".to_vec(), 3)], 5)
    );
}

/// Layout 4: deletes are history events (kinded chunks) merged into the changes the
/// version records give; above `up_to` nothing counts; a delete that compaction finished
/// with (below its progress, nothing before it) is left out.
#[test]
fn build_merges_the_deletes_of_the_history_and_stops_at_its_revision() {
    use crate::mvcc::history_records::{EventKind::*, encode_chunk};
    let tree = crate::test_store::temporary_tree();
    for (key, rev, record) in [
        (&b"a"[..], 4, put()),
        (b"a", 8, put_of(8, 1, 5)),
        (b"b", 5, put_of(5, 1, 9)),
        (b"c", 6, put()),
    ] {
        tree.insert(keys::version_key(key, rev), record).unwrap();
    }
    for chunk in [
        [(2, 0, Delete, &b"gone"[..]), (4, 0, Put, b"a"), (5, 0, Put, b"b")],
        [(6, 0, Put, &b"c"[..]), (7, 0, Delete, b"a"), (7, 1, Delete, b"c")],
        [(8, 0, Put, &b"a"[..]), (9, 0, Delete, b"b"), (9, 1, Delete, b"b")],
    ] {
        let (k, v) = encode_chunk(chunk).unwrap();
        tree.insert(&k[..], v).unwrap();
    }
    let index = KeyIndex::build(&tree, Revision::MAX, 3).unwrap();
    assert_eq!(
        index.changes(b"a"),
        vec![Change::put(4), Change::delete(7), Change::put(8)]
    );
    assert_eq!(index.meta(b"a").map(|m| m.lease), Some(5), "re-created: live");
    assert_eq!(index.changes(b"b"), vec![Change::put(5), Change::delete(9)]);
    assert_eq!(index.meta(b"b"), None);
    assert_eq!(index.changes(b"c"), vec![Change::put(6), Change::delete(7)]);
    assert!(index.changes(b"gone").is_empty(), "compacted below 3");
    assert_eq!((index.len(), index.keys_held()), (1, 3));
    assert_eq!(index.visible_at(b"a", 7), None);
    assert_eq!(index.visible_at(b"b", 8), Some(5));
    assert_eq!(index.change_at(b"b", 9), Some(Change::delete(9)));
    assert_eq!(index.leased_keys(), vec![(5, b"a".to_vec())]);

    // The state at revision 8: b live (its delete at 9 is above), and "gone" kept when
    // nothing is compacted.
    let index = KeyIndex::build(&tree, 8, 0).unwrap();
    assert_eq!(index.meta(b"b").map(|m| m.lease), Some(9));
    assert_eq!(index.changes(b"gone"), vec![Change::delete(2)]);
    assert_eq!((index.len(), index.keys_held()), (2, 4));
}

fn at(rev: Revision) -> Option<KeyMeta> {
    Some(KeyMeta {
        mod_revision: rev,
        create_revision: rev,
        version: 1,
        lease: 0,
    })
}

#[test]
fn range_follows_etcds_forms_and_update_applies_puts_and_deletes() {
    let index = KeyIndex::default();
    index.update([
        (&b"a"[..], &[Change::put(1)][..], at(1)),
        (b"b", &[Change::put(2)], at(2)),
        (b"c", &[Change::put(3)], at(3)),
    ]);
    let keys_of = |r: Vec<(Vec<u8>, KeyMeta)>| r.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(keys_of(index.range(b"b", b"")), vec![b"b".to_vec()]);
    assert_eq!(
        keys_of(index.range(b"a", b"c")),
        vec![b"a".to_vec(), b"b".to_vec()]
    );
    assert_eq!(
        keys_of(index.range(b"b", &[0])),
        vec![b"b".to_vec(), b"c".to_vec()]
    );
    assert!(index.range(b"c", b"a").is_empty());
    assert!(index.range_at(b"c", b"a", 3).0.is_empty());
    index.update([
        (&b"b"[..], &[Change::delete(4)][..], None),
        (b"c", &[Change::put(5), Change::put(6)], at(6)),
    ]);
    assert_eq!(
        index.range(b"a", &[0]),
        vec![(b"a".to_vec(), at(1).unwrap()), (b"c".to_vec(), at(6).unwrap())]
    );
    assert_eq!(index.len(), 2);
    assert_eq!(
        index.range_at(b"", &[0], 3).0,
        vec![(b"a".to_vec(), 1), (b"b".to_vec(), 2), (b"c".to_vec(), 3)]
    );
    assert_eq!(index.visible_at(b"c", 5), Some(5));
    // A replay of the same writes leaves the index as it was.
    index.update([(&b"c"[..], &[Change::put(5), Change::put(6)][..], at(6))]);
    assert_eq!(
        index.changes(b"c"),
        vec![Change::put(3), Change::put(5), Change::put(6)]
    );
}

#[test]
fn prune_forgets_what_compaction_deletes_and_keeps_what_reads_above_it_see() {
    let index = KeyIndex::default();
    index.update([
        (
            &b"live"[..],
            &[Change::put(1), Change::put(3), Change::put(7)][..],
            at(7),
        ),
        (b"gone", &[Change::put(2), Change::delete(4)], None),
        (b"at-target", &[Change::put(2), Change::delete(5)], None),
        (
            b"reborn",
            &[Change::put(1), Change::delete(2), Change::put(6)],
            at(6),
        ),
    ]);
    let before: Vec<_> = (5..=8).map(|r| index.range_at(b"", &[0], r).0).collect();
    index.prune([&b"live"[..], b"gone", b"at-target", b"reborn", b"unknown"], 5);
    assert_eq!(index.changes(b"live"), vec![Change::put(3), Change::put(7)]);
    assert_eq!(index.changes(b"gone"), vec![]);
    assert_eq!(index.keys_held(), 3, "a deleted key with nothing left goes");
    // A tombstone at the target stays, as compaction keeps its version record.
    assert_eq!(index.changes(b"at-target"), vec![Change::delete(5)]);
    assert_eq!(index.changes(b"reborn"), vec![Change::put(6)]);
    let after: Vec<_> = (5..=8).map(|r| index.range_at(b"", &[0], r).0).collect();
    assert_eq!(before, after);
    assert_eq!(index.range_at(b"", &[0], 8).1, 4, "the changes left to walk");
    assert_eq!(index.len(), 2);
}

#[test]
fn a_range_over_more_keys_than_one_lock_hold_visits_every_key_once() {
    let index = KeyIndex::default();
    let names: Vec<Vec<u8>> = (0..KEYS_PER_LOCK * 2 + 7)
        .map(|i| format!("k{i:06}").into_bytes())
        .collect();
    let changes = [Change::put(1), Change::put(2)];
    index.update(names.iter().map(|k| (k.as_slice(), &changes[..], at(2))));
    let (visible, retained) = index.range_at(b"k", b"l", 2);
    assert_eq!(visible.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(), names);
    assert_eq!(retained, names.len() * 2);
    // Kept: the first ones; counted: all.
    let some = index.range_at_most(b"k", b"l", 2, 1500);
    assert_eq!(some.visible.len(), 1500);
    assert_eq!(
        some.visible.last().map(|(k, _)| k.clone()),
        Some(names[1499].clone())
    );
    assert_eq!((some.live, some.retained), (names.len(), names.len() * 2));
    let none = index.range_at_most(b"k", b"l", 0, 10);
    assert_eq!(
        (none.visible.len(), none.live, none.retained),
        (0, 0, names.len() * 2)
    );
    // Bounds inside the map, across a hold's boundary.
    let (visible, _) = index.range_at(&names[1000], &names[1030], 1);
    assert_eq!(visible.len(), 30);
    assert!(visible.iter().all(|(_, r)| *r == 1));
}
