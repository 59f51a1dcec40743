//! Restoring a new member from a snapshot file, in either format: one of ours (as a data
//! directory keeps it) and the etcd bbolt file the export makes of it. Both give a store
//! with the same keys, history, compact revision, leases and alarms.

use std::collections::BTreeMap;

use openraft::RaftSnapshotBuilder;
use openraft::storage::RaftStateMachine;
use raftkv_core::alarm::{ALARM_NOSPACE, AlarmAction, AlarmRequest};
use raftkv_core::kv::{CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest};
use raftkv_core::{Command, Response};

use crate::apply::lease_tests::entries;
use crate::{Store, StoreOptions};

/// What a store answers at every revision from `from`, and its leases.
fn contents(store: &Store, from: i64) -> Vec<String> {
    let mut out = Vec::new();
    for revision in from..=store.reader.revision() {
        let mut all = RangeRequest::prefix("");
        all.revision = revision;
        let kvs = store.reader.range(&all).map(|r| r.kvs);
        out.push(format!("{revision}: {kvs:?}"));
    }
    out.push(format!("leases {:?}", store.reader.leases()));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_restores_alike_from_our_format_and_from_etcds() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let mut store = Store::open(a.path(), StoreOptions::default()).unwrap();
    let mut commands = vec![Command::LeaseGrant { id: 9, ttl: 600 }];
    for i in 0..50 {
        commands.push(Command::Put(PutRequest {
            lease: if i % 10 == 0 { 9 } else { 0 },
            ..PutRequest::new(format!("k{}", i % 7), format!("v{i}"))
        }));
    }
    commands.push(Command::DeleteRange(DeleteRangeRequest::key("k3")));
    commands.push(Command::Compact(CompactionRequest {
        revision: 30,
        physical: false,
    }));
    commands.push(Command::Put(PutRequest::new("after", "x")));
    commands.push(Command::Alarm(AlarmRequest {
        action: AlarmAction::Activate,
        member_id: 1,
        alarm: ALARM_NOSPACE,
    }));
    let answers = store
        .state_machine
        .apply_committed(entries(1, commands))
        .await
        .unwrap();
    assert!(
        !answers.iter().any(|a| matches!(a, Response::Rejected(_))),
        "{answers:?}"
    );
    let expected = contents(&store, 30);
    let snapshot = store
        .state_machine
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let ours = snapshot.snapshot.into_std().await;
    let (mut etcd, report) = store
        .shared
        .export_etcd_snapshot(ours.try_clone().unwrap())
        .unwrap();
    assert_eq!(report.revision, store.reader.revision());
    let etcd_path = a.path().join("etcd.db");
    std::io::copy(&mut etcd, &mut std::fs::File::create(&etcd_path).unwrap()).unwrap();
    let ours_path = std::fs::read_dir(a.path().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "snap"))
        .unwrap();
    drop(store);

    let members = BTreeMap::from([(1, "http://127.0.0.1:1".to_string())]);
    for (from, into) in [(&ours_path, b.path()), (&etcd_path, c.path())] {
        let dir = into.join("member");
        let report = crate::raft::restore::restore(from, &dir, 1, &members)
            .await
            .unwrap();
        assert_eq!(report.etcd_import.is_some(), from == &etcd_path);
        let restored = Store::open(&dir, StoreOptions::default()).unwrap();
        assert_eq!(
            contents(&restored, 30),
            expected,
            "restored from {}",
            from.display()
        );
        assert_eq!(restored.reader.compact_revision(), 30);
        assert_eq!(restored.reader.alarms().unwrap().len(), 1);
    }
}
