//! The KV API on [`Node`]. Writes are validated, then proposed through the group-commit
//! proposer when this node leads, or forwarded to the leader's peer port when it does
//! not (one retry loop, bounded by the request deadline, follows leader changes while it
//! is certain nothing was proposed). Reads are served locally at a pinned revision, after
//! a read-index round when they must be linearizable.

use openraft::async_runtime::WatchReceiver;
use std::time::Duration;

use raftkv_core::auth::Caller;
use raftkv_core::kv::*;
use raftkv_core::{Command, Error, Response, Result, codec, validate};
use tokio::time::Instant;

use crate::node::Node;

pub(crate) fn unexpected(response: Response) -> Error {
    Error::Internal(format!("unexpected state machine answer: {response:?}"))
}

impl Node {
    /// Put `value` at `key`.
    ///
    /// # Example
    ///
    /// ```
    /// # #[tokio::main(flavor = "multi_thread")]
    /// # async fn main() -> raftkv::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let node = raftkv::Node::builder().id(1).data_dir(dir.path()).start().await?;
    /// let first = node.put("config/mode", "fast").await?;
    /// let second = node.put("config/mode", "safe").await?;
    /// // Every write makes a new revision of the whole store.
    /// assert!(second.header.revision > first.header.revision);
    /// node.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn put(&self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Result<PutResponse> {
        self.put_with(PutRequest::new(key, value)).await
    }

    /// etcd Put with every option.
    pub async fn put_with(&self, req: PutRequest) -> Result<PutResponse> {
        self.put_as(None, req).await
    }

    /// [`Node::put_with`] as `caller` made it (`None`: the embedded API, see `api/auth.rs`).
    pub(crate) async fn put_as(&self, caller: Option<Caller>, req: PutRequest) -> Result<PutResponse> {
        match self.write(caller, Command::Put(req)).await? {
            (Response::Put(mut r), term) => {
                self.fill_header(&mut r.header, term);
                Ok(r)
            }
            (other, _) => Err(unexpected(other)),
        }
    }

    /// Delete `key`.
    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<DeleteRangeResponse> {
        self.delete_range(DeleteRangeRequest::key(key)).await
    }

    /// etcd DeleteRange.
    pub async fn delete_range(&self, req: DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        self.delete_range_as(None, req).await
    }

    /// [`Node::delete_range`] as `caller` made it.
    pub(crate) async fn delete_range_as(
        &self,
        caller: Option<Caller>,
        req: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse> {
        match self.write(caller, Command::DeleteRange(req)).await? {
            (Response::DeleteRange(mut r), term) => {
                self.fill_header(&mut r.header, term);
                Ok(r)
            }
            (other, _) => Err(unexpected(other)),
        }
    }

    /// etcd Txn: compares, then the success or the failure branch, as one revision.
    ///
    /// # Example
    ///
    /// ```
    /// # #[tokio::main(flavor = "multi_thread")]
    /// # async fn main() -> raftkv::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let node = raftkv::Node::builder().id(1).data_dir(dir.path()).start().await?;
    /// use raftkv::{Compare, CompareResult, CompareTarget, PutRequest, RequestOp, TxnRequest};
    /// node.put("owner", "alice").await?;
    /// // Compare-and-swap: hand the key to bob only if alice still holds it.
    /// let swap = TxnRequest {
    ///     compare: vec![Compare::key("owner", CompareResult::Equal, CompareTarget::Value(b"alice".to_vec()))],
    ///     success: vec![RequestOp::Put(PutRequest::new("owner", "bob"))],
    ///     failure: vec![],
    /// };
    /// assert!(node.txn(swap.clone()).await?.succeeded);
    /// assert!(!node.txn(swap).await?.succeeded, "alice no longer holds it");
    /// node.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn txn(&self, req: TxnRequest) -> Result<TxnResponse> {
        self.txn_as(None, req).await
    }

    /// [`Node::txn`] as `caller` made it.
    pub(crate) async fn txn_as(&self, caller: Option<Caller>, req: TxnRequest) -> Result<TxnResponse> {
        match self.write(caller, Command::Txn(req)).await? {
            (Response::Txn(mut r), term) => {
                let mut header = r.header.clone();
                self.fill_header(&mut header, term);
                r.set_header(&header);
                Ok(r)
            }
            (other, _) => Err(unexpected(other)),
        }
    }

    /// etcd Compact: revisions below `revision` become unreadable; the old versions are
    /// then deleted from disk in the background on every member.
    pub async fn compact(&self, revision: Revision) -> Result<CompactionResponse> {
        self.compact_with(CompactionRequest {
            revision,
            physical: false,
        })
        .await
    }

    /// etcd Compact with its options: `physical` waits (within the request deadline)
    /// until this member has deleted the compacted versions from disk.
    pub async fn compact_with(&self, req: CompactionRequest) -> Result<CompactionResponse> {
        let physical = req.physical;
        let revision = req.revision;
        let mut response = match self.propose_command(Command::Compact(req)).await? {
            (Response::Compact(mut r), term) => {
                self.fill_header(&mut r.header, term);
                r
            }
            (Response::Rejected(e), _) => return Err(e.into()),
            (other, _) => return Err(unexpected(other)),
        };
        if physical {
            // The compaction is applied here once the applied index covers its entry; then
            // the local compactor deletes in chunks and advances this watermark.
            self.inner
                .shared
                .physically_compacted()
                .wait_for_timeout(revision.max(0) as u64, self.inner.request_timeout)
                .await
                .map_err(|e| Error::Timeout(format!("physical compaction: {e}")))?;
            response.header.revision = self.inner.reader.revision();
        }
        Ok(response)
    }

    /// Linearizable read of one key: it sees every write acknowledged before it
    /// started, whichever member it runs on.
    ///
    /// ```
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use std::time::Duration;
    /// let cluster = raftkv::testing::TestCluster::start(3).await?;
    /// let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    /// let follower = cluster.ids().into_iter().find(|id| *id != leader).unwrap_or(leader);
    /// let written = cluster.node(leader)?.put("user/1", "ada").await?;
    /// // Read on a follower, just after: it waits for what the leader acknowledged.
    /// let kv = cluster.node(follower)?.get("user/1").await?.ok_or("missing")?;
    /// assert_eq!((kv.value.as_slice(), kv.mod_revision), (&b"ada"[..], written.header.revision));
    /// assert!(cluster.node(follower)?.get("user/2").await?.is_none());
    /// # cluster.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<KeyValue>> {
        Ok(self.range(RangeRequest::key(key)).await?.kvs.into_iter().next())
    }

    /// Serializable (local, possibly stale) read of one key.
    pub async fn get_serializable(&self, key: impl Into<Vec<u8>>) -> Result<Option<KeyValue>> {
        let req = RangeRequest::key(key).with_serializable(true);
        Ok(self.range(req).await?.kvs.into_iter().next())
    }

    /// etcd Range: linearizable unless `req.serializable`. All keys come from one revision.
    ///
    /// # Example
    ///
    /// ```
    /// # #[tokio::main(flavor = "multi_thread")]
    /// # async fn main() -> raftkv::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let node = raftkv::Node::builder().id(1).data_dir(dir.path()).start().await?;
    /// use raftkv::RangeRequest;
    /// for name in ["a", "b", "c"] {
    ///     node.put(format!("users/{name}"), name).await?;
    /// }
    /// let users = node.range(RangeRequest::prefix("users/")).await?;
    /// assert_eq!(users.kvs.len(), 3);
    /// // The same range as it was before the last write.
    /// let before = node.range(RangeRequest::prefix("users/").with_revision(users.header.revision - 1)).await?;
    /// assert_eq!(before.kvs.len(), 2);
    /// node.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    #[tracing::instrument(level = "debug", skip_all, fields(serializable = req.serializable))]
    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        validate::check_range(&req)?;
        if !req.serializable {
            self.read_barrier().await?;
        }
        let mut r = if req.range_end.is_empty() {
            self.inner.reader.range(&req)?
        } else {
            // A key range may hold millions of keys: read it off the async workers, so a
            // long scan does not hold up heartbeats (one key stays inline, it is cheap).
            let reader = self.inner.reader.clone();
            crate::blocking::off_workers("range read", move || reader.range(&req)).await?
        };
        let term = self.inner.raft.metrics().borrow_watched().current_term;
        self.fill_header(&mut r.header, term);
        Ok(r)
    }

    /// Wait until this member has applied everything committed before the call (a
    /// read-index round): what a linearizable read waits for.
    pub(crate) async fn read_barrier(&self) -> Result<()> {
        if crate::failpoints::skip_read_index() {
            return Ok(());
        }
        let index = self.inner.read_index.read_index().await?;
        self.applied()
            .wait_for_timeout(index, self.inner.request_timeout)
            .await
            .map(drop)
            .map_err(|e| Error::Timeout(e.to_string()))
    }

    /// Validate and propose a client write made by `caller`; a deterministic refusal
    /// becomes its error.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn write(&self, caller: Option<Caller>, command: Command) -> Result<(Response, u64)> {
        validate::check_command(&command, &self.inner.limits)?;
        match self.propose_command(self.as_caller(caller, command)).await? {
            (Response::Rejected(e), _) => Err(e.into()),
            answer => Ok(answer),
        }
    }

    /// Propose `command` on the leader (here, or forwarded), following leader changes
    /// while nothing can have been proposed, until the request deadline.
    pub(crate) async fn propose_command(&self, command: Command) -> Result<(Response, u64)> {
        let counters = &self.inner.counters;
        let _pending = counters.proposing();
        let outcome = self.propose_uncounted(command).await;
        counters.finished(&outcome);
        outcome
    }

    /// [`Node::propose_command`] without the proposal counters.
    async fn propose_uncounted(&self, command: Command) -> Result<(Response, u64)> {
        let size = codec::encoded_len(&command).map_err(|e| Error::Internal(e.to_string()))?;
        self.check_quota(&command).await?;
        let deadline = Instant::now() + self.inner.request_timeout;
        loop {
            let leader = self.inner.raft.metrics().borrow_watched().current_leader;
            match leader {
                Some(leader) if leader == self.id() => {
                    self.admit_write(&command)?;
                    match self.propose_as_leader(&command, size, deadline).await {
                        Ok(p) => return Ok((p.response, p.log_id.leader_id.term)),
                        // Lost leadership (or its lease) before the entry was appended:
                        // nothing happened.
                        Err(Error::NotLeader { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                Some(leader) => {
                    let url = crate::node::raft_handle::peer_url_of(&self.inner.raft, leader)?;
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    let forward = async {
                        match crate::api::lease::forwarded_as_lease_call(&command) {
                            // Lease commands go through the peer protocol's `Lease` call.
                            Some(call) => self
                                .inner
                                .connections
                                .lease(&url, &call, remaining)
                                .await
                                .map(|answer| answer.and_then(crate::api::lease::written)),
                            None => self.inner.connections.forward(&url, &command, remaining).await,
                        }
                    };
                    // A leader that froze (or whose answers are lost) never answers; once
                    // another leader is elected, waiting out the deadline only delays the
                    // client's next write. The outcome is unknown either way.
                    let forwarded = tokio::time::timeout_at(deadline, async {
                        tokio::select! {
                            // An answer already there wins over a leader change seen in
                            // the same poll.
                            biased;
                            answer = forward => Ok(answer),
                            () = self.leader_moved_from(leader) => Err(()),
                        }
                    })
                    .await
                    .map_err(|_| self.no_answer_in_time())?
                    .map_err(|()| {
                        Error::Unknown(format!(
                            "the leader changed from {leader} while the forwarded write was in flight; \
                             it may or may not apply"
                        ))
                    })?;
                    match forwarded {
                        Ok(Ok(answer)) => return Ok(answer),
                        // The node we took for the leader no longer leads: nothing proposed.
                        Ok(Err(Error::NotLeader { .. })) => {}
                        Ok(Err(e)) => return Err(e),
                        Err(e) if e.not_sent() => {}
                        Err(e) => return Err(Error::Unknown(e.to_string())),
                    }
                }
                None => {}
            }
            // No (usable) leader: wait for the metrics to change, bounded by the deadline.
            self.wait_for_new_leader(leader, deadline).await?;
        }
    }

    /// Resolves once this node follows a leader other than `leader` (elected in a later
    /// term); never while `leader` still leads or no leader is known.
    async fn leader_moved_from(&self, leader: u64) {
        let mut metrics = self.inner.raft.metrics();
        loop {
            if let Some(now) = metrics.borrow_watched().current_leader
                && now != leader
            {
                return;
            }
            if metrics.changed().await.is_err() {
                // The Raft core stopped: the forward's own outcome or the deadline decides.
                std::future::pending::<()>().await;
            }
        }
    }

    pub(crate) async fn wait_for_new_leader(&self, stale: Option<u64>, deadline: Instant) -> Result<()> {
        let mut metrics = self.inner.raft.metrics();
        let step = Instant::now() + Duration::from_millis(100);
        let changed = async {
            loop {
                let now = metrics.borrow_watched().current_leader;
                if now.is_some() && now != stale {
                    return;
                }
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        };
        // Wake at least every 100 ms: a leader that stays the same may still become usable
        // (its peer port coming back, say).
        let _ = tokio::time::timeout_at(step.min(deadline), changed).await;
        if Instant::now() >= deadline {
            return Err(Error::Timeout(format!(
                "no leader could take the request within {:?} (no quorum?)",
                self.inner.request_timeout
            )));
        }
        Ok(())
    }

    /// Fill the header fields the state machine leaves to the node.
    fn fill_header(&self, header: &mut ResponseHeader, term: u64) {
        header.member_id = self.id();
        header.cluster_id = self.cluster_id();
        header.raft_term = term;
    }
}
