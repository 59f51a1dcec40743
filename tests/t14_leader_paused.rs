//! The leader process is frozen with SIGSTOP under load, for shorter and longer than the
//! election timeout, then thawed with SIGCONT: a frozen leader that wakes up after a new
//! leader was elected must not serve a stale read or acknowledge a write it cannot commit
//! (its clients' reads go through a read index that needs a quorum in its own term). The
//! history stays linearizable, no acknowledged write is lost, the rest of the cluster
//! elects a leader within the README's bound, and only the frozen member's clients wait.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::time::{Duration, Instant};

use support::scenario::{FAILOVER_BOUND, Loaded, Scenario, Verdict, read_back};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_leader_serves_no_stale_reads_after_it_wakes() {
    let mut scenario = Scenario::begin("leader_sigstop", Duration::from_secs(50));
    let Loaded {
        mut cluster,
        faults,
        workload,
        keys,
    } = scenario.start_loaded().await;

    let mut paused_endpoints = Vec::new();
    let (mut rounds, mut leader_changes) = (0, 0);
    while rounds < 3 || scenario.time_left() {
        let leader = cluster.agreed_leader(FAILOVER_BOUND).await;
        paused_endpoints.push(cluster.endpoint(leader));
        // Alternate: a pause the others sit out, and one long enough for an election.
        let long = rounds % 2 == 0;
        let pause = if long {
            scenario
                .rng
                .between(Duration::from_secs(5), Duration::from_secs(7))
        } else {
            scenario
                .rng
                .between(Duration::from_millis(200), Duration::from_millis(900))
        };
        let paused_at = Instant::now();
        cluster.pause(leader);
        faults.count_event();
        if long {
            let others: Vec<u64> = cluster.running().into_iter().filter(|id| *id != leader).collect();
            let (new_leader, resumed) = tokio::join!(
                async {
                    let new_leader = cluster.agreed_leader_among(&others, FAILOVER_BOUND * 2).await;
                    (new_leader, paused_at.elapsed())
                },
                workload.wait_for_write_sent_after(paused_at, FAILOVER_BOUND * 2),
            );
            let (new_leader, took) = new_leader;
            scenario.failover(took);
            scenario.writes_resumed(resumed.unwrap_or_else(|e| panic!("after pausing {leader}: {e}")));
            assert_ne!(new_leader, leader);
            leader_changes += 1;
            workload
                .wait_for_writes(20, Duration::from_secs(15))
                .await
                .unwrap_or_else(|e| panic!("no progress under the new leader {new_leader}: {e}"));
        }
        tokio::time::sleep(pause.saturating_sub(paused_at.elapsed())).await;
        // Thawed: the old leader's clients fire their queued reads and writes at once,
        // before it has heard of the new term.
        cluster.resume(leader);
        tokio::time::sleep(
            scenario
                .rng
                .between(Duration::from_millis(500), Duration::from_secs(2)),
        )
        .await;
        rounds += 1;
    }
    cluster.agreed_leader(FAILOVER_BOUND).await;
    workload
        .wait_for_writes(20, Duration::from_secs(15))
        .await
        .unwrap();
    let (recorder, tallies) = workload.stop().await;
    let final_reads = read_back(&recorder, &cluster.client_urls(), keys).await;
    for id in cluster.running() {
        faults.harvest(id).await;
    }
    println!("leader_sigstop: {rounds} pauses, {leader_changes} leader changes");
    scenario.verify(Verdict {
        recorder: &recorder,
        tallies: &tallies,
        final_reads: &final_reads,
        injected: faults.injected(),
        may_hang: &paused_endpoints,
    });
}
