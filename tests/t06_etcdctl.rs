//! `etcdctl` (Debian's `etcd-client`, etcdctl 3.4) works against a raftkv cluster
//! unchanged: put, get, del, and etcd's error for an empty key. Installed by the
//! project's test set-up (`scripts/test.sh`); under `CI=true` a missing etcdctl fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::process::Command;
use std::time::Duration;

use support::etcd::{etcdctl, etcdctl_available};
use support::process::ProcessCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_put_get_del_work_against_the_cluster() {
    if !etcdctl_available() {
        assert!(
            std::env::var("CI").is_err(),
            "etcdctl is required under CI=true (apt-get install etcd-client)"
        );
        eprintln!("SKIPPED: etcdctl not installed (apt-get install etcd-client)");
        return;
    }
    let cluster = ProcessCluster::start(3, &[]);
    cluster.agreed_leader(Duration::from_secs(30)).await;
    let [a, b, c] = [cluster.url(1), cluster.url(2), cluster.url(3)];

    let (ok, out, err) = etcdctl(&a, &["put", "greeting", "hello world"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "OK");
    let (ok, out, err) = etcdctl(&b, &["get", "greeting"]);
    assert!(ok, "{err}");
    assert_eq!(out, "greeting\nhello world\n");
    let (ok, out, _) = etcdctl(&c, &["put", "greeting2", "x"]);
    assert!(ok && out.trim() == "OK");
    let (ok, out, _) = etcdctl(&a, &["get", "greet", "--prefix", "--keys-only"]);
    assert!(ok);
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        vec!["greeting", "greeting2"]
    );
    let (ok, out, err) = etcdctl(&c, &["del", "greeting", "--prefix"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "2");
    let (ok, out, _) = etcdctl(&b, &["get", "greeting"]);
    assert!(ok);
    assert_eq!(out, "");
    // etcd's own error, code and text, for an empty key.
    let (ok, _, err) = etcdctl(&a, &["put", "", "v"]);
    assert!(!ok);
    assert!(err.contains("etcdserver: key is not provided"), "{err}");
}

/// etcdctl as etcd's documentation writes it, `--endpoints=http://host:port,...`: the
/// commands that dial each member directly (status, hashkv, defrag, move-leader) send
/// that URL as the HTTP/2 authority; raftkv must answer them as etcd 3.4 does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_dialed_by_their_http_urls_answer_as_etcd_does() {
    if !etcdctl_available() {
        assert!(std::env::var("CI").is_err(), "etcdctl is required under CI=true");
        eprintln!("SKIPPED: etcdctl not installed");
        return;
    }
    let raftkv = {
        let cluster = ProcessCluster::start(3, &[]);
        cluster.agreed_leader(Duration::from_secs(30)).await;
        by_url_session(&cluster.client_urls()).await
    };
    assert_eq!(
        raftkv,
        [
            "put: true",
            "endpoint status: true, 3 members, one leader: true",
            "endpoint hashkv: true, 3 members, one hash: true",
            "defrag: true, 3 members finished",
            "move-leader: true, transferred: true",
            "leader after the move: the target",
        ]
    );
    if support::etcd::available() {
        let etcd = support::etcd::EtcdCluster::start(3).await;
        assert_eq!(
            raftkv,
            by_url_session(&etcd.client_urls).await,
            "etcd 3.4 answers otherwise"
        );
    } else {
        assert!(std::env::var("CI").is_err(), "etcd is required under CI=true");
    }
}

/// One pass of the commands against `urls` (full `http://` URLs), as observations.
async fn by_url_session(urls: &[String]) -> Vec<String> {
    let all = urls.join(",");
    let run = |args: &[&str]| {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={all}"))
            .arg("--command-timeout=10s")
            .args(args)
            .output()
            .expect("run etcdctl");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        eprintln!(
            "etcdctl {args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), stdout)
    };
    // `endpoint status`: endpoint, id, version, db size, is leader, is learner, ...
    let status = |run: &dyn Fn(&[&str]) -> (bool, String)| {
        let (ok, out) = run(&["endpoint", "status"]);
        let rows: Vec<Vec<String>> = out
            .lines()
            .map(|l| l.split(", ").map(str::to_string).collect())
            .collect();
        (ok, rows)
    };
    let mut seen = Vec::new();
    let (ok, _) = run(&["put", "k", "v"]);
    seen.push(format!("put: {ok}"));
    let (ok, rows) = status(&run);
    let leaders = rows
        .iter()
        .filter(|r| r.get(4).is_some_and(|l| l == "true"))
        .count();
    seen.push(format!(
        "endpoint status: {ok}, {} members, one leader: {}",
        rows.len(),
        leaders == 1
    ));
    let (ok, out) = run(&["endpoint", "hashkv"]);
    let hashes: std::collections::BTreeSet<&str> = out.lines().filter_map(|l| l.split(", ").nth(1)).collect();
    seen.push(format!(
        "endpoint hashkv: {ok}, {} members, one hash: {}",
        out.lines().count(),
        hashes.len() == 1
    ));
    let (ok, out) = run(&["defrag"]);
    let finished = out
        .lines()
        .filter(|l| l.starts_with("Finished defragmenting etcd member[http://"))
        .count();
    seen.push(format!("defrag: {ok}, {finished} members finished"));
    let target = rows
        .iter()
        .find(|r| r.get(4).is_some_and(|l| l == "false"))
        .and_then(|r| r.get(1).cloned())
        .unwrap_or_default();
    let (ok, out) = run(&["move-leader", &target]);
    seen.push(format!(
        "move-leader: {ok}, transferred: {}",
        out.starts_with("Leadership transferred from")
    ));
    // The new leader as every member sees it, within a deadline.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let moved = loop {
        let (_, rows) = status(&run);
        let leader = rows
            .iter()
            .find(|r| r.get(4).is_some_and(|l| l == "true"))
            .and_then(|r| r.get(1).cloned());
        if leader.as_deref() == Some(target.as_str()) {
            break "the target";
        }
        if tokio::time::Instant::now() > deadline {
            break "another member";
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    seen.push(format!("leader after the move: {moved}"));
    seen
}
