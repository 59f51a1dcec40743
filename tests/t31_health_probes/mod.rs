//! etcd's HTTP health endpoints on the client port, as probes call them (plain HTTP/1.1
//! GETs): `/health` with its alarm, leader and read checks and their `exclude` /
//! `serializable` options, `/livez` and `/readyz` with their named checks, the answers to
//! other methods and paths; on the client port and on a metrics listener; on a healthy
//! cluster, with a NOSPACE alarm, and on a member
//! left alone; and, where etcd 3.4 is installed, the same requests against etcd.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::time::Duration;

use raftkv_client::{AlarmAction, AlarmType, Client};
use tokio::time::Instant;

/// Deadline of every wait in this test.
const WAIT: Duration = Duration::from_secs(20);

mod probe_http;
use probe_http::get_until;
pub(crate) use probe_http::{http, parse_prometheus};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_livez_and_readyz_answer_as_etcd_does() {
    let dir = tempfile::tempdir().unwrap();
    // Each member also serves the probes on a metrics listener of its own (etcd's
    // `--listen-metrics-urls`), bound here so no other process can take its port.
    let metrics_urls = std::sync::Mutex::new(Vec::new());
    let nodes = support::start_cluster_with(3, dir.path(), |b| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        metrics_urls
            .lock()
            .unwrap()
            .push(format!("http://{}", listener.local_addr().unwrap()));
        b.metrics_listener(listener)
    })
    .await;
    let metrics_urls = metrics_urls.into_inner().unwrap();
    let leader = support::wait_for_agreed_leader(&nodes, WAIT).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.client_urls()[0].clone()).collect();

    // The metrics listener: the same probes, and nothing else (no gRPC routed there).
    for url in &metrics_urls {
        let health = http("GET", url, "/health").await;
        assert_eq!(
            (health.status, health.body.as_str()),
            (200, r#"{"health":"true","reason":""}"#)
        );
        assert_eq!(http("GET", url, "/readyz").await.body, "ok\n");
        assert_eq!(http("GET", url, "/nope").await.status, 404);
    }

    // Healthy: every member, every endpoint (once each says so: a leader counts only
    // while its lease holds, which one stall of a loaded machine can lapse).
    for url in &urls {
        get_until(url, "/health", "a healthy member", |a| a.status == 200).await;
    }
    for url in &urls {
        let health = http("GET", url, "/health").await;
        assert_eq!(
            (health.status, health.body.as_str()),
            (200, r#"{"health":"true","reason":""}"#),
            "{url}"
        );
        assert_eq!(health.header("content-type"), Some("text/plain; charset=utf-8"));
        let live = http("GET", url, "/livez").await;
        assert_eq!((live.status, live.body.as_str()), (200, "ok\n"), "{url}");
        let ready = http("GET", url, "/readyz?verbose").await;
        assert_eq!(
            (ready.status, ready.body.as_str()),
            (
                200,
                "[+]data_corruption ok\n[+]linearizable_read ok\n[+]serializable_read ok\nok\n"
            ),
            "{url}"
        );
        let one = http("GET", url, "/readyz/linearizable_read").await;
        assert_eq!((one.status, one.body.as_str()), (200, "ok\n"));
    }
    let url = &urls[0];
    let post = http("POST", url, "/health").await;
    assert_eq!((post.status, post.body.as_str()), (405, "Method Not Allowed\n"));
    assert_eq!(post.header("allow"), Some("GET"));
    for path in ["/nope", "/readyz/bogus", "/livez/linearizable_read"] {
        let missing = http("GET", url, path).await;
        assert_eq!(
            (missing.status, missing.body.as_str()),
            (404, "404 page not found\n"),
            "{path}"
        );
    }

    // gRPC on the same port is untouched.
    let client = Client::connect(urls.clone()).await.unwrap();
    client.put("k", "v").await.unwrap();

    // /metrics, on the client port and the metrics listener, under etcd's names.
    let mut leaders = 0.0;
    for (url, metrics_url) in urls.iter().zip(&metrics_urls) {
        let scrape = http("GET", url, "/metrics").await;
        assert_eq!(scrape.status, 200, "{scrape:?}");
        assert_eq!(
            scrape.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        let m = parse_prometheus(&scrape.body);
        let get = |k: &str| {
            *m.get(k)
                .unwrap_or_else(|| panic!("{k} missing from {url}/metrics"))
        };
        assert_eq!(get("etcd_server_has_leader"), 1.0);
        leaders += get("etcd_server_is_leader");
        assert_eq!(get("etcd_server_is_learner"), 0.0);
        assert!(get("etcd_server_leader_changes_seen_total") >= 1.0);
        assert!(get("etcd_server_proposals_committed_total") >= get("etcd_server_proposals_applied_total"));
        assert!(get("etcd_server_proposals_applied_total") >= 1.0);
        // Members publish their client URLs through the log as they start; those
        // proposals may still be in flight, or have failed before a leader was known.
        assert!(get("etcd_server_proposals_pending") >= 0.0);
        assert!(get("etcd_server_proposals_failed_total") >= 0.0);
        assert!(get("etcd_mvcc_db_total_size_in_bytes") > 0.0);
        assert!(get("etcd_debugging_mvcc_current_revision") >= 2.0);
        assert!(get("etcd_disk_wal_fsync_duration_seconds_count") >= 1.0);
        assert!(get("etcd_disk_wal_fsync_duration_seconds_sum") > 0.0);
        assert!(m.contains_key("etcd_disk_backend_commit_duration_seconds_bucket{le=\"0.001\"}"));
        assert!(get("process_resident_memory_bytes") > 0.0 && get("process_open_fds") > 0.0);
        assert!(get("etcd_debugging_mvcc_keys_total") >= 1.0);
        assert_eq!(get("etcd_debugging_mvcc_watcher_total"), 0.0);
        // Group commit: at least one request per entry.
        assert!(get("raftkv_proposer_requests_total") >= get("raftkv_proposer_entries_total"));
        assert!(get("raftkv_log_syncs_total") >= 1.0);
        assert!(get("process_start_time_seconds") > 1.7e9);
        let id = nodes.iter().find(|n| url == &n.client_urls()[0]).unwrap().id();
        assert_eq!(get(&format!("etcd_server_id{{server_id=\"{id:x}\"}}")), 1.0);
        let again = parse_prometheus(&http("GET", metrics_url, "/metrics").await.body);
        assert!(again.contains_key("etcd_server_is_leader"));
    }
    assert_eq!(leaders, 1.0, "exactly one member says it leads");

    // The gRPC server counters, as go-grpc-prometheus labels them: a Put answered OK and
    // a Range refused (a future revision: OutOfRange) on one member.
    let url = &urls[1];
    let series = |method: &str, code: &str| {
        format!(
            "grpc_server_handled_total{{grpc_code=\"{code}\",grpc_method=\"{method}\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"}}"
        )
    };
    let before = parse_prometheus(&http("GET", url, "/metrics").await.body);
    let mut kv = raftkv_proto::etcdserverpb::kv_client::KvClient::connect(url.clone())
        .await
        .unwrap();
    kv.put(raftkv_proto::etcdserverpb::PutRequest {
        key: b"counted".to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();
    let refused = kv
        .range(raftkv_proto::etcdserverpb::RangeRequest {
            key: b"counted".to_vec(),
            revision: 1 << 40,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused:?}");
    let after = parse_prometheus(&http("GET", url, "/metrics").await.body);
    let grew = |key: &str| after[key] - before[key];
    assert_eq!(grew(&series("Put", "OK")), 1.0);
    assert_eq!(grew(&series("Range", "OutOfRange")), 1.0);
    assert_eq!(
        grew(
            "grpc_server_started_total{grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"}"
        ),
        1.0
    );

    // NOSPACE raised through the leader (which has applied it when the call returns):
    // /health is false unless the alarm is excluded; /readyz looks only for CORRUPT.
    let leader_url = nodes
        .iter()
        .find(|n| n.id() == leader)
        .map(|n| n.client_urls()[0].clone())
        .unwrap();
    let at_leader = Client::connect([leader_url.clone()]).await.unwrap();
    at_leader
        .alarm(AlarmAction::Activate, leader, AlarmType::NoSpace)
        .await
        .unwrap();
    let alarmed = http("GET", &leader_url, "/health").await;
    assert_eq!(
        (alarmed.status, alarmed.body.as_str()),
        (503, "{\"health\":\"false\",\"reason\":\"ALARM NOSPACE\"}\n")
    );
    let excluded = http("GET", &leader_url, "/health?exclude=NOSPACE").await;
    assert_eq!(excluded.status, 200, "{excluded:?}");
    assert_eq!(http("GET", &leader_url, "/readyz").await.status, 200);
    at_leader
        .alarm(AlarmAction::Deactivate, leader, AlarmType::NoSpace)
        .await
        .unwrap();
    assert_eq!(http("GET", &leader_url, "/health").await.status, 200);

    // A member left alone: no quorum, so the cluster is not healthy from its side, but
    // the member itself is alive and serves local reads.
    let alone = nodes.iter().find(|n| n.id() != leader).unwrap();
    let alone_url = alone.client_urls()[0].clone();
    for node in nodes.iter().filter(|n| n.id() != alone.id()) {
        node.shutdown().await;
    }
    let unhealthy = get_until(&alone_url, "/health", "/health false on a lone member", |a| {
        a.status == 503
    })
    .await;
    assert!(
        unhealthy.body == "{\"health\":\"false\",\"reason\":\"RAFT NO LEADER\"}\n"
            || unhealthy
                .body
                .starts_with("{\"health\":\"false\",\"reason\":\"RANGE ERROR:"),
        "{unhealthy:?}"
    );
    let local = http("GET", &alone_url, "/health?serializable=true").await;
    assert_eq!(
        (local.status, local.body.as_str()),
        (200, r#"{"health":"true","reason":""}"#)
    );
    assert_eq!(http("GET", &alone_url, "/livez").await.status, 200);
    let not_ready = http("GET", &alone_url, "/readyz").await;
    assert_eq!(not_ready.status, 503, "{not_ready:?}");
    assert!(
        not_ready
            .body
            .starts_with("[+]data_corruption ok\n[-]linearizable_read failed: ")
            && not_ready.body.ends_with("[+]serializable_read ok\n\n"),
        "{not_ready:?}"
    );
    let without_quorum_check = http("GET", &alone_url, "/readyz?exclude=linearizable_read").await;
    assert_eq!(without_quorum_check.status, 200, "{without_quorum_check:?}");

    // A write it cannot commit: pending while it waits, failed once its deadline passes.
    let scrape = |url: String| async move { parse_prometheus(&http("GET", &url, "/metrics").await.body) };
    // It forgets its leader once no append came for an election timeout.
    let before = get_until(&alone_url, "/metrics", "has_leader 0 on the lone member", |a| {
        parse_prometheus(&a.body)["etcd_server_has_leader"] == 0.0
    })
    .await;
    let before = parse_prometheus(&before.body);
    let stuck = tokio::spawn({
        let alone = alone.clone();
        async move { alone.put("stuck", "v").await }
    });
    get_until(
        &alone_url,
        "/metrics",
        "the stuck write counted as pending",
        |a| parse_prometheus(&a.body)["etcd_server_proposals_pending"] >= 1.0,
    )
    .await;
    assert!(stuck.await.unwrap().is_err(), "no quorum, no commit");
    let after = scrape(alone_url.clone()).await;
    assert_eq!(after["etcd_server_proposals_pending"], 0.0);
    assert!(
        after["etcd_server_proposals_failed_total"] >= before["etcd_server_proposals_failed_total"] + 1.0,
        "{after:?}"
    );
}

/// The same requests against etcd 3.4, where installed: the answers raftkv copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_answers_health_requests_the_same_way() {
    if !support::etcd::available() {
        eprintln!("etcd not installed: skipped");
        return;
    }
    let _turn = support::ClusterTurn::take();
    let etcd = support::etcd::EtcdCluster::start(1).await;
    let url = &etcd.client_urls[0];
    let health = http("GET", url, "/health").await;
    // etcd 3.4 has no `reason` field (3.5 added it; raftkv answers as 3.5).
    assert_eq!(
        (health.status, health.body.as_str()),
        (200, r#"{"health":"true"}"#)
    );
    assert_eq!(health.header("content-type"), Some("text/plain; charset=utf-8"));
    let post = http("POST", url, "/health").await;
    assert_eq!((post.status, post.body.as_str()), (405, "Method Not Allowed\n"));
    assert_eq!(post.header("allow"), Some("GET"));
    assert_eq!(post.header("x-content-type-options"), Some("nosniff"));
    let missing = http("GET", url, "/nope").await;
    assert_eq!(
        (missing.status, missing.body.as_str()),
        (404, "404 page not found\n")
    );
}

/// A leader cut off from its followers stops counting as a leader once no quorum has
/// acknowledged it for the leader lease (etcd's leader steps down, CheckQuorum): its
/// `/health` says `RAFT NO LEADER` and its metrics say no leader, not a read timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_left_alone_says_there_is_no_leader() {
    let _turn = support::ClusterTurn::take();
    let mut cluster = raftkv::testing::TestCluster::start(3).await.unwrap();
    // A leader counts as one only while a quorum acknowledged it within the leader
    // lease, so on a loaded machine one stalled heartbeat round can make it say "no
    // leader" for a moment (and an early re-election can move it): wait for a leader
    // whose health and metrics both say so, rather than asserting one instant.
    let deadline = Instant::now() + WAIT;
    let (leader_id, leader, url) = loop {
        let leader_id = cluster.wait_for_leader(WAIT).await.unwrap();
        let leader = cluster.node(leader_id).unwrap().clone();
        let url = leader.client_urls()[0].clone();
        let health = http("GET", &url, "/health").await;
        let scrape = parse_prometheus(&http("GET", &url, "/metrics").await.body);
        let flags = (scrape["etcd_server_has_leader"], scrape["etcd_server_is_leader"]);
        if health.status == 200 && flags == (1.0, 1.0) {
            break (leader_id, leader, url);
        }
        assert!(
            Instant::now() < deadline,
            "no leader saying so in /health and /metrics: {health:?}, {flags:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for id in cluster.ids().into_iter().filter(|id| *id != leader_id) {
        // A follower stops at once: the leader's append stream ends with it (it once
        // waited out the servers' drain deadline, and campaigned meanwhile).
        let started = Instant::now();
        cluster.stop(id).await.unwrap();
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(3),
            "a follower's shutdown took {took:?}"
        );
    }
    let alone = get_until(&url, "/health", "RAFT NO LEADER on the lone leader", |a| {
        a.status == 503 && a.body.contains("RAFT NO LEADER")
    })
    .await;
    assert_eq!(
        alone.body,
        "{\"health\":\"false\",\"reason\":\"RAFT NO LEADER\"}\n"
    );
    let scrape = parse_prometheus(&http("GET", &url, "/metrics").await.body);
    assert_eq!(
        (scrape["etcd_server_has_leader"], scrape["etcd_server_is_leader"]),
        (0.0, 0.0)
    );
    let local = http("GET", &url, "/health?serializable=true").await;
    assert_eq!(local.status, 200, "{local:?}");
    drop(leader);
    cluster.shutdown().await;
}
