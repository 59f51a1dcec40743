//! A linearizable read on a follower whose leader stops answering completes as soon as
//! the rest of the cluster has a new leader, not after the request timeout.
//!
//! The follower passes its read-index round on to the leader it knows
//! (`src/node/read_index.rs`). Cut off, that leader never answers: the round would wait
//! out its whole deadline (7 s by default), and every read queued behind it with it. The
//! round ends instead when the follower names another leader, and asks again there.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::time::{Duration, Instant};

use raftkv::*;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_passed_on_to_a_cut_off_leader_is_asked_again_of_the_new_one() {
    let _turn = support::ClusterTurn::take();
    // The default request timeout (7 s): the deadline a stuck round would wait out.
    let mut cluster = testing::TestCluster::start(3).await.unwrap();
    let old = cluster.wait_for_leader(WAIT).await.unwrap();
    let written = cluster.node(old).unwrap().put("k", "v").await.unwrap();
    let follower_id = cluster.ids().into_iter().find(|id| *id != old).unwrap();
    let follower = cluster.node(follower_id).unwrap().clone();
    let majority: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != old).collect();
    // Every member has applied the write, so the read's answer is known.
    cluster
        .wait_applied(cluster.node(old).unwrap().metrics().applied, WAIT)
        .await
        .unwrap();

    cluster.partition(&[&[old], &majority]).unwrap();
    assert_eq!(
        follower.current_leader(),
        Some(old),
        "the follower still follows the old leader"
    );
    let started = Instant::now();
    let read = tokio::time::timeout(WAIT, follower.range(RangeRequest::key("k")))
        .await
        .expect("the read never finished")
        .expect("the read failed");
    let took = started.elapsed();
    let new = follower.current_leader();
    println!(
        "linearizable read on {follower_id} after its leader {old} was cut off: {took:?} (leader now {new:?})"
    );
    assert_eq!(read.kvs[0].mod_revision, written.header.revision);
    assert!(
        new.is_some_and(|l| l != old),
        "answered without a new leader: {new:?}"
    );
    // An election here takes the lease (1.6 s) plus up to 1.6 s; the round's deadline is 7 s.
    assert!(
        took < Duration::from_millis(5500),
        "the read took {took:?}: it waited for the cut-off leader"
    );
    cluster.heal();
    cluster.shutdown().await;
}
