//! `--watchers` against an in-process mock of etcd's KV and Watch services: watchers
//! are spread over streams of at most 100, created with their own ids on the keys the
//! mode says, drained (the `written` watchers count the load's events, the `idle` ones
//! none), and refused watchers or a refused stream are counted as watch errors, never
//! failing the run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raftkv_bench::{LoadConfig, WatchMode, Workload, workload};
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::kv_server::{Kv, KvServer};
use raftkv_proto::etcdserverpb::watch_request::RequestUnion;
use raftkv_proto::etcdserverpb::watch_server::{Watch, WatchServer};
use raftkv_proto::mvccpb;
use tokio::sync::{broadcast, mpsc};
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// A KV whose puts are published to the Watch streams, and a Watch that answers creates
/// and sends one response per put to every watcher whose range holds the key.
#[derive(Clone)]
struct Mock {
    puts: broadcast::Sender<Vec<u8>>,
    /// Watch streams opened.
    streams: Arc<AtomicU64>,
    /// Every create request, in arrival order.
    creates: Arc<Mutex<Vec<pb::WatchCreateRequest>>>,
    /// Creates whose watch id is a multiple of this are refused.
    refuse_every: Option<i64>,
    /// Watch calls are refused.
    refuse_streams: bool,
}

impl Mock {
    fn new() -> Self {
        Mock {
            puts: broadcast::channel(1 << 16).0,
            streams: Arc::default(),
            creates: Arc::default(),
            refuse_every: None,
            refuse_streams: false,
        }
    }
}

fn header() -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        cluster_id: 1,
        member_id: 1,
        revision: 1,
        raft_term: 1,
    })
}

#[tonic::async_trait]
impl Kv for Mock {
    async fn range(&self, _: Request<pb::RangeRequest>) -> Result<Response<pb::RangeResponse>, Status> {
        Err(Status::unimplemented("not used here"))
    }

    async fn put(&self, request: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        // No stream subscribed yet is not an error.
        let _ = self.puts.send(request.into_inner().key);
        Ok(Response::new(pb::PutResponse {
            header: header(),
            prev_kv: None,
        }))
    }

    async fn delete_range(
        &self,
        _: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        Err(Status::unimplemented("not used here"))
    }

    async fn txn(&self, _: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        Err(Status::unimplemented("not used here"))
    }

    async fn compact(
        &self,
        _: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        Err(Status::unimplemented("not used here"))
    }
}

fn in_range(key: &[u8], create: &pb::WatchCreateRequest) -> bool {
    if create.range_end.is_empty() {
        return key == create.key.as_slice();
    }
    key >= create.key.as_slice() && (create.range_end == [0] || key < create.range_end.as_slice())
}

#[tonic::async_trait]
impl Watch for Mock {
    type WatchStream = ReceiverStream<Result<pb::WatchResponse, Status>>;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        if self.refuse_streams {
            return Err(Status::unavailable("no watches today"));
        }
        self.streams.fetch_add(1, Ordering::Relaxed);
        let mut inbound = request.into_inner();
        let mut puts = self.puts.subscribe();
        let (tx, rx) = mpsc::channel(64);
        let mock = self.clone();
        tokio::spawn(async move {
            let mut watchers: Vec<pb::WatchCreateRequest> = Vec::new();
            let mut inbound_open = true;
            loop {
                let response = tokio::select! {
                    message = inbound.message(), if inbound_open => match message {
                        Ok(Some(pb::WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) })) => {
                            mock.creates.lock().unwrap().push(create.clone());
                            // At most 100 watchers per stream, as the bench promises.
                            assert!(watchers.len() < 100, "more than 100 watchers on one stream");
                            let refused = mock.refuse_every.is_some_and(|n| create.watch_id % n == 0);
                            let response = pb::WatchResponse {
                                header: header(),
                                watch_id: if refused { -1 } else { create.watch_id },
                                created: true,
                                canceled: refused,
                                cancel_reason: if refused { "refused by the mock".into() } else { String::new() },
                                ..Default::default()
                            };
                            if !refused {
                                watchers.push(create);
                            }
                            vec![response]
                        }
                        Ok(Some(_)) => vec![],
                        Ok(None) => { inbound_open = false; vec![] }
                        Err(_) => return,
                    },
                    key = puts.recv() => match key {
                        Ok(key) => watchers
                            .iter()
                            .filter(|w| in_range(&key, w))
                            .map(|w| pb::WatchResponse {
                                header: header(),
                                watch_id: w.watch_id,
                                events: vec![mvccpb::Event {
                                    r#type: mvccpb::event::EventType::Put as i32,
                                    kv: Some(mvccpb::KeyValue { key: key.clone(), ..Default::default() }),
                                    prev_kv: None,
                                }],
                                ..Default::default()
                            })
                            .collect(),
                        Err(broadcast::error::RecvError::Lagged(_)) => vec![],
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                };
                for response in response {
                    if tx.send(Ok(response)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

async fn serve(mock: Mock) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(KvServer::new(mock.clone()))
            .add_service(WatchServer::new(mock))
            .serve_with_incoming(incoming),
    );
    format!("http://{address}")
}

fn config(endpoint: String, watchers: usize, mode: WatchMode) -> LoadConfig {
    let mut config = LoadConfig::new(Workload::Put, vec![endpoint]);
    config.clients = 4;
    config.conns = 2;
    config.duration = Duration::from_secs(10);
    config.total = Some(200);
    config.key_space = 100;
    config.value_size = 16;
    config.watchers = watchers;
    config.watch_mode = mode;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_watchers_are_spread_and_receive_nothing() {
    let mock = Mock::new();
    let endpoint = serve(mock.clone()).await;
    let result = workload::run(&config(endpoint.clone(), 250, WatchMode::Idle))
        .await
        .unwrap();
    assert_eq!((result.ops, result.errors), (200, 0));
    let watch = result.watch.expect("the run had watchers");
    assert_eq!((watch.watchers, watch.created, watch.errors), (250, 250, 0));
    assert_eq!((watch.events, watch.streams), (0, 3));
    assert_eq!(watch.endpoint, endpoint);
    assert!(watch.error_samples.is_empty());
    assert_eq!(mock.streams.load(Ordering::Relaxed), 3);
    let creates = mock.creates.lock().unwrap().clone();
    let mut ids: Vec<i64> = creates.iter().map(|c| c.watch_id).collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=250).collect::<Vec<i64>>());
    for create in &creates {
        let index = create.watch_id - 1;
        assert_eq!(create.key, format!("bench/idle/{index}").into_bytes());
        assert!(create.range_end.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn written_watchers_receive_the_load_events() {
    let mock = Mock::new();
    let endpoint = serve(mock.clone()).await;
    let mut config = config(endpoint, 20, WatchMode::Written);
    // Bounded by time, not by --total: events have the whole run to arrive.
    (config.total, config.duration) = (None, Duration::from_millis(500));
    let result = workload::run(&config).await.unwrap();
    assert!(result.ops > 0 && result.errors == 0, "{result:?}");
    let report = raftkv_bench::Report::new(&result);
    let watch = result.watch.expect("the run had watchers");
    assert_eq!((watch.created, watch.errors, watch.streams), (20, 0, 1));
    // Every put reaches every watcher, those in flight at the deadline included (they
    // reach the server but are not counted); the last ones may still be on the way.
    let most = 20 * (result.ops + config.clients as u64);
    assert!(watch.events > 0 && watch.events <= most, "{watch:?}");
    for create in mock.creates.lock().unwrap().iter() {
        assert_eq!(
            (create.key.as_slice(), create.range_end.as_slice()),
            (&b"bench/"[..], &b"bench0"[..])
        );
    }
    let json = report.to_json();
    assert!(
        json.contains(&format!("\"watch_events\":{},", watch.events)),
        "{json}"
    );
    assert!(
        json.contains("\"watchers\":20,\"watch_mode\":\"written\""),
        "{json}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_watchers_are_counted_not_fatal() {
    let mut mock = Mock::new();
    mock.refuse_every = Some(10);
    let endpoint = serve(mock.clone()).await;
    let result = workload::run(&config(endpoint, 100, WatchMode::Idle))
        .await
        .unwrap();
    assert_eq!(result.ops, 200);
    let watch = result.watch.expect("the run had watchers");
    assert_eq!((watch.created, watch.errors), (90, 10));
    assert_eq!(
        watch.error_samples,
        vec!["watch create refused: refused by the mock".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_stream_counts_its_watchers() {
    let mut mock = Mock::new();
    mock.refuse_streams = true;
    let endpoint = serve(mock.clone()).await;
    let result = workload::run(&config(endpoint, 150, WatchMode::Written))
        .await
        .unwrap();
    assert_eq!(result.ops, 200);
    let watch = result.watch.expect("the run had watchers");
    assert_eq!((watch.created, watch.errors, watch.streams), (0, 150, 2));
    assert_eq!(watch.error_samples.len(), 1, "{:?}", watch.error_samples);
    assert!(
        watch.error_samples[0].contains("no watches today"),
        "{:?}",
        watch.error_samples
    );
}

#[tokio::test]
async fn no_watchers_no_watch_result() {
    let endpoint = serve(Mock::new()).await;
    let result = workload::run(&config(endpoint, 0, WatchMode::Idle))
        .await
        .unwrap();
    assert!(result.watch.is_none());
}
