//! Network partitions under load, through the test-only fault service: the leader cut off
//! from both followers (the majority side elects a leader within the README's bound, the
//! old leader acknowledges nothing), a follower cut off (nothing changes for clients),
//! every member cut off from every other (no quorum anywhere: clients get errors, not
//! hangs), and one-way cuts (the leader's messages to the followers lost while theirs
//! still reach it). Each partition heals; the history stays linearizable and no
//! acknowledged write is lost.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::time::{Duration, Instant};

use support::scenario::{FAILOVER_BOUND, Loaded, Scenario, Verdict, read_back};

#[derive(Clone, Copy, Debug)]
enum Cut {
    LeaderIsolated,
    FollowerIsolated,
    Everyone,
    LeaderOneWay,
}

const CUTS: [Cut; 4] = [
    Cut::LeaderIsolated,
    Cut::FollowerIsolated,
    Cut::Everyone,
    Cut::LeaderOneWay,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_heal_without_losing_or_reordering_writes() {
    let mut scenario = Scenario::begin("partitions", Duration::from_secs(70));
    let Loaded {
        cluster,
        faults,
        workload,
        keys,
    } = scenario.start_loaded().await;
    let all = cluster.running();

    let mut rounds = 0;
    while rounds < CUTS.len() || scenario.time_left() {
        let cut = if rounds < CUTS.len() {
            CUTS[rounds]
        } else {
            scenario.rng.pick(&CUTS)
        };
        let leader = cluster.agreed_leader(FAILOVER_BOUND).await;
        let followers: Vec<u64> = all.iter().copied().filter(|id| *id != leader).collect();
        let cut_at = Instant::now();
        println!("partitions: round {rounds}: {cut:?} (leader {leader})");
        match cut {
            Cut::LeaderIsolated => {
                faults.partition(&[&[leader], &followers], &all).await;
                let new_leader = cluster.agreed_leader_among(&followers, FAILOVER_BOUND * 2).await;
                scenario.failover(cut_at.elapsed());
                assert_ne!(new_leader, leader);
                workload
                    .wait_for_writes(20, Duration::from_secs(15))
                    .await
                    .unwrap();
            }
            Cut::FollowerIsolated => {
                let follower = scenario.rng.pick(&followers);
                faults.partition(&[&[follower]], &all).await;
                // The majority keeps its leader and keeps committing.
                workload
                    .wait_for_writes(50, Duration::from_secs(15))
                    .await
                    .unwrap();
                let survivors: Vec<u64> = all.iter().copied().filter(|id| *id != follower).collect();
                assert_eq!(
                    cluster.agreed_leader_among(&survivors, FAILOVER_BOUND).await,
                    leader
                );
            }
            Cut::Everyone => {
                let singles: Vec<[u64; 1]> = all.iter().map(|id| [*id]).collect();
                let groups: Vec<&[u64]> = singles.iter().map(|g| g.as_slice()).collect();
                faults.partition(&groups, &all).await;
                // No quorum anywhere: requests must fail (the verdict checks that every
                // one was answered within the client deadline), none may be acknowledged
                // as a write after the leader lost its followers' acks.
                tokio::time::sleep(
                    scenario
                        .rng
                        .between(Duration::from_secs(3), Duration::from_secs(6)),
                )
                .await;
            }
            Cut::LeaderOneWay => {
                for follower in &followers {
                    faults.cut_one_way(leader, *follower, &all).await;
                }
                let new_leader = cluster.agreed_leader_among(&followers, FAILOVER_BOUND * 2).await;
                scenario.failover(cut_at.elapsed());
                assert_ne!(new_leader, leader);
                workload
                    .wait_for_writes(20, Duration::from_secs(15))
                    .await
                    .unwrap();
            }
        }
        tokio::time::sleep(scenario.rng.between(Duration::ZERO, Duration::from_secs(2))).await;
        let healed_at = Instant::now();
        faults.heal(&all).await;
        cluster.agreed_leader(FAILOVER_BOUND * 2).await;
        scenario.failover(healed_at.elapsed());
        workload
            .wait_for_writes(20, Duration::from_secs(15))
            .await
            .unwrap();
        rounds += 1;
    }
    let (recorder, tallies) = workload.stop().await;
    let final_reads = read_back(&recorder, &cluster.client_urls(), keys).await;
    for id in &all {
        faults.harvest(*id).await;
    }
    println!("partitions: {rounds} partitions healed");
    scenario.verify(Verdict {
        recorder: &recorder,
        tallies: &tallies,
        final_reads: &final_reads,
        injected: faults.injected(),
        may_hang: &[],
    });
}
