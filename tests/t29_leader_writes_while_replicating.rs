//! The leader's disk write runs beside replication (openraft 0.10): with every log sync of
//! the leader delayed by 300 ms (the `log-flush` failpoint set to `sleep(300)`), a put at
//! one client still completes far sooner, because the two followers' durable copies are
//! the quorum. And a SIGKILL of that leader while its syncs lag loses no acknowledged
//! write: each was durable on a quorum of followers, which elect the next leader.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::time::Duration;

use support::faults::Faults;
use support::process::ProcessCluster;
use tokio::time::Instant;

/// Sequential puts through one client; their latencies, sorted.
async fn put_latencies(client: &raftkv_client::Client, prefix: &str, n: usize) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        client.put(format!("{prefix}/{i}"), "v").await.unwrap();
        latencies.push(started.elapsed());
    }
    latencies.sort();
    latencies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_leader_disk_does_not_slow_writes_and_loses_nothing() {
    let mut cluster = ProcessCluster::start(3, &[]);
    let leader = cluster.agreed_leader(Duration::from_secs(30)).await;
    let faults = Faults::new(&cluster, 29);
    let client = raftkv_client::Client::connect([cluster.url(leader)])
        .await
        .unwrap();

    let normal = put_latencies(&client, "normal", 30).await;
    faults.failpoint(leader, "log-flush", "sleep(300)").await;
    let delayed = put_latencies(&client, "delayed", 30).await;
    let p50 = |l: &[Duration]| l[l.len() / 2];
    println!(
        "put p50 at one client: {:?} normally, {:?} with the leader's log sync delayed by 300 ms",
        p50(&normal),
        p50(&delayed)
    );
    assert!(
        p50(&delayed) < Duration::from_millis(150),
        "puts waited for the leader's own sync: p50 {:?}",
        p50(&delayed)
    );
    // The control: the same delay on both followers (a quorum without them is
    // impossible) does slow every put, so the failpoint really delays syncs.
    let followers: Vec<u64> = cluster.running().into_iter().filter(|id| *id != leader).collect();
    faults.failpoint(leader, "log-flush", "off").await;
    for f in &followers {
        faults.failpoint(*f, "log-flush", "sleep(300)").await;
    }
    let control = put_latencies(&client, "control", 5).await;
    println!(
        "control: put p50 {:?} with both followers' syncs delayed",
        p50(&control)
    );
    assert!(
        p50(&control) >= Duration::from_millis(250),
        "control p50 {:?}",
        p50(&control)
    );
    for f in &followers {
        faults.failpoint(*f, "log-flush", "off").await;
    }
    faults.failpoint(leader, "log-flush", "sleep(300)").await;

    // Kill it while its syncs lag, writes in flight; every acknowledged write survives.
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let deadline = Instant::now() + Duration::from_millis(1500);
            let mut i = 0;
            while Instant::now() < deadline {
                if let Ok(Ok(_)) =
                    tokio::time::timeout(Duration::from_secs(2), client.put(format!("acked/{i}"), "v")).await
                {
                    acked.push(i);
                }
                i += 1;
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    cluster.kill(leader);
    let acked = writer.await.unwrap();
    assert!(!acked.is_empty(), "no write was acknowledged before the kill");
    let survivors: Vec<u64> = cluster.running();
    let new_leader = cluster
        .agreed_leader_among(&survivors, Duration::from_secs(30))
        .await;
    assert_ne!(new_leader, leader);
    let reader = raftkv_client::Client::connect([cluster.url(new_leader)])
        .await
        .unwrap();
    for i in &acked {
        let kv = reader.get(format!("acked/{i}")).await.unwrap();
        assert!(kv.is_some(), "acknowledged write acked/{i} was lost");
    }
    for i in 0..30 {
        assert!(
            reader.get(format!("delayed/{i}")).await.unwrap().is_some(),
            "delayed/{i} lost"
        );
    }
    println!(
        "{} acknowledged writes before the kill, all present after failover",
        acked.len()
    );
}
