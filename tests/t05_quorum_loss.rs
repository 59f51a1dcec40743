//! Losing the quorum (2 of 3 members stopped): writes and linearizable reads fail within
//! the client's deadline with a clear error instead of hanging, and service resumes when
//! a member returns. A client recovers when the member it talks to dies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::time::{Duration, Instant};

use raftkv_client::{Client, ClientError, ClientOptions};
use support::process::ProcessCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_quorum_requests_fail_in_time_then_service_resumes() {
    let mut cluster = ProcessCluster::start(3, &[]);
    let leader = cluster.agreed_leader(Duration::from_secs(30)).await;
    let timeout = Duration::from_secs(3);
    let options = ClientOptions {
        request_timeout: timeout,
        ..ClientOptions::default()
    };
    let client = Client::connect_with(cluster.client_urls(), options.clone())
        .await
        .unwrap();
    client.put("k", "before").await.unwrap();

    // Stop both followers: the leader is alone and cannot commit.
    for id in [1, 2, 3].into_iter().filter(|id| *id != leader) {
        cluster.kill(id);
    }
    let started = Instant::now();
    let err = client.put("k", "lost?").await.unwrap_err();
    let took = started.elapsed();
    println!("write without quorum: {took:?}: {err}");
    assert!(took < timeout + Duration::from_secs(1), "write took {took:?}");
    assert!(
        matches!(
            err,
            ClientError::OutcomeUnknown(_) | ClientError::DeadlineExceeded { .. }
        ),
        "{err:?}"
    );
    let started = Instant::now();
    let err = client.get("k").await.unwrap_err();
    let took = started.elapsed();
    println!("linearizable read without quorum: {took:?}: {err}");
    assert!(took < timeout + Duration::from_secs(1), "read took {took:?}");
    assert!(matches!(err, ClientError::DeadlineExceeded { .. }), "{err:?}");

    // One member returns: a majority again, service resumes.
    let back = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    cluster.restart(back);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.put("k", "after").await {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "service did not resume: {e}"),
        }
    }
    assert_eq!(client.get("k").await.unwrap().unwrap().value, b"after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_recovers_when_its_member_dies() {
    let mut cluster = ProcessCluster::start(3, &[]);
    cluster.agreed_leader(Duration::from_secs(30)).await;
    let options = ClientOptions {
        request_timeout: Duration::from_secs(15),
        ..ClientOptions::default()
    };
    let client = Client::connect_with(cluster.client_urls(), options)
        .await
        .unwrap();
    client.put("a", "1").await.unwrap();
    let preferred = client.preferred_endpoint().unwrap();
    let victim = *cluster
        .nodes
        .iter()
        .find(|(_, n)| n.client_url == preferred)
        .unwrap()
        .0;
    cluster.kill(victim);
    // The calls after the kill go elsewhere (even if the victim was the leader).
    assert_eq!(client.get("a").await.unwrap().unwrap().value, b"1");
    client.put("b", "2").await.unwrap();
    assert_eq!(client.get("b").await.unwrap().unwrap().value, b"2");
    assert_ne!(client.preferred_endpoint().unwrap(), preferred);
}
