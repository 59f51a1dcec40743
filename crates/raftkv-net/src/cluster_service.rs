//! etcd's `Cluster.MemberList` and `Maintenance.Status` over a [`ClusterBackend`]: enough
//! for `etcdctl member list` / `endpoint status` and for tools to find the leader. The
//! other Cluster and Maintenance methods are not declared yet, so they answer
//! `Unimplemented`.

use std::sync::Arc;

use raftkv_core::Error;
use raftkv_core::kv::ResponseHeader;
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::status::to_status;
use tonic::{Request, Response as GrpcResponse, Status};

/// One member, as `MemberList` reports it.
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
}

/// What serves cluster information (the node).
pub trait ClusterBackend: Send + Sync + 'static {
    /// The members and the header to answer with.
    fn member_list(&self) -> Result<(ResponseHeader, Vec<MemberInfo>), Error>;
    /// This member's status.
    fn status(&self) -> StatusInfo;
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

#[tonic::async_trait]
impl<B: ClusterBackend> pb::cluster_server::Cluster for ClusterService<B> {
    async fn member_list(
        &self,
        _request: Request<pb::MemberListRequest>,
    ) -> Result<GrpcResponse<pb::MemberListResponse>, Status> {
        let (header, members) = self.backend.member_list().map_err(|e| to_status(&e))?;
        Ok(GrpcResponse::new(pb::MemberListResponse {
            header: Some(header.into()),
            members: members
                .into_iter()
                .map(|m| pb::Member {
                    id: m.id,
                    name: m.name,
                    peer_ur_ls: m.peer_urls,
                    client_ur_ls: m.client_urls,
                    is_learner: m.is_learner,
                })
                .collect(),
        }))
    }
}

#[tonic::async_trait]
impl<B: ClusterBackend> pb::maintenance_server::Maintenance for ClusterService<B> {
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
            errors: Vec::new(),
            db_size_in_use: s.db_size,
            is_learner: s.is_learner,
        }))
    }
}
