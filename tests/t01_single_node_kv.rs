//! A single-node embedded `Node`: etcd semantics of put / get / delete / range / txn,
//! typed errors for bad input (with nothing written), group commit, and reads that never
//! mix two revisions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use raftkv::*;

async fn start(dir: &std::path::Path) -> Node {
    let node = Node::builder()
        .id(1)
        .data_dir(dir)
        .start()
        .await
        .expect("node starts");
    node.wait_for_leader(Duration::from_secs(20))
        .await
        .expect("leader");
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revisions_follow_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    // The empty store is at revision 1.
    assert_eq!(
        node.range(RangeRequest::prefix(""))
            .await
            .unwrap()
            .header
            .revision,
        1
    );

    let put = node.put("a", "1").await.unwrap();
    assert_eq!(put.header.revision, 2);
    assert_eq!(put.header.member_id, 1);
    assert!(put.header.raft_term >= 1);
    let kv = node.get("a").await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 2, 1));

    let mut req = PutRequest::new("a", "2");
    req.prev_kv = true;
    let put = node.put_with(req).await.unwrap();
    assert_eq!(put.header.revision, 3);
    assert_eq!(put.prev_kv.unwrap().value, b"1");
    let kv = node.get("a").await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));

    // A delete that deletes nothing does not move the revision.
    let del = node.delete("nothing-here").await.unwrap();
    assert_eq!((del.deleted, del.header.revision), (0, 3));

    // A txn is one revision, whatever it writes.
    let txn = TxnRequest {
        compare: vec![Compare::key("a", CompareResult::Equal, CompareTarget::Version(2))],
        success: vec![
            RequestOp::Put(PutRequest::new("b", "x")),
            RequestOp::Put(PutRequest::new("c", "y")),
            RequestOp::Range(RangeRequest::prefix("")),
        ],
        failure: vec![],
    };
    let resp = node.txn(txn).await.unwrap();
    assert!(resp.succeeded);
    assert_eq!(resp.header.revision, 4);
    let ResponseOp::Range(inner) = &resp.responses[2] else {
        panic!("range answer")
    };
    assert_eq!(
        inner.kvs.len(),
        3,
        "a range inside the txn sees the txn's own puts"
    );
    for key in ["b", "c"] {
        assert_eq!(node.get(key).await.unwrap().unwrap().mod_revision, 4);
    }
    // A failed compare runs the failure branch; a read-only branch keeps the revision.
    let txn = TxnRequest {
        compare: vec![Compare::key(
            "a",
            CompareResult::Equal,
            CompareTarget::Value(b"nope".to_vec()),
        )],
        success: vec![RequestOp::Put(PutRequest::new("z", "z"))],
        failure: vec![RequestOp::Range(RangeRequest::key("a"))],
    };
    let resp = node.txn(txn).await.unwrap();
    assert!(!resp.succeeded);
    assert_eq!(resp.header.revision, 4);
    assert!(node.get("z").await.unwrap().is_none());

    // Delete a range with prev_kv, one revision for all.
    let del = node
        .delete_range(DeleteRangeRequest {
            key: b"b".to_vec(),
            range_end: b"d".to_vec(),
            prev_kv: true,
        })
        .await
        .unwrap();
    assert_eq!((del.deleted, del.header.revision, del.prev_kvs.len()), (2, 5, 2));

    // Historical read, limit and count.
    let old = node
        .range(RangeRequest::prefix("").with_revision(4))
        .await
        .unwrap();
    assert_eq!(
        old.kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>(),
        vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
    );
    let limited = node
        .range(RangeRequest::prefix("").with_revision(4).with_limit(2))
        .await
        .unwrap();
    assert_eq!((limited.kvs.len(), limited.more, limited.count), (2, true, 3));
    let err = node
        .range(RangeRequest::key("a").with_revision(99))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Request(RequestError::FutureRevision { .. })),
        "{err:?}"
    );
    let serializable = node.get_serializable("a").await.unwrap().unwrap();
    assert_eq!(serializable.value, b"2");

    // Compaction: older revisions answer "compacted"; the compact revision stays readable.
    // physical: returns once this member has deleted the compacted versions from disk.
    node.compact_with(CompactionRequest {
        revision: 4,
        physical: true,
    })
    .await
    .unwrap();
    let err = node
        .range(RangeRequest::key("a").with_revision(3))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Request(RequestError::Compacted { .. })),
        "{err:?}"
    );
    assert_eq!(
        node.range(RangeRequest::prefix("").with_revision(4))
            .await
            .unwrap()
            .kvs
            .len(),
        3
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_typed_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::builder()
        .id(1)
        .data_dir(dir.path())
        .max_request_bytes(4096)
        .start()
        .await
        .unwrap();
    node.wait_for_leader(Duration::from_secs(20)).await.unwrap();
    node.put("keep", "me").await.unwrap();
    let before = node.metrics();

    let err = node.put("", "v").await.unwrap_err();
    assert_eq!(err, Error::Request(RequestError::EmptyKey));
    let err = node.put("big", vec![7u8; 5000]).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Request(RequestError::RequestTooLarge { limit: 4096, .. })
        ),
        "{err:?}"
    );
    let err = node.range(RangeRequest::interval("b", "a")).await.unwrap_err();
    assert_eq!(err, Error::Request(RequestError::InvalidRangeEnd));
    let err = node
        .delete_range(DeleteRangeRequest {
            key: b"z".to_vec(),
            range_end: b"a".to_vec(),
            prev_kv: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err, Error::Request(RequestError::InvalidRangeEnd));
    let err = node.get("").await.unwrap_err();
    assert_eq!(err, Error::Request(RequestError::EmptyKey));
    // Refused at apply time, atomically: the txn's first put must not survive.
    let txn = TxnRequest {
        success: vec![
            RequestOp::Put(PutRequest::new("half", "way")),
            RequestOp::Put(PutRequest {
                key: b"absent".to_vec(),
                ignore_value: true,
                ..PutRequest::default()
            }),
        ],
        ..TxnRequest::default()
    };
    let err = node.txn(txn).await.unwrap_err();
    assert_eq!(err, Error::Request(RequestError::KeyNotFound));
    let mut leased = PutRequest::new("leased", "v");
    leased.lease = 42;
    let err = node.put_with(leased).await.unwrap_err();
    assert_eq!(err, Error::Request(RequestError::LeaseNotFound(42)));

    let after = node.metrics();
    assert_eq!(
        after.revision, before.revision,
        "no refused request moved the revision"
    );
    let all = node.range(RangeRequest::prefix("")).await.unwrap();
    assert_eq!(all.kvs.len(), 1);
    assert_eq!(all.kvs[0].key, b"keep");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_packs_concurrent_puts() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let before = node.storage_stats();
    let puts: Vec<_> = (0..64)
        .map(|i| {
            let node = node.clone();
            tokio::spawn(async move { node.put(format!("k{i:02}"), format!("v{i}")).await })
        })
        .collect();
    let mut revisions = BTreeSet::new();
    for put in puts {
        let resp = put.await.unwrap().unwrap();
        assert!(
            revisions.insert(resp.header.revision),
            "every put has its own revision"
        );
    }
    assert_eq!(revisions.len(), 64);
    assert_eq!(
        revisions.iter().copied().collect::<Vec<_>>(),
        (2..66).collect::<Vec<i64>>()
    );
    let after = node.storage_stats();
    let proposals = after.proposals - before.proposals;
    let syncs = after.log_syncs - before.log_syncs;
    println!("64 puts: {proposals} raft entries, {syncs} log syncs");
    assert_eq!(after.proposed_requests - before.proposed_requests, 64);
    assert!(proposals < 32, "64 concurrent puts took {proposals} proposals");
    assert!(syncs < 32, "64 concurrent puts took {syncs} log syncs");
    // Each put's own value is there, with its own revision.
    let all = node.range(RangeRequest::prefix("k")).await.unwrap();
    assert_eq!(all.count, 64);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_never_mixes_revisions_while_txns_apply() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    const KEYS: usize = 8;
    let writer = {
        let node = node.clone();
        tokio::spawn(async move {
            for round in 0..300u32 {
                let success = (0..KEYS)
                    .map(|k| RequestOp::Put(PutRequest::new(format!("row/{k}"), round.to_string())))
                    .collect();
                node.txn(TxnRequest {
                    success,
                    ..TxnRequest::default()
                })
                .await
                .unwrap();
            }
        })
    };
    let mut reads = 0;
    let mut distinct_rounds = BTreeSet::new();
    while !writer.is_finished() {
        for serializable in [false, true] {
            let resp = node
                .range(RangeRequest::prefix("row/").with_serializable(serializable))
                .await
                .unwrap();
            if resp.kvs.is_empty() {
                continue;
            }
            assert_eq!(resp.kvs.len(), KEYS);
            let revs: BTreeSet<_> = resp.kvs.iter().map(|kv| kv.mod_revision).collect();
            let values: BTreeSet<_> = resp.kvs.iter().map(|kv| kv.value.clone()).collect();
            assert_eq!(revs.len(), 1, "one range read saw two revisions: {revs:?}");
            assert_eq!(values.len(), 1);
            distinct_rounds.extend(values);
            reads += 1;
        }
    }
    writer.await.unwrap();
    println!(
        "{reads} consistent range reads over {} distinct revisions",
        distinct_rounds.len()
    );
    assert!(
        reads > 10 && distinct_rounds.len() > 3,
        "the reads overlapped the writes"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_quota_raises_nospace_and_refuses_writes_until_disarmed() {
    let dir = tempfile::tempdir().unwrap();
    // A quota the data directory already exceeds: the first write measures and trips it.
    let node = Node::builder()
        .id(1)
        .data_dir(dir.path())
        .quota_backend_bytes(1)
        .start()
        .await
        .unwrap();
    node.wait_for_leader(Duration::from_secs(20)).await.unwrap();
    let before = node.metrics().revision;
    assert_eq!(node.put("k", "v").await.unwrap_err(), Error::NoSpace);
    assert!(node.nospace_alarm());
    // Deletes still run (they free space); puts inside a txn do not.
    node.delete("k").await.unwrap();
    let txn = TxnRequest {
        success: vec![RequestOp::Put(PutRequest::new("t", "v"))],
        ..TxnRequest::default()
    };
    assert_eq!(node.txn(txn).await.unwrap_err(), Error::NoSpace);
    assert_eq!(node.metrics().revision, before, "nothing was written");
    let mine = AlarmMember {
        member_id: 1,
        alarm: ALARM_NOSPACE,
    };
    assert_eq!(node.alarms().unwrap(), vec![mine]);
    // Disarmed (as `etcdctl alarm disarm` does) while the directory still exceeds the
    // quota: the next write measures again and raises it again, as etcd does.
    let disarm = AlarmRequest {
        action: AlarmAction::Deactivate,
        member_id: 1,
        alarm: ALARM_NOSPACE,
    };
    assert_eq!(node.alarm(disarm).await.unwrap(), vec![mine]);
    assert!(!node.nospace_alarm());
    assert_eq!(node.put("k", "v").await.unwrap_err(), Error::NoSpace);
    assert!(node.nospace_alarm());
    node.shutdown().await;
    // The alarm is in the replicated state: it outlives a restart, even with a quota
    // the directory now fits in, until it is disarmed.
    drop(node);
    let node = Node::builder().id(1).data_dir(dir.path()).start().await.unwrap();
    node.wait_for_leader(Duration::from_secs(20)).await.unwrap();
    assert!(node.nospace_alarm());
    assert_eq!(node.put("k", "v").await.unwrap_err(), Error::NoSpace);
    assert_eq!(node.alarm(disarm).await.unwrap(), vec![mine]);
    node.put("k", "v").await.unwrap();
    assert!(!node.nospace_alarm());
    assert!(node.alarms().unwrap().is_empty());
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_get_too_many_requests_when_apply_lags_commit() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    node.put("before", "ok").await.unwrap();
    // Stand in for an apply that fell 5,001 entries behind: the commit watermark is
    // ahead of the applied one (watermarks only move forward, so this is the test's end).
    let applied = node.applied().get();
    node.committed().advance(applied + raftkv::MAX_APPLY_LAG + 1);
    let before = node.metrics().revision;
    let err = node.put("after", "refused").await.unwrap_err();
    assert!(
        matches!(err, Error::TooManyRequests { lag } if lag > raftkv::MAX_APPLY_LAG),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert_eq!(node.metrics().revision, before, "nothing was proposed");
    // Reads are still served.
    assert_eq!(node.get("before").await.unwrap().unwrap().value, b"ok");
    node.shutdown().await;
}
