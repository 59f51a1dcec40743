//! Lossy, slow, duplicating network under load, through the test-only fault service:
//! every peer request and response is lost with 5-20 % probability (changing every few
//! seconds), held back by a random 0-20 ms delay (so concurrent messages overtake each
//! other), and 5 % of Raft messages are sent a second time, later (stale duplicates
//! arriving out of order). The cluster keeps a leader, keeps committing, and the history
//! stays linearizable with no acknowledged write lost.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::time::Duration;

use support::scenario::{FAILOVER_BOUND, Loaded, Scenario, Verdict, read_back};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossy_reordering_network_keeps_history_linearizable() {
    let mut scenario = Scenario::begin("message_loss", Duration::from_secs(60));
    let Loaded {
        cluster,
        faults,
        workload,
        keys,
    } = scenario.start_loaded().await;
    let all = cluster.running();

    let mut periods = 0;
    while periods < 4 || scenario.time_left() {
        let loss = 5 + scenario.rng.below(16) as u32;
        println!("message_loss: period {periods}: {loss}% loss, 0-20 ms jitter, 5% duplicates");
        faults.noise(loss, (0, 20), 5, &all).await;
        // Progress despite the noise (openraft retries lost appends; clients see some
        // timeouts and errors, never a wrong answer).
        workload
            .wait_for_writes(30, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("no progress at {loss}% loss: {e}"));
        tokio::time::sleep(
            scenario
                .rng
                .between(Duration::from_secs(2), Duration::from_secs(6)),
        )
        .await;
        periods += 1;
    }
    faults.noise(0, (0, 0), 0, &all).await;
    cluster.agreed_leader(FAILOVER_BOUND).await;
    workload
        .wait_for_writes(20, Duration::from_secs(15))
        .await
        .unwrap();
    let (recorder, tallies) = workload.stop().await;
    let final_reads = read_back(&recorder, &cluster.client_urls(), keys).await;
    for id in &all {
        faults.harvest(*id).await;
    }
    let injected = faults.injected();
    assert!(
        injected.messages_dropped > 0 && injected.messages_duplicated > 0,
        "the fault plan injected nothing: {injected}"
    );
    println!("message_loss: {periods} noise periods");
    scenario.verify(Verdict {
        recorder: &recorder,
        tallies: &tallies,
        final_reads: &final_reads,
        injected,
        may_hang: &[],
    });
}
