//! etcd's Watch, served by every node from its own applied history: the embedded
//! `node.watch`, the gRPC `Watch` stream (raw, through `raftkv-client`, and through
//! `etcdctl watch`), replay from a start revision then live events, prev_kv and filters,
//! client-chosen ids, cancel, progress, fragments, a compacted start revision, a watcher
//! on a follower, a slow watcher that neither slows writes nor loses events, a thousand
//! watchers on one node, and a client watch that resumes elsewhere when its server stops
//! (the leader) without a gap or a repeat.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use raftkv::*;
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::watch_client::WatchClient;
use raftkv_proto::etcdserverpb::watch_request::RequestUnion;
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;

/// Deadline of every wait in this file.
const WAIT: Duration = Duration::from_secs(20);

pub(crate) async fn single_node(dir: &std::path::Path, watch: WatchConfig) -> Node {
    let node = support::builder(&support::slot(1), dir)
        .watch_config(watch)
        .start()
        .await
        .unwrap();
    node.wait_for_leader(WAIT).await.unwrap();
    node
}

pub(crate) async fn next_response(stream: &mut WatchStream) -> WatchResponse {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("a watch response in time")
        .expect("the watch is open")
}

/// The next `count` events of `stream` (checking order and that nothing is canceled).
pub(crate) async fn take_events(stream: &mut WatchStream, count: usize) -> Vec<Event> {
    let mut events: Vec<Event> = Vec::new();
    while events.len() < count {
        let response = next_response(stream).await;
        assert!(!response.canceled, "{response:?}");
        for event in &response.events {
            assert!(event.kv.mod_revision <= response.header.revision);
        }
        events.extend(response.events);
    }
    assert!(
        events
            .windows(2)
            .all(|w| w[0].kv.mod_revision <= w[1].kv.mod_revision),
        "events out of order"
    );
    events
}

fn summary(events: &[Event]) -> Vec<(EventType, String, i64)> {
    events
        .iter()
        .map(|e| {
            (
                e.kind,
                String::from_utf8_lossy(&e.kv.key).into_owned(),
                e.kv.mod_revision,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_watch_replays_history_then_goes_live_with_prev_kv_filters_and_progress() {
    let dir = tempfile::tempdir().unwrap();
    let node = single_node(dir.path(), WatchConfig::default()).await;
    let mut revs = Vec::new();
    for i in 1..=5 {
        revs.push(
            node.put(format!("a{i}"), format!("v{i}"))
                .await
                .unwrap()
                .header
                .revision,
        );
    }
    let deleted = node.delete("a2").await.unwrap().header.revision;
    let rewritten = node.put("a1", "v1b").await.unwrap().header.revision;
    node.put("b", "elsewhere").await.unwrap();

    let mut stream = node
        .watch(
            WatchRequest::prefix("a")
                .with_start_revision(revs[1])
                .with_prev_kv(true),
        )
        .unwrap();
    let replayed = take_events(&mut stream, 6).await;
    let put = EventType::Put;
    assert_eq!(
        summary(&replayed),
        [
            (put, "a2".into(), revs[1]),
            (put, "a3".into(), revs[2]),
            (put, "a4".into(), revs[3]),
            (put, "a5".into(), revs[4]),
            (EventType::Delete, "a2".into(), deleted),
            (put, "a1".into(), rewritten),
        ]
    );
    assert_eq!(replayed[4].prev_kv.as_ref().unwrap().value, b"v2");
    assert_eq!(replayed[5].prev_kv.as_ref().unwrap().value, b"v1");
    assert!(replayed[0].prev_kv.is_none(), "a creation has no previous value");

    // Live from here, with etcd's header.
    let live = node.put("a9", "x").await.unwrap().header.revision;
    let response = next_response(&mut stream).await;
    assert_eq!(summary(&response.events), [(put, "a9".into(), live)]);
    assert_eq!(response.header.member_id, node.id());
    assert_eq!(response.header.cluster_id, node.cluster_id());
    assert!(response.header.raft_term >= 1);

    // Filters.
    let mut puts_only = node
        .watch(WatchRequest::prefix("a").with_no_delete(true))
        .unwrap();
    let mut deletes_only = node.watch(WatchRequest::prefix("a").with_no_put(true)).unwrap();
    let gone = node.delete("a3").await.unwrap().header.revision;
    let back = node.put("a3", "again").await.unwrap().header.revision;
    assert_eq!(
        summary(&take_events(&mut puts_only, 1).await),
        [(put, "a3".into(), back)]
    );
    assert_eq!(
        summary(&take_events(&mut deletes_only, 1).await),
        [(EventType::Delete, "a3".into(), gone)]
    );
    assert_eq!(take_events(&mut stream, 2).await.len(), 2);

    // A progress request answers with the revision everything is delivered up to.
    puts_only.request_progress();
    let progress = next_response(&mut puts_only).await;
    assert!(progress.is_progress_notify(), "{progress:?}");
    assert_eq!(progress.header.revision, back);
    assert_eq!(progress.watch_id, puts_only.watch_id());

    assert_eq!(node.watch_counts().watchers, 3);
    drop((stream, puts_only, deletes_only));
    assert_eq!(node.watch_counts().watchers, 0);
    assert_eq!(
        node.watch(WatchRequest::interval("b", "a")).unwrap_err(),
        Error::Request(RequestError::InvalidRangeEnd)
    );
    node.shutdown().await;
}

mod cluster;
mod etcdctl;
mod grpc;

use grpc::*;
