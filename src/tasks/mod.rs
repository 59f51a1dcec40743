//! # A member's background tasks
//!
//! Started with the node and ended by its shutdown: the leader's lease timers, which
//! expire and checkpoint leases (`lease_timers.rs`); etcd's automatic compaction
//! (`auto_compaction.rs`); asking openraft for a snapshot when the storage's cadence says
//! one is due (`snapshot_trigger.rs`); publishing this member's client URLs through
//! the log (`publish.rs`); and logging when the member stalled, and how
//! (`stall_watch.rs`).
//!
//! `start_all` starts them all when a node has started (`node/start.rs`).
//!
//! **Invariants.** A task holds the node only while it works (a `Weak` between rounds), so
//! dropping every handle on the node ends it too; a task that proposes does so only while
//! its member leads, and never forwards (its decisions are this leader's).
//!
//! **Left out.** Request handling (`api/`) and the storage's own threads (log sync and
//! purge, state sync, compaction: `raftkv-storage`).

pub(crate) mod auto_compaction;
pub(crate) mod lease_timers;
pub(crate) mod publish;
pub(crate) mod snapshot_trigger;
pub(crate) mod stall_watch;

use std::sync::Arc;

use tokio::sync::watch;

use crate::node::Node;
use auto_compaction::AutoCompaction;

/// Start every background task of a member that just started (each ends with
/// `shutdown`), and the metrics' own two (leader changes, peer round trips).
pub(crate) fn start_all(
    node: &Node,
    compaction: AutoCompaction,
    name: String,
    client_urls: Vec<String>,
    shutdown: watch::Receiver<bool>,
) {
    stall_watch::start(shutdown.clone());
    tokio::spawn(snapshot_trigger::run(
        node.inner.raft.clone(),
        node.inner.shared.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(lease_timers::run(Arc::downgrade(&node.inner), shutdown.clone()));
    tokio::spawn(crate::metrics::count_leader_changes(
        Arc::downgrade(&node.inner),
        shutdown.clone(),
    ));
    tokio::spawn(crate::metrics::probe_peers(
        Arc::downgrade(&node.inner),
        shutdown.clone(),
    ));
    tokio::spawn(auto_compaction::run(
        Arc::downgrade(&node.inner),
        compaction,
        shutdown.clone(),
    ));
    if !client_urls.is_empty() {
        tokio::spawn(publish::publish_client_urls(
            node.clone(),
            name,
            client_urls,
            shutdown,
        ));
    }
}
