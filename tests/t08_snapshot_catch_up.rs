//! A follower that was down while the leader snapshotted and purged its log catches up
//! through a streamed snapshot of several MiB (several 1 MiB chunks).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::time::Duration;

use raftkv::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_follower_catches_up_from_a_streamed_snapshot() {
    let _turn = support::ClusterTurn::take();
    let mut cluster = testing::TestCluster::builder(3)
        .configure(|b| b.snapshot_every_entries(200))
        .start()
        .await
        .unwrap();
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await.unwrap();
    // Take down a follower (node 3 unless it leads).
    let down = if leader == 3 { 2 } else { 3 };
    let survivor = cluster.nodes().find(|n| n.id() != down).unwrap().clone();
    cluster.stop(down).await.unwrap();

    // Several MiB of state in many entries, until the leader has snapshotted and purged
    // its log past node 3. Snapshots come after 200 entries and once as many bytes were
    // written as the last snapshot holds, so with every put a new key they come at about
    // 200, 400, 800, 1600 entries; the log keeps 1,000 entries behind the snapshot.
    let value = vec![b'x'; 4096];
    let leader_node = cluster.node(leader).unwrap().clone();
    let mut written = 0;
    while written < 4000 && leader_node.metrics().purged_index.is_none_or(|p| p <= 100) {
        for _ in 0..100 {
            survivor
                .put(format!("big/{written:05}"), value.clone())
                .await
                .unwrap();
            written += 1;
        }
    }
    support::wait_until("the leader purges its log", Duration::from_secs(30), || {
        leader_node.metrics().purged_index.is_some_and(|p| p > 100)
    })
    .await;
    let target = leader_node.metrics().last_log_index;
    println!(
        "leader snapshot at {:?}, purged up to {:?}, disk {} bytes",
        leader_node.metrics().snapshot_index,
        leader_node.metrics().purged_index,
        leader_node.disk_usage()
    );

    // Bring the follower back on the same directory and addresses (the cluster held its
    // ports while it was down).
    let back = cluster.restart(down).await.unwrap().clone();
    support::wait_until("the follower catches up", Duration::from_secs(60), || {
        back.metrics().applied >= target
    })
    .await;
    let installed = back.metrics().snapshot_index;
    assert!(installed.is_some(), "the follower caught up without a snapshot");
    // Several MiB moved, in 1 MiB chunks of one client stream.
    let snapshot_bytes: u64 = std::fs::read_dir(cluster.data_dir(down).unwrap().join("snapshots"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".snap"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(snapshot_bytes > 4 << 20, "snapshot of {snapshot_bytes} bytes");
    let all = back
        .range(RangeRequest::prefix("big/").with_serializable(true))
        .await
        .unwrap();
    assert_eq!(all.count, written);
    assert!(all.kvs.iter().all(|kv| kv.value.len() == 4096));
    println!(
        "follower {down} installed a {snapshot_bytes}-byte snapshot at {installed:?}; it holds all {written} keys"
    );
    drop((back, survivor, leader_node));
    cluster.shutdown().await;
}
