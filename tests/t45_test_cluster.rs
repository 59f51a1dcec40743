//! `raftkv::testing::TestCluster`, the cluster applications test against, does what it
//! says: a partition cuts a leader off (the majority elects another and goes on, the
//! cut-off leader commits nothing), healing brings it back up to date, a killed member
//! restarts on its directory and catches up, and misuse is a typed error.

use crate::support;

use std::time::Duration;

use raftkv::testing::{TestCluster, TestClusterError};
use raftkv::*;

const WAIT: Duration = Duration::from_secs(20);

/// Three members whose requests give up after 2 s (rather than etcd's 7 s), so a write
/// on a cut-off member fails quickly.
async fn three_members() -> TestCluster {
    TestCluster::builder(3)
        .configure(|b| b.request_timeout(Duration::from_secs(2)))
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_heal_kill_and_restart_do_what_they_say() {
    let _turn = support::ClusterTurn::take();
    let mut cluster = three_members().await;
    let old = cluster.wait_for_leader(WAIT).await.unwrap();
    cluster.node(old).unwrap().put("k", "before").await.unwrap();

    // The leader alone on one side: the other two elect one of themselves.
    let majority: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != old).collect();
    cluster.partition(&[&[old], &majority]).unwrap();
    let cut_off = cluster.node(old).unwrap().clone();
    let deadline = std::time::Instant::now() + WAIT;
    let new = loop {
        let leaders: Vec<Option<u64>> = majority
            .iter()
            .map(|id| cluster.node(*id).unwrap().current_leader())
            .collect();
        if let Some(Some(l)) = leaders.first()
            && *l != old
            && leaders.iter().all(|x| *x == Some(*l))
        {
            break *l;
        }
        assert!(std::time::Instant::now() < deadline, "no new leader: {leaders:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let during = cluster.node(new).unwrap().put("k", "during").await.unwrap();
    let lost = tokio::time::timeout(WAIT, cut_off.put("k", "cut off"))
        .await
        .unwrap();
    assert!(
        lost.is_err(),
        "a member cut off from the quorum committed {lost:?}"
    );
    let local = cut_off
        .range(RangeRequest::key("k").with_serializable(true))
        .await
        .unwrap();
    assert_eq!(
        local.kvs[0].value, b"before",
        "the cut-off member saw the other side"
    );

    // Healed: one leader for all, and the old one catches up.
    cluster.heal();
    let agreed = cluster.wait_for_leader(WAIT).await.unwrap();
    let index = cluster.node(agreed).unwrap().metrics().applied;
    cluster.wait_applied(index, WAIT).await.unwrap();
    let seen = cut_off
        .range(RangeRequest::key("k").with_serializable(true))
        .await
        .unwrap();
    assert_eq!(seen.kvs[0].mod_revision, during.header.revision);
    drop(cut_off);

    // A killed follower refuses connections, misses writes, and catches up on restart.
    let leader = cluster.wait_for_leader(WAIT).await.unwrap();
    let victim = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
    let victim_url = cluster.client_url(victim).unwrap();
    cluster.kill(victim).await.unwrap();
    let address = victim_url.trim_start_matches("http://");
    assert!(
        std::net::TcpStream::connect(address).is_err(),
        "a killed member still accepts connections"
    );
    assert!(matches!(cluster.node(victim), Err(TestClusterError::NotRunning(id)) if id == victim));
    let after = cluster
        .node(leader)
        .unwrap()
        .put("k", "while down")
        .await
        .unwrap();
    let back = cluster.restart(victim).await.unwrap().clone();
    let index = cluster.node(leader).unwrap().metrics().applied;
    cluster.wait_applied(index, WAIT).await.unwrap();
    assert!(cluster.applied_index(victim).unwrap() >= index);
    let kv = back.get("k").await.unwrap().unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.mod_revision),
        (&b"while down"[..], after.header.revision)
    );
    drop(back);

    // Misuse is a typed error, never a panic.
    assert!(matches!(cluster.node(9), Err(TestClusterError::NoSuchMember(9))));
    assert!(matches!(
        cluster.restart(victim).await,
        Err(TestClusterError::AlreadyRunning(_))
    ));
    assert!(matches!(
        cluster.partition(&[&[1, 2], &[2, 3]]),
        Err(TestClusterError::InvalidPartition(_))
    ));
    assert!(matches!(
        cluster.partition(&[&[1], &[7]]),
        Err(TestClusterError::NoSuchMember(7))
    ));
    cluster.shutdown().await;
}

/// A member restarted while the network is partitioned comes back on its side of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_restarted_inside_a_partition_stays_inside_it() {
    let _turn = support::ClusterTurn::take();
    let mut cluster = three_members().await;
    let leader = cluster.wait_for_leader(WAIT).await.unwrap();
    let alone = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
    let rest: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != alone).collect();
    cluster.partition(&[&rest]).unwrap();
    cluster.stop(alone).await.unwrap();
    cluster.node(leader).unwrap().put("k", "v").await.unwrap();
    let back = cluster.restart(alone).await.unwrap().clone();
    // Cut off, it learns nothing: no leader, and not the write, over a window of about
    // two election timeouts in which a leaking partition would have shown (this waits
    // to observe an absence; nothing here waits for something to happen).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(back.current_leader(), None);
    let local = back
        .range(RangeRequest::key("k").with_serializable(true))
        .await
        .unwrap();
    assert!(
        local.kvs.is_empty(),
        "a member inside its partition saw {local:?}"
    );
    cluster.heal();
    let index = cluster.node(leader).unwrap().metrics().applied;
    cluster.wait_applied(index, WAIT).await.unwrap();
    drop(back);
    cluster.shutdown().await;
}
