//! Restart: 10,000 keys written through a single-node `Node` are all there after the node
//! is dropped and started again from the same directory, and the revision continues.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use raftkv::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_keys_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    const N: usize = 10_000;
    let revision_before = {
        let node = Node::builder().id(1).data_dir(dir.path()).start().await.unwrap();
        node.wait_for_leader(Duration::from_secs(20)).await.unwrap();
        // 64 writers in parallel: group commit keeps this to a few hundred log syncs.
        let writers: Vec<_> = (0..64)
            .map(|w| {
                let node = node.clone();
                tokio::spawn(async move {
                    for i in (w..N).step_by(64) {
                        node.put(format!("key/{i:05}"), format!("value-{i}"))
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            tokio::time::timeout(Duration::from_secs(120), w)
                .await
                .unwrap()
                .unwrap();
        }
        let revision = node.metrics().revision;
        assert_eq!(revision, 1 + N as i64);
        println!("stats after {N} puts: {:?}", node.storage_stats());
        node.shutdown().await;
        revision
    };

    let node = Node::builder().id(1).data_dir(dir.path()).start().await.unwrap();
    node.wait_for_leader(Duration::from_secs(20)).await.unwrap();
    let all = node.range(RangeRequest::prefix("key/")).await.unwrap();
    assert_eq!(all.count, N as i64);
    for (i, kv) in all.kvs.iter().enumerate() {
        assert_eq!(kv.key, format!("key/{i:05}").into_bytes());
        assert_eq!(kv.value, format!("value-{i}").into_bytes());
    }
    assert_eq!(node.metrics().revision, revision_before);
    let put = node.put("after-restart", "x").await.unwrap();
    assert_eq!(put.header.revision, revision_before + 1, "the revision continues");
    node.shutdown().await;
}
