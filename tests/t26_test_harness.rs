//! The test harness itself (issue 13): servers get ports nobody else can take, a test
//! that fails while starting a cluster leaves no server running, and a test process
//! killed outright takes its servers along.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::child::OwnedChild;
use support::ports::{HeldPort, ReservedPort};
use support::process::ProcessCluster;

/// Deadline of every wait in this file.
const WAIT: Duration = Duration::from_secs(20);

/// Set in the environment of this binary re-run as the victim of the SIGKILL test.
const VICTIM_ENV: &str = "RAFTKV_HARNESS_VICTIM";

/// Whether process `pid` is still running (a zombie that nobody has reaped yet is not).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Pids of the processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(needle) && alive(pid) {
            pids.push(pid);
        }
    }
    pids
}

fn wait_until_gone(pids: &[u32]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still running after {WAIT:?}: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_member_that_fails_to_start_leaves_no_server_running() {
    let dir = tempfile::tempdir().unwrap();
    // Member 3's data dir is a file: it exits at once, after 1 and 2 started.
    std::fs::write(dir.path().join("node-3"), b"not a directory").unwrap();
    let marker = dir.path().display().to_string();
    let started = std::panic::catch_unwind(|| ProcessCluster::start_in(dir, 3, &[]));
    let message = match started {
        Ok(_) => panic!("member 3 started on a data dir that is a file"),
        Err(panic) => panic.downcast_ref::<String>().cloned().unwrap_or_default(),
    };
    assert!(message.contains("node 3 did not become ready"), "{message}");
    let left = processes_mentioning(&marker);
    assert!(left.is_empty(), "servers left running: {left:?}");
}

#[test]
fn a_held_port_refuses_connections_while_its_member_is_down_and_nobody_can_take_it() {
    let mut cluster = ProcessCluster::start(1, &[]);
    let addr = cluster.nodes[&1].client_port().addr();
    assert!(std::net::TcpStream::connect(addr).is_ok());
    cluster.kill(1);
    let refused = std::net::TcpStream::connect(addr).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    // Neither a plain bind nor one on all addresses can take the port.
    for other in [addr.to_string(), format!("0.0.0.0:{}", addr.port())] {
        let taken = std::net::TcpListener::bind(&other).unwrap_err();
        assert_eq!(taken.kind(), std::io::ErrorKind::AddrInUse, "{other}");
    }
    cluster.restart(1);
    assert!(std::net::TcpStream::connect(addr).is_ok());
}

#[test]
fn held_and_reserved_ports_are_exclusive() {
    let held = HeldPort::new();
    let listener = held.listener();
    let second = held.listener();
    assert_eq!(listener.local_addr().unwrap(), second.local_addr().unwrap());

    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let bounds: Vec<u16> = range.split_whitespace().map(|n| n.parse().unwrap()).collect();
    let reserved: Vec<ReservedPort> = (0..4).map(|_| ReservedPort::new()).collect();
    for r in &reserved {
        assert!(
            r.port() < bounds[0] || r.port() > bounds[1],
            "reserved {} lies in the ephemeral range {range}",
            r.port()
        );
        // Its lock is taken: another reservation of the same port would fail.
        let lock = std::fs::File::open(std::env::temp_dir().join(format!("raftkv-ports/{}.lock", r.port())))
            .unwrap();
        // SAFETY: flock on a descriptor we own.
        let got = unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&lock),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        };
        assert_ne!(got, 0, "port {} is not locked", r.port());
    }
    let mut ports: Vec<u16> = reserved.iter().map(|r| r.port()).collect();
    ports.dedup();
    assert_eq!(ports.len(), 4);
}

/// Not a test of its own: the victim of the next test, run only with [`VICTIM_ENV`] set.
/// Starts a raftkv cluster (and an etcd member when etcd is installed), prints their
/// pids, and waits to be killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn victim_starts_servers_and_waits_to_be_killed() {
    if std::env::var(VICTIM_ENV).is_err() {
        return;
    }
    let raftkv = ProcessCluster::start(2, &[]);
    let mut pids: Vec<u32> = raftkv.nodes.values().filter_map(|n| n.pid()).collect();
    let etcd = if support::etcd::available() {
        Some(support::etcd::EtcdCluster::start(1).await)
    } else {
        None
    };
    pids.extend(etcd.iter().flat_map(|e| e.pids()));
    println!(
        "PIDS {}",
        pids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
    );
    // Bounded: the killing test gives up long before this.
    tokio::time::sleep(Duration::from_secs(120)).await;
}

#[test]
fn a_test_process_killed_outright_takes_its_servers_along() {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "t26_test_harness::victim_starts_servers_and_waits_to_be_killed",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(VICTIM_ENV, "1")
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    let mut victim = OwnedChild::spawn(cmd).unwrap();
    let stdout = victim.stdout().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let pids: Vec<u32> = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("the victim never printed its servers' pids");
        // The harness prints the test's name on the same line, without a newline.
        if let Some((_, list)) = line.split_once("PIDS ") {
            break list.split_whitespace().map(|p| p.parse().unwrap()).collect();
        }
    };
    let expected = if support::etcd::available() { 3 } else { 2 };
    assert_eq!(pids.len(), expected, "{pids:?}");
    assert!(pids.iter().all(|p| alive(*p)));
    victim.signal(libc::SIGKILL);
    assert!(victim.wait_timeout(WAIT).is_some(), "the victim survived SIGKILL");
    wait_until_gone(&pids);
}
