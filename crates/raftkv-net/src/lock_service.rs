//! [`LockService`]: etcd's `v3lockpb.Lock` gRPC service over a [`LockBackend`]. It only
//! translates; the lock recipe (queueing on create revisions, waiting on a watch, the
//! lease re-check after waiting) is the backend's.
//!
//! A `Lock` call waits until the lock is acquired, the call's deadline passes or the
//! client goes away: either of the last two drops the backend's future, which removes
//! the waiter's key.
//!
//! **Fencing.** A lease lock is not exclusive while its holder is paused past its lease's
//! TTL (etcd issue 11457): holders must fence their writes with a txn comparing the
//! returned key's create revision.

use std::future::Future;
use std::sync::Arc;

use raftkv_core::Error;
use raftkv_core::kv::{ResponseHeader, prefix_end};
use raftkv_proto::status::to_status;
use raftkv_proto::v3lockpb as pb;
use tonic::{Request, Response, Status};

use crate::gate::{self, AuthGate, Need};

/// A waiter's prefix and key under lock or election `name` for `lease`, as etcd's
/// `concurrency` package makes them (`name/<lease in hex>`): what a caller must be
/// allowed to read (the prefix, to see older waiters) and write (its own key).
pub fn waiter_key(name: &[u8], lease: i64) -> (Vec<u8>, Vec<u8>) {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    let mut key = prefix.clone();
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    (prefix, key)
}

/// What serves locks (the node). The service checks the caller may read the lock's
/// prefix, write its own key and write every key already on its lease (etcd checks the
/// first two through its KV calls).
pub trait LockBackend: Send + Sync + 'static {
    /// Acquire lock `name` under `lease`: the header and the ownership key.
    fn lock(
        &self,
        name: Vec<u8>,
        lease: i64,
    ) -> impl Future<Output = Result<(ResponseHeader, Vec<u8>), Error>> + Send;
    /// Release the lock whose ownership key is `key`.
    fn unlock(&self, key: Vec<u8>) -> impl Future<Output = Result<ResponseHeader, Error>> + Send;
}

/// The etcd Lock gRPC service.
pub struct LockService<B> {
    backend: Arc<B>,
}

impl<B: LockBackend> LockService<B> {
    /// Serve `backend`.
    pub fn new(backend: Arc<B>) -> Self {
        Self { backend }
    }
}

#[tonic::async_trait]
impl<B: LockBackend + AuthGate> pb::lock_server::Lock for LockService<B> {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn lock(&self, request: Request<pb::LockRequest>) -> Result<Response<pb::LockResponse>, Status> {
        let req = request.get_ref();
        let (prefix, key) = waiter_key(&req.name, req.lease);
        let end = prefix_end(&prefix);
        gate::admit(
            self.backend.as_ref(),
            &request,
            &[
                Need::Read(&prefix, &end),
                Need::Write(&key, &[]),
                Need::LeaseKeys(req.lease),
            ],
        )
        .await
        .map_err(|e| to_status(&e))?;
        let req = request.into_inner();
        let (header, key) = self
            .backend
            .lock(req.name, req.lease)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::LockResponse {
            header: Some(header.into()),
            key,
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn unlock(
        &self,
        request: Request<pb::UnlockRequest>,
    ) -> Result<Response<pb::UnlockResponse>, Status> {
        gate::admit(
            self.backend.as_ref(),
            &request,
            &[Need::Write(&request.get_ref().key, &[])],
        )
        .await
        .map_err(|e| to_status(&e))?;
        let header = self
            .backend
            .unlock(request.into_inner().key)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::UnlockResponse {
            header: Some(header.into()),
        }))
    }
}
