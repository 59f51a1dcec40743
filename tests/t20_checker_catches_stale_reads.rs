//! The fault suite's own canary: with linearizable reads deliberately broken (the
//! test-only `read-index-skip` failpoint makes a member answer them from its local state,
//! without confirming it still leads), an isolated old leader serves stale reads while
//! the majority elects a new leader and moves on. The same recorder, workload and checker
//! the scenarios use must reject that history. If this test fails, a scenario passing
//! proves nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::time::Duration;

use support::faults::Faults;
use support::history;
use support::process::ProcessCluster;
use support::scenario::{CLIENT_DEADLINE, FAILOVER_BOUND, SERVER_FLAGS, Scenario, read_back};
use support::workload::{Workload, WorkloadOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checker_rejects_the_history_of_a_leader_serving_stale_reads() {
    let scenario = Scenario::begin("checker_canary", Duration::from_secs(10));
    let cluster = ProcessCluster::start(3, SERVER_FLAGS);
    let faults = Faults::new(&cluster, scenario.seed);
    let all = cluster.running();
    let leader = cluster.agreed_leader(Duration::from_secs(30)).await;
    let followers: Vec<u64> = all.iter().copied().filter(|id| *id != leader).collect();
    faults.failpoint(leader, "read-index-skip", "return").await;
    // Few keys, so the old leader's clients read keys the new leader's clients rewrite.
    let options = WorkloadOptions {
        keys: 3,
        client_deadline: CLIENT_DEADLINE,
        seed: scenario.seed,
        ..WorkloadOptions::default()
    };
    let keys = options.keys;
    let workload = Workload::start(cluster.client_urls(), options);
    workload
        .wait_for_writes(30, Duration::from_secs(20))
        .await
        .unwrap();

    faults.partition(&[&[leader], &followers], &all).await;
    cluster.agreed_leader_among(&followers, FAILOVER_BOUND * 2).await;
    // The new leader commits writes while the old one keeps answering reads locally.
    workload
        .wait_for_writes(100, Duration::from_secs(30))
        .await
        .unwrap();
    // The old leader's own clients spend most of the partition waiting on writes that
    // cannot commit; read every key from it directly too, after those acknowledged writes.
    let answered = stale_reads_from(&cluster.url(leader), keys, workload.recorder()).await;
    assert!(answered > 0, "the isolated leader answered no read");
    faults.heal(&all).await;
    cluster.agreed_leader(FAILOVER_BOUND * 2).await;
    let (recorder, _tallies) = workload.stop().await;
    read_back(&recorder, &cluster.client_urls(), keys).await;

    let history = recorder.history();
    match history::check(&history) {
        Ok(stats) => panic!(
            "the checker accepted {} operations although member {leader} served stale reads \
             for seconds: {stats:?}",
            history.len()
        ),
        Err(violation) => support::scenario::summary(&format!(
            "RELIABILITY checker_canary seed={} ops={} violation_found=yes ({})",
            scenario.seed,
            history.len(),
            violation.to_string().lines().next().unwrap_or_default()
        )),
    }
}

/// Read every key from `url` (recorded as gets of client 1,000), a few times over; how
/// many reads it answered.
async fn stale_reads_from(url: &str, keys: usize, recorder: &history::Recorder) -> usize {
    use raftkv_proto::etcdserverpb::RangeRequest;
    use raftkv_proto::etcdserverpb::kv_client::KvClient;
    let mut answered = 0;
    let Ok(mut kv) = KvClient::connect(url.to_string()).await else {
        return 0;
    };
    for _ in 0..3 {
        for i in 0..keys {
            let key = support::workload::key(i);
            let pending = recorder.invoke(1_000, history::OpKind::get(key.clone()));
            let request = RangeRequest {
                key,
                ..RangeRequest::default()
            };
            if let Ok(Ok(answer)) = tokio::time::timeout(CLIENT_DEADLINE, kv.range(request)).await {
                let value = answer.into_inner().kvs.into_iter().next().map(|kv| kv.value);
                recorder.complete(pending, history::Outcome::Ok(value));
                answered += 1;
            }
        }
    }
    answered
}
