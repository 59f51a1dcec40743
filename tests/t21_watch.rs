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

async fn single_node(dir: &std::path::Path, watch: WatchConfig) -> Node {
    let node = support::builder(&support::slot(1), dir)
        .watch_config(watch)
        .start()
        .await
        .unwrap();
    node.wait_for_leader(WAIT).await.unwrap();
    node
}

async fn next_response(stream: &mut WatchStream) -> WatchResponse {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("a watch response in time")
        .expect("the watch is open")
}

/// The next `count` events of `stream` (checking order and that nothing is canceled).
async fn take_events(stream: &mut WatchStream, count: usize) -> Vec<Event> {
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

/// A raw gRPC watch stream on a node.
struct RawStream {
    requests: mpsc::Sender<pb::WatchRequest>,
    responses: tonic::Streaming<pb::WatchResponse>,
}

impl RawStream {
    async fn open(url: &str) -> Self {
        Self::try_open(url, false).await.unwrap()
    }

    /// Open a stream, with etcd's require-leader metadata if `require_leader`.
    async fn try_open(url: &str, require_leader: bool) -> Result<Self, tonic::Status> {
        let mut client = WatchClient::connect(url.to_string())
            .await
            .unwrap()
            .max_decoding_message_size(64 << 20);
        let (requests, request) = request_stream(require_leader);
        let responses = client.watch(request).await?.into_inner();
        Ok(Self { requests, responses })
    }

    async fn send(&self, request: RequestUnion) {
        self.requests
            .send(pb::WatchRequest {
                request_union: Some(request),
            })
            .await
            .unwrap();
    }

    async fn create(&self, request: WatchRequest) {
        self.send(RequestUnion::CreateRequest(request.into())).await;
    }

    async fn recv(&mut self) -> pb::WatchResponse {
        tokio::time::timeout(WAIT, self.responses.message())
            .await
            .expect("a response in time")
            .unwrap()
            .expect("the stream is open")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_watch_creates_with_client_ids_cancels_and_answers_progress() {
    let dir = tempfile::tempdir().unwrap();
    let node = single_node(dir.path(), WatchConfig::default()).await;
    let before = node.put("k", "v0").await.unwrap().header.revision;
    let mut stream = RawStream::open(&node.client_urls()[0]).await;

    stream
        .create(WatchRequest::key("k").with_watch_id(5).with_prev_kv(true))
        .await;
    let created = stream.recv().await;
    assert!(created.created && !created.canceled);
    assert_eq!(created.watch_id, 5);
    let header = created.header.unwrap();
    assert_eq!((header.revision, header.member_id), (before, node.id()));
    stream.create(WatchRequest::prefix("k")).await;
    let auto = stream.recv().await;
    assert!(auto.created && auto.watch_id == 0, "{auto:?}");
    stream.create(WatchRequest::key("k").with_watch_id(5)).await;
    let duplicate = stream.recv().await;
    assert!(duplicate.created && duplicate.canceled && duplicate.watch_id == -1);
    assert_eq!(
        duplicate.cancel_reason,
        "mvcc: duplicate watch ID provided on the WatchStream"
    );
    stream.create(WatchRequest::interval("b", "a")).await;
    let empty = stream.recv().await;
    assert!(empty.canceled && empty.cancel_reason == "mvcc: watcher range is empty");

    let first = node.put("k", "v1").await.unwrap().header.revision;
    let mut got = BTreeMap::new();
    for _ in 0..2 {
        let r = stream.recv().await;
        got.insert(r.watch_id, r);
    }
    let with_prev = &got[&5].events[0];
    assert_eq!(with_prev.kv.as_ref().unwrap().mod_revision, first);
    assert_eq!(with_prev.prev_kv.as_ref().unwrap().value, b"v0");
    assert!(got[&0].events[0].prev_kv.is_none());

    stream
        .send(RequestUnion::ProgressRequest(pb::WatchProgressRequest {}))
        .await;
    let progress = stream.recv().await;
    assert_eq!(progress.watch_id, -1);
    assert!(progress.events.is_empty() && !progress.canceled && !progress.created);
    assert_eq!(progress.header.unwrap().revision, first);

    stream
        .send(RequestUnion::CancelRequest(pb::WatchCancelRequest {
            watch_id: 5,
        }))
        .await;
    let canceled = stream.recv().await;
    assert!(canceled.canceled && canceled.watch_id == 5);
    // An unknown id is ignored, as etcd does: the next response is the next event.
    stream
        .send(RequestUnion::CancelRequest(pb::WatchCancelRequest {
            watch_id: 99,
        }))
        .await;
    let second = node.put("k", "v2").await.unwrap().header.revision;
    let r = stream.recv().await;
    assert_eq!(r.watch_id, 0);
    assert_eq!(r.events[0].kv.as_ref().unwrap().mod_revision, second);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_watch_fragments_a_huge_revision_only_for_watchers_that_ask() {
    let dir = tempfile::tempdir().unwrap();
    let node = single_node(dir.path(), WatchConfig::default()).await;
    for i in 0..3 {
        node.put(format!("big{i}"), vec![b'x'; 1 << 20]).await.unwrap();
    }
    let mut stream = RawStream::open(&node.client_urls()[0]).await;
    let mut fragmented = WatchRequest::prefix("big").with_prev_kv(true).with_watch_id(1);
    fragmented.fragment = true;
    stream.create(fragmented).await;
    stream
        .create(WatchRequest::prefix("big").with_prev_kv(true).with_watch_id(2))
        .await;
    assert!(stream.recv().await.created && stream.recv().await.created);
    // One revision, three events of ~1 MiB each (their previous values): over etcd's
    // 1.5 MiB + 512 KiB limit.
    let revision = node
        .delete_range(DeleteRangeRequest::prefix("big"))
        .await
        .unwrap()
        .header
        .revision;
    let mut parts: BTreeMap<i64, Vec<pb::WatchResponse>> = BTreeMap::new();
    while parts.values().flatten().map(|r| r.events.len()).sum::<usize>() < 6 {
        let r = stream.recv().await;
        parts.entry(r.watch_id).or_default().push(r);
    }
    let split = &parts[&1];
    assert!(split.len() >= 2, "{} parts", split.len());
    let flags: Vec<bool> = split.iter().map(|r| r.fragment).collect();
    assert!(flags[..flags.len() - 1].iter().all(|f| *f) && !flags[flags.len() - 1]);
    for r in split {
        assert!(
            r.events
                .iter()
                .all(|e| e.kv.as_ref().unwrap().mod_revision == revision)
        );
    }
    assert_eq!(parts[&2].len(), 1, "not asked: one response");
    assert!(!parts[&2][0].fragment);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_start_revision_is_answered_with_compact_revision_and_canceled() {
    let dir = tempfile::tempdir().unwrap();
    let node = single_node(dir.path(), WatchConfig::default()).await;
    let mut revs = Vec::new();
    for i in 0..10 {
        revs.push(node.put("k", format!("{i}")).await.unwrap().header.revision);
    }
    let compacted = revs[4];
    node.compact(compacted).await.unwrap();

    let mut stream = node
        .watch(WatchRequest::key("k").with_start_revision(revs[0]))
        .unwrap();
    let canceled = next_response(&mut stream).await;
    assert!(canceled.canceled && canceled.events.is_empty(), "{canceled:?}");
    // As on etcd: the compact revision is the oldest a watch can start at.
    assert_eq!(canceled.compact_revision, compacted);
    assert!(stream.next().await.is_none(), "the stream ends after canceled");

    let client = raftkv_client::Client::connect(node.client_urls().to_vec())
        .await
        .unwrap();
    let mut remote = client
        .watch(WatchRequest::key("k").with_start_revision(revs[1]))
        .await
        .unwrap();
    let canceled = tokio::time::timeout(WAIT, remote.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(canceled.canceled);
    assert_eq!(canceled.compact_revision, compacted);
    assert!(tokio::time::timeout(WAIT, remote.next()).await.unwrap().is_none());

    let mut from_oldest = node
        .watch(WatchRequest::key("k").with_start_revision(compacted))
        .unwrap();
    let replayed = take_events(&mut from_oldest, 6).await;
    let seen: Vec<i64> = replayed.iter().map(|e| e.kv.mod_revision).collect();
    assert_eq!(seen, revs[4..]);

    // The compact revision's own event stays replayable once compaction has physically
    // run, a delete too (its tombstone is kept until the next compaction).
    let deleted = node.delete("k").await.unwrap().header.revision;
    node.put("k", "again").await.unwrap();
    node.compact_with(CompactionRequest {
        revision: deleted,
        physical: true,
    })
    .await
    .unwrap();
    let mut from_delete = node
        .watch(WatchRequest::key("k").with_start_revision(deleted))
        .unwrap();
    let replayed = take_events(&mut from_delete, 2).await;
    assert_eq!(
        (replayed[0].kind, replayed[0].kv.mod_revision, replayed[1].kind),
        (EventType::Delete, deleted, EventType::Put)
    );
    node.shutdown().await;
}

/// A LeaseKeepAlive stream to `url`, with etcd's require-leader metadata if
/// `require_leader`: its request sender and its responses.
async fn open_keep_alive_stream(
    url: &str,
    require_leader: bool,
) -> Result<
    (
        mpsc::Sender<pb::LeaseKeepAliveRequest>,
        tonic::Streaming<pb::LeaseKeepAliveResponse>,
    ),
    tonic::Status,
> {
    let mut client = pb::lease_client::LeaseClient::connect(url.to_string())
        .await
        .unwrap();
    let (requests, request) = request_stream(require_leader);
    let responses = client.lease_keep_alive(request).await?.into_inner();
    Ok((requests, responses))
}

/// The request side of a client stream, with etcd's require-leader metadata if
/// `require_leader`: its sender and the request to open the call with.
fn request_stream<T>(require_leader: bool) -> (mpsc::Sender<T>, tonic::Request<ReceiverStream<T>>) {
    let (requests, rx) = mpsc::channel(16);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if require_leader {
        request
            .metadata_mut()
            .insert(raftkv_net::REQUIRE_LEADER_KEY, "true".parse().unwrap());
    }
    (requests, request)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_leader_streams_are_refused_and_ended_while_the_member_has_no_leader() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = support::start_cluster(3, dir.path()).await;
    let leader_id = support::wait_for_agreed_leader(&nodes, WAIT).await;
    let survivor = nodes.iter().find(|n| n.id() != leader_id).unwrap();
    let url = survivor.client_urls()[0].clone();
    let mut required = RawStream::try_open(&url, true).await.unwrap();
    required.create(WatchRequest::prefix("r/")).await;
    assert!(required.recv().await.created);
    let mut plain = RawStream::open(&url).await;
    plain.create(WatchRequest::prefix("r/")).await;
    assert!(plain.recv().await.created);
    // A require-leader keep-alive stream, idle (no renewals to fail on).
    let (_keep_alives, mut kept) = open_keep_alive_stream(&url, true).await.unwrap();

    // The survivor alone: no quorum, so no leader once its election timer fires.
    for node in nodes.iter().filter(|n| n.id() != survivor.id()) {
        node.shutdown().await;
    }
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(60), required.responses.message())
        .await
        .expect("the require-leader stream ends in time");
    let status = ended.expect_err("ended with a status");
    assert_eq!(
        (status.code(), status.message()),
        (tonic::Code::Unavailable, "etcdserver: no leader")
    );
    assert!(survivor.metrics().leader.is_none());
    println!(
        "require-leader stream ended {:?} after the quorum went",
        started.elapsed()
    );
    let ended = tokio::time::timeout(Duration::from_secs(60), kept.message())
        .await
        .expect("the require-leader keep-alive stream ends in time");
    let status = ended.expect_err("ended with a status");
    assert_eq!(
        (status.code(), status.message()),
        (tonic::Code::Unavailable, "etcdserver: no leader")
    );
    // New ones are refused at once; a stream without the option is still served.
    let refused = RawStream::try_open(&url, true).await.err().expect("refused");
    assert_eq!(refused.message(), "etcdserver: no leader");
    let refused = open_keep_alive_stream(&url, true).await.expect_err("refused");
    assert_eq!(refused.message(), "etcdserver: no leader");
    plain
        .send(RequestUnion::ProgressRequest(pb::WatchProgressRequest {}))
        .await;
    assert_eq!(plain.recv().await.watch_id, INVALID_WATCH_ID);
    survivor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_on_a_follower_sees_the_writes_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = support::start_cluster(3, dir.path()).await;
    let leader_id = support::wait_for_agreed_leader(&nodes, WAIT).await;
    let leader = nodes.iter().find(|n| n.id() == leader_id).unwrap();
    let follower = nodes.iter().find(|n| n.id() != leader_id).unwrap();
    let mut embedded = follower.watch(WatchRequest::prefix("f/")).unwrap();
    let client = raftkv_client::Client::connect(follower.client_urls().to_vec())
        .await
        .unwrap();
    let mut remote = client.watch(WatchRequest::prefix("f/")).await.unwrap();
    let mut written = Vec::new();
    for i in 0..10 {
        let rev = leader.put(format!("f/{i}"), "v").await.unwrap().header.revision;
        written.push((EventType::Put, format!("f/{i}"), rev));
    }
    assert_eq!(summary(&take_events(&mut embedded, 10).await), written);
    let mut seen = Vec::new();
    while seen.len() < 10 {
        let r = tokio::time::timeout(WAIT, remote.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(r.header.member_id, follower.id(), "served by the follower");
        seen.extend(r.events);
    }
    assert_eq!(summary(&seen), written);
    for node in &nodes {
        node.shutdown().await;
    }
}

/// Time `count` puts under `prefix`, from 8 concurrent writers.
async fn timed_puts(node: &Node, prefix: &str, count: usize) -> (Duration, Vec<i64>) {
    let started = Instant::now();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let node = node.clone();
            let prefix = prefix.to_string();
            tokio::spawn(async move {
                let mut revs = Vec::new();
                for i in (w..count).step_by(8) {
                    revs.push(
                        node.put(format!("{prefix}{i:05}"), "v")
                            .await
                            .unwrap()
                            .header
                            .revision,
                    );
                }
                revs
            })
        })
        .collect();
    let mut revs = Vec::new();
    for w in writers {
        revs.extend(tokio::time::timeout(WAIT * 3, w).await.unwrap().unwrap());
    }
    revs.sort_unstable();
    (started.elapsed(), revs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_watcher_does_not_slow_writes_and_is_caught_up_from_history_or_canceled() {
    let dir = tempfile::tempdir().unwrap();
    let config = WatchConfig {
        buffered_events: 64,
        buffered_bytes: 1 << 20,
        ..WatchConfig::default()
    };
    let node = single_node(dir.path(), config).await;
    let (baseline, _) = timed_puts(&node, "warm/", 1000).await;
    // Two watchers nobody reads while the writes run.
    let mut slow = node.watch(WatchRequest::prefix("s/")).unwrap();
    let mut doomed = node.watch(WatchRequest::prefix("s/")).unwrap();
    let (with_slow, revs) = timed_puts(&node, "s/", 1000).await;
    println!("1000 puts: {baseline:?} without watchers, {with_slow:?} with two stuck watchers");
    assert!(
        with_slow < baseline * 3 + Duration::from_secs(2),
        "stuck watchers slowed writes: {with_slow:?} vs {baseline:?}"
    );
    assert_eq!(
        node.watch_counts().unsynced,
        2,
        "both fell behind and wait for replay"
    );

    // Caught up from the history: every revision once, in order.
    let caught_up = take_events(&mut slow, revs.len()).await;
    let seen: Vec<i64> = caught_up.iter().map(|e| e.kv.mod_revision).collect();
    assert_eq!(seen, revs);
    let live = node.put("s/live", "v").await.unwrap().header.revision;
    assert_eq!(take_events(&mut slow, 1).await[0].kv.mod_revision, live);
    assert_eq!(node.watch_counts().unsynced, 1, "the slow one is synced again");

    // Compaction overtakes the other one: canceled with the reason.
    node.compact(live).await.unwrap();
    let mut last = 0;
    let canceled = loop {
        let r = next_response(&mut doomed).await;
        if r.canceled {
            break r;
        }
        for e in &r.events {
            assert!(e.kv.mod_revision > last);
            last = e.kv.mod_revision;
        }
    };
    assert_eq!(canceled.compact_revision, live);
    assert_eq!(
        canceled.cancel_reason,
        "mvcc: required revision has been compacted"
    );
    assert!(last < revs[revs.len() - 1], "it was behind");
    assert_eq!(node.watch_counts().watchers, 1);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_watchers_on_one_node_each_get_their_own_events() {
    let dir = tempfile::tempdir().unwrap();
    let node = single_node(dir.path(), WatchConfig::default()).await;
    let (baseline, _) = timed_puts(&node, "warm/", 500).await;
    let mut embedded: Vec<WatchStream> = (0..1000)
        .map(|i| node.watch(WatchRequest::key(format!("w/{i:04}"))).unwrap())
        .collect();
    // And a thousand more on one gRPC stream, as an etcd client multiplexes them.
    let mut stream = RawStream::open(&node.client_urls()[0]).await;
    for i in 0..1000 {
        stream
            .create(WatchRequest::key(format!("g/{i:04}")).with_watch_id(i + 1))
            .await;
    }
    for _ in 0..1000 {
        assert!(stream.recv().await.created);
    }
    assert_eq!(node.watch_counts().watchers, 2000);

    // Unwatched writes at full speed meanwhile.
    let (unwatched, _) = timed_puts(&node, "other/", 500).await;
    println!("500 puts: {baseline:?} without watchers, {unwatched:?} with 2000 watchers on other keys");
    let mut revision_of = BTreeMap::new();
    for prefix in ["w", "g"] {
        for chunk in 0..10 {
            let success = (chunk * 100..chunk * 100 + 100)
                .map(|i| RequestOp::Put(PutRequest::new(format!("{prefix}/{i:04}"), format!("{i}"))))
                .collect();
            let txn = node
                .txn(TxnRequest {
                    success,
                    ..TxnRequest::default()
                })
                .await
                .unwrap();
            revision_of.insert((prefix, chunk), txn.header.revision);
        }
    }
    for (i, watcher) in embedded.iter_mut().enumerate() {
        let events = take_events(watcher, 1).await;
        assert_eq!(events[0].kv.key, format!("w/{i:04}").into_bytes());
        assert_eq!(events[0].kv.mod_revision, revision_of[&("w", i / 100)]);
    }
    let mut got = BTreeMap::new();
    while got.len() < 1000 {
        let r = stream.recv().await;
        assert_eq!(r.events.len(), 1, "{r:?}");
        assert!(
            got.insert(r.watch_id, r.events[0].clone()).is_none(),
            "one event each"
        );
    }
    for (id, event) in got {
        let i = (id - 1) as usize;
        let kv = event.kv.unwrap();
        assert_eq!(kv.key, format!("g/{i:04}").into_bytes());
        assert_eq!(kv.mod_revision, revision_of[&("g", i / 100)]);
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_watch_resumes_on_another_node_when_the_leader_stops_without_gap_or_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = support::start_cluster(3, dir.path()).await;
    let leader_id = support::wait_for_agreed_leader(&nodes, WAIT).await;
    let leader = nodes.iter().find(|n| n.id() == leader_id).unwrap().clone();
    let survivors: Vec<Node> = nodes.iter().filter(|n| n.id() != leader_id).cloned().collect();
    // The leader first: the watch starts there.
    let mut urls = leader.client_urls().to_vec();
    urls.extend(survivors.iter().flat_map(|n| n.client_urls().to_vec()));
    let client = raftkv_client::Client::connect(urls).await.unwrap();
    let mut watcher = client.watch(WatchRequest::prefix("r/")).await.unwrap();
    let start = watcher.created_revision() + 1;

    let writer = survivors[0].clone();
    let writes = tokio::spawn(async move {
        for i in 0..60 {
            // Writes during the election may fail or have unknown outcomes: the check
            // below compares with the history, not with this list.
            let _ = tokio::time::timeout(WAIT, writer.put(format!("r/{i:02}"), format!("{i}"))).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let mut seen: Vec<Event> = Vec::new();
    while seen.len() < 20 {
        let r = tokio::time::timeout(WAIT, watcher.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.extend(r.events);
    }
    leader.shutdown().await;
    writes.await.unwrap();
    let last = survivors[0]
        .range(RangeRequest::prefix("r/"))
        .await
        .unwrap()
        .kvs
        .iter()
        .map(|kv| kv.mod_revision)
        .max()
        .unwrap();
    while seen.last().map(|e| e.kv.mod_revision) != Some(last) {
        let r = tokio::time::timeout(WAIT, watcher.next())
            .await
            .expect("the watch resumed")
            .unwrap()
            .unwrap();
        assert!(!r.canceled, "{r:?}");
        if !r.events.is_empty() {
            assert_ne!(
                r.header.member_id, leader_id,
                "served by a survivor after the stop"
            );
        }
        seen.extend(r.events);
    }
    // Exactly the history: replayed from a survivor, event for event.
    let mut replay = survivors[1]
        .watch(WatchRequest::prefix("r/").with_start_revision(start))
        .unwrap();
    let history = take_events(&mut replay, seen.len()).await;
    assert_eq!(summary(&seen), summary(&history));
    let revisions: Vec<i64> = seen.iter().map(|e| e.kv.mod_revision).collect();
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "a repeat: {revisions:?}"
    );
    for node in &survivors {
        node.shutdown().await;
    }
}

/// The events of the next response of a client watcher (which must not be canceled).
async fn client_events(watcher: &mut raftkv_client::Watcher) -> Vec<Event> {
    let r = tokio::time::timeout(WAIT, watcher.next())
        .await
        .expect("the watch went on")
        .unwrap()
        .unwrap();
    assert!(!r.canceled, "{r:?}");
    r.events
}

/// With real processes: a watcher started at revision R after N
/// writes gets exactly the events R..N, then the live ones, in order, across a leader
/// change (the leader it watches on is SIGKILLed mid-stream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_past_revision_survives_kill_9_of_the_leader_in_a_process_cluster() {
    use support::process::ProcessCluster;
    let mut cluster = ProcessCluster::start(3, &[]);
    let leader = cluster.agreed_leader(WAIT).await;
    // The leader first, so the watch stream is on the node that dies.
    let mut urls = vec![cluster.url(leader)];
    urls.extend(
        cluster
            .client_urls()
            .into_iter()
            .filter(|u| *u != cluster.url(leader)),
    );
    let client = raftkv_client::Client::connect(urls).await.unwrap();
    let mut revs = Vec::new();
    for i in 0..20 {
        revs.push(
            client
                .put(format!("w/{i:03}"), "before")
                .await
                .unwrap()
                .header
                .revision,
        );
    }
    let start = revs[5];
    let mut watcher = client
        .watch(WatchRequest::prefix("w/").with_start_revision(start))
        .await
        .unwrap();
    let mut seen: Vec<Event> = Vec::new();
    while seen.len() < revs.len() - 5 {
        seen.extend(client_events(&mut watcher).await);
    }
    let writer = client.clone();
    let writes = tokio::spawn(async move {
        for i in 20..80 {
            // During the election some writes fail or end unknown: the check is against
            // the history, not this list.
            let _ = writer.put(format!("w/{i:03}"), "after").await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    cluster.kill(leader);
    writes.await.unwrap();
    let last = client
        .range(RangeRequest::prefix("w/"))
        .await
        .unwrap()
        .kvs
        .iter()
        .map(|kv| kv.mod_revision)
        .max()
        .unwrap();
    while seen.last().map(|e| e.kv.mod_revision) != Some(last) {
        seen.extend(client_events(&mut watcher).await);
    }
    let revisions: Vec<i64> = seen.iter().map(|e| e.kv.mod_revision).collect();
    assert_eq!(revisions, (start..=last).collect::<Vec<_>>(), "a gap or a repeat");
    assert!(seen[..15].iter().all(|e| e.kv.value == b"before"));
    assert!(seen[15..].iter().all(|e| e.kv.value == b"after"));
}

fn etcdctl_available() -> bool {
    Command::new("etcdctl")
        .arg("version")
        .env("ETCDCTL_API", "3")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// An `etcdctl watch` process; its output lines arrive on channels.
struct Etcdctl {
    child: Child,
    stdout: std_mpsc::Receiver<String>,
    stderr: std_mpsc::Receiver<String>,
}

impl Etcdctl {
    fn spawn(endpoint: &str, args: &[&str]) -> Self {
        let mut child = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoint.trim_start_matches("http://")))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run etcdctl");
        let lines = |pipe: Box<dyn std::io::Read + Send>| {
            let (tx, rx) = std_mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
            rx
        };
        let stdout = lines(Box::new(child.stdout.take().unwrap()));
        let stderr = lines(Box::new(child.stderr.take().unwrap()));
        Self {
            child,
            stdout,
            stderr,
        }
    }

    fn lines(&self, count: usize) -> Vec<String> {
        (0..count)
            .map(|_| self.stdout.recv_timeout(WAIT).expect("etcdctl printed in time"))
            .collect()
    }

    fn input(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Etcdctl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_watch_prefix_rev_prev_kv_interactive_progress_and_compaction() {
    if !etcdctl_available() {
        assert!(
            std::env::var("CI").is_err(),
            "etcdctl is required under CI=true (apt-get install etcd-client)"
        );
        eprintln!("SKIPPED: etcdctl not installed (apt-get install etcd-client)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nodes = support::start_cluster(3, dir.path()).await;
    let leader_id = support::wait_for_agreed_leader(&nodes, WAIT).await;
    // Writes through the leader; etcdctl watches on a follower.
    let node = nodes.iter().find(|n| n.id() == leader_id).unwrap();
    let follower = nodes.iter().find(|n| n.id() != leader_id).unwrap();
    let endpoint = follower.client_urls()[0].clone();
    let first = node.put("foo1", "a").await.unwrap().header.revision;
    node.put("foo2", "b").await.unwrap();

    let watch = Etcdctl::spawn(
        &endpoint,
        &[
            "watch",
            "--prefix",
            "foo",
            "--rev",
            &first.to_string(),
            "--prev-kv",
        ],
    );
    assert_eq!(watch.lines(6), ["PUT", "foo1", "a", "PUT", "foo2", "b"]);
    node.put("foo1", "c").await.unwrap();
    assert_eq!(
        watch.lines(5),
        ["PUT", "foo1", "a", "foo1", "c"],
        "previous, then new"
    );
    node.delete("foo2").await.unwrap();
    assert_eq!(watch.lines(5), ["DELETE", "foo2", "b", "foo2", ""]);
    drop(watch);

    // Interactive: a watch, then a progress request.
    support::wait_until("the first etcdctl's watcher to go", WAIT, || {
        follower.watch_counts().watchers == 0
    })
    .await;
    let mut interactive = Etcdctl::spawn(&endpoint, &["watch", "-i"]);
    interactive.input("watch foo1");
    support::wait_until("etcdctl's watcher", WAIT, || {
        follower.watch_counts().watchers == 1
    })
    .await;
    let current = node.put("foo1", "d").await.unwrap().header.revision;
    assert_eq!(interactive.lines(3), ["PUT", "foo1", "d"]);
    interactive.input("progress");
    assert_eq!(interactive.lines(1), [format!("progress notify: {current}")]);
    drop(interactive);

    // A compacted start revision: etcd's message, and etcdctl ends.
    node.compact(current).await.unwrap();
    support::wait_until("the follower applied the compaction", WAIT, || {
        follower.applied().get() >= node.applied().get()
    })
    .await;
    let mut compacted = Etcdctl::spawn(&endpoint, &["watch", "foo1", "--rev", &first.to_string()]);
    let message = compacted.stderr.recv_timeout(WAIT).expect("etcdctl reported");
    assert_eq!(
        message,
        "watch was canceled (etcdserver: mvcc: required revision has been compacted)"
    );
    let deadline = Instant::now() + WAIT;
    while compacted.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "etcdctl did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    for node in &nodes {
        node.shutdown().await;
    }
}
