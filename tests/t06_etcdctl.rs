//! `etcdctl` (Debian's `etcd-client`, etcdctl 3.4) works against a raftkv cluster
//! unchanged: put, get, del, and etcd's error for an empty key. Installed by the
//! project's test set-up (`scripts/test.sh`); under `CI=true` a missing etcdctl fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::process::Command;
use std::time::Duration;

use support::process::ProcessCluster;

fn etcdctl(endpoint: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoint.trim_start_matches("http://")))
        .arg("--command-timeout=10s")
        .args(args)
        .output()
        .expect("run etcdctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn etcdctl_available() -> bool {
    Command::new("etcdctl")
        .arg("version")
        .env("ETCDCTL_API", "3")
        .output()
        .is_ok_and(|o| o.status.success())
}

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
