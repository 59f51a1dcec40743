//! The client's retry policy against mock etcd KV servers (tonic, bound to port 0): dead
//! endpoints are skipped, "no leader" and not-leader answers are retried or followed,
//! ambiguous write failures are never retried, and a cluster that cannot answer ends in
//! `DeadlineExceeded` within the deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use raftkv_client::{Client, ClientError, ClientOptions, RangeRequest};
use raftkv_core::{Error, RequestError};
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::kv_server::{Kv, KvServer};
use raftkv_proto::mvccpb;
use raftkv_proto::status::to_status;
use tonic::{Code, Request, Response, Status};

/// Every wait in these tests ends by this.
const TEST_DEADLINE: Duration = Duration::from_secs(10);

/// What the mock does with its `n`-th call (0-based, counted over all methods).
enum Answer {
    Ok,
    Fail(Status),
    /// Never answer.
    Hang,
}

type Script = Arc<dyn Fn(usize) -> Answer + Send + Sync>;

/// A mock etcd KV service: validates keys like a server, then follows its script.
#[derive(Clone)]
struct Mock {
    calls: Arc<AtomicUsize>,
    script: Script,
}

impl Mock {
    fn new(script: impl Fn(usize) -> Answer + Send + Sync + 'static) -> Self {
        Self {
            calls: Arc::new(AtomicUsize::new(0)),
            script: Arc::new(script),
        }
    }

    fn always_ok() -> Self {
        Self::new(|_| Answer::Ok)
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    async fn answer<T>(&self, key: &[u8], ok: T) -> Result<Response<T>, Status> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if key.is_empty() {
            return Err(to_status(&Error::Request(RequestError::EmptyKey)));
        }
        match (self.script)(n) {
            Answer::Ok => Ok(Response::new(ok)),
            Answer::Fail(status) => Err(status),
            Answer::Hang => std::future::pending().await,
        }
    }
}

fn header(revision: i64) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        cluster_id: 1,
        member_id: 1,
        revision,
        raft_term: 1,
    })
}

#[tonic::async_trait]
impl Kv for Mock {
    async fn range(&self, r: Request<pb::RangeRequest>) -> Result<Response<pb::RangeResponse>, Status> {
        let key = r.into_inner().key;
        let kv = mvccpb::KeyValue {
            key: key.clone(),
            value: b"value".to_vec(),
            create_revision: 2,
            mod_revision: 2,
            version: 1,
            lease: 0,
        };
        let resp = pb::RangeResponse {
            header: header(2),
            kvs: vec![kv],
            more: false,
            count: 1,
        };
        self.answer(&key, resp).await
    }

    async fn put(&self, r: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let resp = pb::PutResponse {
            header: header(3),
            prev_kv: None,
        };
        self.answer(&r.into_inner().key, resp).await
    }

    async fn delete_range(
        &self,
        r: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let resp = pb::DeleteRangeResponse {
            header: header(4),
            deleted: 1,
            prev_kvs: vec![],
        };
        self.answer(&r.into_inner().key, resp).await
    }

    async fn txn(&self, _: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let resp = pb::TxnResponse {
            header: header(5),
            succeeded: true,
            responses: vec![],
        };
        self.answer(b"txn", resp).await
    }

    async fn compact(
        &self,
        _: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let resp = pb::CompactionResponse { header: header(5) };
        self.answer(b"compact", resp).await
    }
}

/// Serve `mock` on 127.0.0.1, port 0; its URL. The server lives as long as the runtime.
async fn serve(mock: Mock) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(KvServer::new(mock))
            .serve_with_incoming(incoming),
    );
    format!("http://{addr}")
}

/// The URL of a port nothing listens on: bound but never listening, so connections are
/// refused and no other test can take the port while the returned socket lives.
fn dead_endpoint() -> (String, tokio::net::TcpSocket) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    (format!("http://{addr}"), socket)
}

fn options(request_timeout: Duration) -> ClientOptions {
    ClientOptions {
        request_timeout,
        connect_timeout: Duration::from_millis(200),
        backoff_initial: Duration::from_millis(5),
        backoff_max: Duration::from_millis(50),
        tls: None,
        credentials: None,
    }
}

async fn client(endpoints: Vec<String>, request_timeout: Duration) -> Client {
    Client::connect_with(endpoints, options(request_timeout))
        .await
        .unwrap()
}

/// `fut`, or a test failure after [`TEST_DEADLINE`].
async fn within<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_DEADLINE, fut)
        .await
        .expect("the call did not end within the test deadline")
}

#[tokio::test]
async fn read_skips_a_dead_endpoint() {
    let live = Mock::always_ok();
    let live_url = serve(live.clone()).await;
    let (dead_url, _dead) = dead_endpoint();
    let client = client(vec![dead_url, live_url.clone()], Duration::from_secs(5)).await;

    let kv = within(client.get("k")).await.unwrap().unwrap();
    assert_eq!(kv.value, b"value");
    assert_eq!(live.calls(), 1);
    assert_eq!(client.preferred_endpoint(), Some(live_url));
}

#[tokio::test]
async fn put_is_retried_after_no_leader() {
    let mock = Mock::new(|n| {
        if n < 2 {
            Answer::Fail(Status::unavailable("etcdserver: no leader"))
        } else {
            Answer::Ok
        }
    });
    let url = serve(mock.clone()).await;
    let client = client(vec![url], Duration::from_secs(5)).await;

    let put = within(client.put("k", "v")).await.unwrap();
    assert_eq!(put.header.revision, 3);
    assert_eq!(mock.calls(), 3);
}

#[tokio::test]
async fn put_answered_unknown_is_not_retried() {
    let mock = Mock::new(|_| Answer::Fail(Status::new(Code::Unknown, "something broke")));
    let url = serve(mock.clone()).await;
    let client = client(vec![url], Duration::from_secs(5)).await;

    let err = within(client.put("k", "v")).await.unwrap_err();
    assert!(matches!(err, ClientError::OutcomeUnknown(_)), "{err:?}");
    assert!(!err.is_retryable());
    assert_eq!(mock.calls(), 1);
}

#[tokio::test]
async fn put_without_an_answer_is_not_retried() {
    let mock = Mock::new(|_| Answer::Hang);
    let url = serve(mock.clone()).await;
    let timeout = Duration::from_millis(300);
    let client = client(vec![url], timeout).await;

    let started = Instant::now();
    let err = within(client.put("k", "v")).await.unwrap_err();
    assert!(matches!(err, ClientError::OutcomeUnknown(_)), "{err:?}");
    assert!(started.elapsed() < timeout + Duration::from_millis(300));
    assert_eq!(mock.calls(), 1);
}

#[tokio::test]
async fn not_leader_hint_is_followed() {
    let leader = Mock::always_ok();
    let leader_url = serve(leader.clone()).await;
    let hint = leader_url.clone();
    let follower = Mock::new(move |_| {
        Answer::Fail(to_status(&Error::NotLeader {
            leader_id: Some(2),
            leader_client_urls: vec![hint.clone()],
        }))
    });
    let follower_url = serve(follower.clone()).await;
    // The client is told only about the follower; it learns the leader from the hint.
    let client = client(vec![follower_url.clone()], Duration::from_secs(5)).await;

    within(client.put("k", "v")).await.unwrap();
    assert_eq!((follower.calls(), leader.calls()), (1, 1));
    assert_eq!(client.endpoints(), [follower_url, leader_url.clone()]);
    assert_eq!(client.preferred_endpoint(), Some(leader_url));

    // The next call goes straight to the leader.
    within(client.put("k2", "v")).await.unwrap();
    assert_eq!((follower.calls(), leader.calls()), (1, 2));
}

#[tokio::test]
async fn all_endpoints_dead_ends_in_deadline_exceeded() {
    let timeout = Duration::from_millis(500);
    let (dead_a, _a) = dead_endpoint();
    let (dead_b, _b) = dead_endpoint();
    let client = client(vec![dead_a, dead_b], timeout).await;

    for write in [false, true] {
        let started = Instant::now();
        let err = if write {
            within(client.put("k", "v")).await.unwrap_err()
        } else {
            within(client.range(RangeRequest::prefix("k"))).await.unwrap_err()
        };
        let elapsed = started.elapsed();
        match &err {
            ClientError::DeadlineExceeded { attempts, last_error } => {
                assert!(*attempts >= 2, "{err}");
                assert!(last_error.contains("connect"), "{err}");
            }
            other => panic!("expected DeadlineExceeded, got {other:?}"),
        }
        assert!(err.to_string().contains("no quorum"), "{err}");
        assert!(err.is_retryable());
        assert!(
            elapsed < timeout + Duration::from_millis(250),
            "took {elapsed:?} with a {timeout:?} deadline"
        );
    }
}

#[tokio::test]
async fn empty_key_is_refused_without_retry() {
    let mock = Mock::always_ok();
    let url = serve(mock.clone()).await;
    let client = client(vec![url], Duration::from_secs(5)).await;

    let err = within(client.put("", "v")).await.unwrap_err();
    assert_eq!(err, ClientError::Server(Error::Request(RequestError::EmptyKey)));
    assert!(!err.is_retryable());
    assert_eq!(mock.calls(), 1);
}

#[tokio::test]
async fn read_is_retried_after_timeout_answers() {
    let mock = Mock::new(|n| {
        if n == 0 {
            Answer::Fail(Status::unavailable("etcdserver: request timed out"))
        } else {
            Answer::Ok
        }
    });
    let url = serve(mock.clone()).await;
    let client = client(vec![url], Duration::from_secs(5)).await;

    assert!(within(client.get_serializable("k")).await.unwrap().is_some());
    assert_eq!(mock.calls(), 2);

    // The same answer to a write leaves its outcome unknown.
    let mock = Mock::new(|_| Answer::Fail(Status::unavailable("etcdserver: request timed out")));
    let url = serve(mock.clone()).await;
    let client = self::client(vec![url], Duration::from_secs(5)).await;
    let err = within(client.delete("k")).await.unwrap_err();
    assert!(err.is_outcome_unknown(), "{err:?}");
    assert_eq!(mock.calls(), 1);
}

#[tokio::test]
async fn clones_share_one_client_across_tasks() {
    let mock = Mock::always_ok();
    let url = serve(mock.clone()).await;
    let client = client(vec![url], Duration::from_secs(5)).await;

    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.put(format!("k{i}"), "v").await })
        })
        .collect();
    for task in tasks {
        within(task).await.unwrap().unwrap();
    }
    assert_eq!(mock.calls(), 32);
}
