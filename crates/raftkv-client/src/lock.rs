//! etcd's Lock service: [`Client::lock`] and [`Client::unlock`].
//!
//! [`Client::lock`] waits (server side) until the lock named is free, within the client's
//! request timeout: a lock not acquired by then fails (the server removes the waiter's key
//! when the call is abandoned). The lock is held under a lease the caller granted and
//! keeps alive (see [`Client::keep_alive`]); it is released by [`Client::unlock`] or when
//! the lease ends.
//!
//! **Fencing (etcd issue 11457).** A lease lock is not exclusive while its holder is
//! paused past the lease's TTL: the lease expires, another waiter gets the lock, and the
//! paused holder resumes unaware. So the answer carries the ownership key's create
//! revision ([`LockKey::create_revision`]): make every write the lock protects a txn with
//! [`LockKey::fence`] among its compares; it fails once the lock is lost.

use raftkv_core::kv::{Compare, CompareResult, CompareTarget, ResponseHeader, Revision};
use raftkv_core::{Error as ServerError, RequestError};
use raftkv_proto::v3lockpb as pb;
use raftkv_proto::v3lockpb::lock_client::LockClient;
use tonic::transport::Channel;

use crate::client::Client;
use crate::error::{ClientError, Result};
use crate::retry::Mutability;

fn lock_client(channel: Channel) -> LockClient<Channel> {
    LockClient::new(channel)
}

/// A held lock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockKey {
    /// Header of the Lock answer.
    pub header: ResponseHeader,
    /// The ownership key: it exists while the lock is held.
    pub key: Vec<u8>,
    /// The ownership key's create revision, to fence writes with.
    pub create_revision: Revision,
}

impl LockKey {
    /// The compare that holds only while this lock is held: put it in every txn the lock
    /// protects.
    pub fn fence(&self) -> Compare {
        Compare::key(
            self.key.clone(),
            CompareResult::Equal,
            CompareTarget::Create(self.create_revision),
        )
    }
}

impl Client {
    /// Acquire lock `name` under `lease` (see the module doc): the ownership key and its
    /// create revision. Errors: the lease does not exist or ended while waiting
    /// (`LeaseNotFound`), the lock was lost before the answer (`KeyNotFound`), no answer
    /// within the request timeout.
    #[tracing::instrument(level = "debug", skip(self, name))]
    pub async fn lock(&self, name: impl Into<Vec<u8>>, lease: i64) -> Result<LockKey> {
        let req = pb::LockRequest {
            name: name.into(),
            lease,
        };
        let resp = self
            .call(Mutability::Write, req, |ch, r| async move {
                lock_client(ch).lock(r).await
            })
            .await?;
        // The create revision is not in etcd's answer: read it (linearizably).
        match self.get(resp.key.clone()).await? {
            Some(kv) => Ok(LockKey {
                header: resp.header.map(Into::into).unwrap_or_default(),
                key: resp.key,
                create_revision: kv.create_revision,
            }),
            None => Err(ClientError::Server(ServerError::Request(
                RequestError::KeyNotFound,
            ))),
        }
    }

    /// Release the lock whose ownership key is `key`.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn unlock(&self, key: impl Into<Vec<u8>>) -> Result<ResponseHeader> {
        let req = pb::UnlockRequest { key: key.into() };
        let resp = self
            .call(Mutability::Write, req, |ch, r| async move {
                lock_client(ch).unlock(r).await
            })
            .await?;
        Ok(resp.header.map(Into::into).unwrap_or_default())
    }
}
