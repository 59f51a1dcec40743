//! Watches over etcd's gRPC Watch service: client-chosen ids, cancel, progress, fragments,
//! compacted starts, require-leader streams.

use super::*;

/// A raw gRPC watch stream on a node.
pub(crate) struct RawStream {
    pub(crate) requests: mpsc::Sender<pb::WatchRequest>,
    pub(crate) responses: tonic::Streaming<pb::WatchResponse>,
}

impl RawStream {
    pub(crate) async fn open(url: &str) -> Self {
        Self::try_open(url, false).await.unwrap()
    }

    /// Open a stream, with etcd's require-leader metadata if `require_leader`.
    pub(crate) async fn try_open(url: &str, require_leader: bool) -> Result<Self, tonic::Status> {
        let mut client = WatchClient::connect(url.to_string())
            .await
            .unwrap()
            .max_decoding_message_size(64 << 20);
        let (requests, request) = request_stream(require_leader);
        let responses = client.watch(request).await?.into_inner();
        Ok(Self { requests, responses })
    }

    pub(crate) async fn send(&self, request: RequestUnion) {
        self.requests
            .send(pb::WatchRequest {
                request_union: Some(request),
            })
            .await
            .unwrap();
    }

    pub(crate) async fn create(&self, request: WatchRequest) {
        self.send(RequestUnion::CreateRequest(request.into())).await;
    }

    pub(crate) async fn recv(&mut self) -> pb::WatchResponse {
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
pub(crate) async fn open_keep_alive_stream(
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
pub(crate) fn request_stream<T>(
    require_leader: bool,
) -> (mpsc::Sender<T>, tonic::Request<ReceiverStream<T>>) {
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
