//! The leader process is SIGKILLed under load, again and again, and restarted each time:
//! the history stays linearizable, no acknowledged write is lost, a new leader is agreed
//! within the README's failover bound every time, and clients get answers (errors while
//! there is no leader), not hangs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::time::{Duration, Instant};

use support::scenario::{FAILOVER_BOUND, Loaded, Scenario, Verdict, read_back};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_repeatedly_under_load_stays_linearizable() {
    let mut scenario = Scenario::begin("leader_kill9", Duration::from_secs(60));
    let Loaded {
        mut cluster,
        faults,
        workload,
        keys,
    } = scenario.start_loaded().await;

    let mut rounds = 0;
    while rounds < 2 || scenario.time_left() {
        let leader = cluster.agreed_leader(FAILOVER_BOUND).await;
        tokio::time::sleep(
            scenario
                .rng
                .between(Duration::from_millis(300), Duration::from_secs(3)),
        )
        .await;
        faults.harvest(leader).await;
        let killed_at = Instant::now();
        cluster.kill(leader);
        faults.count_event();
        let (new_leader, resumed) = tokio::join!(
            async {
                let new_leader = cluster.agreed_leader(FAILOVER_BOUND * 2).await;
                (new_leader, killed_at.elapsed())
            },
            workload.wait_for_write_sent_after(killed_at, FAILOVER_BOUND * 2),
        );
        let (new_leader, took) = new_leader;
        scenario.failover(took);
        scenario.writes_resumed(resumed.unwrap_or_else(|e| panic!("after killing {leader}: {e}")));
        assert_ne!(new_leader, leader);
        workload
            .wait_for_writes(20, Duration::from_secs(15))
            .await
            .unwrap_or_else(|e| panic!("no progress under the new leader {new_leader}: {e}"));
        // Back after a while: it rejoins as a follower and catches up.
        tokio::time::sleep(scenario.rng.between(Duration::ZERO, Duration::from_secs(2))).await;
        cluster.restart(leader);
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
    println!("leader_kill9: {rounds} leaders killed");
    scenario.verify(Verdict {
        recorder: &recorder,
        tallies: &tallies,
        final_reads: &final_reads,
        injected: faults.injected(),
        may_hang: &[],
    });
}
