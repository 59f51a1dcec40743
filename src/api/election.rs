//! Leader elections on [`Node`] (`campaign`, `proclaim`, `election_leader`,
//! `observe_election`, `resign`), the backend of etcd's `v3electionpb.Election` service,
//! built as etcd's client-side recipe (`client/v3/concurrency/election.go`) on the same
//! queue as the locks (`api/lock.rs`):
//!
//! - **Campaign** creates `name/<lease hex>` holding the value, with the lease, unless it
//!   exists (then it proclaims the value if it differs), waits until no key under
//!   `name/` is older, then re-checks that the lease and the key are still there (etcd
//!   issue 11456) before answering the [`LeaderKey`]. On an error, or if the future is
//!   dropped, the campaigner's key is deleted.
//! - **Proclaim** rewrites the value with a txn comparing the key's create revision:
//!   `None` if the key is no longer the one campaigned for (etcd: "not leader").
//! - **Leader** is the oldest key under `name/` (`None`: no leader).
//! - **Observe** is a stream of each new leader or value, read linearizably after every
//!   change under the prefix (intermediate values may be skipped, never reordered).
//! - **Resign** deletes the key if it is still the one campaigned for.
//!
//! **Fencing (etcd issue 11457).** Leadership held through a lease is not exclusive while
//! the leader is paused past the lease's TTL: the next campaigner wins and the paused one
//! resumes unaware. Fence the leader's writes with a txn comparing the key's create
//! revision ([`LeaderKey::fence`]).
//!
//! **Caveats.** The embedded campaign has no deadline of its own: bound it with
//! `tokio::time::timeout` or drop it (the gRPC service is bounded by the call's deadline).

use raftkv_core::kv::{
    Compare, CompareResult, CompareTarget, KeyValue, PutRequest, RangeRequest, RequestOp, ResponseHeader,
    Revision, TxnRequest,
};
use raftkv_core::watch::WatchRequest;
use raftkv_core::{Error, RequestError, Result};
use raftkv_net::LeaderKeyParts;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::api::lock::{Cleanup, lock_key, oldest_first, prefix_of};
use crate::node::Node;

/// Leader answers an observer may have unread before the observation pauses.
const OBSERVE_BUFFER: usize = 16;

/// Leadership of an election (etcd's `LeaderKey`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderKey {
    /// The election's name.
    pub name: Vec<u8>,
    /// The leadership key (`name/<lease hex>`); leadership ends when it is deleted.
    pub key: Vec<u8>,
    /// The key's create revision: compare it in a txn to fence the leader's writes.
    pub rev: Revision,
    /// The lease leadership is held under.
    pub lease: i64,
}

impl LeaderKey {
    /// The compare that holds only while this leadership does.
    pub fn fence(&self) -> Compare {
        Compare::key(
            self.key.clone(),
            CompareResult::Equal,
            CompareTarget::Create(self.rev),
        )
    }
}

impl Node {
    /// Campaign in election `name` under `lease` with `value` (see the module doc): waits
    /// until this campaigner leads. Errors as [`Node::lock`].
    ///
    /// # Example
    ///
    /// ```
    /// # #[tokio::main(flavor = "multi_thread")]
    /// # async fn main() -> raftkv::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let node = raftkv::Node::builder().id(1).data_dir(dir.path()).start().await?;
    /// let lease = node.lease_grant(0, 30).await?;
    /// let (_, leader) = node.campaign("elections/scheduler", lease.id, "worker-1").await?;
    /// let (_, current) = node.election_leader("elections/scheduler").await?;
    /// assert_eq!(current.map(|kv| kv.value), Some(b"worker-1".to_vec()));
    /// node.resign(&leader).await?;
    /// node.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    #[tracing::instrument(level = "debug", skip_all, fields(lease = lease))]
    pub async fn campaign(
        &self,
        name: impl Into<Vec<u8>>,
        lease: i64,
        value: impl Into<Vec<u8>>,
    ) -> Result<(ResponseHeader, LeaderKey)> {
        let name = name.into();
        let value = value.into();
        if lease == 0 {
            return Err(RequestError::LeaseNotFound(0).into());
        }
        let key = lock_key(&name, lease);
        let (rev, existing) = self.enqueue(&key, lease, value.clone()).await?;
        let cleanup = Cleanup {
            node: self.clone(),
            key: key.clone(),
            create_revision: rev,
            armed: true,
        };
        let leader = LeaderKey {
            name: name.clone(),
            key: key.clone(),
            rev,
            lease,
        };
        if existing.is_some_and(|v| v != value) && self.proclaim(&leader, value).await?.is_none() {
            return Err(RequestError::KeyNotFound.into());
        }
        let header = self.wait_for_turn(&prefix_of(&name), &key, rev, lease).await?;
        self.recheck(&key, rev, lease).await?;
        cleanup.disarm();
        Ok((header, leader))
    }

    /// Set the leader's value; `None` if `leader` no longer leads (its key is gone or
    /// re-created).
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn proclaim(
        &self,
        leader: &LeaderKey,
        value: impl Into<Vec<u8>>,
    ) -> Result<Option<ResponseHeader>> {
        let txn = TxnRequest {
            compare: vec![leader.fence()],
            success: vec![RequestOp::Put(PutRequest {
                key: leader.key.clone(),
                value: value.into(),
                lease: leader.lease,
                ..PutRequest::default()
            })],
            failure: vec![],
        };
        let resp = self.txn(txn).await?;
        Ok(resp.succeeded.then_some(resp.header))
    }

    /// The election's leader: its key and value (`None`: no leader). Linearizable.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn election_leader(
        &self,
        name: impl Into<Vec<u8>>,
    ) -> Result<(ResponseHeader, Option<KeyValue>)> {
        let prefix = prefix_of(&name.into());
        let resp = self
            .range(RangeRequest {
                keys_only: false,
                limit: 1,
                ..oldest_first(&prefix)
            })
            .await?;
        Ok((resp.header, resp.kvs.into_iter().next()))
    }

    /// Give up leadership: delete the key if it is still the one campaigned for.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn resign(&self, leader: &LeaderKey) -> Result<ResponseHeader> {
        self.delete_if_created_at(leader.key.clone(), leader.rev).await?;
        Ok(self.response_header())
    }

    /// Observe election `name`: a receiver of each new leader (or leader's value), first
    /// the current one if there is one. It ends (`Err` as its last item) when the node
    /// fails or stops; dropping the receiver ends the observation.
    pub fn observe_election(
        &self,
        name: impl Into<Vec<u8>>,
    ) -> mpsc::Receiver<Result<(ResponseHeader, KeyValue)>> {
        let (tx, rx) = mpsc::channel(OBSERVE_BUFFER);
        let node = self.clone();
        let name = name.into();
        tokio::spawn(
            async move {
                let result = tokio::select! {
                    r = node.observe_into(&name, &tx) => r,
                    () = tx.closed() => Ok(()),
                };
                if let Err(e) = result {
                    let _ = tx.send(Err(e)).await;
                }
            }
            .instrument(tracing::debug_span!("observe_election")),
        );
        rx
    }

    async fn observe_into(
        &self,
        name: &[u8],
        tx: &mpsc::Sender<Result<(ResponseHeader, KeyValue)>>,
    ) -> Result<()> {
        let prefix = prefix_of(name);
        let mut last: Option<(Vec<u8>, Revision)> = None;
        loop {
            let (header, leader) = self.election_leader(name.to_vec()).await?;
            if let Some(kv) = leader {
                let seen = (kv.key.clone(), kv.mod_revision);
                if last.as_ref() != Some(&seen) {
                    last = Some(seen);
                    if tx.send(Ok((header.clone(), kv))).await.is_err() {
                        return Ok(());
                    }
                }
            }
            let mut watch = self.watch(WatchRequest {
                start_revision: header.revision + 1,
                ..WatchRequest::prefix(prefix.clone())
            })?;
            loop {
                match watch.next().await {
                    Some(resp) if resp.canceled || !resp.events.is_empty() => break,
                    Some(_) => {}
                    None => return Err(Error::Shutdown("the node stopped while observing".into())),
                }
            }
        }
    }
}

impl raftkv_net::ElectionBackend for Node {
    async fn campaign(
        &self,
        name: Vec<u8>,
        lease: i64,
        value: Vec<u8>,
    ) -> Result<(ResponseHeader, LeaderKeyParts)> {
        let (header, leader) = Node::campaign(self, name, lease, value).await?;
        Ok((header, (leader.name, leader.key, leader.rev, leader.lease)))
    }

    async fn proclaim(&self, leader: LeaderKeyParts, value: Vec<u8>) -> Result<Option<ResponseHeader>> {
        Node::proclaim(self, &from_parts(leader), value).await
    }

    async fn leader(&self, name: Vec<u8>) -> Result<(ResponseHeader, Option<KeyValue>)> {
        self.election_leader(name).await
    }

    fn observe(&self, name: Vec<u8>) -> mpsc::Receiver<Result<(ResponseHeader, KeyValue)>> {
        self.observe_election(name)
    }

    async fn resign(&self, leader: LeaderKeyParts) -> Result<ResponseHeader> {
        Node::resign(self, &from_parts(leader)).await
    }
}

fn from_parts((name, key, rev, lease): LeaderKeyParts) -> LeaderKey {
    LeaderKey {
        name,
        key,
        rev,
        lease,
    }
}
