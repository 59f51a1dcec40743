//! The retry policy of the Cluster and Maintenance calls against mock servers (tonic,
//! bound to port 0): a snapshot is retried only until its first message arrives, a broken
//! or unframed snapshot is reported as such, a membership change is never retried after
//! an ambiguous failure while a member list is, and `status_of` stays on its endpoint
//! without moving the client's preference.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use raftkv_client::{Client, ClientError, ClientOptions};
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::cluster_server::{Cluster, ClusterServer};
use raftkv_proto::etcdserverpb::maintenance_server::{Maintenance, MaintenanceServer};
use tonic::codegen::tokio_stream;
use tonic::{Request, Response, Status};

/// Every wait in these tests ends by this.
const TEST_DEADLINE: Duration = Duration::from_secs(10);

/// What a snapshot attempt streams: each item a message or an error.
type Messages = Vec<Result<pb::SnapshotResponse, Status>>;

/// A mock member: counts calls and answers the `n`-th one (0-based, over all methods)
/// with `script(n)`: `Ok` answers, `Err` fails with that status.
#[derive(Clone)]
struct Mock {
    member_id: u64,
    calls: Arc<AtomicUsize>,
    script: Arc<dyn Fn(usize) -> Result<(), Status> + Send + Sync>,
    /// What a snapshot streams on its `n`-th call.
    snapshot: Arc<dyn Fn(usize) -> Messages + Send + Sync>,
}

impl Mock {
    fn new(member_id: u64, script: impl Fn(usize) -> Result<(), Status> + Send + Sync + 'static) -> Self {
        Self {
            member_id,
            calls: Arc::new(AtomicUsize::new(0)),
            script: Arc::new(script),
            snapshot: Arc::new(|_| Vec::new()),
        }
    }

    fn with_snapshot(mut self, snapshot: impl Fn(usize) -> Messages + Send + Sync + 'static) -> Self {
        self.snapshot = Arc::new(snapshot);
        self
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Count the call and follow the script; the call's number.
    fn answer(&self) -> Result<usize, Status> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        (self.script)(n).map(|()| n)
    }

    fn header(&self) -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader {
            cluster_id: 1,
            member_id: self.member_id,
            revision: 1,
            raft_term: 1,
        })
    }

    fn members(&self) -> Vec<pb::Member> {
        vec![pb::Member {
            id: self.member_id,
            name: format!("m{}", self.member_id),
            peer_ur_ls: vec!["http://127.0.0.1:1".into()],
            client_ur_ls: vec![],
            is_learner: false,
        }]
    }
}

fn data(blob: &[u8], remaining_bytes: u64) -> Result<pb::SnapshotResponse, Status> {
    Ok(pb::SnapshotResponse {
        header: None,
        remaining_bytes,
        blob: blob.to_vec(),
    })
}

#[tonic::async_trait]
impl Cluster for Mock {
    async fn member_add(
        &self,
        r: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        self.answer()?;
        let req = r.into_inner();
        let added = pb::Member {
            id: 42,
            name: String::new(),
            peer_ur_ls: req.peer_ur_ls,
            client_ur_ls: vec![],
            is_learner: req.is_learner,
        };
        let mut members = self.members();
        members.push(added.clone());
        Ok(Response::new(pb::MemberAddResponse {
            header: self.header(),
            member: Some(added),
            members,
        }))
    }

    async fn member_remove(
        &self,
        _: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        self.answer()?;
        Ok(Response::new(pb::MemberRemoveResponse {
            header: self.header(),
            members: self.members(),
        }))
    }

    async fn member_update(
        &self,
        _: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        self.answer()?;
        Ok(Response::new(pb::MemberUpdateResponse {
            header: self.header(),
            members: self.members(),
        }))
    }

    async fn member_list(
        &self,
        _: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        self.answer()?;
        Ok(Response::new(pb::MemberListResponse {
            header: self.header(),
            members: self.members(),
        }))
    }

    async fn member_promote(
        &self,
        _: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        self.answer()?;
        Ok(Response::new(pb::MemberPromoteResponse {
            header: self.header(),
            members: self.members(),
        }))
    }
}

type SnapshotStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Maintenance for Mock {
    async fn alarm(&self, _: Request<pb::AlarmRequest>) -> Result<Response<pb::AlarmResponse>, Status> {
        self.answer()?;
        Ok(Response::new(pb::AlarmResponse {
            header: self.header(),
            alarms: vec![],
        }))
    }

    async fn status(&self, _: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        self.answer()?;
        Ok(Response::new(pb::StatusResponse {
            header: self.header(),
            leader: self.member_id,
            ..Default::default()
        }))
    }

    async fn defragment(
        &self,
        _: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        self.answer()?;
        Ok(Response::new(pb::DefragmentResponse {
            header: self.header(),
        }))
    }

    async fn hash(&self, _: Request<pb::HashRequest>) -> Result<Response<pb::HashResponse>, Status> {
        self.answer()?;
        Ok(Response::new(pb::HashResponse {
            header: self.header(),
            hash: 7,
        }))
    }

    async fn hash_kv(&self, _: Request<pb::HashKvRequest>) -> Result<Response<pb::HashKvResponse>, Status> {
        self.answer()?;
        Ok(Response::new(pb::HashKvResponse {
            header: self.header(),
            hash: 7,
            compact_revision: 0,
        }))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        _: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let n = self.answer()?;
        let messages = (self.snapshot)(n);
        Ok(Response::new(Box::pin(tokio_stream::iter(messages))))
    }

    async fn move_leader(
        &self,
        _: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        self.answer()?;
        Ok(Response::new(pb::MoveLeaderResponse {
            header: self.header(),
        }))
    }
}

/// Serve `mock` on 127.0.0.1, port 0; its URL. The server lives as long as the runtime.
async fn serve(mock: Mock) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ClusterServer::new(mock.clone()))
            .add_service(MaintenanceServer::new(mock))
            .serve_with_incoming(incoming),
    );
    format!("http://{addr}")
}

/// The URL of a port nothing listens on (bound, never listening: connections are
/// refused, and no other test can take the port while the socket lives).
fn dead_endpoint() -> (String, tokio::net::TcpSocket) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    (format!("http://{addr}"), socket)
}

async fn client(endpoints: Vec<String>) -> Client {
    let options = ClientOptions {
        request_timeout: Duration::from_secs(3),
        connect_timeout: Duration::from_millis(200),
        backoff_initial: Duration::from_millis(5),
        backoff_max: Duration::from_millis(50),
        tls: None,
        credentials: None,
    };
    Client::connect_with(endpoints, options).await.unwrap()
}

/// `fut`, or a test failure after [`TEST_DEADLINE`].
async fn within<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_DEADLINE, fut)
        .await
        .expect("the call did not end within the test deadline")
}

fn stopped() -> Status {
    Status::unavailable("etcdserver: server stopped")
}

#[tokio::test]
async fn snapshot_is_retried_until_its_first_message() {
    // First attempt: the stream fails before any message; second: a whole snapshot.
    let mock = Mock::new(1, |_| Ok(())).with_snapshot(|n| match n {
        0 => vec![Err(stopped())],
        _ => {
            let mut all = vec![1u8; 700];
            all.extend([0u8; 324]);
            let digest: [u8; 32] =
                sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&all)).into();
            vec![data(&[1; 700], 324), data(&[0; 324], 0), data(&digest, 0)]
        }
    });
    let client = client(vec![serve(mock.clone()).await]).await;
    let mut out = Vec::new();
    let snapshot = within(client.snapshot(&mut out)).await.unwrap();
    assert_eq!(mock.calls(), 2);
    assert_eq!(out.len(), 1024);
    assert_eq!(snapshot.size, 1024);
    assert_eq!(snapshot.sha256.len(), 32);
    assert_eq!(snapshot.header.member_id, 0, "the mock sends no header");
}

#[tokio::test]
async fn snapshot_is_not_retried_once_data_arrived() {
    let mock = Mock::new(1, |_| Ok(()))
        .with_snapshot(|_| vec![data(&[1; 512], 512), data(&[2; 512], 0), Err(stopped())]);
    let client = client(vec![serve(mock.clone()).await]).await;
    let mut out = Vec::new();
    let err = within(client.snapshot(&mut out)).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::StreamInterrupted { received: 1024, reason } if reason.contains("stopped")),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert_eq!(mock.calls(), 1);
    assert_eq!(out.len(), 512, "the last message is held back until the next one");
}

#[tokio::test]
async fn snapshot_without_its_checksum_is_invalid() {
    let mock = Mock::new(1, |_| Ok(())).with_snapshot(|_| vec![data(&[1; 512], 0)]);
    let client = client(vec![serve(mock.clone()).await]).await;
    let err = within(client.snapshot(Vec::new())).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::InvalidResponse(text) if text.contains("checksum")),
        "{err:?}"
    );
    assert_eq!(mock.calls(), 1);
}

#[tokio::test]
async fn member_changes_are_not_retried_after_an_ambiguous_failure() {
    let mock = Mock::new(1, |n| match n {
        0 => Err(Status::unknown("connection lost mid-proposal")),
        _ => Ok(()),
    });
    let client = client(vec![serve(mock.clone()).await]).await;
    let err = within(client.member_add(["http://10.0.0.9:2380"], true))
        .await
        .unwrap_err();
    assert!(err.is_outcome_unknown(), "{err:?}");
    assert_eq!(mock.calls(), 1);

    let (header, added, members) = within(client.member_add(["http://10.0.0.9:2380"], true))
        .await
        .unwrap();
    assert_eq!(header.member_id, 1);
    assert_eq!((added.id, added.is_learner), (42, true));
    assert_eq!(added.peer_urls, ["http://10.0.0.9:2380"]);
    assert_eq!(members.len(), 2);
}

#[tokio::test]
async fn member_list_and_alarm_get_are_retried_like_reads() {
    let mock = Mock::new(1, |n| if n % 2 == 0 { Err(stopped()) } else { Ok(()) });
    let client = client(vec![serve(mock.clone()).await]).await;
    let list = within(client.member_list()).await.unwrap();
    assert_eq!(list.members[0].name, "m1");
    assert_eq!(mock.calls(), 2);
    let alarms = within(client.alarm(raftkv_client::AlarmAction::Get, 0, raftkv_client::AlarmType::None))
        .await
        .unwrap();
    assert!(alarms.alarms.is_empty());
    assert_eq!(mock.calls(), 4);
    // An action on an alarm is a write: "server stopped" may hide an applied change.
    let err = within(client.alarm(
        raftkv_client::AlarmAction::Activate,
        1,
        raftkv_client::AlarmType::NoSpace,
    ))
    .await
    .unwrap_err();
    assert!(err.is_outcome_unknown(), "{err:?}");
    assert_eq!(mock.calls(), 5);
}

#[tokio::test]
async fn status_of_stays_on_its_endpoint_and_leaves_the_preference_alone() {
    let (dead, _socket) = dead_endpoint();
    let live = Mock::new(2, |_| Ok(()));
    let live_url = serve(live.clone()).await;
    let other = Mock::new(3, |_| Ok(()));
    let other_url = serve(other.clone()).await;
    let client = client(vec![dead.clone(), live_url.clone()]).await;

    let status = within(client.status_of(&live_url)).await.unwrap();
    assert_eq!((status.header.member_id, status.leader), (2, 2));
    assert_eq!(client.preferred_endpoint(), Some(dead.clone()));

    // An endpoint the client does not know: asked, not added.
    let status = within(client.status_of(&other_url)).await.unwrap();
    assert_eq!(status.header.member_id, 3);
    assert_eq!(client.endpoints(), [dead.clone(), live_url.clone()]);

    // A dead endpoint is retried until the deadline, never swapped for a live one.
    let err = within(client.status_of(&dead)).await.unwrap_err();
    assert!(matches!(err, ClientError::DeadlineExceeded { .. }), "{err:?}");
    assert_eq!(live.calls(), 1);

    // `status` is routed like any read: past the dead endpoint to the live one.
    let status = within(client.status()).await.unwrap();
    assert_eq!(status.header.member_id, 2);
    assert_eq!(client.preferred_endpoint(), Some(live_url));
}
