//! The metrics etcd's own dashboards and alerts read (etcd's `contrib/mixin`: its alert
//! rules and Grafana dashboards) are all in a raftkv scrape, under etcd's names and
//! labels, with `--metrics extensive` as a cluster that wants the slow-request alert runs
//! it; and the per-peer network series (bytes, failures, probe round trips) count real
//! traffic between the members.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use raftkv_client::Client;

use crate::support::process::ProcessCluster;
use crate::t31_health_probes::{http, parse_prometheus};

const DEADLINE: Duration = Duration::from_secs(30);

/// Every metric the etcd-mixin (etcd's `contrib/mixin`, alerts and dashboards) queries.
const MIXIN_METRICS: &[&str] = &[
    // Alerts.
    "etcd_server_has_leader",
    "etcd_server_leader_changes_seen_total",
    "etcd_server_proposals_failed_total",
    "etcd_server_quota_backend_bytes",
    "etcd_mvcc_db_total_size_in_bytes",
    "etcd_mvcc_db_total_size_in_use_in_bytes",
    "etcd_disk_wal_fsync_duration_seconds_bucket",
    "etcd_disk_backend_commit_duration_seconds_bucket",
    "etcd_network_peer_round_trip_time_seconds_bucket",
    "etcd_network_peer_sent_failures_total",
    "grpc_server_handled_total",
    "grpc_server_handling_seconds_bucket",
    // Dashboards.
    "etcd_server_proposals_committed_total",
    "etcd_server_proposals_applied_total",
    "etcd_server_proposals_pending",
    "etcd_network_peer_sent_bytes_total",
    "etcd_network_peer_received_bytes_total",
    "grpc_server_started_total",
    "process_resident_memory_bytes",
    "etcd_network_client_grpc_sent_bytes_total",
    "etcd_network_client_grpc_received_bytes_total",
];

/// The rest of what the operations issue lists, beyond the mixin's.
const ALSO_LISTED: &[&str] = &["etcd_server_slow_apply_total", "etcd_server_is_leader"];

/// The sum of every series of `name` (all label sets).
fn total(series: &BTreeMap<String, f64>, name: &str) -> f64 {
    series
        .iter()
        .filter(|(k, _)| *k == name || k.starts_with(&format!("{name}{{")))
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_etcd_mixin_reads_is_served() {
    let cluster = ProcessCluster::start(3, &["--metrics", "extensive"]);
    cluster.agreed_leader(DEADLINE).await;
    let client = Client::connect(cluster.client_urls()).await.unwrap();
    for i in 0..20 {
        client.put(format!("k{i}"), "v").await.unwrap();
    }
    let deadline = Instant::now() + DEADLINE;
    let mut client_bytes = 0.0;
    for url in cluster.client_urls() {
        // Wait for a probe round to each of the two peers.
        let series = loop {
            let series = parse_prometheus(&http("GET", &url, "/metrics").await.body);
            let probed = series
                .iter()
                .filter(|(k, v)| {
                    k.starts_with("etcd_network_peer_round_trip_time_seconds_count{") && **v > 0.0
                })
                .count();
            if probed == 2 {
                break series;
            }
            assert!(
                Instant::now() < deadline,
                "{url}: no round trip to both peers yet"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        for name in MIXIN_METRICS.iter().chain(ALSO_LISTED) {
            assert!(
                series
                    .keys()
                    .any(|k| k == name || k.starts_with(&format!("{name}{{"))),
                "{name} missing from {url}/metrics"
            );
        }
        // In use: some of the database, at most all of it (etcd's fragmentation alert
        // divides one by the other).
        let (in_use, db) = (
            total(&series, "etcd_mvcc_db_total_size_in_use_in_bytes"),
            total(&series, "etcd_mvcc_db_total_size_in_bytes"),
        );
        assert!(in_use > 0.0 && in_use <= db, "{url}: in use {in_use} of {db}");
        // Peers are labelled by member id in hex, as etcd labels them.
        let to: Vec<&String> = series
            .keys()
            .filter(|k| k.starts_with("etcd_network_peer_sent_bytes_total{"))
            .collect();
        assert_eq!(to.len(), 2, "{to:?}");
        assert!(to.iter().all(|k| k.contains("To=\"")), "{to:?}");
        // Replication and heartbeats went both ways; the writes were timed.
        assert!(
            total(&series, "etcd_network_peer_sent_bytes_total") > 0.0,
            "{url}"
        );
        assert!(
            total(&series, "etcd_network_peer_received_bytes_total") > 0.0,
            "{url}"
        );
        let put_count = "grpc_server_handling_seconds_count{grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"}";
        assert!(series.contains_key(put_count), "{url}: {put_count}");
        // The puts came in and their answers went out through some members' client ports.
        client_bytes += total(&series, "etcd_network_client_grpc_received_bytes_total")
            .min(total(&series, "etcd_network_client_grpc_sent_bytes_total"));
    }
    // 20 puts: at least gRPC's 5-byte frame header per message, each way.
    assert!(client_bytes >= 100.0, "{client_bytes}");
    // Without --metrics extensive, no handling histogram (etcd's basic level).
    drop(client);
    drop(cluster);
    let basic = ProcessCluster::start(1, &[]);
    let url = basic.client_urls()[0].clone();
    let series = parse_prometheus(&http("GET", &url, "/metrics").await.body);
    assert!(
        !series
            .keys()
            .any(|k| k.starts_with("grpc_server_handling_seconds"))
    );
}
