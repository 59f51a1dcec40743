//! etcd's `Cluster` and `Maintenance` services over a [`ClusterBackend`] (the node).
//!
//! Cluster: MemberList, MemberAdd (the server picks the new member's id, as etcd does),
//! MemberRemove, MemberUpdate, MemberPromote. Maintenance: Status, Alarm, Defragment,
//! Hash, HashKV, Snapshot, MoveLeader. `Snapshot` streams the file the backend gives (the
//! node: its snapshot in etcd's bbolt format), zero-padded to whole 512-byte pages as
//! etcdctl expects of a bbolt file, followed, as etcd does, by a last message whose blob
//! is the SHA-256 of everything before it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use raftkv_core::auth::AuthError;
use raftkv_core::kv::ResponseHeader;
use raftkv_core::{Error, RequestError};
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::status::to_status;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tonic::{Request, Response as GrpcResponse, Status};

use crate::gate::{self, AuthGate, Need};

/// One member, as the Cluster service reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// Member id.
    pub id: u64,
    /// Name (empty until published).
    pub name: String,
    /// Peer URLs.
    pub peer_urls: Vec<String>,
    /// Client URLs (empty until published).
    pub client_urls: Vec<String>,
    /// Whether it is a learner.
    pub is_learner: bool,
}

/// What `Status` reports about this member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusInfo {
    /// Header (cluster id, member id, revision, term).
    pub header: ResponseHeader,
    /// The leader this member knows of, 0 for none.
    pub leader: u64,
    /// Commit index.
    pub raft_index: u64,
    /// Current term.
    pub raft_term: u64,
    /// Applied index.
    pub raft_applied_index: u64,
    /// Bytes on disk.
    pub db_size: i64,
    /// Whether this member is a learner.
    pub is_learner: bool,
    /// Active alarms, as text (etcd's `errors` field).
    pub errors: Vec<String>,
}

/// An alarm raised on a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlarmInfo {
    /// The member.
    pub member_id: u64,
    /// etcd's alarm type (1: NOSPACE, 2: CORRUPT).
    pub alarm: i32,
}

/// A snapshot to stream: its header and an open file with its bytes.
pub struct SnapshotStream {
    /// Header of the first message.
    pub header: ResponseHeader,
    /// The file, positioned at its start.
    pub file: tokio::fs::File,
    /// Its size in bytes.
    pub size: u64,
}

type Answer<T> = Result<T, Error>;

/// What serves cluster information and maintenance (the node).
pub trait ClusterBackend: Send + Sync + 'static {
    /// The members and the header to answer with.
    fn member_list(&self) -> Answer<(ResponseHeader, Vec<MemberInfo>)>;
    /// Add a member at `peer_urls` (one URL), as a learner or a voter; returns the new
    /// member and all members.
    fn member_add(
        &self,
        peer_urls: Vec<String>,
        is_learner: bool,
    ) -> impl Future<Output = Answer<(ResponseHeader, MemberInfo, Vec<MemberInfo>)>> + Send;
    /// Remove member `id`.
    fn member_remove(
        &self,
        id: u64,
    ) -> impl Future<Output = Answer<(ResponseHeader, Vec<MemberInfo>)>> + Send;
    /// Change member `id`'s peer URLs.
    fn member_update(
        &self,
        id: u64,
        peer_urls: Vec<String>,
    ) -> impl Future<Output = Answer<(ResponseHeader, Vec<MemberInfo>)>> + Send;
    /// Promote learner `id` to voter.
    fn member_promote(
        &self,
        id: u64,
    ) -> impl Future<Output = Answer<(ResponseHeader, Vec<MemberInfo>)>> + Send;
    /// This member's status.
    fn status(&self) -> StatusInfo;
    /// The active alarms' types as this member applied them (local, as etcd's probes
    /// read them).
    fn active_alarms(&self) -> Answer<Vec<i32>>;
    /// etcd Alarm: `action` 0 GET, 1 ACTIVATE, 2 DEACTIVATE, through the log.
    fn alarm(
        &self,
        action: i32,
        member_id: u64,
        alarm: i32,
    ) -> impl Future<Output = Answer<(ResponseHeader, Vec<AlarmInfo>)>> + Send;
    /// Reclaim disk space, if the backend can.
    fn defragment(&self) -> impl Future<Output = Answer<ResponseHeader>> + Send;
    /// A hash of everything the members replicate (etcd's `Hash`: for tests, comparing
    /// members at rest).
    fn hash(&self) -> impl Future<Output = Answer<(ResponseHeader, u32)>> + Send;
    /// A hash of the key-value state at `revision` (0: the newest) and the compact revision.
    fn hash_kv(&self, revision: i64) -> impl Future<Output = Answer<(ResponseHeader, u32, i64)>> + Send;
    /// A snapshot of the state to stream to a client.
    fn snapshot(&self) -> impl Future<Output = Answer<SnapshotStream>> + Send;
    /// Hand leadership to member `target` (this member must lead, as in etcd).
    fn move_leader(&self, target: u64) -> impl Future<Output = Answer<ResponseHeader>> + Send;
}

/// Version reported by `Status` (the etcd API level raftkv follows, then raftkv's own).
pub const API_VERSION: &str = concat!("3.4.0-raftkv-", env!("CARGO_PKG_VERSION"));

/// The `Cluster` and `Maintenance` services (one struct serves both).
pub struct ClusterService<B> {
    backend: Arc<B>,
}

impl<B> Clone for ClusterService<B> {
    fn clone(&self) -> Self {
        Self {
            backend: self.backend.clone(),
        }
    }
}

impl<B: ClusterBackend> ClusterService<B> {
    /// Serve `backend`.
    pub fn new(backend: Arc<B>) -> Self {
        Self { backend }
    }
}

fn member(m: MemberInfo) -> pb::Member {
    pb::Member {
        id: m.id,
        name: m.name,
        peer_ur_ls: m.peer_urls,
        client_ur_ls: m.client_urls,
        is_learner: m.is_learner,
    }
}

fn members(ms: Vec<MemberInfo>) -> Vec<pb::Member> {
    ms.into_iter().map(member).collect()
}

fn status(e: Error) -> Status {
    to_status(&e)
}

#[tonic::async_trait]
impl<B: ClusterBackend + AuthGate> pb::cluster_server::Cluster for ClusterService<B> {
    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<GrpcResponse<pb::MemberAddResponse>, Status> {
        // etcd's checkMembershipOperationPermission: root only, while auth is enabled.
        gate::admit(self.backend.as_ref(), &request, &[Need::Admin])
            .await
            .map_err(status)?;
        let req = request.into_inner();
        let (header, added, all) = self
            .backend
            .member_add(req.peer_ur_ls, req.is_learner)
            .await
            .map_err(status)?;
        Ok(GrpcResponse::new(pb::MemberAddResponse {
            header: Some(header.into()),
            member: Some(member(added)),
            members: members(all),
        }))
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<GrpcResponse<pb::MemberRemoveResponse>, Status> {
        // etcd's checkMembershipOperationPermission: root only, while auth is enabled.
        gate::admit(self.backend.as_ref(), &request, &[Need::Admin])
            .await
            .map_err(status)?;
        let (header, all) = self
            .backend
            .member_remove(request.into_inner().id)
            .await
            .map_err(status)?;
        Ok(GrpcResponse::new(pb::MemberRemoveResponse {
            header: Some(header.into()),
            members: members(all),
        }))
    }

    async fn member_update(
        &self,
        request: Request<pb::MemberUpdateRequest>,
    ) -> Result<GrpcResponse<pb::MemberUpdateResponse>, Status> {
        // etcd's checkMembershipOperationPermission: root only, while auth is enabled.
        gate::admit(self.backend.as_ref(), &request, &[Need::Admin])
            .await
            .map_err(status)?;
        let req = request.into_inner();
        let (header, all) = self
            .backend
            .member_update(req.id, req.peer_ur_ls)
            .await
            .map_err(status)?;
        Ok(GrpcResponse::new(pb::MemberUpdateResponse {
            header: Some(header.into()),
            members: members(all),
        }))
    }

    async fn member_list(
        &self,
        _request: Request<pb::MemberListRequest>,
    ) -> Result<GrpcResponse<pb::MemberListResponse>, Status> {
        let (header, all) = self.backend.member_list().map_err(status)?;
        Ok(GrpcResponse::new(pb::MemberListResponse {
            header: Some(header.into()),
            members: members(all),
        }))
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<GrpcResponse<pb::MemberPromoteResponse>, Status> {
        // etcd's checkMembershipOperationPermission: root only, while auth is enabled.
        gate::admit(self.backend.as_ref(), &request, &[Need::Admin])
            .await
            .map_err(status)?;
        let (header, all) = self
            .backend
            .member_promote(request.into_inner().id)
            .await
            .map_err(status)?;
        Ok(GrpcResponse::new(pb::MemberPromoteResponse {
            header: Some(header.into()),
            members: members(all),
        }))
    }
}

/// etcd's check of the admin maintenance calls (defragment, hash, snapshot). etcd
/// returns its auth errors there unconverted: gRPC's Unknown with Go's "auth: " text.
async fn admin<B: AuthGate, T>(backend: &B, request: &Request<T>) -> Result<(), Status> {
    match gate::admit(backend, request, &[Need::Admin]).await {
        Ok(_) => Ok(()),
        Err(Error::Request(RequestError::Auth(e))) => Err(Status::unknown(match e {
            // Go's `auth.ErrUserNotFound` words it apart from its gRPC form.
            AuthError::UserNotFound => "auth: user not found".to_string(),
            e => format!("auth: {e}"),
        })),
        Err(e) => Err(status(e)),
    }
}

type SnapshotChunks = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<B: ClusterBackend + AuthGate> pb::maintenance_server::Maintenance for ClusterService<B> {
    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<GrpcResponse<pb::AlarmResponse>, Status> {
        // Through the log: the credentials are looked at, no permission is needed.
        gate::admit(self.backend.as_ref(), &request, &[])
            .await
            .map_err(status)?;
        let req = request.into_inner();
        let (header, alarms) = self
            .backend
            .alarm(req.action, req.member_id, req.alarm)
            .await
            .map_err(status)?;
        Ok(GrpcResponse::new(pb::AlarmResponse {
            header: Some(header.into()),
            alarms: alarms
                .into_iter()
                .map(|a| pb::AlarmMember {
                    member_id: a.member_id,
                    alarm: a.alarm,
                })
                .collect(),
        }))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<GrpcResponse<pb::StatusResponse>, Status> {
        let s = self.backend.status();
        Ok(GrpcResponse::new(pb::StatusResponse {
            header: Some(s.header.into()),
            version: API_VERSION.into(),
            db_size: s.db_size,
            leader: s.leader,
            raft_index: s.raft_index,
            raft_term: s.raft_term,
            raft_applied_index: s.raft_applied_index,
            errors: s.errors,
            db_size_in_use: s.db_size,
            is_learner: s.is_learner,
        }))
    }

    async fn defragment(
        &self,
        request: Request<pb::DefragmentRequest>,
    ) -> Result<GrpcResponse<pb::DefragmentResponse>, Status> {
        admin(self.backend.as_ref(), &request).await?;
        let header = self.backend.defragment().await.map_err(status)?;
        Ok(GrpcResponse::new(pb::DefragmentResponse {
            header: Some(header.into()),
        }))
    }

    async fn hash(
        &self,
        request: Request<pb::HashRequest>,
    ) -> Result<GrpcResponse<pb::HashResponse>, Status> {
        admin(self.backend.as_ref(), &request).await?;
        let (header, hash) = self.backend.hash().await.map_err(status)?;
        Ok(GrpcResponse::new(pb::HashResponse {
            header: Some(header.into()),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<pb::HashKvRequest>,
    ) -> Result<GrpcResponse<pb::HashKvResponse>, Status> {
        admin(self.backend.as_ref(), &request).await?;
        let (header, hash, compact_revision) = self
            .backend
            .hash_kv(request.into_inner().revision)
            .await
            .map_err(status)?;
        Ok(GrpcResponse::new(pb::HashKvResponse {
            header: Some(header.into()),
            hash,
            compact_revision,
        }))
    }

    type SnapshotStream = SnapshotChunks;

    async fn snapshot(
        &self,
        request: Request<pb::SnapshotRequest>,
    ) -> Result<GrpcResponse<Self::SnapshotStream>, Status> {
        admin(self.backend.as_ref(), &request).await?;
        let SnapshotStream {
            header,
            mut file,
            size,
        } = self.backend.snapshot().await.map_err(status)?;
        let padded = size.div_ceil(512) * 512;
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tokio::spawn(async move {
            let mut hasher = Sha256::new();
            let mut remaining = padded;
            let mut first = Some(header);
            loop {
                let mut blob = vec![0u8; 64 * 1024];
                let n = match file.read(&mut blob).await {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tx
                            .send(Err(Status::internal(format!("reading the snapshot: {e}"))))
                            .await;
                        return;
                    }
                };
                if n == 0 {
                    break;
                }
                blob.truncate(n);
                hasher.update(&blob);
                remaining = remaining.saturating_sub(n as u64);
                let message = pb::SnapshotResponse {
                    header: first.take().map(Into::into),
                    remaining_bytes: remaining,
                    blob,
                };
                if tx.send(Ok(message)).await.is_err() {
                    return;
                }
            }
            // etcdctl checks that the bytes before the checksum are whole 512-byte pages (as
            // bbolt files are): pad with zeros, which raftkv's reader ignores after its
            // end frame.
            let padding = (512 - (size % 512) as usize) % 512;
            if padding > 0 {
                let blob = vec![0u8; padding];
                hasher.update(&blob);
                let message = pb::SnapshotResponse {
                    header: first.take().map(Into::into),
                    remaining_bytes: 0,
                    blob,
                };
                if tx.send(Ok(message)).await.is_err() {
                    return;
                }
            }
            // etcd's framing: the last message carries the SHA-256 of the bytes before it.
            let _ = tx
                .send(Ok(pb::SnapshotResponse {
                    header: None,
                    remaining_bytes: 0,
                    blob: hasher.finalize().to_vec(),
                }))
                .await;
        });
        Ok(GrpcResponse::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<GrpcResponse<pb::MoveLeaderResponse>, Status> {
        let target = request.into_inner().target_id;
        let header = self.backend.move_leader(target).await.map_err(status)?;
        Ok(GrpcResponse::new(pb::MoveLeaderResponse {
            header: Some(header.into()),
        }))
    }
}
