//! Test support: in-process clusters on 127.0.0.1 with ports picked by the OS.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod etcd;
pub mod faults;
pub mod history;
pub mod process;
pub mod scenario;
pub mod workload;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use raftkv::Node;

/// Raft timing for tests: short enough to keep tests quick, long enough for a busy
/// 2-core machine.
pub const HEARTBEAT: Duration = Duration::from_millis(100);
pub const ELECTION_MIN: Duration = Duration::from_millis(800);
pub const ELECTION_MAX: Duration = Duration::from_millis(1600);

/// One node's listeners, bound before the node starts so every member knows every URL.
pub struct Slot {
    pub id: u64,
    pub peer: std::net::TcpListener,
    pub client: std::net::TcpListener,
    pub peer_url: String,
    pub client_url: String,
}

pub fn slot(id: u64) -> Slot {
    let peer = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let peer_url = format!("http://{}", peer.local_addr().unwrap());
    let client_url = format!("http://{}", client.local_addr().unwrap());
    Slot {
        id,
        peer,
        client,
        peer_url,
        client_url,
    }
}

pub fn builder(slot: Slot, dir: &std::path::Path) -> raftkv::NodeBuilder {
    Node::builder()
        .id(slot.id)
        .data_dir(dir.join(format!("node-{}", slot.id)))
        .peer_listener(slot.peer)
        .client_listener(slot.client)
        .raft_timing(HEARTBEAT, ELECTION_MIN, ELECTION_MAX)
}

/// Start `n` nodes bootstrapped as one cluster.
pub async fn start_cluster(n: u64, dir: &std::path::Path) -> Vec<Node> {
    let slots: Vec<Slot> = (1..=n).map(slot).collect();
    let members: BTreeMap<u64, String> = slots.iter().map(|s| (s.id, s.peer_url.clone())).collect();
    let mut nodes = Vec::new();
    for s in slots {
        let node = builder(s, dir)
            .initial_cluster(members.clone())
            .start()
            .await
            .unwrap();
        nodes.push(node);
    }
    nodes
}

/// Wait (with a deadline) until every node agrees on one leader; returns its id.
pub async fn wait_for_agreed_leader(nodes: &[Node], timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        let leaders: Vec<Option<u64>> = nodes.iter().map(|n| n.metrics().leader).collect();
        if let Some(Some(first)) = leaders.first()
            && leaders.iter().all(|l| *l == Some(*first))
        {
            return *first;
        }
        assert!(
            Instant::now() < deadline,
            "no agreed leader within {timeout:?}: {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait (with a deadline) until `check` holds.
pub async fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
