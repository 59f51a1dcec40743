//! Test support: in-process clusters on 127.0.0.1 on ports held for the test
//! ([`ports`]), one cluster at a time per test binary ([`ClusterTurn`]).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod certs;
pub mod child;
pub mod etcd;
pub mod faults;
pub mod history;
pub mod ports;
pub mod process;
pub mod scenario;
pub mod workload;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use raftkv::Node;

use ports::HeldPort;

/// Raft timing for tests: short enough to keep tests quick, long enough for a busy
/// 2-core machine.
pub const HEARTBEAT: Duration = Duration::from_millis(100);
pub const ELECTION_MIN: Duration = Duration::from_millis(800);
pub const ELECTION_MAX: Duration = Duration::from_millis(1600);

/// One node's ports, held before the node starts so every member knows every URL.
pub struct Slot {
    pub id: u64,
    pub peer: HeldPort,
    pub client: HeldPort,
    pub peer_url: String,
    pub client_url: String,
}

pub fn slot(id: u64) -> Slot {
    let (peer, client) = (HeldPort::new(), HeldPort::new());
    Slot {
        id,
        peer_url: peer.url(),
        client_url: client.url(),
        peer,
        client,
    }
}

/// A builder for node `slot.id` listening on the slot's ports (a fresh listener per
/// call: a node restarted on the same slot gets the same addresses).
pub fn builder(slot: &Slot, dir: &std::path::Path) -> raftkv::NodeBuilder {
    Node::builder()
        .id(slot.id)
        .data_dir(dir.join(format!("node-{}", slot.id)))
        .peer_listener(slot.peer.listener())
        .client_listener(slot.client.listener())
        .raft_timing(HEARTBEAT, ELECTION_MIN, ELECTION_MAX)
}

/// A cluster of in-process nodes; derefs to its nodes. Keeps each member's ports (so a
/// member can be restarted on them) and the binary's [`ClusterTurn`] until dropped.
pub struct InProcessCluster {
    pub nodes: Vec<Node>,
    pub slots: Vec<Slot>,
    _turn: ClusterTurn,
}

impl std::ops::Deref for InProcessCluster {
    type Target = Vec<Node>;
    fn deref(&self) -> &Vec<Node> {
        &self.nodes
    }
}

impl<'a> IntoIterator for &'a InProcessCluster {
    type Item = &'a Node;
    type IntoIter = std::slice::Iter<'a, Node>;
    fn into_iter(self) -> Self::IntoIter {
        self.nodes.iter()
    }
}

impl InProcessCluster {
    /// The initial membership (id -> peer URL).
    pub fn members(&self) -> BTreeMap<u64, String> {
        self.slots.iter().map(|s| (s.id, s.peer_url.clone())).collect()
    }

    /// A builder for member `id` on its own ports and data dir under `dir` (to restart
    /// it after a shutdown).
    pub fn builder(&self, id: u64, dir: &std::path::Path) -> raftkv::NodeBuilder {
        let slot = self.slots.iter().find(|s| s.id == id).unwrap();
        builder(slot, dir).initial_cluster(self.members())
    }
}

/// Start `n` nodes bootstrapped as one cluster.
pub async fn start_cluster(n: u64, dir: &std::path::Path) -> InProcessCluster {
    start_cluster_with(n, dir, |b| b).await
}

/// Start `n` nodes bootstrapped as one cluster, each builder passed through `configure`.
pub async fn start_cluster_with(
    n: u64,
    dir: &std::path::Path,
    configure: impl Fn(raftkv::NodeBuilder) -> raftkv::NodeBuilder,
) -> InProcessCluster {
    let turn = ClusterTurn::take();
    let slots: Vec<Slot> = (1..=n).map(slot).collect();
    let members: BTreeMap<u64, String> = slots.iter().map(|s| (s.id, s.peer_url.clone())).collect();
    let mut nodes = Vec::new();
    for s in &slots {
        let node = configure(builder(s, dir).initial_cluster(members.clone()))
            .start()
            .await
            .unwrap();
        nodes.push(node);
    }
    InProcessCluster {
        nodes,
        slots,
        _turn: turn,
    }
}

/// The right to run a cluster in this test binary: one at a time, because two cores do
/// not host two clusters fairly (RELIABILITY.md), and cargo runs a binary's tests in
/// parallel threads. Released when dropped, also by a panicking test.
pub struct ClusterTurn(());

/// Whether some test of this binary holds the turn.
static TURN_TAKEN: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
static TURN_FREED: std::sync::Condvar = std::sync::Condvar::new();

/// How long a test waits for the other tests' clusters before it fails (a test that
/// holds two clusters at once would otherwise wait for itself for ever).
const TURN_DEADLINE: Duration = Duration::from_secs(15 * 60);

impl ClusterTurn {
    /// Wait (blocking this thread, with a deadline) for the turn.
    pub fn take() -> Self {
        let deadline = Instant::now() + TURN_DEADLINE;
        let mut taken = TURN_TAKEN.lock().unwrap_or_else(|e| e.into_inner());
        while *taken {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no cluster turn within {TURN_DEADLINE:?}");
            taken = TURN_FREED
                .wait_timeout(taken, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *taken = true;
        ClusterTurn(())
    }
}

impl Drop for ClusterTurn {
    fn drop(&mut self) {
        *TURN_TAKEN.lock().unwrap_or_else(|e| e.into_inner()) = false;
        TURN_FREED.notify_one();
    }
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

/// A gRPC channel to `url` (a raftkv or etcd client URL), connected.
pub async fn channel(url: &str) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap()
}
