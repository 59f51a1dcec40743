//! Leader killed (SIGKILL, real processes): a new leader within the bound the README
//! states for the default timeouts (measured and printed), no acknowledged write lost,
//! and the old leader rejoins as a follower and catches up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use raftkv_client::{Client, ClientOptions, RangeRequest};
use support::process::ProcessCluster;

// README, "Failover": the bound for the default timers.
use support::scenario::FAILOVER_BOUND;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_new_leader_no_acknowledged_write_lost_old_leader_catches_up() {
    let mut cluster = ProcessCluster::start(3, &[]);
    let leader = cluster.agreed_leader(Duration::from_secs(30)).await;
    let options = ClientOptions {
        request_timeout: Duration::from_secs(10),
        ..ClientOptions::default()
    };
    let client = Client::connect_with(cluster.client_urls(), options)
        .await
        .unwrap();
    let acked = Arc::new(Mutex::new(Vec::new()));
    for i in 0..100 {
        let key = format!("before/{i:03}");
        client.put(key.clone(), "v").await.unwrap();
        acked.lock().push(key);
    }

    // Keep writing while the leader dies: every acknowledged write must survive.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (client, acked, stop) = (client.clone(), acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut unknown = 0;
            for i in 0..100_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let key = format!("during/{i:05}");
                match client.put(key.clone(), "v").await {
                    Ok(_) => acked.lock().push(key),
                    Err(e) if e.is_outcome_unknown() => unknown += 1,
                    Err(_) => {}
                }
            }
            unknown
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed_at = Instant::now();
    cluster.kill(leader);
    let new_leader = cluster.agreed_leader(Duration::from_secs(30)).await;
    let failover = killed_at.elapsed();
    println!("leader {leader} killed; node {new_leader} leads after {failover:?} (bound {FAILOVER_BOUND:?})");
    assert_ne!(new_leader, leader);
    assert!(failover < FAILOVER_BOUND, "failover took {failover:?}");

    // Writes resume under the new leader.
    let resumed_from = acked.lock().len();
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.lock().len() < resumed_from + 50 {
        assert!(Instant::now() < deadline, "writes did not resume");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let unknown = writer.await.unwrap();
    let acked: Vec<String> = acked.lock().clone();
    println!(
        "{} writes acknowledged, {unknown} with unknown outcome",
        acked.len()
    );
    for key in &acked {
        assert!(
            client.get(key.clone()).await.unwrap().is_some(),
            "acknowledged {key} lost"
        );
    }

    // The old leader comes back as a follower and catches up.
    cluster.restart(leader);
    let target = cluster.status(new_leader).await.unwrap().raft_index;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = cluster.status(leader).await;
        if let Some(s) = &s
            && s.leader == new_leader
            && s.raft_applied_index >= target
        {
            break;
        }
        assert!(Instant::now() < deadline, "old leader did not catch up: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let old = Client::connect([cluster.url(leader)]).await.unwrap();
    let local = old
        .range(RangeRequest::prefix("").with_serializable(true))
        .await
        .unwrap();
    let present: std::collections::BTreeSet<Vec<u8>> = local.kvs.into_iter().map(|kv| kv.key).collect();
    for key in &acked {
        assert!(present.contains(key.as_bytes()), "old leader misses {key}");
    }
}
