//! A member whose runtime has one async worker (`raftkv-server`'s default on 2 cores)
//! keeps answering while it applies a delete of many keys: the state machine applies
//! entries that may touch many keys on Tokio's blocking pool (`sm-apply-long`, paused
//! here), not on the worker that also runs Raft's heartbeats and the gRPC servers. Before,
//! the prefix delete at the end of `etcdctl check perf` held the worker for over a second
//! and cost the cluster its leader.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::time::{Duration, Instant};

use raftkv::{DeleteRangeRequest, RangeRequest};
use raftkv_client::Client;
use support::faults::Faults;
use support::process::ProcessCluster;

/// Keys the delete removes.
const KEYS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_one_worker_answers_while_a_long_delete_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = ProcessCluster::start_with_env(dir, 1, &[], &[("TOKIO_WORKER_THREADS", "1")]);
    cluster.agreed_leader(Duration::from_secs(30)).await;
    let client = Client::connect(cluster.client_urls()).await.unwrap();
    for i in 0..KEYS {
        client.put(format!("many/{i:04}"), "v").await.unwrap();
    }
    client.put("other", "still here").await.unwrap();

    let faults = Faults::new(&cluster, 0);
    faults.failpoint(1, "sm-apply-long", "pause").await;
    let deleting = {
        let client = client.clone();
        tokio::spawn(async move { client.delete_range(DeleteRangeRequest::prefix("many/")).await })
    };

    // The delete is committed and its apply held: the member still answers `Status`
    // (served on its one worker) and shows the entry committed but not applied.
    let deadline = Instant::now() + Duration::from_secs(30);
    let held = loop {
        assert!(
            Instant::now() < deadline,
            "the member stopped answering Status, or the delete never reached its apply:\n{}",
            cluster.logs()
        );
        match cluster.status(1).await {
            Some(s) if s.raft_index > s.raft_applied_index => break s,
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    assert!(
        !deleting.is_finished(),
        "the delete answered while its apply was held"
    );
    // A read that need not wait for the held apply is served meanwhile.
    let mut read = RangeRequest::key("other");
    read.serializable = true;
    let other = tokio::time::timeout(Duration::from_secs(10), client.range(read))
        .await
        .expect("a serializable read waited for the held apply")
        .unwrap();
    assert_eq!(other.kvs[0].value, b"still here");
    assert!(!deleting.is_finished());

    faults.failpoint(1, "sm-apply-long", "off").await;
    let deleted = tokio::time::timeout(Duration::from_secs(30), deleting)
        .await
        .expect("the delete did not finish once released")
        .unwrap()
        .unwrap();
    assert_eq!(deleted.deleted, KEYS as i64);
    let after = cluster.status(1).await.expect("status after the delete");
    assert!(after.raft_applied_index >= held.raft_index);
    let left = client.range(RangeRequest::prefix("many/")).await.unwrap();
    assert!(left.kvs.is_empty());
}
