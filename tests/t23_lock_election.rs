//! etcd's Lock service (`v3lockpb.Lock`) on a three-node cluster, through raftkv-client
//! and embedded: two competing lockers hold the lock one at a time, checked with writes
//! fenced by the holder's create revision, which never interleave; a waiter acquires when
//! the holder's lease is revoked or expires; a waiter whose own lease expires while it
//! waits gets `LeaseNotFound`, not the lock (the re-check etcd missed: etcd issue 11456);
//! an abandoned wait removes its key; a lost lock's fenced write fails. etcd's Election
//! service (`v3electionpb.Election`) through raftkv-client and embedded: campaign,
//! proclaim, leader, observe, resign, one leader at a time, the same re-check for a
//! campaigner whose lease expires. Then `etcdctl lock` and `etcdctl elect` (client-side
//! recipes over KV, Lease and Watch, not these services) with two processes competing:
//! one holder / leader at a time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use raftkv::*;
use raftkv_client::{Client, ClientError, ClientOptions};

/// Deadline of every wait in this file.
const WAIT: Duration = Duration::from_secs(20);

async fn cluster(dir: &std::path::Path) -> support::InProcessCluster {
    let nodes = support::start_cluster(3, dir).await;
    support::wait_for_agreed_leader(&nodes, WAIT).await;
    nodes
}

fn urls(nodes: &[Node]) -> Vec<String> {
    nodes.iter().flat_map(|n| n.client_urls().to_vec()).collect()
}

async fn client(endpoints: Vec<String>) -> Client {
    let options = ClientOptions {
        request_timeout: WAIT,
        ..ClientOptions::default()
    };
    Client::connect_with(endpoints, options).await.unwrap()
}

fn fenced_put(fence: Compare, key: &str, value: String) -> raftkv_client::TxnRequest {
    raftkv_client::TxnRequest {
        compare: vec![fence],
        success: vec![raftkv_client::RequestOp::Put(raftkv_client::PutRequest::new(
            key, value,
        ))],
        failure: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_client_lockers_hold_the_lock_one_at_a_time_and_fenced_writes_never_interleave() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path()).await;
    let all = urls(&nodes);
    let holders = Arc::new(AtomicUsize::new(0));
    let start = nodes[0].metrics().revision;
    let mut tasks = Vec::new();
    for who in 0..2usize {
        // Each locker talks to a different member first.
        let mut endpoints = all.clone();
        endpoints.rotate_left(who);
        let client = client(endpoints).await;
        let holders = holders.clone();
        tasks.push(tokio::spawn(async move {
            let lease = client.lease_grant(0, 30).await.unwrap().id;
            for round in 0..4 {
                let held = client.lock("fence-lock", lease).await.unwrap();
                assert!(held.key.starts_with(b"fence-lock/"));
                assert!(held.create_revision > 0);
                assert_eq!(holders.fetch_add(1, Ordering::SeqCst), 0, "two holders at once");
                for step in ["start", "end"] {
                    let value = format!("{who}-{round}-{step}");
                    let resp = client
                        .txn(fenced_put(held.fence(), "fenced", value))
                        .await
                        .unwrap();
                    assert!(resp.succeeded, "a fenced write of the holder failed");
                    tokio::time::sleep(Duration::from_millis(60)).await;
                }
                holders.fetch_sub(1, Ordering::SeqCst);
                client.unlock(held.key.clone()).await.unwrap();
                // The released lock fences nothing any more.
                let late = client
                    .txn(fenced_put(held.fence(), "fenced", "late".into()))
                    .await
                    .unwrap();
                assert!(!late.succeeded, "a fenced write after unlock succeeded");
            }
            client.lease_revoke(lease).await.unwrap();
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .unwrap()
            .unwrap();
    }
    // The recorded history of the fenced key: start/end pairs of one holder, never mixed.
    let mut watch = nodes[0]
        .watch(WatchRequest {
            start_revision: start + 1,
            ..WatchRequest::key("fenced")
        })
        .unwrap();
    let mut values = Vec::new();
    while values.len() < 16 {
        let resp = tokio::time::timeout(WAIT, watch.next()).await.unwrap().unwrap();
        values.extend(
            resp.events
                .into_iter()
                .map(|e| String::from_utf8(e.kv.value).unwrap()),
        );
    }
    assert_eq!(values.len(), 16, "{values:?}");
    for pair in values.chunks(2) {
        let start = pair[0].strip_suffix("-start").expect("a start");
        let end = pair[1].strip_suffix("-end").expect("an end");
        assert_eq!(start, end, "fenced writes interleaved: {values:?}");
    }
    for node in &nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_acquires_when_the_holders_lease_is_revoked_or_expires() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path()).await;
    let client = client(urls(&nodes)).await;

    // Revoked.
    let holder_lease = client.lease_grant(0, 60).await.unwrap().id;
    let waiter_lease = client.lease_grant(0, 60).await.unwrap().id;
    let held = client.lock("revoke-lock", holder_lease).await.unwrap();
    let waiter = {
        let client = client.clone();
        tokio::spawn(async move { client.lock("revoke-lock", waiter_lease).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiter.is_finished(), "the waiter got the lock while it was held");
    client.lease_revoke(holder_lease).await.unwrap();
    let acquired = tokio::time::timeout(WAIT, waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(acquired.create_revision > held.create_revision);
    let stale = client
        .txn(fenced_put(held.fence(), "x", "stale".into()))
        .await
        .unwrap();
    assert!(!stale.succeeded, "the revoked holder's fence still held");
    client.unlock(acquired.key).await.unwrap();

    // Expired (never kept alive): embedded lock on a follower.
    let short = nodes[1].lease_grant(0, 2).await.unwrap().id;
    let long = nodes[1].lease_grant(0, 60).await.unwrap().id;
    let held = nodes[1].lock("expire-lock", short).await.unwrap();
    assert_eq!(held.key, lock_key(b"expire-lock", short));
    let started = Instant::now();
    let acquired = tokio::time::timeout(WAIT, nodes[2].lock("expire-lock", long))
        .await
        .unwrap()
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(1000));
    assert!(acquired.create_revision > held.create_revision);
    assert!(nodes[0].get(held.key.clone()).await.unwrap().is_none());
    for node in &nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_lease_expires_while_waiting_gets_an_error_not_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path()).await;
    let client = client(urls(&nodes)).await;
    let holder_lease = client.lease_grant(0, 60).await.unwrap().id;
    let held = client.lock("recheck-lock", holder_lease).await.unwrap();

    // Through the service: the waiter's lease (TTL 2, never renewed) expires while it waits.
    let waiter_lease = client.lease_grant(0, 2).await.unwrap().id;
    let answer = tokio::time::timeout(WAIT, client.lock("recheck-lock", waiter_lease))
        .await
        .unwrap();
    assert!(
        matches!(
            answer,
            Err(ClientError::Server(Error::Request(RequestError::LeaseNotFound(
                _
            ))))
        ),
        "{answer:?}"
    );
    // Embedded, on a follower.
    let waiter_lease = nodes[2].lease_grant(0, 2).await.unwrap().id;
    let answer = tokio::time::timeout(WAIT, nodes[2].lock("recheck-lock", waiter_lease))
        .await
        .unwrap();
    assert!(
        matches!(answer, Err(Error::Request(RequestError::LeaseNotFound(l))) if l == waiter_lease),
        "{answer:?}"
    );
    // A lease that does not exist (or lease 0) never queues.
    assert!(matches!(
        nodes[0].lock("recheck-lock", 0x7777).await,
        Err(Error::Request(RequestError::LeaseNotFound(_)))
    ));
    // The holder still holds it, alone.
    let keys = nodes[0]
        .range(RangeRequest::prefix("recheck-lock/"))
        .await
        .unwrap();
    assert_eq!(keys.kvs.len(), 1);
    assert_eq!(keys.kvs[0].key, held.key);
    let ok = client
        .txn(fenced_put(held.fence(), "x", "held".into()))
        .await
        .unwrap();
    assert!(ok.succeeded);
    for node in &nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_wait_removes_the_waiters_key() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path()).await;
    let holder = nodes[0].lease_grant(0, 60).await.unwrap().id;
    let waiter = nodes[0].lease_grant(0, 60).await.unwrap().id;
    nodes[0].lock("cancel-lock", holder).await.unwrap();

    // Embedded: the future dropped by a timeout.
    let waiter_key = lock_key(b"cancel-lock", waiter);
    let timed_out =
        tokio::time::timeout(Duration::from_millis(700), nodes[1].lock("cancel-lock", waiter)).await;
    assert!(timed_out.is_err(), "the waiter got a held lock");
    wait_for_absent(&nodes[0], &waiter_key).await;

    // gRPC: the client's deadline passes, the server drops the wait.
    let options = ClientOptions {
        request_timeout: Duration::from_millis(1500),
        ..ClientOptions::default()
    };
    let impatient = Client::connect_with(urls(&nodes), options).await.unwrap();
    let answer = impatient.lock("cancel-lock", waiter).await;
    assert!(answer.is_err(), "{answer:?}");
    wait_for_absent(&nodes[0], &waiter_key).await;
    for node in &nodes {
        node.shutdown().await;
    }
}

async fn wait_for_absent(node: &Node, key: &[u8]) {
    let deadline = Instant::now() + WAIT;
    while node.get(key.to_vec()).await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the abandoned waiter's key stayed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn next_leader(observer: &mut raftkv_client::Observer) -> KeyValue {
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

fn etcdctl_available() -> bool {
    Command::new("etcdctl")
        .arg("version")
        .env("ETCDCTL_API", "3")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn require_etcdctl() -> bool {
    if etcdctl_available() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "etcdctl is required under CI=true (apt-get install etcd-client)"
    );
    eprintln!("SKIPPED: etcdctl not installed (apt-get install etcd-client)");
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lock_two_processes_hold_it_one_at_a_time() {
    if !require_etcdctl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path()).await;
    let log = dir.path().join("holders.log");
    let mut children = Vec::new();
    for (who, node) in nodes.iter().enumerate().take(2) {
        let endpoint = node.client_urls()[0].clone();
        // Each process takes the lock 3 times, logging start and end around a pause.
        let script = format!(
            "for i in 1 2 3; do etcdctl --endpoints={endpoint} lock ctl-lock -- sh -c \
             'echo start {who} >> {log}; sleep 0.3; echo end {who} >> {log}' || exit 1; done",
            log = log.display()
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .env("ETCDCTL_API", "3")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        children.push(child);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for mut child in children {
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "etcdctl lock never finished");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(status.success());
    }
    let lines: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), 12, "{lines:?}");
    for pair in lines.chunks(2) {
        let start = pair[0].strip_prefix("start ").expect("a start");
        let end = pair[1].strip_prefix("end ").expect("an end");
        assert_eq!(start, end, "two holders at once: {lines:?}");
    }
    for node in &nodes {
        node.shutdown().await;
    }
}

/// Lines a child prints, read by a thread into a channel.
fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

async fn wait_for_line(rx: &std::sync::mpsc::Receiver<String>, wanted: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        match rx.try_recv() {
            Ok(line) if line == wanted => return,
            Ok(_) => {}
            Err(std::sync::mpsc::TryRecvError::Empty) => {
                assert!(Instant::now() < deadline, "never printed {wanted:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(std::sync::mpsc::TryRecvError::Disconnected) => panic!("exited without printing {wanted:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_elect_two_processes_one_leader_at_a_time() {
    if !require_etcdctl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path()).await;
    let elect = |endpoint: &str, proposal: &str| {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoint}"))
            .args(["elect", "ctl-election", proposal])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut first = elect(&nodes[0].client_urls()[0], "proposal-a");
    let first_lines = lines_of(&mut first);
    wait_for_line(&first_lines, "proposal-a").await;
    let mut second = elect(&nodes[1].client_urls()[0], "proposal-b");
    let second_lines = lines_of(&mut second);
    // The second campaigner waits while the first leads.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(second_lines.try_recv().is_err(), "two leaders at once");
    let (_, leaders) = nodes[0].leases().await.unwrap();
    assert_eq!(leaders.len(), 2, "one session lease per campaigner");
    // SIGINT: etcdctl resigns (revokes its session); the second becomes leader.
    let killed = Command::new("kill")
        .args(["-INT", &first.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    wait_for_line(&second_lines, "proposal-b").await;
    let deadline = Instant::now() + WAIT;
    while first.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the first etcdctl elect never exited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    second.kill().unwrap();
    second.wait().unwrap();
    for node in &nodes {
        node.shutdown().await;
    }
}
