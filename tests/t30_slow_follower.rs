//! A slow follower does not slow the others: replication runs one pipeline per follower,
//! so with one follower's log sync delayed by 300 ms (the `log-flush` failpoint), the
//! leader and the other follower still form the quorum and puts complete at their usual
//! pace, sequentially and with concurrent clients. Each follower is made the slow one in
//! turn, and once its disk recovers it catches up with the leader.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::time::Duration;

use support::faults::Faults;
use support::process::ProcessCluster;
use tokio::time::Instant;

/// The delay each log sync of the slow follower waits.
const SLOW_SYNC_MS: u64 = 300;

/// `n` puts from each of `clients` concurrent writers; every latency, sorted.
async fn put_latencies(
    client: &raftkv_client::Client,
    prefix: &str,
    clients: usize,
    n: usize,
) -> Vec<Duration> {
    let writers: Vec<_> = (0..clients)
        .map(|c| {
            let client = client.clone();
            let prefix = format!("{prefix}/{c}");
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(n);
                for i in 0..n {
                    let started = Instant::now();
                    tokio::time::timeout(Duration::from_secs(5), client.put(format!("{prefix}/{i}"), "v"))
                        .await
                        .expect("a put took over 5 s")
                        .unwrap();
                    latencies.push(started.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for writer in writers {
        all.extend(writer.await.unwrap());
    }
    all.sort();
    all
}

fn p50(latencies: &[Duration]) -> Duration {
    latencies[latencies.len() / 2]
}

/// Wait until member `id` has applied at least what the leader had when called.
async fn caught_up(cluster: &ProcessCluster, leader: u64, id: u64, timeout: Duration) -> Duration {
    let started = Instant::now();
    let target = cluster
        .status(leader)
        .await
        .expect("leader status")
        .raft_applied_index;
    loop {
        if let Some(status) = cluster.status(id).await
            && status.raft_applied_index >= target
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < timeout,
            "member {id} did not catch up to index {target} within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_slow_follower_does_not_slow_writes() {
    let cluster = ProcessCluster::start(3, &[]);
    let leader = cluster.agreed_leader(Duration::from_secs(30)).await;
    let faults = Faults::new(&cluster, 30);
    let client = raftkv_client::Client::connect([cluster.url(leader)])
        .await
        .unwrap();
    let followers: Vec<u64> = cluster.running().into_iter().filter(|id| *id != leader).collect();

    let normal = put_latencies(&client, "normal", 1, 30).await;
    println!("put p50 at one client, all disks normal: {:?}", p50(&normal));
    for (round, slow) in followers.iter().copied().enumerate() {
        faults
            .failpoint(slow, "log-flush", &format!("sleep({SLOW_SYNC_MS})"))
            .await;
        let one = put_latencies(&client, &format!("slow{round}/c1"), 1, 30).await;
        let eight = put_latencies(&client, &format!("slow{round}/c8"), 8, 10).await;
        println!(
            "follower {slow}'s log sync delayed {SLOW_SYNC_MS} ms: put p50 {:?} at one client, {:?} at eight",
            p50(&one),
            p50(&eight)
        );
        // A put that waited for the slow follower would take the whole delay.
        for (clients, latencies) in [(1, &one), (8, &eight)] {
            assert!(
                p50(latencies) < Duration::from_millis(SLOW_SYNC_MS / 2),
                "with follower {slow} slow, puts at {clients} client(s) waited for it: p50 {:?}",
                p50(latencies)
            );
        }
        faults.failpoint(slow, "log-flush", "off").await;
        let took = caught_up(&cluster, leader, slow, Duration::from_secs(30)).await;
        println!("follower {slow} caught up {took:?} after its disk recovered");
    }

    // The control: both followers slow (no quorum without one of them) does slow every
    // put, so the failpoint really delays their syncs.
    for f in &followers {
        faults
            .failpoint(*f, "log-flush", &format!("sleep({SLOW_SYNC_MS})"))
            .await;
    }
    let control = put_latencies(&client, "control", 1, 5).await;
    println!("control: put p50 {:?} with both followers slow", p50(&control));
    assert!(
        p50(&control) >= Duration::from_millis(SLOW_SYNC_MS * 5 / 6),
        "control p50 {:?}",
        p50(&control)
    );
    for f in &followers {
        faults.failpoint(*f, "log-flush", "off").await;
    }
}
