//! Auth as etcd 3.4 serves it: the same session, driving etcdctl and etcd's gRPC API,
//! runs against a raftkv cluster and an etcd cluster and must read the same, ids and
//! revisions aside. It covers the root rules (`auth enable` adds the root role only after
//! "root user does not have root role"), users and roles, a permitted and a denied key
//! range (prefix, single key, from-key), a bad password, requests without credentials,
//! a token used on another member than the one that issued it, a watch on a denied range,
//! the auth reads only root (or the user itself) may make, member changes (root only),
//! a revoked role taking effect,
//! token expiry after `--auth-token-ttl` without use, and `auth disable`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crate::support;
use support::etcd::{etcdctl, etcdctl_available};
use support::process::ProcessCluster;

/// Both sides: cheap hashes, and tokens that expire within the test.
const FLAGS: [&str; 4] = ["--bcrypt-cost", "4", "--auth-token-ttl", "2"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_answers_as_etcd_does() {
    if !etcdctl_available() {
        assert!(std::env::var("CI").is_err(), "etcdctl is required under CI=true");
        eprintln!("SKIPPED: etcdctl not installed");
        return;
    }
    let cluster = ProcessCluster::start(3, &FLAGS);
    cluster.agreed_leader(Duration::from_secs(30)).await;
    let raftkv = session(&cluster.client_urls()).await;
    eprintln!("raftkv: {raftkv:#?}");
    assert!(
        raftkv.contains(&"alice puts /app/x: false, Error: etcdserver: permission denied".into()),
        "{raftkv:#?}"
    );
    drop(cluster);

    if support::etcd::available() {
        let etcd = support::etcd::EtcdCluster::start_with(3, &FLAGS).await;
        let seen = session(&etcd.client_urls).await;
        let differ: Vec<String> = raftkv
            .iter()
            .zip(&seen)
            .filter(|(ours, theirs)| ours != theirs)
            .map(|(ours, theirs)| format!("raftkv: {ours}\n  etcd: {theirs}"))
            .collect();
        assert!(
            differ.is_empty(),
            "etcd 3.4 answers otherwise:\n{}",
            differ.join("\n")
        );
        assert_eq!(raftkv.len(), seen.len());
    } else {
        assert!(std::env::var("CI").is_err(), "etcd is required under CI=true");
    }
}

mod etcdctl_session;
mod grpc_session;

use etcdctl_session::*;
use grpc_session::*;

/// raftkv's own client with credentials: it authenticates, is checked as that user
/// (writes, reads, locks and watches), and when its token expires it authenticates again by
/// itself; a wrong password is the server's verdict, not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_authenticates_and_renews_its_token() {
    use raftkv_client::{Client, ClientError, ClientOptions, Credentials};
    let cluster = ProcessCluster::start(3, &FLAGS);
    cluster.agreed_leader(Duration::from_secs(30)).await;
    let urls = cluster.client_urls();
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["user", "add", "alice:alicepw"],
        &["role", "add", "app"],
        &[
            "role",
            "grant-permission",
            "app",
            "readwrite",
            "/app/",
            "--prefix",
        ],
        &["user", "grant-role", "alice", "app"],
        &["auth", "enable"],
    ] {
        let (ok, _, err) = etcdctl(&urls[0], args);
        assert!(ok, "{args:?}: {err}");
    }
    let as_user = |user: &str, password: &str| ClientOptions {
        credentials: Some(Credentials::new(user, password)),
        ..ClientOptions::default()
    };
    let alice = Client::connect_with(urls.clone(), as_user("alice", "alicepw"))
        .await
        .unwrap();
    alice.put("/app/a", "1").await.unwrap();
    assert_eq!(alice.get("/app/a").await.unwrap().unwrap().value, b"1");
    let denied = alice.put("/other", "1").await.unwrap_err();
    assert!(
        matches!(&denied, ClientError::Server(e) if e.to_string() == "permission denied"),
        "{denied:?}"
    );
    // A lock needs read on its prefix and write on the caller's key.
    let lease = alice.lease_grant(0, 60).await.unwrap().id;
    alice.lock("/app/lock", lease).await.unwrap();
    let denied = alice.lock("/other/lock", lease).await.unwrap_err();
    assert!(
        matches!(&denied, ClientError::Server(e) if e.to_string() == "permission denied"),
        "{denied:?}"
    );
    let mut watcher = alice
        .watch(raftkv_client::WatchRequest::prefix("/app/"))
        .await
        .unwrap();
    // The token expires (2 s unused); the client authenticates again for the write.
    tokio::time::sleep(Duration::from_secs(4)).await;
    alice.put("/app/b", "2").await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(10), watcher.next())
        .await
        .expect("the watch delivers")
        .unwrap()
        .unwrap();
    assert_eq!(seen.events[0].kv.key, b"/app/b");

    let wrong = Client::connect_with(urls.clone(), as_user("alice", "nope"))
        .await
        .unwrap();
    let refused = wrong.get("/app/a").await.unwrap_err();
    assert!(
        matches!(&refused, ClientError::Server(e) if e.to_string().contains("authentication failed")),
        "{refused:?}"
    );
    let anonymous = Client::connect(urls.clone()).await.unwrap();
    let refused = anonymous.get("/app/a").await.unwrap_err();
    assert!(
        matches!(&refused, ClientError::Server(e) if e.to_string() == "user name is empty"),
        "{refused:?}"
    );
}
