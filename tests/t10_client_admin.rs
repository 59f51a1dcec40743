//! The client's Cluster and Maintenance API against a three-node cluster in one process:
//! members and their client URLs, each member's status, adding / promoting / updating /
//! removing a learner and the typed errors of bad membership changes, the NOSPACE alarm
//! refusing writes on the leader until disarmed, equal KV hashes on every member, a
//! snapshot with its checksum, and MoveLeader refused as unsupported.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::future::Future;
use std::time::Duration;

use raftkv_client::{AlarmAction, AlarmType, Client, ClientError, Member, RequestError, ServerError};
use tokio::time::Instant;

/// Deadline of every wait in this test.
const WAIT: Duration = Duration::from_secs(20);

/// Poll `check` until it yields a value; fail the test after [`WAIT`].
async fn eventually<T, Fut>(what: &str, mut check: impl FnMut() -> Fut) -> T
where
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// MemberList, asked until `check` holds for the members it lists (fails after [`WAIT`]).
async fn listed_until(client: &Client, what: &str, check: impl Fn(&[Member]) -> bool) -> Vec<Member> {
    eventually(what, || async {
        let members = client.member_list().await.unwrap().members;
        check(&members).then_some(members)
    })
    .await
}

/// A peer URL nothing listens on, on a port held (bound, not listening) while the
/// returned value lives.
fn unused_peer_url() -> (String, support::ports::HeldPort) {
    let port = support::ports::HeldPort::new();
    (port.url(), port)
}

/// The request error inside `e`, or a test failure naming what came instead.
fn request_error<T: std::fmt::Debug>(result: Result<T, ClientError>) -> RequestError {
    match result {
        Err(ClientError::Server(ServerError::Request(e))) => e,
        other => panic!("expected a request error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_and_maintenance_through_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = support::start_cluster(3, dir.path()).await;
    let leader = support::wait_for_agreed_leader(&nodes, WAIT).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.client_urls()[0].clone()).collect();
    let client = Client::connect(urls.clone()).await.unwrap();
    let leader_url = nodes
        .iter()
        .find(|n| n.id() == leader)
        .map(|n| n.client_urls()[0].clone())
        .unwrap();
    let follower = nodes.iter().find(|n| n.id() != leader).unwrap().id();

    // MemberList: three voters, each with the client URLs it publishes once started.
    let members = eventually("client URLs published", || async {
        let list = client.member_list().await.unwrap();
        list.members
            .iter()
            .all(|m| !m.client_urls.is_empty())
            .then_some(list.members)
    })
    .await;
    assert_eq!(members.len(), 3);
    for node in &nodes {
        let m = members.iter().find(|m| m.id == node.id()).unwrap();
        assert!(!m.is_learner, "{m:?}");
        assert_eq!(m.client_urls, node.client_urls());
        assert_eq!(m.peer_urls, [node.peer_url()]);
    }

    // Status of each member: the agreed leader, and an applied index that is current.
    for (node, url) in nodes.iter().zip(&urls) {
        let applied_before = node.applied().get();
        let status = client.status_of(url).await.unwrap();
        assert_eq!(status.header.member_id, node.id());
        assert_eq!(status.leader, leader, "member {}", node.id());
        assert!(status.raft_applied_index >= applied_before.max(1), "{status:?}");
        assert!(status.raft_index >= status.raft_applied_index, "{status:?}");
        assert!(!status.is_learner && status.errors.is_empty(), "{status:?}");
        assert!(!status.version.is_empty() && status.db_size > 0, "{status:?}");
    }
    assert_eq!(client.status().await.unwrap().leader, leader);

    // A learner at a peer URL nothing listens on: added with a fresh id, listed, not
    // promotable (it cannot catch up), movable to another URL, removable. The member
    // lists are checked with MemberList until they show the change: a change made
    // through a follower is forwarded to the leader, and the follower's own view (which
    // it answers with) may lag by a moment.
    let (peer_url, _peer_port) = unused_peer_url();
    let (_, added, _) = client.member_add([peer_url.clone()], true).await.unwrap();
    assert!(added.id != 0 && added.is_learner, "{added:?}");
    assert_eq!(added.peer_urls, [peer_url]);
    assert!(nodes.iter().all(|n| n.id() != added.id));
    let members = listed_until(&client, "the learner listed", |ms| {
        ms.iter().any(|m| m.id == added.id)
    })
    .await;
    let learner = members.iter().find(|m| m.id == added.id).unwrap();
    assert!(
        learner.is_learner && learner.client_urls.is_empty(),
        "{learner:?}"
    );
    assert_eq!(members.len(), 4);
    assert_eq!(
        request_error(client.member_promote(added.id).await),
        RequestError::LearnerNotReady
    );
    let (moved_to, _moved_port) = unused_peer_url();
    client.member_update(added.id, [moved_to.clone()]).await.unwrap();
    listed_until(&client, "the learner's new peer URL listed", |ms| {
        ms.iter()
            .any(|m| m.id == added.id && m.peer_urls == [moved_to.clone()])
    })
    .await;
    client.member_remove(added.id).await.unwrap();
    listed_until(&client, "the learner gone from the list", |ms| {
        ms.len() == 3 && ms.iter().all(|m| m.id != added.id)
    })
    .await;

    // Bad membership changes come back as their typed errors.
    assert!(matches!(
        request_error(client.member_remove(0xdead_beef).await),
        RequestError::MemberNotFound(_)
    ));
    assert_eq!(
        request_error(client.member_promote(follower).await),
        RequestError::MemberNotLearner
    );

    // Alarms are replicated: one raised through a follower for the leader caps writes
    // through every member and shows in every member's status, until disarmed.
    let at_leader = Client::connect([leader_url.clone()]).await.unwrap();
    let follower_url = urls.iter().find(|u| **u != leader_url).unwrap().clone();
    let at_follower = Client::connect([follower_url]).await.unwrap();
    let none = at_leader
        .alarm(AlarmAction::Get, 0, AlarmType::None)
        .await
        .unwrap();
    assert!(none.alarms.is_empty(), "{none:?}");
    let raised = at_follower
        .alarm(AlarmAction::Activate, leader, AlarmType::NoSpace)
        .await
        .unwrap();
    assert_eq!(raised.alarms.len(), 1, "{raised:?}");
    assert_eq!(
        (raised.alarms[0].member_id, raised.alarms[0].alarm),
        (leader, AlarmType::NoSpace)
    );
    let listed = at_leader
        .alarm(AlarmAction::Get, 0, AlarmType::None)
        .await
        .unwrap();
    assert_eq!(listed.alarms, raised.alarms);
    for url in &urls {
        let member = Client::connect([url.clone()]).await.unwrap();
        let errors = eventually("the member to apply the alarm", || async {
            let errors = member.status().await.unwrap().errors;
            (!errors.is_empty()).then_some(errors)
        })
        .await;
        assert_eq!(errors, vec![format!("memberID:{leader} alarm:NOSPACE ")], "{url}");
    }
    for member in [&at_leader, &at_follower] {
        let refused = member.put("full", "v").await;
        assert!(
            matches!(refused, Err(ClientError::Server(ServerError::NoSpace))),
            "{refused:?}"
        );
    }
    // As etcd, a disarm answers the alarm it disarmed.
    let disarmed = at_follower
        .alarm(AlarmAction::Deactivate, leader, AlarmType::NoSpace)
        .await
        .unwrap();
    assert_eq!(disarmed.alarms, raised.alarms);
    at_follower.put("full", "v").await.unwrap();
    assert_eq!(at_leader.defragment().await.unwrap().member_id, leader);

    // The same writes give the same hash on every member, at the same revision.
    for i in 0..20 {
        client.put(format!("hash/{i}"), format!("v{i}")).await.unwrap();
    }
    let revision = client.delete("hash/0").await.unwrap().header.revision;
    let mut hashes = Vec::new();
    for url in &urls {
        let member = Client::connect([url.clone()]).await.unwrap();
        let hash = eventually("the member to apply the writes", || async {
            match member.hash_kv(revision).await {
                Ok(hash) => Some(hash),
                Err(ClientError::Server(ServerError::Request(RequestError::FutureRevision { .. }))) => None,
                Err(e) => panic!("hash_kv at {url}: {e}"),
            }
        })
        .await;
        hashes.push((hash.header.member_id, hash.hash, hash.compact_revision));
    }
    assert!(
        hashes
            .iter()
            .all(|(_, h, c)| (*h, *c) == (hashes[0].1, hashes[0].2)),
        "{hashes:?}"
    );
    let mut answered: Vec<u64> = hashes.iter().map(|(id, _, _)| *id).collect();
    answered.sort_unstable();
    let mut ids: Vec<u64> = nodes.iter().map(|n| n.id()).collect();
    ids.sort_unstable();
    assert_eq!(answered, ids);

    // A snapshot: whole 512-byte pages of data, then a 32-byte SHA-256.
    let mut data = Vec::new();
    let snapshot = client.snapshot(&mut data).await.unwrap();
    assert!(!data.is_empty() && data.len() % 512 == 0, "{} bytes", data.len());
    assert_eq!(snapshot.size, data.len() as u64);
    assert_eq!(snapshot.sha256.len(), 32);
    assert_ne!(snapshot.sha256, [0; 32]);

    // MoveLeader: a non-member is refused, not retried, nothing changes; a voter takes
    // over (the client finds the leader whichever member it asks first).
    let err = request_error(client.move_leader(0xdead).await);
    assert!(matches!(err, RequestError::BadLeaderTransferee(_)), "{err:?}");
    assert_eq!(client.status_of(&leader_url).await.unwrap().leader, leader);
    client.move_leader(follower).await.unwrap();
    assert_eq!(client.status_of(&leader_url).await.unwrap().leader, follower);

    for node in &nodes {
        node.shutdown().await;
    }
}
