//! Snapshots: built at the point `get_snapshot_builder` captured even while apply goes on,
//! installed into a fresh keyspace on another store, with history and revisions intact;
//! a corrupt or foreign-version snapshot is refused and changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, LogId, RaftSnapshotBuilder};
use raftkv_core::kv::{PutRequest, RangeRequest};
use raftkv_core::types::Entry;
use raftkv_storage::{DataDirLock, Store, StoreOptions};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

mod support;

fn put(i: u64, key: &str, value: &str) -> Entry {
    Entry {
        log_id: LogId::new(raftkv_core::types::leader_id(1, 1), i),
        payload: EntryPayload::Normal(raftkv_core::Command::Put(PutRequest::new(key, value))),
    }
}

fn open(dir: &std::path::Path) -> Store {
    Store::open(dir, StoreOptions::default()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_captures_a_point_and_installs_elsewhere() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut leader = open(a.path());
    let entries: Vec<Entry> = (1..=50)
        .map(|i| put(i, &format!("k{:02}", i % 10), &format!("v{i}")))
        .collect();
    leader.state_machine.apply_committed(entries).await.unwrap();
    let mut builder = leader.state_machine.get_snapshot_builder().await;
    // Applied after the capture: must not be in the snapshot.
    leader
        .state_machine
        .apply_committed([put(51, "late", "x"), put(52, "k01", "late")])
        .await
        .unwrap();
    let snapshot = builder.build_snapshot().await.unwrap();
    assert_eq!(snapshot.meta.last_log_id.unwrap().index, 50);

    let mut follower = open(b.path());
    // What the follower had before is replaced, key index included.
    follower
        .state_machine
        .apply_committed([put(1, "stale", "s"), put(2, "k01", "mine")])
        .await
        .unwrap();
    support::install_snapshot(&mut follower, snapshot).await;

    assert_eq!(
        follower.reader.revision(),
        51,
        "50 puts on an empty store (revision 1)"
    );
    assert_eq!(follower.shared.applied().get(), 50);
    let now = follower.reader.range(&RangeRequest::prefix("")).unwrap();
    assert_eq!(now.count, 10, "'late' was applied after the capture");
    let k01 = follower
        .reader
        .range(&RangeRequest::key("k01"))
        .unwrap()
        .kvs
        .remove(0);
    assert_eq!(
        (k01.value.as_slice(), k01.version, k01.create_revision),
        (&b"v41"[..], 5, 2)
    );
    // History travels too: an old revision reads as it did on the leader.
    let old = follower
        .reader
        .range(&RangeRequest::key("k01").with_revision(12))
        .unwrap();
    assert_eq!(old.kvs[0].value, b"v11");
    let (applied, _) = follower.state_machine.applied_state().await.unwrap();
    assert_eq!(applied.unwrap().index, 50);
    // The installed snapshot is the follower's current one, and survives a reopen.
    assert!(
        follower
            .state_machine
            .get_current_snapshot()
            .await
            .unwrap()
            .is_some()
    );
    // Writes after the install continue the snapshot's keys (version, creation), and the
    // follower's own earlier keys are gone.
    follower
        .state_machine
        .apply_committed([put(51, "k01", "after"), put(52, "stale", "again")])
        .await
        .unwrap();
    let read = |f: &Store, key: &str| f.reader.range(&RangeRequest::key(key)).unwrap().kvs.remove(0);
    let k01 = read(&follower, "k01");
    assert_eq!((k01.version, k01.create_revision, k01.mod_revision), (6, 2, 52));
    let stale = read(&follower, "stale");
    assert_eq!((stale.version, stale.create_revision), (1, 53));
    assert_eq!(
        follower.shared.key_index().misses(),
        0,
        "the install left the index stale"
    );
    drop(follower);
    let follower = open(b.path());
    assert_eq!(
        follower.reader.range(&RangeRequest::prefix("")).unwrap().count,
        11
    );
    assert_eq!(follower.reader.revision(), 53);
    assert_eq!(read(&follower, "k01").version, 6);
}

fn entry(i: u64, command: raftkv_core::Command) -> Entry {
    Entry {
        log_id: LogId::new(raftkv_core::types::leader_id(1, 1), i),
        payload: EntryPayload::Normal(command),
    }
}

/// One read of everything: (key, mod revision, value) per live key.
type Read = Vec<(Vec<u8>, i64, Vec<u8>)>;

/// Every key's state at every revision, as ranges over everything read it.
fn reads(store: &Store) -> Vec<Read> {
    (1..=store.reader.revision())
        .map(|rev| {
            let request = RangeRequest::prefix("").with_revision(rev);
            let kvs = store.reader.range(&request).unwrap().kvs;
            kvs.into_iter()
                .map(|kv| (kv.key, kv.mod_revision, kv.value))
                .collect()
        })
        .collect()
}

/// Every write HashKV would hash at the current revision.
fn hashed(store: &Store) -> Vec<raftkv_storage::HashedWrite> {
    let mut writes = Vec::new();
    store.reader.hash_history(0, |w| writes.push(w)).unwrap();
    writes
}

/// Deletes are history events alone (layout 4): after an install the follower reads every
/// revision as the leader does, hashes the same writes, and its lease attachments name
/// only the keys live on a lease (a deleted key's older put names one too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_travel_in_the_history_and_attachments_follow_live_keys() {
    use raftkv_core::Command;
    use raftkv_core::kv::DeleteRangeRequest;
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut leader = open(a.path());
    let on_lease = |key: &str, lease: i64| {
        Command::Put(PutRequest {
            lease,
            ..PutRequest::new(key, format!("{key}@{lease}"))
        })
    };
    let commands = vec![
        Command::LeaseGrant { id: 7, ttl: 600 },
        on_lease("a", 7),
        on_lease("b", 7),
        on_lease("c", 7),
        Command::Put(PutRequest::new("d", "d")),
        Command::DeleteRange(DeleteRangeRequest::key("b")),
        Command::DeleteRange(DeleteRangeRequest::prefix("c")),
        on_lease("c", 0),
        Command::DeleteRange(DeleteRangeRequest::key("d")),
        on_lease("e", 7),
    ];
    let entries: Vec<Entry> = commands
        .into_iter()
        .enumerate()
        .map(|(i, c)| entry(i as u64 + 1, c))
        .collect();
    leader.state_machine.apply_committed(entries).await.unwrap();
    assert_eq!(
        leader.shared.version_records(b"", &[0]).unwrap(),
        6,
        "puts only: the three deletes wrote no version record"
    );
    let snapshot = leader
        .state_machine
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let mut follower = open(b.path());
    support::install_snapshot(&mut follower, snapshot).await;

    assert_eq!(reads(&follower), reads(&leader));
    assert_eq!(hashed(&follower), hashed(&leader));
    let live_now: Vec<_> = reads(&leader).pop().unwrap().into_iter().map(|kv| kv.0).collect();
    assert_eq!(live_now, [b"a".to_vec(), b"c".to_vec(), b"e".to_vec()]);
    for store in [&leader, &follower] {
        assert_eq!(
            store.reader.lease_keys(7).unwrap(),
            [b"a".to_vec(), b"e".to_vec()],
            "b deleted, c re-created without the lease"
        );
    }
    // And after a reopen, which builds the index from the tree again.
    drop(follower);
    let follower = open(b.path());
    assert_eq!(reads(&follower), reads(&leader));
    assert_eq!(
        follower.reader.lease_keys(7).unwrap(),
        [b"a".to_vec(), b"e".to_vec()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_or_foreign_snapshots_are_refused() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut leader = open(a.path());
    leader
        .state_machine
        .apply_committed((1..=20).map(|i| put(i, &format!("k{i}"), "v")))
        .await
        .unwrap();
    let snapshot = support::build_snapshot(&mut leader).await;
    let mut data = Vec::new();
    let mut source = snapshot.snapshot;
    source.read_to_end(&mut data).await.unwrap();

    let mut follower = open(b.path());
    follower
        .state_machine
        .apply_committed([put(1, "mine", "keep")])
        .await
        .unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("flipped byte", {
            let mut d = data.clone();
            let n = d.len();
            d[n / 2] ^= 0xff;
            d
        }),
        ("truncated", data[..data.len() - 9].to_vec()),
        ("other schema version", {
            let mut d = data.clone();
            d[8..12].copy_from_slice(&99u32.to_be_bytes());
            d
        }),
        ("not a snapshot", b"hello world, definitely not raftkv".to_vec()),
    ];
    for (what, bytes) in cases {
        let mut incoming = follower.state_machine.begin_receiving_snapshot().await.unwrap();
        incoming.write_all(&bytes).await.unwrap();
        incoming.rewind().await.unwrap();
        let err = follower
            .state_machine
            .install_snapshot(&snapshot.meta, incoming)
            .await;
        assert!(err.is_err(), "{what}: installed");
        let mine = follower.reader.range(&RangeRequest::prefix("")).unwrap();
        assert_eq!(mine.count, 1, "{what}: the state changed");
        assert_eq!(follower.shared.applied().get(), 1);
    }
}

#[test]
fn a_data_directory_of_another_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    {
        // The store's background threads close it shortly after the drop: its lock on
        // the directory says when.
        let _closed = DataDirLock::acquire(dir.path(), std::time::Duration::from_secs(10)).unwrap();
        let db = sled::open(dir.path().join("state")).unwrap();
        db.insert(b"schema", &7u32.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    let err = Store::open(dir.path(), StoreOptions::default())
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(text.contains("unsupported schema version 7"), "{text}");
}

/// The cadence as a store feeds it: due after the entries while there is no snapshot;
/// after a build, only once apply has written as many bytes as the file holds; after a
/// reopen, counted from the snapshot on disk; after an install, from the installed one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_is_due_after_the_entries_and_as_many_bytes_as_the_last_one() {
    let options = StoreOptions {
        snapshot_every_entries: 10,
        ..StoreOptions::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), options).unwrap();
    let value = "v".repeat(1000);
    store
        .state_machine
        .apply_committed((1..=9).map(|i| put(i, &format!("k{i:03}"), &value)))
        .await
        .unwrap();
    assert!(!store.shared.snapshot_cadence().is_due(), "9 entries");
    store
        .state_machine
        .apply_committed([put(10, "k010", &value)])
        .await
        .unwrap();
    assert!(
        store.shared.snapshot_cadence().is_due(),
        "10 entries, no snapshot yet"
    );

    let snapshot = support::build_snapshot(&mut store).await;
    let bytes = store.shared.snapshot_cadence().last_snapshot_bytes();
    assert!(
        bytes > 10_000,
        "ten 1 KB versions and their history: {bytes} bytes"
    );
    assert!(!store.shared.snapshot_cadence().is_due());
    // Ten more entries of new keys write about as much as the file holds (each version
    // and its history record); keep going until due, and check it was not early.
    let mut index = 10;
    let mut written = 0;
    while !store.shared.snapshot_cadence().is_due() {
        index += 1;
        assert!(index < 100, "never due");
        store
            .state_machine
            .apply_committed([put(index, &format!("k{index:03}"), &value)])
            .await
            .unwrap();
        written += value.len() as u64;
    }
    assert!(index >= 20, "due after {} entries", index - 10);
    assert!(
        written <= bytes + 1000,
        "{written} bytes of values for a {bytes}-byte snapshot"
    );
    drop(store);

    // Reopened: the snapshot on disk is the last one; nothing written since.
    let store = Store::open(dir.path(), options).unwrap();
    assert_eq!(store.shared.snapshot_cadence().last_snapshot_bytes(), bytes);
    assert!(!store.shared.snapshot_cadence().is_due());
    drop(store);

    // Installed elsewhere: counted from the installed file.
    let other = tempfile::tempdir().unwrap();
    let mut follower = Store::open(other.path(), options).unwrap();
    support::install_snapshot(&mut follower, snapshot).await;
    assert_eq!(follower.shared.snapshot_cadence().last_snapshot_bytes(), bytes);
    assert!(!follower.shared.snapshot_cadence().is_due());
}
