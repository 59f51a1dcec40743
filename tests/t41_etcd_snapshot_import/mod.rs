//! The migration path from etcd: an etcd 3.4 member takes a history (puts, overwrites,
//! a multi-put transaction, deletes, a leased key, a value larger than a bbolt page,
//! enough keys for branch pages, a compaction, writes after it), `etcdctl snapshot save`
//! saves it, and `raftkv-server restore` seeds a new raftkv member from that file. The
//! raftkv member then answers as etcd does at every revision from the compact revision
//! on: the same key-values (values, create / mod revisions, versions, leases), the same
//! `HashKV` (bit for bit, see `t38_hash_kv.rs`), the same refusal below the compact
//! revision, and the lease with its key. A damaged copy of the file is refused. And the
//! way back: a raftkv snapshot read by `etcdctl snapshot status` and restored into an
//! etcd member that answers as raftkv did. Both ways, the snapshot is saved with auth
//! enabled (as root): the restored member has the users, their passwords (Go's bcrypt
//! hashes read and written by ours), the role and auth enabled.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::maintenance_client::MaintenanceClient;

use crate::support;
use crate::support::child::{self, OwnedChild};
use crate::support::ports::ReservedPort;
use crate::support::process::{SERVER_BIN, run_restore};
use support::channel;

const DEADLINE: Duration = Duration::from_secs(60);

mod history;
use history::{
    assert_lease_holds_its_keys, assert_same_history, current_revision, history, put, write_history,
};

/// Whether etcd and etcdctl are installed (required under `CI=true`).
fn etcd_tools() -> bool {
    let there = support::etcd::available() && support::etcd::etcdctl_available();
    if !there {
        assert!(
            std::env::var("CI").is_err(),
            "etcd and etcdctl are required under CI=true"
        );
        eprintln!("SKIPPED: etcd not installed");
    }
    there
}

/// Start `program` with `args`, its output in `log`; it serves clients on
/// `client_port` once this returns.
async fn start(
    program: &str,
    args: &[String],
    client_port: u16,
    log: &std::path::Path,
) -> (OwnedChild, String) {
    let mut cmd = child::command(program, args, &[]);
    cmd.stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    let member = OwnedChild::spawn(cmd).unwrap();
    let url = format!("http://127.0.0.1:{client_port}");
    wait_serving(&url, log).await;
    (member, url)
}

/// Wait until the member at `url` knows a leader; its log in the panic message if not.
async fn wait_serving(url: &str, log: &std::path::Path) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let status = match tonic::transport::Channel::from_shared(url.to_string())
            .unwrap()
            .connect()
            .await
        {
            Ok(c) => MaintenanceClient::new(c).status(pb::StatusRequest {}).await.ok(),
            Err(_) => None,
        };
        if status.is_some_and(|s| s.into_inner().leader != 0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url} is not serving:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `etcdctl ARGS` against `url`: its stdout, after checking it succeeded.
fn etcdctl_ok(url: &str, args: &[&str]) -> String {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={url}"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Users, a role and auth enabled on `url` (auth changes take no revision, as in etcd).
fn set_up_auth(url: &str) {
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["user", "add", "alice:alicepw"],
        &["role", "add", "reader"],
        &["role", "grant-permission", "reader", "read", "k", "--prefix"],
        &["user", "grant-role", "alice", "reader"],
        &["auth", "enable"],
    ] {
        etcdctl_ok(url, args);
    }
}

/// The users, passwords and role of [`set_up_auth`] work on `url`, restored from a
/// snapshot; then auth is disabled, so the history can be read without credentials.
fn check_auth_then_disable(url: &str) {
    let root = |args: &[&str]| {
        let with: Vec<&str> = ["--user", "root:rootpw"].iter().chain(args).copied().collect();
        etcdctl_ok(url, &with)
    };
    assert_eq!(root(&["user", "list"]), "alice\nroot\n");
    let role = root(&["role", "get", "reader"]);
    assert!(role.contains("[k, l) (prefix k)"), "{role}");
    etcdctl_ok(
        url,
        &["--user", "alice:alicepw", "get", "k", "--prefix", "--keys-only"],
    );
    let denied = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={url}"))
        .args(["--user", "alice:wrong", "get", "k"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("authentication failed"),
        "{denied:?}"
    );
    root(&["auth", "disable"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raftkv_member_restored_from_an_etcd_snapshot_answers_as_etcd() {
    if !etcd_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("etcd.db");
    let etcd = support::etcd::EtcdCluster::start(1).await;
    let etcd_url = etcd.client_urls[0].clone();
    let (lease, compact) = write_history(&etcd_url).await;
    let current = current_revision(&etcd_url).await;
    let expected = history(&etcd_url, compact, current).await;
    set_up_auth(&etcd_url);
    etcdctl_ok(
        &etcd_url,
        &[
            "--user",
            "root:rootpw",
            "snapshot",
            "save",
            &snapshot.display().to_string(),
        ],
    );
    drop(etcd);

    // One new raftkv member from the file, as `etcdutl snapshot restore` would seed it.
    let _turn = support::ClusterTurn::take();
    let (client, peer) = (ReservedPort::new(), ReservedPort::new());
    let flags = vec![
        "--name=r0".to_string(),
        format!("--data-dir={}", dir.path().join("r0").display()),
        format!("--initial-cluster=r0=http://127.0.0.1:{}", peer.port()),
        "--initial-cluster-token=imported".into(),
        format!("--initial-advertise-peer-urls=http://127.0.0.1:{}", peer.port()),
    ];
    // A damaged copy (cut in half) is refused, and leaves no data directory behind.
    let bytes = std::fs::read(&snapshot).unwrap();
    let damaged = dir.path().join("damaged.db");
    std::fs::write(&damaged, &bytes[..bytes.len() / 2]).unwrap();
    let mut args = vec![damaged.display().to_string()];
    args.extend(flags.clone());
    let (code, out) = run_restore(&args);
    assert!(
        code == Some(1) && out.contains("etcd snapshot"),
        "{code:?}: {out}"
    );
    assert!(!dir.path().join("r0").exists());
    assert!(
        std::fs::read_dir(dir.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("etcd-import")),
        "the conversion was left behind"
    );
    let mut args = vec![snapshot.display().to_string()];
    args.extend(flags.clone());
    let (code, out) = run_restore(&args);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("read as an etcd snapshot"), "{out}");
    let mut args = flags;
    args.extend([
        format!("--listen-client-urls=http://127.0.0.1:{}", client.port()),
        format!("--advertise-client-urls=http://127.0.0.1:{}", client.port()),
        format!("--listen-peer-urls=http://127.0.0.1:{}", peer.port()),
    ]);
    let (_member, url) = start(SERVER_BIN, &args, client.port(), &dir.path().join("r0.log")).await;
    check_auth_then_disable(&url);
    let seen = history(&url, compact, current).await;
    assert_same_history(&seen, &expected, compact);
    assert!(expected[0].contains("compacted"), "{}", expected[0]);
    eprintln!(
        "{} revisions compared; at the newest: {}",
        seen.len(),
        &expected[expected.len() - 1][..300.min(expected[expected.len() - 1].len())]
    );
    assert_lease_holds_its_keys(&url, lease).await;
    // And it takes writes, at the next revision.
    let next = KvClient::new(channel(&url).await)
        .put(put("new", b"n".to_vec(), 0))
        .await
        .unwrap()
        .into_inner()
        .header
        .unwrap()
        .revision;
    assert_eq!(next, current + 1);
}

/// The way back: `etcdctl snapshot save` from raftkv gives a bbolt file that
/// `etcdctl snapshot status` reads and `etcdctl snapshot restore` seeds an etcd member
/// from; that etcd answers as the raftkv cluster did at every revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_member_restored_from_a_raftkv_snapshot_answers_as_raftkv() {
    if !etcd_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("raftkv.db");
    let (expected, lease, compact, current) = {
        let cluster = support::process::ProcessCluster::start(3, &[]);
        cluster.agreed_leader(DEADLINE).await;
        let url = cluster.url(1);
        let (lease, compact) = write_history(&url).await;
        let current = current_revision(&url).await;
        let expected = history(&url, compact, current).await;
        set_up_auth(&url);
        etcdctl_ok(
            &url,
            &[
                "--user",
                "root:rootpw",
                "snapshot",
                "save",
                &snapshot.display().to_string(),
            ],
        );
        (expected, lease, compact, current)
    };

    // `snapshot status`: etcd reads the file, and finds the newest revision in it.
    let status = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "status", "-w", "json"])
        .arg(&snapshot)
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(status.contains(&format!("\"revision\":{current}")), "{status}");

    let (client, peer) = (ReservedPort::new(), ReservedPort::new());
    let data_dir = dir.path().join("e0");
    let restored = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "restore"])
        .arg(&snapshot)
        .arg(format!("--data-dir={}", data_dir.display()))
        .args(["--name=e0", "--initial-cluster-token=from-raftkv"])
        .arg(format!("--initial-cluster=e0=http://127.0.0.1:{}", peer.port()))
        .arg(format!(
            "--initial-advertise-peer-urls=http://127.0.0.1:{}",
            peer.port()
        ))
        .output()
        .unwrap();
    assert!(
        restored.status.success(),
        "{}",
        String::from_utf8_lossy(&restored.stderr)
    );
    let args: Vec<String> = vec![
        "--name=e0".into(),
        format!("--data-dir={}", data_dir.display()),
        format!("--listen-client-urls=http://127.0.0.1:{}", client.port()),
        format!("--advertise-client-urls=http://127.0.0.1:{}", client.port()),
        format!("--listen-peer-urls=http://127.0.0.1:{}", peer.port()),
        format!("--initial-advertise-peer-urls=http://127.0.0.1:{}", peer.port()),
        format!("--initial-cluster=e0=http://127.0.0.1:{}", peer.port()),
        "--initial-cluster-token=from-raftkv".into(),
    ];
    let (_etcd, url) = start("etcd", &args, client.port(), &dir.path().join("e0.log")).await;
    check_auth_then_disable(&url);
    let seen = history(&url, compact, current).await;
    assert_same_history(&seen, &expected, compact);
    assert_lease_holds_its_keys(&url, lease).await;
}
