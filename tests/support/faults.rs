//! Switching faults on a [`ProcessCluster`] at run time, through the test-only `Faults`
//! service each `failpoints` build serves on its peer port.
//!
//! The network plan of every node is kept here and pushed whole, so partitions and noise
//! (loss, delay, duplication) compose, and a restarted node (which starts with no faults)
//! gets its plan back with [`Faults::reapply`]. A partition between groups is two-way;
//! [`Faults::cut_one_way`] drops only the traffic from one node to another: its requests
//! never arrive, and its answers to the other's requests are lost on the way back.
//!
//! Fault counts live in each server process and die with it: [`Faults::harvest`] adds a
//! node's counters to the totals before it is killed, and at the end of a scenario.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use raftkv_proto::raftkvfaults::faults_client::FaultsClient;
use raftkv_proto::raftkvfaults::{Failpoint, FaultReport, NetworkFaults, ReportRequest};

use super::process::ProcessCluster;

/// Totals of the faults injected in one scenario.
#[derive(Clone, Copy, Debug, Default)]
pub struct Injected {
    /// Peer requests and responses lost (partitions and random loss).
    pub messages_dropped: u64,
    pub messages_delayed: u64,
    pub messages_duplicated: u64,
    /// Storage failpoints that fired with an error.
    pub storage_faults: u64,
    /// Process-level faults: SIGKILL, SIGSTOP, partitions set, failpoints armed.
    pub events: u64,
}

impl Injected {
    pub fn total(&self) -> u64 {
        self.messages_dropped + self.messages_duplicated + self.storage_faults + self.events
    }
}

impl std::fmt::Display for Injected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "faults={} events={} dropped={} delayed={} duplicated={} storage={}",
            self.total(),
            self.events,
            self.messages_dropped,
            self.messages_delayed,
            self.messages_duplicated,
            self.storage_faults
        )
    }
}

fn explain(id: u64, status: tonic::Status) -> String {
    if status.code() == tonic::Code::Unimplemented {
        format!(
            "node {id} has no fault service: the server was built without the `failpoints` \
             feature (run ./scripts/test.sh, or cargo test --features failpoints)"
        )
    } else {
        format!("node {id}: {status}")
    }
}

pub struct Faults {
    /// Node id -> peer URL (where the fault service is).
    peers: BTreeMap<u64, String>,
    seed: u64,
    plans: Mutex<BTreeMap<u64, NetworkFaults>>,
    injected: Mutex<Injected>,
}

impl Faults {
    pub fn new(cluster: &ProcessCluster, seed: u64) -> Self {
        let peers: BTreeMap<u64, String> = cluster
            .nodes
            .iter()
            .map(|(id, n)| (*id, n.peer_url.clone()))
            .collect();
        let plans = peers
            .keys()
            .map(|id| {
                (
                    *id,
                    NetworkFaults {
                        seed: seed ^ id.wrapping_mul(0x9e37_79b9),
                        ..NetworkFaults::default()
                    },
                )
            })
            .collect();
        Faults {
            peers,
            seed,
            plans: Mutex::new(plans),
            injected: Mutex::new(Injected::default()),
        }
    }

    async fn client(&self, id: u64) -> Result<FaultsClient<tonic::transport::Channel>, String> {
        let url = self.peers[&id].clone();
        let channel = tonic::transport::Endpoint::from_shared(url)
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(1))
            .connect()
            .await
            .map_err(|e| format!("node {id}: {e}"))?;
        Ok(FaultsClient::new(channel))
    }

    /// Push node `id`'s current plan to it; fails if the node is down or paused.
    async fn push(&self, id: u64) -> Result<FaultReport, String> {
        let plan = self.plans.lock().unwrap()[&id].clone();
        let call = async {
            let mut client = self.client(id).await?;
            client
                .set_network(plan)
                .await
                .map(|r| r.into_inner())
                .map_err(|s| explain(id, s))
        };
        tokio::time::timeout(Duration::from_secs(3), call)
            .await
            .map_err(|_| format!("node {id}: fault service did not answer"))?
    }

    /// Push every plan to every node in `alive`; a node that cannot be reached is an error.
    async fn push_all(&self, alive: &[u64]) {
        for id in alive {
            if let Err(e) = self.push(*id).await {
                panic!("could not set network faults: {e}");
            }
        }
    }

    fn edit(&self, mut change: impl FnMut(u64, &mut NetworkFaults)) {
        let mut plans = self.plans.lock().unwrap();
        for (id, plan) in plans.iter_mut() {
            change(*id, plan);
        }
    }

    fn url(&self, id: u64) -> String {
        self.peers[&id].clone()
    }

    /// Cut all traffic between the groups (each node in no group keeps talking to all).
    pub async fn partition(&self, groups: &[&[u64]], alive: &[u64]) {
        let group_of = |id: u64| groups.iter().position(|g| g.contains(&id));
        let peers: Vec<u64> = self.peers.keys().copied().collect();
        self.edit(|id, plan| {
            plan.drop_requests_to.clear();
            plan.drop_responses_from.clear();
            for other in &peers {
                if let (Some(a), Some(b)) = (group_of(id), group_of(*other))
                    && a != b
                {
                    plan.drop_requests_to.push(self.url(*other));
                    plan.drop_responses_from.push(self.url(*other));
                }
            }
        });
        self.injected.lock().unwrap().events += 1;
        self.push_all(alive).await;
    }

    /// Drop the traffic from `from` to `to` only (both its requests and its answers).
    pub async fn cut_one_way(&self, from: u64, to: u64, alive: &[u64]) {
        let (from_url, to_url) = (self.url(from), self.url(to));
        self.edit(|id, plan| {
            if id == from {
                plan.drop_requests_to.push(to_url.clone());
            }
            if id == to {
                plan.drop_responses_from.push(from_url.clone());
            }
        });
        self.injected.lock().unwrap().events += 1;
        self.push_all(alive).await;
    }

    /// Remove every partition (noise stays).
    pub async fn heal(&self, alive: &[u64]) {
        self.edit(|_, plan| {
            plan.drop_requests_to.clear();
            plan.drop_responses_from.clear();
        });
        self.push_all(alive).await;
    }

    /// Random loss, delay jitter and duplication on every link.
    pub async fn noise(
        &self,
        loss_percent: u32,
        delay_ms: (u32, u32),
        duplicate_percent: u32,
        alive: &[u64],
    ) {
        self.edit(|_, plan| {
            plan.loss_percent = loss_percent;
            plan.delay_min_ms = delay_ms.0;
            plan.delay_max_ms = delay_ms.1;
            plan.duplicate_percent = duplicate_percent;
        });
        self.push_all(alive).await;
    }

    /// Give a restarted node its plan back.
    pub async fn reapply(&self, id: u64) {
        if let Err(e) = self.push(id).await {
            panic!("could not restore network faults: {e}");
        }
    }

    /// Arm a storage failpoint on node `id` (`fail` crate actions: "return", "panic", ...).
    pub async fn failpoint(&self, id: u64, name: &str, actions: &str) {
        let request = Failpoint {
            name: name.into(),
            actions: actions.into(),
        };
        let call = async {
            let mut client = self.client(id).await?;
            client.set_failpoint(request).await.map_err(|s| explain(id, s))
        };
        match tokio::time::timeout(Duration::from_secs(3), call).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("failpoint {name}={actions} on node {id}: {e}"),
            Err(_) => panic!("failpoint {name}={actions} on node {id}: no answer"),
        }
        self.injected.lock().unwrap().events += 1;
    }

    /// Count a process-level fault the scenario injected itself (kill, pause).
    pub fn count_event(&self) {
        self.injected.lock().unwrap().events += 1;
    }

    /// Add node `id`'s counters to the totals (call before killing it, and at the end);
    /// a node that does not answer contributes nothing.
    pub async fn harvest(&self, id: u64) {
        let call = async {
            let mut client = self.client(id).await.ok()?;
            client.report(ReportRequest {}).await.ok().map(|r| r.into_inner())
        };
        if let Ok(Some(report)) = tokio::time::timeout(Duration::from_secs(2), call).await {
            let mut injected = self.injected.lock().unwrap();
            injected.messages_dropped += report.requests_dropped + report.responses_dropped;
            injected.messages_delayed += report.delayed;
            injected.messages_duplicated += report.duplicated;
            injected.storage_faults += report.storage_faults;
        }
    }

    pub fn injected(&self) -> Injected {
        *self.injected.lock().unwrap()
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }
}
