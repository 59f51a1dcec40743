//! The whole cluster dies under load (every member SIGKILLed at once, or stopped with
//! SIGTERM one after another) and comes back: a leader is agreed within the README's
//! bound of the restart, writes resume, the history stays linearizable and no
//! acknowledged write is lost.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::time::{Duration, Instant};

use support::scenario::{FAILOVER_BOUND, Loaded, Scenario, Verdict, read_back};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_restarts_under_load_and_loses_nothing() {
    let mut scenario = Scenario::begin("full_restart", Duration::from_secs(45));
    let Loaded {
        mut cluster,
        faults,
        workload,
        keys,
    } = scenario.start_loaded().await;
    let all = cluster.running();

    let mut rounds = 0;
    while rounds < 3 || scenario.time_left() {
        tokio::time::sleep(
            scenario
                .rng
                .between(Duration::from_millis(500), Duration::from_secs(3)),
        )
        .await;
        for id in &all {
            faults.harvest(*id).await;
        }
        let graceful = rounds % 3 == 2;
        println!(
            "full_restart: round {rounds}: {}",
            if graceful { "SIGTERM each" } else { "SIGKILL all" }
        );
        for id in &all {
            if graceful {
                cluster.terminate(*id);
            } else {
                cluster.kill(*id);
            }
            faults.count_event();
        }
        tokio::time::sleep(scenario.rng.between(Duration::ZERO, Duration::from_secs(1))).await;
        let restarted_at = Instant::now();
        for id in &all {
            cluster.restart(*id);
        }
        cluster.agreed_leader(FAILOVER_BOUND * 2).await;
        scenario.failover(restarted_at.elapsed());
        workload
            .wait_for_writes(30, Duration::from_secs(20))
            .await
            .unwrap();
        rounds += 1;
    }
    let (recorder, tallies) = workload.stop().await;
    let final_reads = read_back(&recorder, &cluster.client_urls(), keys).await;
    println!("full_restart: {rounds} whole-cluster restarts");
    scenario.verify(Verdict {
        recorder: &recorder,
        tallies: &tallies,
        final_reads: &final_reads,
        injected: faults.injected(),
        may_hang: &[],
    });
}
