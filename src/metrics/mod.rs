//! The member's metrics in Prometheus' text format, under etcd's names, types and help
//! texts (etcd 3.4's `etcdserver/metrics.go`, `wal/metrics.go`, `mvcc/backend/metrics.go`,
//! `mvcc/metrics.go`), so etcd's dashboards and alerts read a raftkv member unchanged;
//! served at `/metrics` by `raftkv_net::HttpProbesLayer`.
//!
//! Almost everything is read at scrape time from state the node keeps anyway (Raft's
//! metrics, the watermarks, the quota, `/proc/self`): nothing is recorded per request
//! except what [`crate::node::server_counters::ServerCounters`] counts per proposal (two relaxed atomic adds) and one
//! histogram observation per disk sync (`raftkv_storage`'s `SyncStats::durations`).
//!
//! The gRPC server counters come from `raftkv_net::GrpcCounters`, counted by the client
//! port's layer. Not exported yet (the operations issue): peer round-trip times and
//! traffic, the apply and snapshot histograms.

pub(crate) mod process;
pub(crate) mod text;

use std::sync::Weak;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::async_runtime::WatchReceiver;
use raftkv_core::NodeId;
use tokio::sync::watch;

use crate::metrics::text::Text;
use crate::node::{Node, NodeInner};

/// Count leader changes as etcd does (each time a leader is seen that differs from the
/// last one seen, the first election included), until the node is gone or stops.
pub(crate) async fn count_leader_changes(inner: Weak<NodeInner>, mut shutdown: watch::Receiver<bool>) {
    let Some(mut server) = inner.upgrade().map(|i| i.raft.server_metrics()) else {
        return;
    };
    let mut last: Option<NodeId> = None;
    loop {
        let leader = server.borrow_watched().current_leader;
        if let Some(leader) = leader.filter(|l| Some(*l) != last) {
            last = Some(leader);
            match inner.upgrade() {
                Some(inner) => inner.counters.leader_changes.fetch_add(1, Ordering::Relaxed),
                None => return,
            };
        }
        tokio::select! {
            changed = server.changed() => if changed.is_err() { return },
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// Probes every other member's round trip every [`raftkv_net::PROBE_INTERVAL`]
/// (`etcd_network_peer_round_trip_time_seconds`), and drops the traffic series of
/// members that left. Runs until `shutdown` or until the node is gone.
pub(crate) async fn probe_peers(inner: Weak<NodeInner>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let Some(node) = inner.upgrade() else { return };
        let mut peers = raftkv_net::member_peer_urls(&node.raft);
        peers.retain(|(peer, _)| *peer != node.id);
        let traffic = node.connections.traffic();
        traffic.retain(|peer| peers.iter().any(|(p, _)| *p == peer));
        let connections = node.connections.clone();
        drop(node);
        connections.probe_round_trips(&peers).await;
        tokio::select! {
            () = tokio::time::sleep(raftkv_net::PROBE_INTERVAL) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// Every metric of `node`, in Prometheus' text exposition format 0.0.4.
pub(crate) fn render(node: &Node) -> String {
    let inner = &node.inner;
    let metrics = node.metrics();
    let counters = &inner.counters;
    let shared = &inner.shared;
    let hub = shared.watch_hub();
    let disk_bytes = node.disk_usage();
    let disk = disk_bytes as f64;
    // etcd's "in use" is its file minus its free pages; on the same basis as `disk` (the
    // whole data directory), raftkv's is `disk` minus what a defragmentation would give
    // back: the state database's file beyond its live data (an estimate, see
    // `StateShared::live_bytes_estimate`).
    let reclaimable = shared.reclaimable_bytes_estimate();
    let in_use = disk_bytes.saturating_sub(reclaimable) as f64;
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
    // (name, type, etcd's help text, value)
    let families: [(&str, &str, &str, f64); 18] = [
        (
            "etcd_server_has_leader",
            "gauge",
            "Whether or not a leader exists. 1 is existence, 0 is not.",
            flag(metrics.leader.is_some()),
        ),
        (
            "etcd_server_is_leader",
            "gauge",
            "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            flag(metrics.leader == Some(metrics.id)),
        ),
        (
            "etcd_server_is_learner",
            "gauge",
            "Whether or not this member is a learner. 1 if is, 0 otherwise.",
            flag(metrics.learners.contains(&metrics.id)),
        ),
        (
            "etcd_server_leader_changes_seen_total",
            "counter",
            "The number of leader changes seen.",
            load(&counters.leader_changes),
        ),
        (
            "etcd_server_proposals_committed_total",
            "gauge",
            "The total number of consensus proposals committed.",
            metrics.committed as f64,
        ),
        (
            "etcd_server_proposals_applied_total",
            "gauge",
            "The total number of consensus proposals applied.",
            metrics.applied as f64,
        ),
        (
            "etcd_server_proposals_pending",
            "gauge",
            "The current number of pending proposals to commit.",
            counters.proposals_pending.load(Ordering::Relaxed).max(0) as f64,
        ),
        (
            "etcd_server_proposals_failed_total",
            "counter",
            "The total number of failed proposals seen.",
            load(&counters.proposals_failed),
        ),
        (
            "etcd_server_quota_backend_bytes",
            "gauge",
            "Current backend storage quota size in bytes.",
            inner.quota.bytes() as f64,
        ),
        (
            "etcd_mvcc_db_total_size_in_bytes",
            "gauge",
            "Total size of the underlying database physically allocated in bytes.",
            disk,
        ),
        (
            "etcd_mvcc_db_total_size_in_use_in_bytes",
            "gauge",
            "Total size of the underlying database logically in use in bytes.",
            in_use,
        ),
        (
            "etcd_debugging_mvcc_db_total_size_in_bytes",
            "gauge",
            "Total size of the underlying database physically allocated in bytes.",
            disk,
        ),
        (
            "etcd_debugging_mvcc_current_revision",
            "gauge",
            "The current revision of store.",
            metrics.revision as f64,
        ),
        (
            "etcd_debugging_mvcc_keys_total",
            "gauge",
            "Total number of keys.",
            shared.key_index().len() as f64,
        ),
        (
            "etcd_debugging_mvcc_watcher_total",
            "gauge",
            "Total number of watchers.",
            hub.watchers() as f64,
        ),
        (
            "etcd_debugging_mvcc_slow_watcher_total",
            "gauge",
            "Total number of unsynced slow watchers.",
            hub.unsynced_watchers() as f64,
        ),
        (
            "etcd_server_slow_apply_total",
            "counter",
            "The total number of slow apply requests (likely overloaded from slow disk).",
            shared.slow_applies() as f64,
        ),
        (
            "raftkv_defrag_runs_total",
            "counter",
            "Rewrites of the state database (Defragment calls and automatic ones).",
            load(&shared.defrag_stats().runs),
        ),
    ];
    let mut out = Text::default();
    for (name, kind, help, value) in families {
        out.single(name, kind, help, value);
    }
    out.labeled(
        "etcd_server_id",
        "gauge",
        "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
        &format!("server_id=\"{:x}\"", metrics.id),
        1.0,
    );
    out.labeled(
        "etcd_server_version",
        "gauge",
        "Which version is running. 1 for 'server_version' label with current version.",
        &format!("server_version=\"{}\"", raftkv_net::API_VERSION),
        1.0,
    );
    out.histogram(
        "etcd_disk_wal_fsync_duration_seconds",
        "The latency distributions of fsync called by WAL.",
        &inner.log.sync_stats().durations.snapshot(),
    );
    out.histogram(
        "etcd_disk_backend_commit_duration_seconds",
        "The latency distributions of commit called by backend.",
        &shared.sync_stats().durations.snapshot(),
    );
    render_group_commit(node, &mut out);
    inner.grpc_counters.render(out.raw());
    inner.connections.traffic().render(out.raw());
    crate::metrics::process::render(&mut out);
    out.into_string()
}

/// raftkv's own counters of group commit, syncs and read-index batching.
fn render_group_commit(node: &Node, out: &mut Text) {
    let stats = node.storage_stats();
    let families: [(&str, &str, u64); 9] = [
        (
            "raftkv_proposer_entries_total",
            "Log entries the group-commit proposer proposed.",
            stats.proposals,
        ),
        (
            "raftkv_proposer_requests_total",
            "Client requests those entries carried (per entry: the group-commit batch).",
            stats.proposed_requests,
        ),
        (
            "raftkv_proposer_returns_met_total",
            "Entries the proposer held open until the callers of the entry before were back.",
            stats.proposer_returns_met,
        ),
        (
            "raftkv_proposer_returns_missed_total",
            "Entries it held open until its wait for those callers ran out.",
            stats.proposer_returns_missed,
        ),
        (
            "raftkv_log_appends_total",
            "Log appends (one per batch of entries Raft hands the log).",
            stats.log_appends,
        ),
        (
            "raftkv_log_syncs_total",
            "Log syncs (sled's flush and an fdatasync); appends per sync: how many share one.",
            stats.log_syncs,
        ),
        (
            "raftkv_state_syncs_total",
            "Syncs of the state machine database (in the background, and before a log purge).",
            stats.state_syncs,
        ),
        (
            "raftkv_read_index_rounds_total",
            "Read-index rounds run to confirm leadership for linearizable reads.",
            stats.read_index_rounds,
        ),
        (
            "raftkv_read_index_reads_total",
            "Linearizable reads those rounds served.",
            stats.read_index_reads,
        ),
    ];
    for (name, help, value) in families {
        out.single(name, "counter", help, value as f64);
    }
}
