//! etcdctl's lease commands against a node.

use super::*;

pub(crate) fn etcdctl_available() -> bool {
    Command::new("etcdctl")
        .arg("version")
        .env("ETCDCTL_API", "3")
        .output()
        .is_ok_and(|o| o.status.success())
}

pub(crate) fn etcdctl(endpoint: &str, args: &[&str]) -> String {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--command-timeout=10s")
        .args(args)
        .output()
        .expect("run etcdctl");
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lease_grant_keep_alive_time_to_live_list_revoke() {
    if !etcdctl_available() {
        assert!(
            std::env::var("CI").is_err(),
            "etcdctl is required under CI=true (apt-get install etcd-client)"
        );
        eprintln!("SKIPPED: etcdctl not installed (apt-get install etcd-client)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nodes = support::start_cluster(3, dir.path()).await;
    let leader_id = support::wait_for_agreed_leader(&nodes, WAIT).await;
    let follower = nodes.iter().find(|n| n.id() != leader_id).unwrap();
    let leader = nodes.iter().find(|n| n.id() == leader_id).unwrap();
    let endpoint = follower.client_urls()[0].clone();
    let all = nodes
        .iter()
        .map(|n| n.client_urls()[0].clone())
        .collect::<Vec<_>>()
        .join(",");

    let granted = etcdctl(&endpoint, &["lease", "grant", "60"]);
    // "lease 694d7a4d8b0b1a05 granted with TTL(60s)"
    let words: Vec<&str> = granted.split_whitespace().collect();
    assert_eq!(words.len(), 5, "{granted}");
    assert_eq!((words[0], words[2], words[4]), ("lease", "granted", "TTL(60s)"));
    let hex = words[1].to_string();
    let id = i64::from_str_radix(&hex, 16).unwrap();

    assert_eq!(etcdctl(&all, &["put", "--lease", &hex, "foo", "bar"]), "OK");
    assert_eq!(etcdctl(&all, &["put", "--lease", &hex, "foo2", "baz"]), "OK");
    let keys = etcdctl(&endpoint, &["lease", "timetolive", "--keys", &hex]);
    assert!(
        keys.starts_with(&format!("lease {hex} granted with TTL(60s), remaining(")),
        "{keys}"
    );
    assert!(keys.ends_with("attached keys([foo foo2])"), "{keys}");
    assert_eq!(
        etcdctl(&endpoint, &["lease", "list"]),
        format!("found 1 leases\n{hex}")
    );
    assert_eq!(
        etcdctl(&endpoint, &["lease", "keep-alive", "--once", &hex]),
        format!("lease {hex} keepalived with TTL(60)")
    );

    // The streaming keep-alive: etcdctl renews every third of the TTL, past the TTL.
    let short = etcdctl(&endpoint, &["lease", "grant", "3"]);
    let short_hex = short.split_whitespace().nth(1).unwrap().to_string();
    let short_id = i64::from_str_radix(&short_hex, 16).unwrap();
    let mut keeper = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(["lease", "keep-alive", &short_hex])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run etcdctl");
    let stdout = keeper.stdout.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            if lines_tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let kept_since = Instant::now();
    for _ in 0..4 {
        let line = lines.recv_timeout(WAIT).expect("etcdctl renewed in time");
        assert_eq!(line, format!("lease {short_hex} keepalived with TTL(3)"));
    }
    assert!(kept_since.elapsed() >= Duration::from_secs(2));
    let (_, info) = leader.lease_time_to_live(short_id, false).await.unwrap();
    assert!(info.ttl > 0, "{info:?}");
    keeper.kill().unwrap();
    keeper.wait().unwrap();
    etcdctl(&endpoint, &["lease", "revoke", &short_hex]);

    let before = leader.metrics().revision;
    assert_eq!(
        etcdctl(&endpoint, &["lease", "revoke", &hex]),
        format!("lease {hex} revoked")
    );
    assert_eq!(agreed_revision(&nodes).await, before + 1);
    assert_eq!(etcdctl(&endpoint, &["get", "--prefix", "foo"]), "");
    assert_eq!(
        etcdctl(&endpoint, &["lease", "timetolive", &hex]),
        format!("lease {hex} already expired")
    );
    assert_eq!(etcdctl(&endpoint, &["lease", "list"]), "found 0 leases");
    assert_eq!(leader.lease_time_to_live(id, false).await.unwrap().1.ttl, -1);
    for node in &nodes {
        node.shutdown().await;
    }
}
