//! [`TestCluster`]: the members, their ports and directories, and what a test does to
//! them (start, stop, kill, restart, partition, heal, wait).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raftkv_core::NodeId;
use raftkv_net::NetFaultPlan;

use super::TestClusterError;
use super::partition;
use super::ports::HeldPort;
use crate::{Node, NodeBuilder};

type Result<T> = std::result::Result<T, TestClusterError>;

/// Applied to every member's builder at every start (a restart too).
type Configure = Arc<dyn Fn(NodeBuilder) -> NodeBuilder + Send + Sync>;

/// How often the waits look again (they also wake on nothing else: a test's wait).
const POLL: Duration = Duration::from_millis(20);

/// One member: its held ports, its directory, and the running node if it is up.
struct Member {
    id: NodeId,
    peer: HeldPort,
    client: HeldPort,
    data_dir: PathBuf,
    node: Option<Node>,
}

/// Settings of a [`TestCluster`] before it starts.
pub struct TestClusterBuilder {
    size: usize,
    root: Option<PathBuf>,
    timing: (Duration, Duration, Duration),
    configure: Configure,
}

impl TestClusterBuilder {
    /// Keep the members' data directories under `root` (`root/node-<id>`) instead of a
    /// temporary directory removed with the cluster: to look at them after a test.
    pub fn data_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.root = Some(root.into());
        self
    }

    /// Raft heartbeat and election timeout range of every member (defaults 100 ms,
    /// 0.8-1.6 s: failover in about a second, no spurious elections on a busy machine).
    pub fn raft_timing(
        mut self,
        heartbeat: Duration,
        election_min: Duration,
        election_max: Duration,
    ) -> Self {
        self.timing = (heartbeat, election_min, election_max);
        self
    }

    /// Any other [`NodeBuilder`] setting, applied to every member at every start, after
    /// the cluster's own (id, directory, listeners, membership, timing).
    pub fn configure(
        mut self,
        configure: impl Fn(NodeBuilder) -> NodeBuilder + Send + Sync + 'static,
    ) -> Self {
        self.configure = Arc::new(configure);
        self
    }

    /// Start every member, bootstrapped as one cluster (one after the other; the cluster
    /// elects a leader on its own: see [`TestCluster::wait_for_leader`]).
    pub async fn start(self) -> Result<TestCluster> {
        let (tempdir, root) = match self.root {
            Some(root) => {
                std::fs::create_dir_all(&root)?;
                (None, root)
            }
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("raftkv-test-cluster-")
                    .tempdir()?;
                let root = dir.path().to_path_buf();
                (Some(dir), root)
            }
        };
        let mut members = Vec::with_capacity(self.size);
        for id in 1..=self.size as NodeId {
            members.push(Member {
                id,
                peer: HeldPort::new()?,
                client: HeldPort::new()?,
                data_dir: root.join(format!("node-{id}")),
                node: None,
            });
        }
        let mut cluster = TestCluster {
            members,
            timing: self.timing,
            configure: self.configure,
            partition: BTreeMap::new(),
            root,
            _tempdir: tempdir,
        };
        for id in cluster.ids() {
            cluster.start_member(id).await?;
        }
        Ok(cluster)
    }
}

/// An in-process raftkv cluster on loopback for tests; see the [module docs](super).
///
/// Dropping it stops the members at once (as [`TestCluster::kill`]); call
/// [`TestCluster::shutdown`] to stop them gracefully and wait for it.
pub struct TestCluster {
    members: Vec<Member>,
    timing: (Duration, Duration, Duration),
    configure: Configure,
    /// The partition in force (member -> its plan); empty when healed.
    partition: BTreeMap<NodeId, NetFaultPlan>,
    root: PathBuf,
    /// Removes the data directories when the cluster goes, unless `data_root` was given.
    _tempdir: Option<tempfile::TempDir>,
}

impl TestCluster {
    /// Settings for a cluster of `size` members (ids 1..=size).
    pub fn builder(size: usize) -> TestClusterBuilder {
        TestClusterBuilder {
            size,
            root: None,
            timing: (
                Duration::from_millis(100),
                Duration::from_millis(800),
                Duration::from_millis(1600),
            ),
            configure: Arc::new(|b| b),
        }
    }

    /// Start a cluster of `size` members with the default settings.
    pub async fn start(size: usize) -> Result<Self> {
        Self::builder(size).start().await
    }

    /// Every member's id, running or not.
    pub fn ids(&self) -> Vec<NodeId> {
        self.members.iter().map(|m| m.id).collect()
    }

    /// The running member `id`.
    pub fn node(&self, id: NodeId) -> Result<&Node> {
        self.member(id)?
            .node
            .as_ref()
            .ok_or(TestClusterError::NotRunning(id))
    }

    /// The running members.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.members.iter().filter_map(|m| m.node.as_ref())
    }

    /// Whether member `id` runs.
    pub fn is_running(&self, id: NodeId) -> bool {
        self.members.iter().any(|m| m.id == id && m.node.is_some())
    }

    /// Every member's client URL, running or not (what a client is given: it fails over
    /// between them).
    pub fn client_urls(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client.url()).collect()
    }

    /// Member `id`'s client URL.
    pub fn client_url(&self, id: NodeId) -> Result<String> {
        Ok(self.member(id)?.client.url())
    }

    /// The membership: id -> peer URL.
    pub fn peer_urls(&self) -> BTreeMap<NodeId, String> {
        self.members.iter().map(|m| (m.id, m.peer.url())).collect()
    }

    /// Member `id`'s data directory.
    pub fn data_dir(&self, id: NodeId) -> Result<&Path> {
        Ok(&self.member(id)?.data_dir)
    }

    /// Where the members' directories are.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Member `id`'s applied index right now (its state machine has applied every log
    /// entry up to it).
    pub fn applied_index(&self, id: NodeId) -> Result<u64> {
        Ok(self.node(id)?.applied().get())
    }

    /// Wait until every running member names the same leader, which runs and counts
    /// itself leader (a quorum acknowledged it within its lease): the leader's id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId> {
        let deadline = Instant::now() + timeout;
        loop {
            let seen: Vec<(NodeId, Option<NodeId>)> =
                self.nodes().map(|n| (n.id(), n.current_leader())).collect();
            if let Some((_, Some(leader))) = seen.first()
                && seen.iter().all(|(_, l)| *l == Some(*leader))
                && self.is_running(*leader)
            {
                return Ok(*leader);
            }
            if Instant::now() >= deadline {
                return Err(TestClusterError::Timeout(format!(
                    "no agreed leader within {timeout:?}; (member, leader it sees): {seen:?}"
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The leader's node, once every running member agrees on it.
    pub async fn leader(&self, timeout: Duration) -> Result<&Node> {
        let id = self.wait_for_leader(timeout).await?;
        self.node(id)
    }

    /// Wait until every running member has applied `index` (a write's effects are then
    /// visible to serializable reads everywhere).
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let behind: Vec<(NodeId, u64)> = self
                .nodes()
                .map(|n| (n.id(), n.applied().get()))
                .filter(|(_, applied)| *applied < index)
                .collect();
            if behind.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(TestClusterError::Timeout(format!(
                    "members still below applied index {index} after {timeout:?}: {behind:?}"
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stop member `id` gracefully (as on SIGTERM: in-flight requests drain, it stops
    /// standing for election) and wait until it has.
    pub async fn stop(&mut self, id: NodeId) -> Result<()> {
        let node = self.take_running(id)?;
        node.shutdown().await;
        Ok(())
    }

    /// Stop member `id` at once: its listeners close, in-flight requests fail, Raft
    /// stops; the others see it vanish. See the module docs for what this is not.
    pub async fn kill(&mut self, id: NodeId) -> Result<()> {
        let node = self.take_running(id)?;
        node.kill().await;
        Ok(())
    }

    /// Start member `id` again on its directory and ports (after `stop` or `kill`);
    /// inside the partition in force, if any.
    pub async fn restart(&mut self, id: NodeId) -> Result<&Node> {
        if self.member(id)?.node.is_some() {
            return Err(TestClusterError::AlreadyRunning(id));
        }
        self.start_member(id).await?;
        self.node(id)
    }

    /// Cut the peer network into `groups`: members talk only within their group; a
    /// member named in no group is cut off from all. Replaces the partition in force.
    pub fn partition(&mut self, groups: &[&[NodeId]]) -> Result<()> {
        let plans = partition::plans(&self.peer_urls(), groups)?;
        self.apply(plans);
        Ok(())
    }

    /// Undo any partition: every member reaches every other again.
    pub fn heal(&mut self) {
        let plans = partition::healed(&self.peer_urls());
        self.apply(plans);
    }

    /// Stop every running member gracefully, one after the other, and wait.
    pub async fn shutdown(mut self) {
        for member in &mut self.members {
            if let Some(node) = member.node.take() {
                node.shutdown().await;
            }
        }
    }

    fn member(&self, id: NodeId) -> Result<&Member> {
        self.members
            .iter()
            .find(|m| m.id == id)
            .ok_or(TestClusterError::NoSuchMember(id))
    }

    fn take_running(&mut self, id: NodeId) -> Result<Node> {
        let member = self
            .members
            .iter_mut()
            .find(|m| m.id == id)
            .ok_or(TestClusterError::NoSuchMember(id))?;
        member.node.take().ok_or(TestClusterError::NotRunning(id))
    }

    fn apply(&mut self, plans: BTreeMap<NodeId, NetFaultPlan>) {
        for node in self.nodes() {
            if let Some(plan) = plans.get(&node.id()) {
                node.net_faults().set(plan.clone());
            }
        }
        self.partition = if partition::cuts(&plans) {
            plans
        } else {
            BTreeMap::new()
        };
    }

    async fn start_member(&mut self, id: NodeId) -> Result<()> {
        let peers = self.peer_urls();
        let (heartbeat, election_min, election_max) = self.timing;
        let member = self.member(id)?;
        let builder = Node::builder()
            .id(id)
            .data_dir(member.data_dir.clone())
            .peer_listener(member.peer.listener()?)
            .client_listener(member.client.listener()?)
            .initial_cluster(peers)
            .raft_timing(heartbeat, election_min, election_max);
        let node = (self.configure)(builder)
            .start()
            .await
            .map_err(|source| TestClusterError::Start { id, source })?;
        if let Some(plan) = self.partition.get(&id) {
            node.net_faults().set(plan.clone());
        }
        if let Some(member) = self.members.iter_mut().find(|m| m.id == id) {
            member.node = Some(node);
        }
        Ok(())
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // No await in a drop: stop what can be stopped at once, so no member keeps
        // writing into a directory about to be removed, nor serving on ports let go.
        for member in &mut self.members {
            if let Some(node) = member.node.take() {
                node.kill_now();
            }
        }
    }
}
