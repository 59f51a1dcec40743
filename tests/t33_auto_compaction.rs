//! etcd's automatic compaction: revision mode keeps the last N revisions; periodic mode
//! keeps about the retention's time of history; the leader compacts through the log, so
//! every member compacts at the same revision, and a new leader carries on after the old
//! one dies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use raftkv::{AutoCompaction, Error, Node, RangeRequest, RequestError};
use raftkv_client::{Client, ClientError, ClientOptions};

use crate::support::process::ProcessCluster;

const DEADLINE: Duration = Duration::from_secs(30);

async fn single_node(dir: &std::path::Path, mode: AutoCompaction) -> Node {
    let node = Node::builder()
        .id(1)
        .data_dir(dir)
        .auto_compaction(mode)
        .start()
        .await
        .unwrap();
    node.wait_for_leader(Duration::from_secs(20)).await.unwrap();
    node
}

/// Whether `revision` is compacted away on `node`.
async fn compacted_on_node(node: &Node, revision: i64) -> bool {
    match node.range(RangeRequest::key("k").with_revision(revision)).await {
        Ok(_) => false,
        Err(Error::Request(RequestError::Compacted { .. })) => true,
        Err(e) => panic!("range at {revision}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revision_mode_keeps_the_last_n_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let mode = AutoCompaction::Revisions {
        retain: 5,
        check_every: Duration::from_millis(100),
    };
    let node = single_node(dir.path(), mode).await;
    let mut last = 0;
    for i in 0..20 {
        last = node.put("k", format!("v{i}")).await.unwrap().header.revision;
    }
    // Compacted at last - 5: that revision stays readable, the one below does not.
    let deadline = Instant::now() + DEADLINE;
    while !compacted_on_node(&node, last - 6).await {
        assert!(Instant::now() < deadline, "revision {} never compacted", last - 6);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!compacted_on_node(&node, last - 5).await);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_mode_keeps_about_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let retention = Duration::from_secs(1);
    let node = single_node(dir.path(), AutoCompaction::Periodic { retention }).await;
    // A write every 50 ms for 3 s, each with when it was acknowledged.
    let mut written: Vec<(Instant, i64)> = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let revision = node.put("k", "v").await.unwrap().header.revision;
        written.push((Instant::now(), revision));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let now = Instant::now();
    // The oldest readable revision (binary search: compaction is a prefix).
    let (mut low, mut high) = (1, written.last().unwrap().1);
    while low < high {
        let mid = (low + high) / 2;
        if compacted_on_node(&node, mid).await {
            low = mid + 1;
        } else {
            high = mid;
        }
    }
    let oldest_readable = low;
    assert!(
        oldest_readable > written[0].1,
        "nothing compacted in 3 s of a 1 s retention"
    );
    // A compaction takes a revision noted at least one retention before it ran: the
    // compacted revision was acknowledged about a retention ago or earlier (plus the
    // put's own latency)...
    let compacted_at = written.iter().find(|(_, r)| *r >= oldest_readable).unwrap().0;
    assert!(
        now.duration_since(compacted_at) + Duration::from_millis(300) >= retention,
        "compacted at a revision only {:?} old",
        now.duration_since(compacted_at)
    );
    // ...and everything written in the last half retention is still there.
    for (at, revision) in &written {
        if now.duration_since(*at) < retention / 2 {
            assert!(
                *revision >= oldest_readable,
                "revision {revision} from {:?} ago compacted",
                now.duration_since(*at)
            );
        }
    }
    node.shutdown().await;
}

/// The oldest revision `url` serves a serializable (local) read at.
async fn oldest_readable(url: &str, newest: i64) -> i64 {
    let options = ClientOptions {
        request_timeout: Duration::from_secs(5),
        ..ClientOptions::default()
    };
    let client = Client::connect_with(vec![url.to_string()], options)
        .await
        .unwrap();
    let (mut low, mut high) = (1, newest);
    while low < high {
        let mid = (low + high) / 2;
        let read = RangeRequest::key("k").with_revision(mid).with_serializable(true);
        match client.range(read).await {
            Ok(_) => high = mid,
            Err(ClientError::Server(Error::Request(RequestError::Compacted { .. }))) => low = mid + 1,
            Err(e) => panic!("range at {mid} on {url}: {e}"),
        }
    }
    low
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_compacts_for_every_member_and_a_new_leader_carries_on() {
    let mut cluster = ProcessCluster::start(3, &["--auto-compaction-retention", "1s"]);
    let leader = cluster.agreed_leader(DEADLINE).await;
    let client = Client::connect(cluster.client_urls()).await.unwrap();
    let write_for = |client: Client, period: Duration| async move {
        let started = Instant::now();
        let mut newest = 0;
        while started.elapsed() < period {
            newest = client.put("k", "v").await.unwrap().header.revision;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        newest
    };
    let newest = write_for(client.clone(), Duration::from_secs(3)).await;
    // Every member ends up at the same compact revision: the leader's, applied through
    // the log (followers compact nothing on their own).
    let deadline = Instant::now() + DEADLINE;
    let first = loop {
        let mut oldest = Vec::new();
        for url in cluster.client_urls() {
            oldest.push(oldest_readable(&url, newest).await);
        }
        if oldest[0] > 1 && oldest.iter().all(|o| *o == oldest[0]) {
            break oldest[0];
        }
        assert!(
            Instant::now() < deadline,
            "members disagree or nothing compacted: {oldest:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    cluster.kill(leader);
    let survivors: Vec<u64> = cluster.running();
    let new_leader = cluster.agreed_leader_among(&survivors, DEADLINE).await;
    assert_ne!(new_leader, leader);
    let client = Client::connect(survivors.iter().map(|id| cluster.url(*id)).collect::<Vec<_>>())
        .await
        .unwrap();
    let newest = write_for(client, Duration::from_secs(3)).await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let oldest = oldest_readable(&cluster.url(new_leader), newest).await;
        if oldest > first {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new leader compacted nothing past {first}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
