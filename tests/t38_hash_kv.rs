//! `HashKV` as etcd 3.4 computes it (`src/hash_kv.rs`): the same writes, sent through
//! the etcd v3 API to a raftkv cluster and to an etcd cluster, give the same hash at
//! every revision, before and after compaction (including a compaction that leaves no
//! key alive), and the same refusals; every raftkv member gives the same hash, and the
//! same `Hash` at rest.

use std::time::Duration;

use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::lease_client::LeaseClient;
use raftkv_proto::etcdserverpb::maintenance_client::MaintenanceClient;

use crate::support;
use support::channel;
use support::process::ProcessCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raftkv_hashes_its_history_as_etcd_does() {
    let raftkv = {
        let cluster = ProcessCluster::start(3, &[]);
        cluster.agreed_leader(Duration::from_secs(30)).await;
        let urls = cluster.client_urls();
        let seen = session(&urls).await;
        // Every member answers the same for the newest revision (once it has it).
        let newest = hash_at(&urls[0], 0).await.unwrap();
        for url in &urls[1..] {
            assert_eq!(hash_when_applied(url, newest.0).await, newest, "member {url}");
        }
        // etcd's `Hash` (history, leases, members): the same on members at rest.
        let mut hashes = Vec::new();
        for url in &urls {
            let mut m = MaintenanceClient::new(channel(url).await);
            hashes.push(m.hash(pb::HashRequest {}).await.unwrap().into_inner().hash);
        }
        assert!(hashes.iter().all(|h| *h == hashes[0]), "{hashes:?}");
        KvClient::new(channel(&urls[0]).await)
            .put(put("after", "x", 0))
            .await
            .unwrap();
        let mut m = MaintenanceClient::new(channel(&urls[0]).await);
        assert_ne!(
            m.hash(pb::HashRequest {}).await.unwrap().into_inner().hash,
            hashes[0]
        );
        seen
    };
    assert!(
        raftkv.iter().filter(|l| l.contains("hash ")).count() >= 12,
        "{raftkv:#?}"
    );
    eprintln!("raftkv's session: {raftkv:#?}");
    if support::etcd::available() {
        let etcd = support::etcd::EtcdCluster::start(3).await;
        assert_eq!(
            raftkv,
            session(&etcd.client_urls).await,
            "etcd 3.4 hashes otherwise"
        );
    } else {
        assert!(std::env::var("CI").is_err(), "etcd is required under CI=true");
        eprintln!("etcd not installed: raftkv alone");
    }
}

/// (revision hashed, hash, compact revision) at `revision`, or the refusal's code and text.
async fn hash_at(url: &str, revision: i64) -> Result<(i64, u32, i64), String> {
    let mut m = MaintenanceClient::new(channel(url).await);
    match m.hash_kv(pb::HashKvRequest { revision }).await {
        Ok(r) => {
            let r = r.into_inner();
            let rev = if revision > 0 {
                revision
            } else {
                r.header.unwrap_or_default().revision
            };
            Ok((rev, r.hash, r.compact_revision))
        }
        Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
    }
}

/// [`hash_at`] on a member that may not have applied `revision` yet.
async fn hash_when_applied(url: &str, revision: i64) -> (i64, u32, i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match hash_at(url, revision).await {
            Ok(answer) => return answer,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("{url} at {revision}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{url} at {revision}: {e}"),
        }
    }
}

fn put(key: &str, value: &str, lease: i64) -> pb::PutRequest {
    pb::PutRequest {
        key: key.into(),
        value: value.into(),
        lease,
        ..Default::default()
    }
}

fn op_put(key: &str, value: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(put(key, value, 0))),
    }
}

fn op_delete(key: &str, range_end: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestDeleteRange(
            pb::DeleteRangeRequest {
                key: key.into(),
                range_end: range_end.into(),
                ..Default::default()
            },
        )),
    }
}

/// The writes, then the hash at every revision so far (and the current one), each
/// line "hash @rev: ..." or the refusal.
async fn session(urls: &[String]) -> Vec<String> {
    let url = &urls[0];
    let mut kv = KvClient::new(channel(url).await);
    let mut lease = LeaseClient::new(channel(url).await);
    let mut seen = Vec::new();
    let mut record = |what: String| seen.push(what);

    for (k, v) in [("a", "1"), ("b", "2"), ("c", "3"), ("a", "11")] {
        kv.put(put(k, v, 0)).await.unwrap();
    }
    // Several writes at one revision (sub-revisions 0, 1, 2), a nested transaction.
    kv.txn(pb::TxnRequest {
        success: vec![op_put("x", "1"), op_put("y", "2"), op_delete("c", "")],
        ..Default::default()
    })
    .await
    .unwrap();
    kv.txn(pb::TxnRequest {
        success: vec![
            pb::RequestOp {
                request: Some(pb::request_op::Request::RequestTxn(pb::TxnRequest {
                    success: vec![op_put("n", "1")],
                    ..Default::default()
                })),
            },
            op_put("m", "2"),
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    // A lease of a chosen id, so both systems store the same number.
    lease
        .lease_grant(pb::LeaseGrantRequest { ttl: 600, id: 0x5eed })
        .await
        .unwrap();
    kv.put(put("l", "leased", 0x5eed)).await.unwrap();
    // A range delete: one tombstone per key, sub-revisions in key order.
    kv.delete_range(pb::DeleteRangeRequest {
        key: "x".into(),
        range_end: "z".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let newest = kv
        .put(put("a", "111", 0))
        .await
        .unwrap()
        .into_inner()
        .header
        .unwrap()
        .revision;
    for rev in (1..=newest).chain([0, newest + 1]) {
        record(format!("hash @{rev}: {:?}", hash_at(url, rev).await));
    }

    // Compaction: below it only the newest puts remain; at or below it is refused.
    let compact = newest - 3;
    kv.compact(pb::CompactionRequest {
        revision: compact,
        physical: true,
    })
    .await
    .unwrap();
    kv.put(put("b", "22", 0)).await.unwrap();
    let newest = newest + 1;
    for rev in (compact - 1..=newest).chain([0]) {
        record(format!(
            "after compaction at {compact}, hash @{rev}: {:?}",
            hash_at(url, rev).await
        ));
    }

    // Every key deleted, then compacted: nothing alive at the revision hashed.
    let gone = kv
        .delete_range(pb::DeleteRangeRequest {
            key: vec![0],
            range_end: vec![0],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .header
        .unwrap()
        .revision;
    kv.compact(pb::CompactionRequest {
        revision: gone,
        physical: true,
    })
    .await
    .unwrap();
    record(format!(
        "all deleted and compacted, hash @0: {:?}",
        hash_at(url, 0).await
    ));
    kv.put(put("q", "1", 0)).await.unwrap();
    record(format!("then one put, hash @0: {:?}", hash_at(url, 0).await));
    seen
}
