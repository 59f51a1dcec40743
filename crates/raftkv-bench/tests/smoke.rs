//! Each workload's library entry point against an in-process etcd KV mock, and the
//! floor into a temp dir: the runs finish on time, count operations and no errors, and
//! their percentiles are ordered.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use raftkv_bench::{Consistency, FloorConfig, LoadConfig, Report, Workload, floor, workload};
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::kv_server::{Kv, KvServer};
use tonic::{Request, Response, Status};

/// Answers every call with a minimal valid response and counts the calls.
#[derive(Default, Clone)]
struct Mock {
    calls: Arc<AtomicU64>,
}

impl Mock {
    fn answer<T>(&self, response: T) -> Result<Response<T>, Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(response))
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
        self.answer(pb::RangeResponse {
            header: header(),
            ..Default::default()
        })
    }

    async fn put(&self, _: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        self.answer(pb::PutResponse {
            header: header(),
            prev_kv: None,
        })
    }

    async fn delete_range(
        &self,
        _: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        Err(Status::unimplemented("not used by the bench"))
    }

    async fn txn(&self, request: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let request = request.into_inner();
        // The bench's compare must be the always-true `version > -1`.
        let always_true = request.compare.len() == 1
            && request.compare[0].result == pb::compare::CompareResult::Greater as i32
            && request.compare[0].target == pb::compare::CompareTarget::Version as i32
            && request.compare[0].target_union == Some(pb::compare::TargetUnion::Version(-1));
        if !always_true || request.success.len() != 1 {
            return Err(Status::invalid_argument("unexpected txn shape"));
        }
        self.answer(pb::TxnResponse {
            header: header(),
            succeeded: true,
            responses: vec![pb::ResponseOp {
                response: Some(pb::response_op::Response::ResponsePut(pb::PutResponse {
                    header: header(),
                    prev_kv: None,
                })),
            }],
        })
    }

    async fn compact(
        &self,
        _: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        Err(Status::unimplemented("not used by the bench"))
    }
}

/// Serves `mock` on 127.0.0.1, port 0; its URL. The server lives as long as the runtime.
async fn serve(mock: Mock) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(KvServer::new(mock))
            .serve_with_incoming(incoming),
    );
    format!("http://{address}")
}

fn config(workload: Workload, endpoint: String) -> LoadConfig {
    let mut config = LoadConfig::new(workload, vec![endpoint]);
    config.clients = 4;
    config.conns = 2;
    config.duration = Duration::from_secs(1);
    config.key_space = 100;
    config.value_size = 16;
    config
}

/// Runs `workload` for about a second and checks its report.
async fn smoke(workload: Workload) -> Mock {
    let mock = Mock::default();
    let config = config(workload, serve(mock.clone()).await);
    let run = tokio::time::timeout(Duration::from_secs(20), workload::run(&config));
    let result = run.await.expect("the run ends near its 1 s duration").unwrap();
    let report = Report::new(&result);
    assert_eq!((report.clients, report.conns), (4, 2));
    assert!(report.ops > 0, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    assert!(result.error_samples.is_empty());
    assert!(
        report.p50_ms <= report.p99_ms && report.p99_ms <= report.max_ms,
        "{report:?}"
    );
    assert!(report.throughput > 0.0);
    assert!((0.9..5.0).contains(&report.duration_s), "{report:?}");
    assert!(report.to_json().contains(&format!("\"ops\":{}", report.ops)));
    mock
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_workload() {
    let mock = smoke(Workload::Put).await;
    assert!(mock.calls.load(Ordering::Relaxed) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_workload_with_prefill() {
    let mock = Mock::default();
    let endpoint = serve(mock.clone()).await;
    let workload = Workload::Get {
        consistency: Consistency::Serializable,
        prefill: true,
    };
    let result = workload::run(&config(workload, endpoint)).await.unwrap();
    let prefill = result.prefill.clone().expect("prefill ran");
    assert_eq!((prefill.keys, prefill.errors), (100, 0));
    assert_eq!(result.workload, "get-serializable");
    assert!(result.ops > 0 && result.errors == 0);
    // Requests in flight at the deadline reach the server but are not counted.
    assert!(mock.calls.load(Ordering::Relaxed) >= 100 + result.ops);
    smoke(Workload::Get {
        consistency: Consistency::Linearizable,
        prefill: false,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_workload() {
    smoke(Workload::Txn).await;
}

#[tokio::test]
async fn total_bounds_the_run() {
    let mut config = config(Workload::Put, serve(Mock::default()).await);
    config.duration = Duration::from_secs(60);
    config.total = Some(50);
    let result = workload::run(&config).await.unwrap();
    assert_eq!((result.ops, result.errors), (50, 0));
}

#[tokio::test]
async fn a_dead_server_fails_setup() {
    // Bound but not listening: connections are refused.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let endpoint = format!("http://{}", socket.local_addr().unwrap());
    let error = workload::run(&config(Workload::Put, endpoint)).await.unwrap_err();
    assert!(matches!(error, raftkv_bench::Error::Connect { .. }), "{error}");
}

#[tokio::test]
async fn floor_measures_both() {
    let dir = tempfile::tempdir().unwrap();
    let config = FloorConfig {
        dir: dir.path().join("floor"),
        count: 20,
        json: None,
    };
    let result = floor::run(&config).await.unwrap();
    assert_eq!(result.count, 20);
    assert!(result.fdatasync_p50_ms <= result.fdatasync_p99_ms, "{result:?}");
    assert!(result.rtt_p50_ms <= result.rtt_p99_ms, "{result:?}");
    assert!(result.rtt_p99_ms < 1000.0, "{result:?}");
    // The test file is removed; the directory it was created in stays.
    assert_eq!(std::fs::read_dir(dir.path().join("floor")).unwrap().count(), 0);
    assert!(result.to_text().starts_with("fdatasync 4KiB: p50 "));
}
