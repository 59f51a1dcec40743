//! Disk faults under load, through the storage failpoints of a `failpoints` build: a
//! follower's log flush fails, the leader's log flush fails, a follower panics while
//! applying, a follower cannot save its vote during an election, a member (leader or
//! follower) aborts in the middle of a state-machine batch or of a group of log appends
//! (the `sm-write` / `log-write` failpoints after a random number of writes: random
//! SIGKILLs rarely land inside a batch, this always does). Each time the member
//! hit stops acknowledging at once (openraft's fatal storage error; the server exits, or
//! aborts on a panic) and nothing it had not made durable was reported done; the others
//! carry on (electing a leader within the README's bound when the leader was hit); the
//! member restarts from what is on its disk and catches up. The history stays
//! linearizable and no acknowledged write is lost.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::time::{Duration, Instant};

use support::scenario::{FAILOVER_BOUND, Loaded, Scenario, Verdict, read_back};

#[derive(Clone, Copy, Debug)]
enum DiskFault {
    FollowerFlush,
    LeaderFlush,
    FollowerApplyPanic,
    FollowerVoteSave,
    AbortMidApply,
    AbortMidLogGroup,
}

const FAULTS: [DiskFault; 6] = [
    DiskFault::FollowerFlush,
    DiskFault::LeaderFlush,
    DiskFault::FollowerApplyPanic,
    DiskFault::FollowerVoteSave,
    DiskFault::AbortMidApply,
    DiskFault::AbortMidLogGroup,
];

/// A member whose storage failed must stop on its own this quickly (it fails at its next
/// append, which the load makes constant).
const STOP_DEADLINE: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_faults_stop_the_member_and_lose_nothing() {
    let mut scenario = Scenario::begin("disk_faults", Duration::from_secs(60));
    let Loaded {
        mut cluster,
        faults,
        workload,
        keys,
    } = scenario.start_loaded().await;
    let all = cluster.running();

    let mut rounds = 0;
    while rounds < FAULTS.len() || scenario.time_left() {
        let fault = if rounds < FAULTS.len() {
            FAULTS[rounds]
        } else {
            scenario.rng.pick(&FAULTS)
        };
        let leader = cluster.agreed_leader(FAILOVER_BOUND).await;
        let followers: Vec<u64> = all.iter().copied().filter(|id| *id != leader).collect();
        let follower = scenario.rng.pick(&followers);
        println!("disk_faults: round {rounds}: {fault:?} (leader {leader})");
        match fault {
            DiskFault::FollowerFlush | DiskFault::FollowerApplyPanic => {
                let (name, action) = match fault {
                    DiskFault::FollowerFlush => ("log-flush", "return"),
                    _ => ("sm-apply", "panic"),
                };
                faults.harvest(follower).await;
                faults.failpoint(follower, name, action).await;
                let status = cluster.wait_for_exit(follower, STOP_DEADLINE).await;
                let status =
                    status.unwrap_or_else(|| panic!("node {follower} kept running after {name} failed"));
                assert!(
                    !status.success(),
                    "node {follower} exited cleanly after a disk fault"
                );
                // The majority keeps its leader and keeps committing.
                workload
                    .wait_for_writes(30, Duration::from_secs(15))
                    .await
                    .unwrap();
                cluster.restart(follower);
            }
            DiskFault::LeaderFlush => {
                faults.harvest(leader).await;
                let hit_at = Instant::now();
                faults.failpoint(leader, "log-flush", "return").await;
                let status = cluster.wait_for_exit(leader, STOP_DEADLINE).await;
                assert!(
                    status.is_some_and(|s| !s.success()),
                    "leader {leader} did not stop after its log flush failed: {status:?}"
                );
                cluster.agreed_leader_among(&followers, FAILOVER_BOUND * 2).await;
                scenario.failover(hit_at.elapsed());
                workload
                    .wait_for_writes(20, Duration::from_secs(15))
                    .await
                    .unwrap();
                cluster.restart(leader);
            }
            DiskFault::AbortMidApply | DiskFault::AbortMidLogGroup => {
                let name = match fault {
                    DiskFault::AbortMidApply => "sm-write",
                    _ => "log-write",
                };
                let target = scenario.rng.pick(&all);
                // After 0-59 more writes: inside a batch of this or a later apply/append.
                let action = format!("{}*off->return(abort)", scenario.rng.below(60));
                println!("disk_faults: {name}={action} on node {target}");
                let hit_at = Instant::now();
                faults.failpoint(target, name, &action).await;
                faults.count_event();
                let status = cluster.wait_for_exit(target, STOP_DEADLINE).await;
                assert!(
                    status.as_ref().is_some_and(|s| !s.success()),
                    "node {target} did not abort at {name}: {status:?}"
                );
                if target == leader {
                    cluster.agreed_leader_among(&followers, FAILOVER_BOUND * 2).await;
                    scenario.failover(hit_at.elapsed());
                }
                workload
                    .wait_for_writes(20, Duration::from_secs(15))
                    .await
                    .unwrap();
                // The restart rolls back the interrupted batch and replays the log.
                cluster.restart(target);
            }
            DiskFault::FollowerVoteSave => {
                // The vote is saved in elections only: make one by killing the leader.
                faults.failpoint(follower, "vote-save", "return").await;
                faults.harvest(leader).await;
                cluster.kill(leader);
                faults.count_event();
                // The follower fails when it first votes or stands; the other one alone
                // has no quorum until the old leader is back.
                let status = cluster.wait_for_exit(follower, STOP_DEADLINE).await;
                println!("disk_faults: follower {follower} after its vote save failed: {status:?}");
                assert!(
                    status.is_some_and(|s| !s.success()),
                    "follower {follower} kept running although it could not save its vote"
                );
                cluster.restart(leader);
                cluster.restart(follower);
            }
        }
        cluster.agreed_leader(FAILOVER_BOUND * 2).await;
        workload
            .wait_for_writes(20, Duration::from_secs(20))
            .await
            .unwrap();
        rounds += 1;
    }
    let (recorder, tallies) = workload.stop().await;
    let final_reads = read_back(&recorder, &cluster.client_urls(), keys).await;
    for id in &all {
        faults.harvest(*id).await;
    }
    println!("disk_faults: {rounds} members stopped by disk faults");
    scenario.verify(Verdict {
        recorder: &recorder,
        tallies: &tallies,
        final_reads: &final_reads,
        injected: faults.injected(),
        may_hang: &[],
    });
}
