//! The history both directions write and compare: the writes (puts, overwrites, a
//! multi-put transaction, deletes, a leased key, a large value, many keys, a compaction,
//! writes after it), what a member answers at one revision (its key-values and its
//! `HashKV`), and the assertions that two members' answers agree.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::lease_client::LeaseClient;
use raftkv_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use raftkv_proto::etcdserverpb::request_op::Request;

use crate::support::channel;

pub(super) fn put(key: &str, value: Vec<u8>, lease: i64) -> pb::PutRequest {
    pb::PutRequest {
        key: key.as_bytes().to_vec(),
        value,
        lease,
        ..Default::default()
    }
}

fn delete(key: &str) -> pb::DeleteRangeRequest {
    pb::DeleteRangeRequest {
        key: key.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// The history written to etcd; the lease id and the compact revision.
pub(super) async fn write_history(url: &str) -> (i64, i64) {
    let mut kv = KvClient::new(channel(url).await);
    let lease = LeaseClient::new(channel(url).await)
        .lease_grant(pb::LeaseGrantRequest { ttl: 3600, id: 0 })
        .await
        .unwrap()
        .into_inner()
        .id;
    kv.put(put("a", b"1".to_vec(), 0)).await.unwrap();
    kv.put(put("b", b"1".to_vec(), 0)).await.unwrap();
    kv.put(put("a", b"2".to_vec(), 0)).await.unwrap();
    // Two puts in one revision: sub revisions 0 and 1.
    kv.txn(pb::TxnRequest {
        success: ["c", "d"]
            .iter()
            .map(|k| pb::RequestOp {
                request: Some(Request::RequestPut(put(k, b"t".to_vec(), 0))),
            })
            .collect(),
        ..Default::default()
    })
    .await
    .unwrap();
    kv.delete_range(delete("b")).await.unwrap();
    kv.put(put("leased", b"l".to_vec(), lease)).await.unwrap();
    // Larger than a 4 KiB bbolt page: stored on overflow pages.
    kv.put(put("big", vec![7u8; 100_000], 0)).await.unwrap();
    for batch in 0..20 {
        let success = (0..100)
            .map(|i| pb::RequestOp {
                request: Some(Request::RequestPut(put(
                    &format!("many/{batch:02}/{i:03}"),
                    format!("v{i}").into_bytes(),
                    0,
                ))),
            })
            .collect();
        kv.txn(pb::TxnRequest {
            success,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    kv.put(put("a", b"3".to_vec(), 0)).await.unwrap();
    let compact = kv
        .put(put("many/00/000", b"again".to_vec(), 0))
        .await
        .unwrap()
        .into_inner()
        .header
        .unwrap()
        .revision
        - 5;
    kv.compact(pb::CompactionRequest {
        revision: compact,
        physical: true,
    })
    .await
    .unwrap();
    kv.put(put("a", b"4".to_vec(), 0)).await.unwrap();
    kv.delete_range(delete("c")).await.unwrap();
    kv.put(put("after", b"x".to_vec(), lease)).await.unwrap();
    (lease, compact)
}

/// What a member answers at `revision`: every key-value, and HashKV; or the refusal.
pub(super) async fn at_revision(url: &str, revision: i64) -> String {
    let range = KvClient::new(channel(url).await)
        .range(pb::RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision,
            ..Default::default()
        })
        .await;
    let hash = MaintenanceClient::new(channel(url).await)
        .hash_kv(pb::HashKvRequest { revision })
        .await;
    let range = match range {
        Ok(r) => {
            let r = r.into_inner();
            let kvs: Vec<String> = r
                .kvs
                .iter()
                .map(|kv| {
                    format!(
                        "{} = {} bytes ({:x}) c{} m{} v{} l{}",
                        String::from_utf8_lossy(&kv.key),
                        kv.value.len(),
                        kv.value
                            .iter()
                            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(*b))),
                        kv.create_revision,
                        kv.mod_revision,
                        kv.version,
                        kv.lease
                    )
                })
                .collect();
            format!("{} keys: {}", r.count, kvs.join("; "))
        }
        Err(s) => format!("{:?}: {}", s.code(), s.message()),
    };
    let hash = match hash {
        Ok(h) => {
            let h = h.into_inner();
            format!("hash {} compact {}", h.hash, h.compact_revision)
        }
        Err(s) => format!("{:?}: {}", s.code(), s.message()),
    };
    format!("{range} | {hash}")
}

/// The member's current revision.
pub(super) async fn current_revision(url: &str) -> i64 {
    KvClient::new(channel(url).await)
        .range(pb::RangeRequest {
            key: b"a".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .header
        .unwrap()
        .revision
}

/// The lease the history granted: its TTL, still running, and its two keys.
pub(super) async fn assert_lease_holds_its_keys(url: &str, lease: i64) {
    let ttl = LeaseClient::new(channel(url).await)
        .lease_time_to_live(pb::LeaseTimeToLiveRequest {
            id: lease,
            keys: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ttl.granted_ttl, 3600);
    assert!(ttl.ttl > 0, "{ttl:?}");
    let mut keys = ttl.keys.clone();
    keys.sort();
    assert_eq!(keys, [b"after".to_vec(), b"leased".to_vec()]);
}

pub(super) fn assert_same_history(seen: &[String], expected: &[String], compact: i64) {
    assert_eq!(seen.len(), expected.len());
    for (i, (seen, expected)) in seen.iter().zip(expected).enumerate() {
        assert_eq!(seen, expected, "at revision {}", compact - 1 + i as i64);
    }
}

/// What `url` answers at every revision from just below the compact revision on.
pub(super) async fn history(url: &str, compact: i64, current: i64) -> Vec<String> {
    let mut seen = Vec::new();
    for revision in (compact - 1)..=current {
        seen.push(at_revision(url, revision).await);
    }
    seen
}
