//! Leadership transfer on [`Node`]: hand leadership to a chosen voter (etcd's
//! `MoveLeader`), or to the most up-to-date one before a planned stop, so a rolling
//! restart costs no election.
//!
//! openraft's `trigger().transfer_leader(to)` only submits the transfer: the leader stops
//! heartbeats and answers writes with "forward to the target", and every member that hears
//! of the transfer drops its leader lease, so the target may stand at once. Nothing in
//! openraft aborts a transfer that does not complete (the target was slow to catch up, its
//! message was lost): the cluster would then wait out a normal election. So we watch for
//! the new leader, and after [`transfer_bound`] without one we hand leadership to another
//! up-to-date voter (the lease is already dropped everywhere the transfer was heard), and
//! report a timeout only if that fails too.

use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use raftkv_core::types::NodeId;
use raftkv_core::{Error, RequestError, Result};
use tokio::time::Instant;

use crate::node::Node;

/// How long a transfer may take before we try another voter: the target catches up and
/// wins one round of votes well within an election timeout on a healthy cluster.
fn transfer_bound(node: &Node) -> Duration {
    Duration::from_millis(node.inner.raft.config().election_timeout_min.max(100))
}

impl Node {
    /// Make `to` the leader (this node must lead; `to` must be a voter). Returns once `to`
    /// leads, or with [`Error::LeaderTransferTimeout`] if neither it nor a fallback voter
    /// took over in time. Transferring to the current leader does nothing.
    ///
    /// ```
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// let cluster = raftkv::testing::TestCluster::start(3).await?;
    /// let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    /// let target = cluster.ids().into_iter().find(|id| *id != leader).unwrap_or(leader);
    /// cluster.node(leader)?.transfer_leader(target).await?;
    /// assert_eq!(cluster.wait_for_leader(Duration::from_secs(10)).await?, target);
    /// // Writes go on through any member, with no election in between.
    /// cluster.node(leader)?.put("after", "transfer").await?;
    /// # cluster.shutdown().await;
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(level = "info", skip(self))]
    pub async fn transfer_leader(&self, to: NodeId) -> Result<()> {
        self.ensure_leading()?;
        if to == self.id() {
            return Ok(());
        }
        let voters = self.voters_by_progress();
        if !voters.contains(&to) {
            return Err(RequestError::BadLeaderTransferee(to).into());
        }
        self.transfer_and_wait(to, &voters).await.map(|_| ())
    }

    /// Hand leadership to the most up-to-date other voter, if this node leads and one
    /// exists; returns the new leader. For a planned stop (the server's SIGTERM): the
    /// cluster keeps a leader and elects nobody.
    #[tracing::instrument(level = "info", skip(self))]
    pub async fn step_down(&self) -> Result<Option<NodeId>> {
        if self.ensure_leading().is_err() {
            return Ok(None);
        }
        let voters = self.voters_by_progress();
        let Some(&to) = voters.first() else {
            return Ok(None);
        };
        self.transfer_and_wait(to, &voters).await.map(Some)
    }

    fn ensure_leading(&self) -> Result<()> {
        let leader = self.inner.raft.metrics().borrow_watched().current_leader;
        if leader == Some(self.id()) {
            Ok(())
        } else {
            Err(Error::NotLeader {
                leader_id: leader,
                leader_client_urls: Vec::new(),
            })
        }
    }

    /// The other voters, most up to date first (by the log index the leader knows they
    /// match).
    fn voters_by_progress(&self) -> Vec<NodeId> {
        let metrics = self.inner.raft.metrics().borrow_watched().clone();
        let matched = |id: &NodeId| {
            metrics
                .replication
                .as_ref()
                .and_then(|r| r.get(id).cloned().flatten())
                .map_or(0, |l| l.index)
        };
        let mut voters: Vec<NodeId> = metrics
            .membership_config
            .membership()
            .voter_ids()
            .filter(|id| *id != self.id())
            .collect();
        voters.sort_by_key(|id| std::cmp::Reverse(matched(id)));
        voters
    }

    /// Transfer to `to`; if no new leader shows within the bound, to each other voter in
    /// turn. Returns who took over.
    async fn transfer_and_wait(&self, to: NodeId, voters: &[NodeId]) -> Result<NodeId> {
        let fallbacks = voters.iter().copied().filter(|v| *v != to);
        for target in std::iter::once(to).chain(fallbacks) {
            let started = Instant::now();
            self.inner
                .raft
                .trigger()
                .transfer_leader(target)
                .await
                .map_err(|e| Error::Shutdown(e.to_string()))?;
            if let Some(leader) = self.wait_for_other_leader(started + transfer_bound(self)).await? {
                tracing::info!(
                    from = self.id(),
                    to = leader,
                    took_ms = started.elapsed().as_millis() as u64,
                    "leadership transferred"
                );
                return Ok(leader);
            }
            tracing::warn!(
                target,
                "leadership transfer did not complete in time: trying another voter"
            );
        }
        Err(Error::LeaderTransferTimeout)
    }

    /// Wait until this node sees a leader other than itself, or `deadline`.
    async fn wait_for_other_leader(&self, deadline: Instant) -> Result<Option<NodeId>> {
        let mut metrics = self.inner.raft.metrics();
        loop {
            let leader = metrics.borrow_watched().current_leader;
            if let Some(leader) = leader.filter(|l| *l != self.id()) {
                return Ok(Some(leader));
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Err(_) => return Ok(None),
                Ok(Err(_)) => return Err(Error::Shutdown("raft stopped".into())),
                Ok(Ok(())) => {}
            }
        }
    }
}
