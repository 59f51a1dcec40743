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

/// raftkv's own client as the administrator: users, roles and permissions made, read
/// back, enforced and taken away, auth turned on and off, all through `raftkv-client`
/// (no etcdctl); a non-root user's change refused with etcd's text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_manages_users_roles_and_permissions() {
    use raftkv_client::{Client, ClientError, ClientOptions, Credentials, Permission, PermissionType};
    let denied =
        |e: &ClientError| matches!(e, ClientError::Server(s) if s.to_string() == "permission denied");
    let cluster = ProcessCluster::start(3, &FLAGS);
    cluster.agreed_leader(Duration::from_secs(30)).await;
    let urls = cluster.client_urls();
    let admin = Client::connect(urls.clone()).await.unwrap();
    admin.user_add("root", "rootpw").await.unwrap();
    // etcd's AuthEnable refuses a root user without the root role (etcdctl adds it).
    let refused = admin.auth_enable().await.unwrap_err();
    assert!(
        matches!(&refused, ClientError::Server(e) if e.to_string().contains("root user does not have root role")),
        "{refused:?}"
    );
    admin.role_add("root").await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.role_add("app").await.unwrap();
    let app_prefix = Permission {
        perm_type: PermissionType::ReadWrite,
        key: b"/app/".to_vec(),
        range_end: b"/app0".to_vec(),
    };
    admin
        .role_grant_permission("app", app_prefix.clone())
        .await
        .unwrap();
    admin.user_add("alice", "alicepw").await.unwrap();
    admin.user_grant_role("alice", "app").await.unwrap();
    admin.auth_enable().await.unwrap();

    let as_user = |user: &str, password: &str| ClientOptions {
        credentials: Some(Credentials::new(user, password)),
        ..ClientOptions::default()
    };
    let root = Client::connect_with(urls.clone(), as_user("root", "rootpw"))
        .await
        .unwrap();
    assert_eq!(root.user_list().await.unwrap(), ["alice", "root"]);
    assert_eq!(root.role_list().await.unwrap(), ["app", "root"]);
    assert_eq!(root.user_get("alice").await.unwrap(), ["app"]);
    assert_eq!(root.role_get("app").await.unwrap(), [app_prefix]);

    let alice = Client::connect_with(urls.clone(), as_user("alice", "alicepw"))
        .await
        .unwrap();
    alice.put("/app/x", "1").await.unwrap();
    let refused = alice.put("/other", "1").await.unwrap_err();
    assert!(denied(&refused), "{refused:?}");
    let refused = alice.user_add("bob", "bobpw").await.unwrap_err();
    assert!(denied(&refused), "a user who is not root adds users: {refused:?}");

    // Taken away: the permission, then the user; the role goes last.
    root.role_revoke_permission("app", "/app/", "/app0")
        .await
        .unwrap();
    assert!(root.role_get("app").await.unwrap().is_empty());
    let refused = alice.put("/app/y", "1").await.unwrap_err();
    assert!(denied(&refused), "{refused:?}");
    root.user_change_password("alice", "otherpw").await.unwrap();
    root.user_revoke_role("alice", "app").await.unwrap();
    assert!(root.user_get("alice").await.unwrap().is_empty());
    root.user_delete("alice").await.unwrap();
    root.role_delete("app").await.unwrap();
    assert_eq!(root.user_list().await.unwrap(), ["root"]);
    assert_eq!(root.role_list().await.unwrap(), ["root"]);

    root.auth_disable().await.unwrap();
    admin.put("/other", "anyone").await.unwrap();
}
