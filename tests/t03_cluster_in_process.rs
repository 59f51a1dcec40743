//! A three-node cluster in one process over loopback gRPC: writes on the leader and on
//! followers (forwarded), linearizable reads on every node see every acknowledged write;
//! members publish their client URLs; the cluster id is the same everywhere.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::time::Duration;

use raftkv::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_anywhere_reads_everywhere() {
    let _turn = support::ClusterTurn::take();
    let cluster = testing::TestCluster::start(3).await.unwrap();
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await.unwrap();
    let nodes: Vec<Node> = cluster.nodes().cloned().collect();
    println!("leader: {leader}");

    let mut written = Vec::new();
    for round in 0..10 {
        for node in &nodes {
            let key = format!("k/{round}/{}", node.id());
            let put = node
                .put(key.clone(), format!("from {}", node.id()))
                .await
                .unwrap();
            written.push((key, put.header.revision));
        }
    }
    // Concurrent writes through a follower share entries on the leader.
    let follower = nodes.iter().find(|n| n.id() != leader).unwrap().clone();
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let f = follower.clone();
            tokio::spawn(async move { f.put(format!("burst/{i:02}"), "x").await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    for node in &nodes {
        for (key, revision) in &written {
            let kv = node
                .get(key.clone())
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{key} missing on {}", node.id()));
            assert_eq!(kv.mod_revision, *revision);
        }
        let burst = node.range(RangeRequest::prefix("burst/")).await.unwrap();
        assert_eq!(burst.count, 32, "node {}", node.id());
    }
    // Concurrent linearizable reads on a follower share read-index rounds, and each of
    // the follower's rounds joins a round of the leader's own batcher.
    let leader_node = nodes.iter().find(|n| n.id() == leader).unwrap().clone();
    let leader_before = leader_node.storage_stats();
    let before = follower.storage_stats();
    let reads: Vec<_> = (0..200)
        .map(|i| {
            let f = follower.clone();
            tokio::spawn(async move { f.get(format!("burst/{:02}", i % 32)).await })
        })
        .collect();
    for r in reads {
        assert!(r.await.unwrap().unwrap().is_some());
    }
    let after = follower.storage_stats();
    let (rounds, served) = (
        after.read_index_rounds - before.read_index_rounds,
        after.read_index_reads - before.read_index_reads,
    );
    println!("200 linearizable reads on a follower: {rounds} read-index rounds");
    assert_eq!(served, 200);
    assert!(rounds < 100, "{rounds} rounds for 200 concurrent reads");
    let leader_after = leader_node.storage_stats();
    let joined = leader_after.read_index_reads - leader_before.read_index_reads;
    assert!(
        joined >= rounds,
        "the leader's batcher served {joined} read-index requests for the follower's {rounds} rounds"
    );

    let ids: Vec<u64> = nodes.iter().map(|n| n.cluster_id()).collect();
    assert!(ids[0] != 0 && ids.iter().all(|id| *id == ids[0]), "{ids:?}");

    // Every member publishes its client URLs through the log.
    support::wait_until("client urls published", Duration::from_secs(20), || {
        nodes[0]
            .members()
            .unwrap()
            .iter()
            .all(|m| !m.client_urls.is_empty())
    })
    .await;
    let members = nodes[2].members().unwrap();
    assert_eq!(members.len(), 3);
    for (m, n) in members.iter().zip(&nodes) {
        assert_eq!(m.client_urls, n.client_urls().to_vec());
        assert!(!m.is_learner);
    }
    drop((nodes, follower, leader_node));
    cluster.shutdown().await;
}
