//! etcd's automatic compaction (`--auto-compaction-mode` / `--auto-compaction-retention`):
//! a task on every member that, while its member leads, proposes `Compact` through the
//! log like a client would, so every member compacts at the same revision.
//!
//! The two modes follow etcd 3.4's `v3compactor` (read in its source):
//! - **periodic, retention P**: every `min(P, 1 h) / 10` the task notes the current
//!   revision (a window of the last `P / that + 1` notes); once P has passed since the
//!   start, and then every `min(P, 1 h)` since the last success, it compacts at the
//!   oldest note, the revision of about P ago. A failure is retried at the next note.
//! - **revision, retention N**: every 5 minutes, the revision N below the current one,
//!   unless that is not positive or was compacted last time.
//!
//! A follower notes revisions too but does not compact (etcd pauses its compactor): the
//! member that becomes leader keeps the same window. "Already compacted" counts as done.

use std::collections::VecDeque;
use std::sync::Weak;
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use raftkv_core::{Error, RequestError};
use tokio::sync::watch;

use crate::node::{Node, NodeInner};

/// etcd's check interval in revision mode.
pub const REVISION_CHECK_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// What the leader compacts by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AutoCompaction {
    /// Only on request (etcd's `--auto-compaction-retention 0`, the default).
    #[default]
    Off,
    /// Keep about `retention` of history (etcd's `periodic` mode).
    Periodic {
        /// How much history to keep.
        retention: Duration,
    },
    /// Keep the last `retain` revisions, checked every `check_every` (etcd's `revision`
    /// mode, which checks every 5 minutes: [`AutoCompaction::revisions`]).
    Revisions {
        /// How many revisions to keep.
        retain: u64,
        /// How often to check.
        check_every: Duration,
    },
}

impl AutoCompaction {
    /// etcd's `revision` mode: keep `retain` revisions, checked every 5 minutes.
    pub fn revisions(retain: u64) -> Self {
        Self::Revisions {
            retain,
            check_every: REVISION_CHECK_INTERVAL,
        }
    }
}

/// The periodic mode's timing, as etcd derives it from the retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PeriodicPlan {
    /// How often a revision is noted (and a failed compaction retried).
    note_every: Duration,
    /// How many notes the window keeps.
    window: usize,
    /// After the first compaction, how long between two.
    compact_every: Duration,
}

impl PeriodicPlan {
    fn new(retention: Duration) -> Self {
        let capped = retention.min(Duration::from_secs(3600));
        let note_every = (capped / 10).max(Duration::from_millis(1));
        let window = (retention.as_nanos() / note_every.as_nanos()) as usize + 1;
        Self {
            note_every,
            window,
            compact_every: capped,
        }
    }
}

/// Runs until `shutdown`, or until the node is gone.
pub(crate) async fn run(node: Weak<NodeInner>, mode: AutoCompaction, shutdown: watch::Receiver<bool>) {
    match mode {
        AutoCompaction::Off => {}
        AutoCompaction::Periodic { retention } if !retention.is_zero() => {
            periodic(node, retention, shutdown).await;
        }
        AutoCompaction::Revisions { retain, check_every } if retain > 0 => {
            by_revision(node, retain, check_every, shutdown).await;
        }
        _ => {}
    }
}

/// Sleep `period`; false once the node is shutting down.
async fn sleep_unless_stopped(period: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(period) => true,
        _ = shutdown.wait_for(|stop| *stop) => false,
    }
}

fn leads(node: &Node) -> bool {
    node.inner.raft.metrics().borrow_watched().current_leader == Some(node.id())
}

/// Compact at `revision`: whether it is done (compacted now or before).
async fn compact(node: &Node, revision: i64, why: &str) -> bool {
    tracing::info!(revision, why, "starting auto compaction");
    match node.compact(revision).await {
        Ok(_) | Err(Error::Request(RequestError::Compacted { .. })) => {
            tracing::info!(revision, "completed auto compaction");
            true
        }
        Err(e) => {
            tracing::warn!(revision, error = %e, "failed auto compaction; will retry");
            false
        }
    }
}

async fn periodic(node: Weak<NodeInner>, retention: Duration, mut shutdown: watch::Receiver<bool>) {
    let plan = PeriodicPlan::new(retention);
    let mut notes: VecDeque<i64> = VecDeque::with_capacity(plan.window + 1);
    let mut last_success = Instant::now();
    let mut wait = retention;
    loop {
        let Some(inner) = node.upgrade() else { return };
        notes.push_back(inner.reader.revision());
        if notes.len() > plan.window {
            notes.pop_front();
        }
        drop(inner);
        if !sleep_unless_stopped(plan.note_every, &mut shutdown).await {
            return;
        }
        let Some(inner) = node.upgrade() else { return };
        let node_now = Node { inner };
        if !leads(&node_now) || last_success.elapsed() < wait {
            continue;
        }
        wait = plan.compact_every;
        let Some(&revision) = notes.front() else { continue };
        let why = format!("periodic, retention {retention:?}");
        if compact(&node_now, revision, &why).await {
            last_success = Instant::now();
        }
    }
}

async fn by_revision(
    node: Weak<NodeInner>,
    retain: u64,
    check_every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let retain = i64::try_from(retain).unwrap_or(i64::MAX);
    let mut previous = 0;
    loop {
        if !sleep_unless_stopped(check_every, &mut shutdown).await {
            return;
        }
        let Some(inner) = node.upgrade() else { return };
        let node_now = Node { inner };
        if !leads(&node_now) {
            continue;
        }
        let revision = node_now.inner.reader.revision().saturating_sub(retain);
        if revision <= 0 || revision == previous {
            continue;
        }
        if compact(&node_now, revision, &format!("revision, retention {retain}")).await {
            previous = revision;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periodic_timing_is_etcds() {
        // One hour: a note every 6 minutes, 11 of them, a compaction every hour.
        let hour = PeriodicPlan::new(Duration::from_secs(3600));
        assert_eq!(hour.note_every, Duration::from_secs(360));
        assert_eq!(hour.window, 11);
        assert_eq!(hour.compact_every, Duration::from_secs(3600));
        // A day: notes still every 6 minutes (241 of them), compactions every hour.
        let day = PeriodicPlan::new(Duration::from_secs(24 * 3600));
        assert_eq!(day.note_every, Duration::from_secs(360));
        assert_eq!(day.window, 241);
        assert_eq!(day.compact_every, Duration::from_secs(3600));
        // Five seconds: every half second, 11 notes.
        let short = PeriodicPlan::new(Duration::from_secs(5));
        assert_eq!(short.note_every, Duration::from_millis(500));
        assert_eq!(short.window, 11);
    }
}
