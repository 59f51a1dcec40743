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

use raftkv_proto::etcdserverpb as pb;
use tonic::Request;

use crate::support;
use support::channel;
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

/// One pass against `urls` (three members).
async fn session(urls: &[String]) -> Vec<String> {
    let mut seen = Vec::new();
    let mut run = |what: &str, url: &str, args: &[&str]| seen.push(observe(urls, what, url, args));
    let root = ["--user", "root:rootpw"];
    let alice = ["--user", "alice:alicepw"];
    let with = |user: &[&'static str; 2], args: &[&'static str]| -> Vec<&'static str> {
        user.iter().chain(args).copied().collect()
    };
    run("enable without root", &urls[0], &["auth", "enable"]);
    run("add root", &urls[0], &["user", "add", "root:rootpw"]);
    run("enable", &urls[1], &["auth", "enable"]);
    run("enable again", &urls[1], &with(&root, &["auth", "enable"]));
    run("get without credentials", &urls[0], &["get", "k"]);
    run("root puts", &urls[2], &with(&root, &["put", "/app/w", "1"]));
    run("bad password", &urls[0], &["--user", "root:nope", "get", "k"]);
    run("unknown user", &urls[0], &["--user", "bob:pw", "get", "k"]);
    run(
        "add alice",
        &urls[0],
        &with(&root, &["user", "add", "alice:alicepw"]),
    );
    run(
        "add alice again",
        &urls[0],
        &with(&root, &["user", "add", "alice:x"]),
    );
    run("add reader", &urls[1], &with(&root, &["role", "add", "reader"]));
    run(
        "reader reads /app/",
        &urls[1],
        &with(
            &root,
            &["role", "grant-permission", "reader", "read", "/app/", "--prefix"],
        ),
    );
    run("add writer", &urls[1], &with(&root, &["role", "add", "writer"]));
    run(
        "writer writes /app/w",
        &urls[2],
        &with(
            &root,
            &["role", "grant-permission", "writer", "readwrite", "/app/w"],
        ),
    );
    run(
        "writer writes from /z on",
        &urls[2],
        &with(
            &root,
            &["role", "grant-permission", "writer", "write", "/z", "--from-key"],
        ),
    );
    run(
        "grant reader",
        &urls[0],
        &with(&root, &["user", "grant-role", "alice", "reader"]),
    );
    run(
        "grant writer",
        &urls[0],
        &with(&root, &["user", "grant-role", "alice", "writer"]),
    );
    run(
        "grant a missing role",
        &urls[0],
        &with(&root, &["user", "grant-role", "alice", "nope"]),
    );
    run(
        "alice puts /app/w",
        &urls[1],
        &with(&alice, &["put", "/app/w", "2"]),
    );
    run(
        "alice puts /app/x",
        &urls[1],
        &with(&alice, &["put", "/app/x", "2"]),
    );
    run("alice puts /zz", &urls[1], &with(&alice, &["put", "/zz", "2"]));
    run("alice reads /zz", &urls[1], &with(&alice, &["get", "/zz"]));
    run(
        "alice reads /app/",
        &urls[2],
        &with(&alice, &["get", "/app/", "--prefix"]),
    );
    run(
        "alice reads everything",
        &urls[2],
        &with(&alice, &["get", "", "--from-key"]),
    );
    run(
        "alice deletes /app/",
        &urls[2],
        &with(&alice, &["del", "/app/", "--prefix"]),
    );
    run(
        "alice gets herself",
        &urls[0],
        &with(&alice, &["user", "get", "alice"]),
    );
    run(
        "alice gets root",
        &urls[0],
        &with(&alice, &["user", "get", "root"]),
    );
    run(
        "alice gets her role",
        &urls[0],
        &with(&alice, &["role", "get", "reader"]),
    );
    run("alice lists users", &urls[0], &with(&alice, &["user", "list"]));
    run("root lists users", &urls[0], &with(&root, &["user", "list"]));
    run("root lists roles", &urls[0], &with(&root, &["role", "list"]));
    run(
        "root gets writer",
        &urls[0],
        &with(&root, &["role", "get", "writer"]),
    );
    run("alice compacts", &urls[0], &with(&alice, &["compact", "1"]));
    run("alice defragments", &urls[0], &with(&alice, &["defrag"]));
    run("alice hashes", &urls[0], &with(&alice, &["endpoint", "hashkv"]));
    run(
        "alice adds a member",
        &urls[0],
        &with(&alice, &["member", "add", "x", "--peer-urls=http://127.0.0.1:9"]),
    );
    run(
        "a member added without credentials",
        &urls[1],
        &["member", "add", "x", "--peer-urls=http://127.0.0.1:9"],
    );
    run(
        "alice promotes a member",
        &urls[0],
        &with(&alice, &["member", "promote", "1"]),
    );
    run("delete root", &urls[0], &with(&root, &["user", "delete", "root"]));
    run(
        "delete the root role",
        &urls[0],
        &with(&root, &["role", "delete", "root"]),
    );
    run(
        "revoke root from root",
        &urls[0],
        &with(&root, &["user", "revoke-role", "root", "root"]),
    );
    run(
        "revoke a permission not granted",
        &urls[0],
        &with(&root, &["role", "revoke-permission", "writer", "/nope"]),
    );
    run(
        "revoke writer",
        &urls[2],
        &with(&root, &["user", "revoke-role", "alice", "writer"]),
    );
    run(
        "revoke writer again",
        &urls[2],
        &with(&root, &["user", "revoke-role", "alice", "writer"]),
    );
    run(
        "alice puts /app/w revoked",
        &urls[1],
        &with(&alice, &["put", "/app/w", "3"]),
    );
    run(
        "alice changes password",
        &urls[0],
        &with(&root, &["user", "passwd", "alice", "--interactive=false"]),
    );
    seen.extend(grpc_session(urls).await);

    let mut run = |what: &str, url: &str, args: &[&str]| seen.push(observe(urls, what, url, args));
    run(
        "delete reader",
        &urls[0],
        &with(&root, &["role", "delete", "reader"]),
    );
    run("alice's roles", &urls[0], &with(&root, &["user", "get", "alice"]));
    run(
        "delete alice",
        &urls[0],
        &with(&root, &["user", "delete", "alice"]),
    );
    run("disable", &urls[1], &with(&root, &["auth", "disable"]));
    run("get without credentials", &urls[2], &["get", "/app/w"]);
    run("root after disable", &urls[2], &with(&root, &["get", "/app/w"]));
    seen
}

/// Run etcdctl against `url`: whether it succeeded and its output, or its error (the
/// last line of stderr; the lines before are client logs), with the member addresses,
/// which differ between runs, named by position.
fn observe(urls: &[String], what: &str, url: &str, args: &[&str]) -> String {
    let (ok, out, err) = etcdctl(url, args);
    let shown = if ok {
        out.trim().replace('\n', " | ")
    } else {
        err.trim().lines().last().unwrap_or_default().to_string()
    };
    urls.iter()
        .enumerate()
        .fold(format!("{what}: {ok}, {shown}"), |text, (i, url)| {
            text.replace(url.trim_start_matches("http://"), &format!("<member {i}>"))
        })
}

/// The parts etcdctl cannot drive: tokens across members, expiry, watches.
async fn grpc_session(urls: &[String]) -> Vec<String> {
    let mut seen = Vec::new();
    let shown = |r: Result<String, tonic::Status>| match r {
        Ok(v) => format!("ok {v}"),
        Err(s) => format!("{:?} {}", s.code(), s.message()),
    };
    // etcdctl's passwd above set alice's password from stdin: empty. Set it again.
    let root = authenticate(&urls[0], "root", "rootpw").await.unwrap();
    let mut a = pb::auth_client::AuthClient::new(channel(&urls[1]).await);
    a.user_change_password(with_token(
        pb::AuthUserChangePasswordRequest {
            name: "alice".into(),
            password: "alicepw".into(),
        },
        &root,
    ))
    .await
    .unwrap();
    seen.push(format!(
        "wrong password over gRPC: {}",
        shown(authenticate(&urls[0], "alice", "x").await)
    ));
    let alice = authenticate(&urls[0], "alice", "alicepw").await.unwrap();
    // Issued by the first member, good on the third once it applied the entry.
    seen.push(format!(
        "token on another member: {}",
        shown(get(&urls[2], "/app/w", Some(&alice)).await)
    ));
    seen.push(format!(
        "denied read: {}",
        shown(get(&urls[2], "/other", Some(&alice)).await)
    ));
    seen.push(format!(
        "made-up token: {}",
        shown(get(&urls[2], "/app/w", Some("abc.1")).await)
    ));
    seen.push(format!(
        "read-only txn: {}",
        shown(txn(&urls[1], "/app/w", None, &alice).await)
    ));
    seen.push(format!(
        "txn comparing a denied key: {}",
        shown(txn(&urls[1], "/other", None, &alice).await)
    ));
    seen.push(format!(
        "txn writing a revoked key: {}",
        shown(txn(&urls[1], "/app/w", Some("/app/w"), &alice).await)
    ));
    seen.push(format!(
        "watch of a denied range: {}",
        watch_create(&urls[1], "/other", &alice).await
    ));
    seen.push(format!(
        "watch of a permitted range: {}",
        watch_create(&urls[1], "/app/w", &alice).await
    ));
    // Used within the TTL, a token lives on; unused for longer, it is gone (etcd checks
    // expiry every second: 2 s TTL + 1 s resolution + margin).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    seen.push(format!(
        "token used again: {}",
        shown(get(&urls[0], "/app/w", Some(&alice)).await)
    ));
    tokio::time::sleep(Duration::from_secs(4)).await;
    seen.push(format!(
        "expired token: {}",
        shown(get(&urls[0], "/app/w", Some(&alice)).await)
    ));
    seen.push(format!(
        "expired token on a write: {}",
        shown(put(&urls[0], "/app/w", Some(&alice)).await)
    ));
    seen
}

/// A txn comparing `compare`'s value, then reading it (or putting `put`).
async fn txn(url: &str, compare: &str, put: Option<&str>, token: &str) -> Result<String, tonic::Status> {
    let mut kv = pb::kv_client::KvClient::new(channel(url).await);
    let op = match put {
        Some(key) => pb::request_op::Request::RequestPut(pb::PutRequest {
            key: key.into(),
            value: b"t".to_vec(),
            ..Default::default()
        }),
        None => pb::request_op::Request::RequestRange(pb::RangeRequest {
            key: compare.into(),
            ..Default::default()
        }),
    };
    let req = pb::TxnRequest {
        compare: vec![pb::Compare {
            key: compare.into(),
            target: pb::compare::CompareTarget::Version as i32,
            result: pb::compare::CompareResult::Greater as i32,
            target_union: Some(pb::compare::TargetUnion::Version(0)),
            ..Default::default()
        }],
        success: vec![pb::RequestOp { request: Some(op) }],
        failure: vec![],
    };
    let r = kv.txn(with_token(req, token)).await?.into_inner();
    Ok(format!("succeeded {}", r.succeeded))
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("token", token.parse().unwrap());
    request
}

async fn authenticate(url: &str, name: &str, password: &str) -> Result<String, tonic::Status> {
    let mut a = pb::auth_client::AuthClient::new(channel(url).await);
    let r = a
        .authenticate(pb::AuthenticateRequest {
            name: name.into(),
            password: password.into(),
        })
        .await?;
    Ok(r.into_inner().token)
}

async fn get(url: &str, key: &str, token: Option<&str>) -> Result<String, tonic::Status> {
    let mut kv = pb::kv_client::KvClient::new(channel(url).await);
    let req = pb::RangeRequest {
        key: key.into(),
        ..Default::default()
    };
    let req = match token {
        Some(t) => with_token(req, t),
        None => Request::new(req),
    };
    let r = kv.range(req).await?.into_inner();
    Ok(format!("{} keys", r.count))
}

async fn put(url: &str, key: &str, token: Option<&str>) -> Result<String, tonic::Status> {
    let mut kv = pb::kv_client::KvClient::new(channel(url).await);
    let req = pb::PutRequest {
        key: key.into(),
        value: b"v".to_vec(),
        ..Default::default()
    };
    let req = match token {
        Some(t) => with_token(req, t),
        None => Request::new(req),
    };
    kv.put(req).await?;
    Ok("put".into())
}

/// The first answer to a watch create on `key`: created / canceled and the reason.
async fn watch_create(url: &str, key: &str, token: &str) -> String {
    let mut w = pb::watch_client::WatchClient::new(channel(url).await);
    let create = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: key.into(),
                ..Default::default()
            },
        )),
    };
    use futures_util::StreamExt;
    let requests = futures_util::stream::iter([create]).chain(futures_util::stream::pending());
    let mut responses = w.watch(with_token(requests, token)).await.unwrap().into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), responses.message())
        .await
        .expect("a watch answer in time")
        .unwrap()
        .unwrap();
    format!(
        "created {} canceled {} id {} reason {:?}",
        first.created, first.canceled, first.watch_id, first.cancel_reason
    )
}

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
