//! [`KvService`]: etcd's `KV` gRPC service over a [`KvBackend`]. It only translates: etcd
//! messages to raftkv-core requests and back (`raftkv_proto::convert`), errors to etcd's
//! statuses (`raftkv_proto::status`). What a request means is the backend's business.

use std::future::Future;
use std::sync::Arc;

use raftkv_core::Error;
use raftkv_core::auth::Caller;
use raftkv_core::kv::*;
use raftkv_proto::convert::InvalidMessage;
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::status::to_status;
use tonic::{Request, Response as GrpcResponse, Status};

use crate::gate::{self, AuthGate, Need};

/// What serves the KV requests (the node). A range is authorized by the service
/// ([`AuthGate`]); the other requests are made as their caller (writes are checked when
/// applied, a read-only txn by the backend).
pub trait KvBackend: AuthGate {
    /// etcd Range.
    fn range(&self, req: RangeRequest) -> impl Future<Output = Result<RangeResponse, Error>> + Send;
    /// Wait until this member has applied everything committed before the call (what a
    /// linearizable read waits for).
    fn read_barrier(&self) -> impl Future<Output = Result<(), Error>> + Send;
    /// etcd Put.
    fn put(&self, caller: Caller, req: PutRequest)
    -> impl Future<Output = Result<PutResponse, Error>> + Send;
    /// etcd DeleteRange.
    fn delete_range(
        &self,
        caller: Caller,
        req: DeleteRangeRequest,
    ) -> impl Future<Output = Result<DeleteRangeResponse, Error>> + Send;
    /// etcd Txn.
    fn txn(&self, caller: Caller, req: TxnRequest)
    -> impl Future<Output = Result<TxnResponse, Error>> + Send;
    /// etcd Compact.
    fn compact(
        &self,
        caller: Caller,
        req: CompactionRequest,
    ) -> impl Future<Output = Result<CompactionResponse, Error>> + Send;
}

/// The etcd KV gRPC service.
pub struct KvService<B> {
    backend: Arc<B>,
}

impl<B: KvBackend> KvService<B> {
    /// Serve `backend`.
    pub fn new(backend: Arc<B>) -> Self {
        Self { backend }
    }
}

fn invalid(e: InvalidMessage) -> Status {
    Status::invalid_argument(e.to_string())
}

fn status(e: Error) -> Status {
    to_status(&e)
}

#[tonic::async_trait]
impl<B: KvBackend> pb::kv_server::Kv for KvService<B> {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<GrpcResponse<pb::RangeResponse>, Status> {
        let credentials = gate::credentials_of(&request);
        let mut req = RangeRequest::try_from(request.into_inner()).map_err(invalid)?;
        // etcd's order: a linearizable read waits for its barrier first, so the caller
        // is identified and checked against an auth store at least as new as the read
        // (a grant committed before the read counts); then the read is local.
        if !req.serializable {
            self.backend.read_barrier().await.map_err(status)?;
            req.serializable = true;
        }
        let caller = self.backend.identify(credentials).await.map_err(status)?;
        self.backend
            .authorize(&caller, Need::Read(&req.key, &req.range_end))
            .map_err(status)?;
        let resp = self.backend.range(req).await.map_err(status)?;
        Ok(GrpcResponse::new(resp.into()))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn put(&self, request: Request<pb::PutRequest>) -> Result<GrpcResponse<pb::PutResponse>, Status> {
        let caller = gate::admit(self.backend.as_ref(), &request, &[])
            .await
            .map_err(status)?;
        let resp = self
            .backend
            .put(caller, request.into_inner().into())
            .await
            .map_err(status)?;
        Ok(GrpcResponse::new(resp.into()))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<GrpcResponse<pb::DeleteRangeResponse>, Status> {
        let caller = gate::admit(self.backend.as_ref(), &request, &[])
            .await
            .map_err(status)?;
        let resp = self
            .backend
            .delete_range(caller, request.into_inner().into())
            .await
            .map_err(status)?;
        Ok(GrpcResponse::new(resp.into()))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn txn(&self, request: Request<pb::TxnRequest>) -> Result<GrpcResponse<pb::TxnResponse>, Status> {
        let caller = gate::admit(self.backend.as_ref(), &request, &[])
            .await
            .map_err(status)?;
        let req = TxnRequest::try_from(request.into_inner()).map_err(invalid)?;
        let resp = self.backend.txn(caller, req).await.map_err(status)?;
        Ok(GrpcResponse::new(resp.into()))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<GrpcResponse<pb::CompactionResponse>, Status> {
        let caller = gate::admit(self.backend.as_ref(), &request, &[])
            .await
            .map_err(status)?;
        let resp = self
            .backend
            .compact(caller, request.into_inner().into())
            .await
            .map_err(status)?;
        Ok(GrpcResponse::new(resp.into()))
    }
}
