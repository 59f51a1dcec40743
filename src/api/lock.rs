//! Distributed locks on [`Node`] (`node.lock(name, lease)`, `node.unlock(key)`), the
//! backend of etcd's `v3lockpb.Lock` service, built as etcd's client-side mutex recipe
//! (`client/v3/concurrency/mutex.go`) on leases, a txn and a watch:
//!
//! 1. The waiter's key is `name + "/" + lease id in hex`, created by one txn *if its
//!    create revision is 0* (put with the lease), else read (the same lease asking again
//!    resumes its place). Its create revision is the waiter's place in the queue.
//! 2. The waiter holds the lock once no key under `name + "/"` has a smaller create
//!    revision: it reads the prefix (linearizably) and, while an older key exists, waits
//!    on a watch of the prefix for a deletion, then reads again.
//! 3. **Re-check after waiting** (etcd issue 11456, found by Jepsen: etcd answered a lock
//!    whose lease had expired while it waited): before answering, the lease must still
//!    exist (asked of the leader) and the key must still be there with the waiter's create
//!    revision (a linearizable read). Otherwise the key is deleted and the lock fails with
//!    `LeaseNotFound` (or `KeyNotFound` if the key was deleted by someone else).
//!
//! A wait that fails or is abandoned (the caller's future dropped: a gRPC deadline, a
//! client going away) deletes the waiter's key, unless it has since been re-created:
//! the delete compares the create revision.
//!
//! **Fencing (etcd issue 11457).** A lease lock is not exclusive while its holder is
//! paused (GC, SIGSTOP, a slow network) past its lease's TTL: the lease expires, the next
//! waiter gets the lock, and the paused holder resumes believing it still holds it. No
//! lock service can prevent that. So [`Node::lock`] answers the key *and its create
//! revision* ([`LockKey`]): a holder must make its protected writes with a txn comparing
//! `create_revision(key) == LockKey::create_revision`, which fails once the lock is lost.
//!
//! **Caveats.** The embedded wait has no deadline of its own: bound it with
//! `tokio::time::timeout` or drop the future (the gRPC service is bounded by the call's
//! deadline and cancelled when the client goes away). Waiting on a follower follows its
//! local watch; every decision is made on a linearizable read.

use raftkv_core::kv::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, KeyValue, PutRequest, RangeRequest, RequestOp,
    ResponseHeader, ResponseOp, Revision, SortOrder, SortTarget, TxnRequest,
};
use raftkv_core::watch::{EventType, WatchRequest};
use raftkv_core::{Error, RequestError, Result};
use tracing::Instrument;

use crate::node::Node;

/// A held lock (see the module doc): fence writes with `create_revision`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockKey {
    /// Header of the read that confirmed the lock.
    pub header: ResponseHeader,
    /// The lock's ownership key (`name/lease-hex`); it exists while the lock is held.
    pub key: Vec<u8>,
    /// The key's create revision: compare it in a txn to fence writes.
    pub create_revision: Revision,
    /// The lease the lock is held under.
    pub lease: i64,
}

impl LockKey {
    /// The compare that fences a write: it holds only while this lock is held.
    pub fn fence(&self) -> Compare {
        Compare::key(
            self.key.clone(),
            CompareResult::Equal,
            CompareTarget::Create(self.create_revision),
        )
    }
}

/// The key a waiter with `lease` uses for lock `name` (etcd: `name/<lease hex>`).
pub fn lock_key(name: &[u8], lease: i64) -> Vec<u8> {
    let mut key = prefix_of(name);
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    key
}

pub(crate) fn prefix_of(name: &[u8]) -> Vec<u8> {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    prefix
}

/// Deletes the waiter's key if dropped armed (a failed or abandoned wait).
pub(crate) struct Cleanup {
    pub(crate) node: Node,
    pub(crate) key: Vec<u8>,
    pub(crate) create_revision: Revision,
    pub(crate) armed: bool,
}

impl Cleanup {
    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let node = self.node.clone();
        let key = std::mem::take(&mut self.key);
        let create_revision = self.create_revision;
        runtime.spawn(
            async move {
                if let Err(e) = node.delete_if_created_at(key, create_revision).await {
                    tracing::debug!(error = %e, "removing an abandoned lock waiter's key failed");
                }
            }
            .instrument(tracing::debug_span!("lock_cleanup")),
        );
    }
}

impl Node {
    /// Acquire lock `name` under `lease` (see the module doc): waits until every older
    /// waiter is gone, re-checks the lease and the key, and answers the key and its create
    /// revision, with which the holder must fence its writes.
    ///
    /// Errors: lease 0 or a lease that does not exist or expires while waiting
    /// (`LeaseNotFound`), the key deleted by someone else while waiting (`KeyNotFound`),
    /// the node's errors. On an error (or if the future is dropped) the waiter's key is
    /// deleted.
    ///
    /// # Example
    ///
    /// ```
    /// # #[tokio::main(flavor = "multi_thread")]
    /// # async fn main() -> raftkv::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let node = raftkv::Node::builder().id(1).data_dir(dir.path()).start().await?;
    /// use raftkv::{Compare, CompareResult, CompareTarget, PutRequest, RequestOp, TxnRequest};
    /// let lease = node.lease_grant(0, 30).await?;
    /// let lock = node.lock("locks/report", lease.id).await?;
    /// // A fenced write: it applies only while this holder's lock key is the one that exists.
    /// let fenced = TxnRequest {
    ///     compare: vec![Compare::key(lock.key.clone(), CompareResult::Equal, CompareTarget::Create(lock.create_revision))],
    ///     success: vec![RequestOp::Put(PutRequest::new("report/owner", "worker-1"))],
    ///     failure: vec![],
    /// };
    /// assert!(node.txn(fenced).await?.succeeded);
    /// node.unlock(lock.key).await?;
    /// node.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    #[tracing::instrument(level = "debug", skip_all, fields(lease = lease))]
    pub async fn lock(&self, name: impl Into<Vec<u8>>, lease: i64) -> Result<LockKey> {
        let name = name.into();
        if lease == 0 {
            return Err(RequestError::LeaseNotFound(0).into());
        }
        let key = lock_key(&name, lease);
        let prefix = prefix_of(&name);
        let (create_revision, _) = self.enqueue(&key, lease, Vec::new()).await?;
        let cleanup = Cleanup {
            node: self.clone(),
            key: key.clone(),
            create_revision,
            armed: true,
        };
        let header = self.wait_for_turn(&prefix, &key, create_revision, lease).await?;
        self.recheck(&key, create_revision, lease).await?;
        cleanup.disarm();
        Ok(LockKey {
            header,
            key,
            create_revision,
            lease,
        })
    }

    /// Release a lock: delete its key (as etcd, deleting an absent key is no error).
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn unlock(&self, key: impl Into<Vec<u8>>) -> Result<ResponseHeader> {
        Ok(self.delete(key).await?.header)
    }

    /// etcd 11456: a wait may outlive the lease. Answer only if the lease still exists and
    /// the key is still ours (a linearizable read after the lease check).
    pub(crate) async fn recheck(&self, key: &[u8], create_revision: Revision, lease: i64) -> Result<()> {
        let (_, info) = self.lease_time_to_live(lease, false).await?;
        if info.ttl <= 0 {
            return Err(RequestError::LeaseNotFound(lease).into());
        }
        match self.get(key.to_vec()).await? {
            Some(kv) if kv.create_revision == create_revision && kv.lease == lease => Ok(()),
            Some(_) | None => Err(RequestError::KeyNotFound.into()),
        }
    }

    /// Create the waiter's key with `value` unless it exists: its create revision, and
    /// its value if it existed.
    pub(crate) async fn enqueue(
        &self,
        key: &[u8],
        lease: i64,
        value: Vec<u8>,
    ) -> Result<(Revision, Option<Vec<u8>>)> {
        let txn = TxnRequest {
            compare: vec![Compare::key(
                key.to_vec(),
                CompareResult::Equal,
                CompareTarget::Create(0),
            )],
            success: vec![RequestOp::Put(PutRequest {
                key: key.to_vec(),
                value,
                lease,
                ..PutRequest::default()
            })],
            failure: vec![RequestOp::Range(RangeRequest::key(key.to_vec()))],
        };
        let resp = self.txn(txn).await?;
        if resp.succeeded {
            return Ok((resp.header.revision, None));
        }
        match resp.responses.into_iter().next() {
            Some(ResponseOp::Range(r)) => match r.kvs.into_iter().next() {
                Some(kv) if kv.lease == lease => Ok((kv.create_revision, Some(kv.value))),
                // Someone else's key at our name (written without our lease).
                Some(_) => Err(RequestError::KeyNotFound.into()),
                // Deleted between the compare and now cannot happen (one revision).
                None => Err(Error::Internal("lock key vanished inside a txn".into())),
            },
            other => Err(Error::Internal(format!("unexpected txn answer: {other:?}"))),
        }
    }

    /// Wait until no key under `prefix` is older than ours; the header of the read that
    /// found it so.
    pub(crate) async fn wait_for_turn(
        &self,
        prefix: &[u8],
        key: &[u8],
        create_revision: Revision,
        lease: i64,
    ) -> Result<ResponseHeader> {
        loop {
            let read = self.range(oldest_first(prefix)).await?;
            let ours = read
                .kvs
                .iter()
                .any(|kv| kv.key == key && kv.create_revision == create_revision);
            if !ours {
                let (_, info) = self.lease_time_to_live(lease, false).await?;
                return Err(if info.ttl <= 0 {
                    RequestError::LeaseNotFound(lease).into()
                } else {
                    RequestError::KeyNotFound.into()
                });
            }
            let older: Vec<&KeyValue> = read
                .kvs
                .iter()
                .filter(|kv| kv.create_revision < create_revision)
                .collect();
            if older.is_empty() {
                return Ok(read.header);
            }
            tracing::debug!(ahead = older.len(), "waiting for older lock waiters");
            // Any deletion under the prefix after the read (an older waiter gone, or our
            // own key) is a reason to read again.
            let mut watch = self.watch(WatchRequest {
                start_revision: read.header.revision + 1,
                no_put: true,
                ..WatchRequest::prefix(prefix.to_vec())
            })?;
            loop {
                match watch.next().await {
                    Some(resp) if resp.canceled => break,
                    Some(resp) if resp.events.iter().any(|e| e.kind == EventType::Delete) => break,
                    Some(_) => {}
                    None => return Err(Error::Shutdown("the node stopped while a lock waited".into())),
                }
            }
        }
    }

    /// Delete `key` if its create revision is `create_revision`.
    pub(crate) async fn delete_if_created_at(&self, key: Vec<u8>, create_revision: Revision) -> Result<()> {
        let txn = TxnRequest {
            compare: vec![Compare::key(
                key.clone(),
                CompareResult::Equal,
                CompareTarget::Create(create_revision),
            )],
            success: vec![RequestOp::DeleteRange(DeleteRangeRequest::key(key))],
            failure: vec![],
        };
        self.txn(txn).await.map(|_| ())
    }
}

pub(crate) fn oldest_first(prefix: &[u8]) -> RangeRequest {
    RangeRequest {
        keys_only: true,
        sort_order: SortOrder::Ascend,
        sort_target: SortTarget::Create,
        ..RangeRequest::prefix(prefix.to_vec())
    }
}

impl raftkv_net::LockBackend for Node {
    async fn lock(&self, name: Vec<u8>, lease: i64) -> Result<(ResponseHeader, Vec<u8>)> {
        let held = Node::lock(self, name, lease).await?;
        Ok((held.header, held.key))
    }

    async fn unlock(&self, key: Vec<u8>) -> Result<ResponseHeader> {
        Node::unlock(self, key).await
    }
}
