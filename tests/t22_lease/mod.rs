//! etcd's Lease, served by a three-node cluster: grants (server- and client-chosen ids,
//! the minimum TTL), puts with a lease, TimeToLive with keys, Leases, keep-alives (also
//! through a follower), revoke deleting every attached key in ONE revision, expiry
//! decided by the leader and applied through the log (one revision again), `etcdctl lease
//! grant / keep-alive / timetolive --keys / revoke / list`, and, with real processes, a
//! lease that survives a leader killed at second 4 while kept alive and one that expires,
//! neither early nor later than TTL + checkpoint interval + the README's failover bound,
//! when not.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::process::Command;
use std::time::{Duration, Instant};

use raftkv::*;
use support::process::ProcessCluster;

mod etcdctl;

/// Deadline of every wait in this file.
const WAIT: Duration = Duration::from_secs(20);

/// The README's failover formula with the in-process timers (800-1,600 ms): 1.6 + 1.6 +
/// 3.2 + 3.2 s + slack, within 14 s.
const FAILOVER_BOUND: Duration = Duration::from_secs(14);

fn leased(key: &str, lease: i64) -> PutRequest {
    PutRequest {
        lease,
        ..PutRequest::new(key, "v")
    }
}

/// Revision of the newest entry applied by every node, once they agree.
pub(crate) async fn agreed_revision(nodes: &[Node]) -> i64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let revisions: Vec<i64> = nodes.iter().map(|n| n.metrics().revision).collect();
        let applied: Vec<u64> = nodes.iter().map(|n| n.metrics().applied).collect();
        if revisions.windows(2).all(|w| w[0] == w[1]) && applied.windows(2).all(|w| w[0] == w[1]) {
            return revisions[0];
        }
        assert!(Instant::now() < deadline, "nodes never agreed: {revisions:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_attach_time_to_live_keep_alive_and_revoke_in_one_revision() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = support::start_cluster(3, dir.path()).await;
    let leader_id = support::wait_for_agreed_leader(&nodes, WAIT).await;
    let leader = nodes.iter().find(|n| n.id() == leader_id).unwrap();
    let follower = nodes.iter().find(|n| n.id() != leader_id).unwrap();

    // Minimum TTL: 1.5 x the 1,600 ms maximum election timeout, rounded up.
    let short = follower.lease_grant(0, 1).await.unwrap();
    assert_eq!(short.ttl, 3);
    assert_ne!(short.id, 0);
    // Client-chosen id, granted through a follower; a second grant of it is refused.
    let granted = follower.lease_grant(4242, 60).await.unwrap();
    assert_eq!((granted.id, granted.ttl), (4242, 60));
    assert!(matches!(
        leader.lease_grant(4242, 60).await,
        Err(Error::Request(RequestError::LeaseExists(4242)))
    ));
    // A TTL above etcd's maximum is refused as etcd refuses it.
    assert!(matches!(
        follower
            .lease_grant(0, raftkv_core::lease::MAX_LEASE_TTL + 1)
            .await,
        Err(Error::Request(RequestError::LeaseTtlTooLarge(_)))
    ));
    // A put naming no existing lease is refused.
    assert!(matches!(
        leader.put_with(leased("nolease", 777)).await,
        Err(Error::Request(RequestError::LeaseNotFound(777)))
    ));

    follower.put_with(leased("a/1", 4242)).await.unwrap();
    leader.put_with(leased("a/2", 4242)).await.unwrap();
    leader.put("a/3", "plain").await.unwrap();
    // Re-put without the lease: detached, and revoke leaves it alone.
    leader.put_with(leased("a/4", 4242)).await.unwrap();
    leader.put("a/4", "detached").await.unwrap();

    for node in &nodes {
        let (_, info) = node.lease_time_to_live(4242, true).await.unwrap();
        assert_eq!(info.granted_ttl, 60);
        assert!((55..=60).contains(&info.ttl), "{info:?}");
        assert_eq!(info.keys, vec![b"a/1".to_vec(), b"a/2".to_vec()]);
        let (_, ids) = node.leases().await.unwrap();
        assert!(ids.contains(&4242) && ids.contains(&short.id), "{ids:?}");
        let renewed = node.lease_keep_alive(4242).await.unwrap();
        assert_eq!(renewed.ttl, 60);
    }
    assert_eq!(follower.lease_keep_alive(99).await.unwrap().ttl, 0);
    assert_eq!(follower.lease_time_to_live(99, true).await.unwrap().1.ttl, -1);

    let before = agreed_revision(&nodes).await;
    let header = follower.lease_revoke(4242).await.unwrap();
    assert_eq!(header.revision, before + 1, "both keys deleted in one revision");
    assert_eq!(agreed_revision(&nodes).await, before + 1);
    for node in &nodes {
        assert_eq!(node.get("a/1").await.unwrap(), None);
        assert_eq!(node.get("a/2").await.unwrap(), None);
        assert!(node.get("a/3").await.unwrap().is_some());
        assert_eq!(node.get("a/4").await.unwrap().unwrap().value, b"detached");
        let at_before = node
            .range(RangeRequest::prefix("a/").with_revision(before))
            .await
            .unwrap();
        assert_eq!(at_before.kvs.len(), 4);
        let (_, ids) = node.leases().await.unwrap();
        assert!(!ids.contains(&4242));
        assert_eq!(node.lease_time_to_live(4242, false).await.unwrap().1.ttl, -1);
    }
    assert!(matches!(
        leader.lease_revoke(4242).await,
        Err(Error::Request(RequestError::LeaseNotFound(4242)))
    ));
    for node in &nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_is_decided_by_the_leader_and_applied_in_one_revision() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = support::start_cluster(3, dir.path()).await;
    let leader_id = support::wait_for_agreed_leader(&nodes, WAIT).await;
    let follower = nodes.iter().find(|n| n.id() != leader_id).unwrap();

    let started = Instant::now();
    let lease = follower.lease_grant(0, 3).await.unwrap();
    follower.put_with(leased("e/1", lease.id)).await.unwrap();
    follower.put_with(leased("e/2", lease.id)).await.unwrap();
    let before = agreed_revision(&nodes).await;
    // Watchers on every member see the expiry as deletes, like any delete.
    let mut watchers: Vec<WatchStream> = nodes
        .iter()
        .map(|n| n.watch(WatchRequest::prefix("e/")).unwrap())
        .collect();
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, ids) = follower.leases().await.unwrap();
        if !ids.contains(&lease.id) {
            break;
        }
        assert!(Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_secs(3), "expired early: {elapsed:?}");
    assert_eq!(
        agreed_revision(&nodes).await,
        before + 1,
        "one revision for both deletes"
    );
    for watcher in &mut watchers {
        let response = tokio::time::timeout(WAIT, watcher.next())
            .await
            .expect("the expiry's events in time")
            .expect("the watch is open");
        let events: Vec<(EventType, &[u8], i64)> = response
            .events
            .iter()
            .map(|e| (e.kind, e.kv.key.as_slice(), e.kv.mod_revision))
            .collect();
        assert_eq!(
            events,
            vec![
                (EventType::Delete, &b"e/1"[..], before + 1),
                (EventType::Delete, &b"e/2"[..], before + 1)
            ]
        );
    }
    for node in &nodes {
        assert!(
            node.range(RangeRequest::prefix("e/"))
                .await
                .unwrap()
                .kvs
                .is_empty()
        );
    }
    for node in &nodes {
        node.shutdown().await;
    }
}

/// Three nodes with short lease checkpoints (and snapshots every `snapshot_every` entries).
pub(crate) async fn cluster_with(
    dir: &std::path::Path,
    checkpoint: Duration,
    snapshot_every: u64,
) -> support::InProcessCluster {
    support::start_cluster_with(3, dir, |b| {
        b.lease_checkpoint_interval(checkpoint)
            .snapshot_every_entries(snapshot_every)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_resumes_leases_from_their_checkpoint_not_their_full_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster_with(dir.path(), Duration::from_millis(500), 10_000).await;
    let leader_id = support::wait_for_agreed_leader(&nodes, WAIT).await;
    let leader = nodes.iter().find(|n| n.id() == leader_id).unwrap();
    let survivors: Vec<Node> = nodes.iter().filter(|n| n.id() != leader_id).cloned().collect();

    let started = Instant::now();
    let lease = leader.lease_grant(0, 6).await.unwrap();
    let old_term = lease.header.raft_term;
    leader.put_with(leased("c/1", lease.id)).await.unwrap();
    tokio::time::sleep_until((started + Duration::from_secs(4)).into()).await;
    leader.shutdown().await;
    let stopped = started.elapsed();
    let deadline = Instant::now() + WAIT;
    // The first answer of the new leader: the lease's TTL as it resumed it.
    let mut resumed: Option<(Duration, i64)> = None;
    let gone_after = loop {
        match survivors[0].lease_time_to_live(lease.id, false).await {
            Ok((_, info)) if info.ttl == -1 => break started.elapsed(),
            Ok((header, info)) if header.raft_term > old_term && resumed.is_none() => {
                resumed = Some((started.elapsed(), info.ttl));
            }
            Ok(_) => {}
            Err(_) => {} // no leader yet
        }
        assert!(Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (resumed_at, resumed_ttl) = resumed.expect("an answer from the new leader before expiry");
    eprintln!(
        "leader stopped at {stopped:?}; new leader answered at {resumed_at:?} with TTL {resumed_ttl} s; \
         lease gone after {gone_after:?}"
    );
    assert!(
        gone_after >= Duration::from_secs(6),
        "expired early: {gone_after:?}"
    );
    // At the last checkpoint before the stop (every 500 ms) at most 6 - 3.5 s were left,
    // rounded up: 3 s. Reset to its full TTL (etcd 3.4) it would have had 6 s again.
    assert!(resumed_ttl <= 3, "resumed from the full TTL: {resumed_ttl} s");
    assert!(
        gone_after <= resumed_at + Duration::from_secs(resumed_ttl as u64 + 1),
        "expired late: {gone_after:?}"
    );
    for node in &survivors {
        assert_eq!(node.get("c/1").await.unwrap(), None);
    }
    for node in &survivors {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_after_a_checkpoint_is_recorded_so_a_new_leader_keeps_its_promise() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster_with(dir.path(), Duration::from_millis(500), 10_000).await;
    let leader_id = support::wait_for_agreed_leader(&nodes, WAIT).await;
    let leader = nodes.iter().find(|n| n.id() == leader_id).unwrap();
    let survivors: Vec<Node> = nodes.iter().filter(|n| n.id() != leader_id).cloned().collect();

    let started = Instant::now();
    let lease = leader.lease_grant(0, 8).await.unwrap();
    // Idle long enough for checkpoints to record about 2 s left, then renew: the answer
    // promises 8 s from now, and the leader stops right after it.
    tokio::time::sleep_until((started + Duration::from_secs(6)).into()).await;
    let renewed_at = started.elapsed();
    assert_eq!(survivors[0].lease_keep_alive(lease.id).await.unwrap().ttl, 8);
    leader.shutdown().await;
    let promised = renewed_at + Duration::from_secs(8);
    let deadline = Instant::now() + WAIT;
    let gone_after = loop {
        if let Ok((_, info)) = survivors[0].lease_time_to_live(lease.id, false).await
            && info.ttl == -1
        {
            break started.elapsed();
        }
        assert!(Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("renewed at {renewed_at:?} for 8 s; gone after {gone_after:?}");
    assert!(
        gone_after >= promised,
        "expired before the renewal's promise: {gone_after:?}"
    );
    for node in &survivors {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_alive_lease_survives_leader_kill_and_idle_one_expires_in_bound() {
    use raftkv_client::{Client, ClientOptions, KeepAliveState};

    let mut cluster = ProcessCluster::start(3, &[]);
    let leader = cluster.agreed_leader(Duration::from_secs(30)).await;
    let options = ClientOptions {
        request_timeout: Duration::from_secs(10),
        ..ClientOptions::default()
    };
    let client = Client::connect_with(cluster.client_urls(), options)
        .await
        .unwrap();

    let started = Instant::now();
    let kept = client.lease_grant(0, 5).await.unwrap();
    let idle = client.lease_grant(0, 5).await.unwrap();
    assert_eq!((kept.ttl, idle.ttl), (5, 5));
    client.put_with(leased("kept", kept.id)).await.unwrap();
    client.put_with(leased("idle/1", idle.id)).await.unwrap();
    let last_idle_put = client
        .put_with(leased("idle/2", idle.id))
        .await
        .unwrap()
        .header
        .revision;
    let keeper = client.keep_alive(kept.id);

    tokio::time::sleep_until((started + Duration::from_secs(4)).into()).await;
    cluster.kill(leader);
    let killed_at = Instant::now();
    let new_leader = cluster.agreed_leader(Duration::from_secs(30)).await;
    eprintln!(
        "leader {leader} killed; {new_leader} leads after {:?}",
        killed_at.elapsed()
    );

    // The idle lease: gone, with both keys, in one revision, not before its TTL and not
    // after TTL + checkpoint interval + failover bound.
    let bound = Duration::from_secs(5) + DEFAULT_LEASE_CHECKPOINT_INTERVAL + FAILOVER_BOUND;
    let gone_after = loop {
        let ttl = client.lease_time_to_live(idle.id, false).await.unwrap();
        if ttl.ttl == -1 {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < bound + Duration::from_secs(2),
            "the idle lease never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("idle lease gone after {gone_after:?} (bound {bound:?})");
    assert!(
        gone_after >= Duration::from_secs(5),
        "expired early: {gone_after:?}"
    );
    assert!(gone_after <= bound, "expired late: {gone_after:?}");
    let now = client.range(RangeRequest::prefix("idle/")).await.unwrap();
    assert!(now.kvs.is_empty());
    // Find the revision that deleted them: the keys were all there just before it.
    let mut rev = last_idle_put;
    loop {
        let kvs = client
            .range(RangeRequest::prefix("idle/").with_revision(rev + 1))
            .await
            .unwrap()
            .kvs;
        if kvs.is_empty() {
            break;
        }
        assert_eq!(
            kvs.len(),
            2,
            "only one of the keys deleted at revision {}",
            rev + 1
        );
        rev += 1;
        assert!(rev <= now.header.revision, "no revision deleted the keys");
    }

    // The kept lease: alive well past its TTL across the leader change.
    tokio::time::sleep_until((started + Duration::from_secs(12)).into()).await;
    let ttl = client.lease_time_to_live(kept.id, true).await.unwrap();
    assert!(ttl.ttl > 0, "{ttl:?}");
    assert_eq!(ttl.keys, vec![b"kept".to_vec()]);
    assert!(client.get("kept").await.unwrap().is_some());
    assert!(
        matches!(keeper.state(), KeepAliveState::Renewed { .. }),
        "{:?}",
        keeper.state()
    );
    drop(keeper);
    client.lease_revoke(kept.id).await.unwrap();
    assert!(client.get("kept").await.unwrap().is_none());
}
