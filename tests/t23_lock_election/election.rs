//! Elections through raftkv-client: campaign, proclaim, leader, observe, resign, and
//! campaigners whose lease expires.

use super::*;

pub(crate) async fn wait_for_absent(node: &Node, key: &[u8]) {
    let deadline = Instant::now() + WAIT;
    while node.get(key.to_vec()).await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the abandoned waiter's key stayed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn next_leader(observer: &mut raftkv_client::Observer) -> KeyValue {
    tokio::time::timeout(WAIT, observer.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_campaign_proclaim_leader_observe_resign_through_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path()).await;
    let client = client(urls(&nodes)).await;
    assert_eq!(client.leader("el").await.unwrap(), None);
    let a = client.lease_grant(0, 60).await.unwrap().id;
    let b = client.lease_grant(0, 60).await.unwrap().id;

    let leader_a = client.campaign("el", a, "value-a").await.unwrap();
    assert_eq!(leader_a.key, lock_key(b"el", a));
    assert_eq!((leader_a.name.as_slice(), leader_a.lease), (b"el".as_slice(), a));
    let current = client.leader("el").await.unwrap().unwrap();
    assert_eq!(
        (current.key.clone(), current.value),
        (leader_a.key.clone(), b"value-a".to_vec())
    );
    assert_eq!(current.create_revision, leader_a.rev);

    let mut observer = client.observe("el").await.unwrap();
    assert_eq!(next_leader(&mut observer).await.value, b"value-a");

    // A second campaigner waits while A leads.
    let campaign_b = {
        let client = client.clone();
        tokio::spawn(async move { client.campaign("el", b, "value-b").await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!campaign_b.is_finished(), "two leaders at once");
    assert!(client.proclaim(&leader_a, "value-a2").await.unwrap());
    assert_eq!(next_leader(&mut observer).await.value, b"value-a2");
    assert_eq!(client.leader("el").await.unwrap().unwrap().value, b"value-a2");
    let fenced = client
        .txn(fenced_put(leader_a.fence(), "led", "a".into()))
        .await
        .unwrap();
    assert!(fenced.succeeded);

    // A resigns: B leads, observers see it, A's proclaim and fence fail.
    client.resign(&leader_a).await.unwrap();
    let leader_b = tokio::time::timeout(WAIT, campaign_b)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(leader_b.rev > leader_a.rev);
    let seen = next_leader(&mut observer).await;
    assert_eq!(
        (seen.key, seen.value),
        (leader_b.key.clone(), b"value-b".to_vec())
    );
    assert!(!client.proclaim(&leader_a, "stale").await.unwrap());
    let stale = client
        .txn(fenced_put(leader_a.fence(), "led", "a".into()))
        .await
        .unwrap();
    assert!(!stale.succeeded);

    // Embedded, on a follower: the same election.
    let (_, current) = nodes[2].election_leader("el").await.unwrap();
    assert_eq!(current.unwrap().value, b"value-b");
    client.resign(&leader_b).await.unwrap();
    assert_eq!(client.leader("el").await.unwrap(), None);
    let c = nodes[2].lease_grant(0, 60).await.unwrap().id;
    let (_, leader_c) = tokio::time::timeout(WAIT, nodes[2].campaign("el", c, "value-c"))
        .await
        .unwrap()
        .unwrap();
    assert!(nodes[2].proclaim(&leader_c, "value-c2").await.unwrap().is_some());
    let seen = next_leader(&mut observer).await;
    assert_eq!(seen.key, leader_c.key);
    for node in &nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaigner_whose_lease_expires_while_waiting_fails_and_an_expired_leader_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path()).await;
    let long = nodes[0].lease_grant(0, 60).await.unwrap().id;
    let (_, leader) = nodes[0].campaign("el2", long, "long").await.unwrap();
    // The re-check: a campaigner whose lease (TTL 2, never renewed) ends while it waits.
    let short = nodes[1].lease_grant(0, 2).await.unwrap().id;
    let answer = tokio::time::timeout(WAIT, nodes[1].campaign("el2", short, "short"))
        .await
        .unwrap();
    assert!(
        matches!(answer, Err(Error::Request(RequestError::LeaseNotFound(l))) if l == short),
        "{answer:?}"
    );
    let (_, current) = nodes[1].election_leader("el2").await.unwrap();
    assert_eq!(current.unwrap().key, leader.key);
    // The leader's lease ends (revoked): the waiting campaigner wins.
    let next = nodes[2].lease_grant(0, 60).await.unwrap().id;
    let waiting = {
        let node = nodes[2].clone();
        tokio::spawn(async move { node.campaign("el2", next, "next").await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "two leaders at once");
    nodes[0].lease_revoke(long).await.unwrap();
    let (_, won) = tokio::time::timeout(WAIT, waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(won.rev > leader.rev);
    assert!(nodes[0].proclaim(&leader, "stale").await.unwrap().is_none());
    for node in &nodes {
        node.shutdown().await;
    }
}
