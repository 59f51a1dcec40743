//! Leadership transfer: `Node::transfer_leader` and `step_down` in process, `etcdctl
//! move-leader` against raftkv and etcd side by side (same output), and a rolling restart
//! of all three members under load (SIGTERM hands leadership over first) whose longest
//! gap between acknowledged writes is printed and bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use raftkv::{Error, RequestError};
use support::process::ProcessCluster;
use tokio::time::Instant;

async fn leader_of(nodes: &[raftkv::Node]) -> u64 {
    nodes[0].wait_for_leader(Duration::from_secs(20)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_moves_leadership_and_refuses_what_etcd_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = support::start_cluster(3, dir.path()).await;
    leader_of(&nodes).await;
    let node = |id: u64| nodes.iter().find(|n| n.id() == id).unwrap().clone();
    // Every member applied what the leader has before the first move: a transfer waits
    // for its target to catch up, and right after start that wait once ran past the
    // bound on a loaded CI machine (LeaderTransferTimeout in round 0; the cause is not
    // proven, this rules the start-up lag out).
    let index = node(leader_of(&nodes).await).metrics().applied;
    let deadline = Instant::now() + Duration::from_secs(20);
    while nodes.iter().any(|n| n.metrics().applied < index) {
        assert!(Instant::now() < deadline, "the followers did not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // To each follower in turn, writes working after each move.
    for round in 0..3 {
        let from = leader_of(&nodes).await;
        let to = (1..=3).find(|id| *id != from).unwrap();
        let started = Instant::now();
        // Failed once, unreproduced, right after a benchmark's 17 GB work dir was being
        // deleted: say which error if it comes back.
        node(from)
            .transfer_leader(to)
            .await
            .unwrap_or_else(|e| panic!("round {round}: transfer {from} -> {to}: {e:?}"));
        println!("round {round}: {from} -> {to} in {:?}", started.elapsed());
        assert_eq!(
            node(to).wait_for_leader(Duration::from_secs(5)).await.unwrap(),
            to
        );
        node(to).put(format!("after-{round}"), "x").await.unwrap();
    }

    let leader_now = leader_of(&nodes).await;
    let follower = (1..=3).find(|id| *id != leader_now).unwrap();
    // Only the leader moves leadership (etcd: "not leader").
    assert!(matches!(
        node(follower).transfer_leader(leader_now).await,
        Err(Error::NotLeader { .. })
    ));
    // Not a member.
    assert!(matches!(
        node(leader_now).transfer_leader(99).await,
        Err(Error::Request(RequestError::BadLeaderTransferee(99)))
    ));
    // To itself: nothing to do.
    node(leader_now).transfer_leader(leader_now).await.unwrap();

    // A planned stop hands over to the most up-to-date voter.
    let to = node(leader_now).step_down().await.unwrap().unwrap();
    assert_ne!(to, leader_now);
    assert_eq!(
        node(to).wait_for_leader(Duration::from_secs(5)).await.unwrap(),
        to
    );
    for n in nodes.iter() {
        n.shutdown().await;
    }
}

fn etcdctl(endpoints: &[String], args: &[&str]) -> String {
    let endpoints: Vec<&str> = endpoints
        .iter()
        .map(|e| e.trim_start_matches("http://"))
        .collect();
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .args(args)
        .output()
        .unwrap();
    // etcdctl's client logs its retries as JSON with timestamps: not part of the answer.
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .lines()
    .filter(|l| !l.starts_with("{\"level\""))
    .map(|l| format!("{l}\n"))
    .collect()
}

/// (leader id, follower ids), hex as etcdctl prints them, from `endpoint status`.
fn roles(endpoints: &[String]) -> (String, Vec<String>) {
    let status = etcdctl(endpoints, &["endpoint", "status", "-w", "simple"]);
    let mut leader = None;
    let mut followers = Vec::new();
    for line in status.lines() {
        let cols: Vec<&str> = line.split(", ").collect();
        assert!(cols.len() >= 5, "endpoint status: {status}");
        if cols[4] == "true" {
            leader = Some(cols[1].to_string());
        } else {
            followers.push(cols[1].to_string());
        }
    }
    (leader.expect("a leader"), followers)
}

/// etcdctl's answers to the move-leader script, ids replaced by their roles.
async fn move_leader_script(endpoints: &[String]) -> Vec<String> {
    let (leader, followers) = roles(endpoints);
    let target = followers[0].clone();
    let mut outputs = Vec::new();
    let moved = etcdctl(endpoints, &["move-leader", &target]);
    outputs.push(moved.replace(&leader, "<leader>").replace(&target, "<target>"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while roles(endpoints).0 != target {
        assert!(Instant::now() < deadline, "{target} never led");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    outputs.push(etcdctl(endpoints, &["move-leader", "ffff"]));
    // Only followers given: etcdctl finds no leader among them.
    let follower_endpoints: Vec<String> = endpoints
        .iter()
        .filter(|e| {
            let status = etcdctl(std::slice::from_ref(*e), &["endpoint", "status", "-w", "simple"]);
            status.split(", ").nth(4) == Some("false")
        })
        .cloned()
        .collect();
    assert_eq!(follower_endpoints.len(), endpoints.len() - 1);
    let answer = etcdctl(&follower_endpoints, &["move-leader", &leader]);
    outputs.push(answer.split(" at ").next().unwrap_or_default().to_string());
    outputs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_move_leader_answers_as_etcd_does() {
    if Command::new("etcdctl").arg("version").output().is_err() || !support::etcd::available() {
        assert!(
            std::env::var("CI").is_err(),
            "etcd and etcdctl are required in CI"
        );
        eprintln!("skipped: etcd or etcdctl not installed");
        return;
    }
    let raftkv_answers = {
        let cluster = ProcessCluster::start(3, &[]);
        cluster.agreed_leader(Duration::from_secs(30)).await;
        move_leader_script(&cluster.client_urls()).await
    };
    let etcd_answers = {
        let etcd = support::etcd::EtcdCluster::start(3).await;
        move_leader_script(&etcd.client_urls).await
    };
    println!("raftkv: {raftkv_answers:#?}\netcd: {etcd_answers:#?}");
    assert_eq!(raftkv_answers, etcd_answers);
    assert!(raftkv_answers[0].contains("Leadership transferred from <leader> to <target>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_under_load_keeps_writes_flowing() {
    let mut cluster = ProcessCluster::start(3, &[]);
    cluster.agreed_leader(Duration::from_secs(30)).await;
    let client = raftkv_client::Client::connect(cluster.client_urls())
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // One writer, sequential: the gaps between its acknowledgements are the outage.
    let writer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut last_ack = Instant::now();
            let mut longest = Duration::ZERO;
            let mut acked = 0u64;
            let deadline = Instant::now() + Duration::from_secs(300);
            while !stop.load(Ordering::Acquire) && Instant::now() < deadline {
                let put =
                    tokio::time::timeout(Duration::from_secs(5), client.put(format!("k{acked}"), "v")).await;
                if let Ok(Ok(_)) = put {
                    let now = Instant::now();
                    longest = longest.max(now - last_ack);
                    last_ack = now;
                    acked += 1;
                }
            }
            (acked, longest)
        })
    };
    for id in 1..=3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        cluster.terminate(id);
        cluster.restart(id);
        cluster.agreed_leader(Duration::from_secs(30)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Release);
    let (acked, longest) = writer.await.unwrap();
    println!("rolling restart: {acked} writes acknowledged, longest gap {longest:?}");
    assert!(acked > 100, "only {acked} writes");
    assert!(longest <= Duration::from_millis(1000), "longest gap {longest:?}");
}
