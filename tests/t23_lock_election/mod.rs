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

mod election;
mod etcdctl;

use election::*;

/// Deadline of every wait in this file.
const WAIT: Duration = Duration::from_secs(20);

pub(crate) async fn cluster(dir: &std::path::Path) -> support::InProcessCluster {
    let nodes = support::start_cluster(3, dir).await;
    support::wait_for_agreed_leader(&nodes, WAIT).await;
    nodes
}

fn urls(nodes: &[Node]) -> Vec<String> {
    nodes.iter().flat_map(|n| n.client_urls().to_vec()).collect()
}

pub(crate) async fn client(endpoints: Vec<String>) -> Client {
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
