//! The embedded KV API on [`Node`]: every write goes through the group-commit proposer
//! and Raft; reads are served locally at a pinned revision, after a read-index round
//! when they must be linearizable.

use raftkv_core::kv::*;
use raftkv_core::types::NodeId;
use raftkv_core::{Command, Error, Response, Result, validate};

use crate::node::Node;

fn unexpected(response: Response) -> Error {
    Error::Internal(format!("unexpected state machine answer: {response:?}"))
}

impl Node {
    /// Put `value` at `key`.
    pub async fn put(&self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Result<PutResponse> {
        self.put_with(PutRequest::new(key, value)).await
    }

    /// etcd Put with every option.
    pub async fn put_with(&self, req: PutRequest) -> Result<PutResponse> {
        match self.write(Command::Put(req)).await? {
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
        match self.write(Command::DeleteRange(req)).await? {
            (Response::DeleteRange(mut r), term) => {
                self.fill_header(&mut r.header, term);
                Ok(r)
            }
            (other, _) => Err(unexpected(other)),
        }
    }

    /// etcd Txn: compares, then the success or the failure branch, as one revision.
    pub async fn txn(&self, req: TxnRequest) -> Result<TxnResponse> {
        match self.write(Command::Txn(req)).await? {
            (Response::Txn(mut r), term) => {
                let mut header = r.header.clone();
                self.fill_header(&mut header, term);
                r.set_header(&header);
                Ok(r)
            }
            (other, _) => Err(unexpected(other)),
        }
    }

    /// etcd Compact: revisions below `revision` become unreadable.
    pub async fn compact(&self, revision: Revision) -> Result<CompactionResponse> {
        let command = Command::Compact(CompactionRequest {
            revision,
            physical: false,
        });
        let proposed = self.propose(command, 16).await?;
        match proposed {
            (Response::Compact(mut r), term) => {
                self.fill_header(&mut r.header, term);
                Ok(r)
            }
            (Response::Rejected(e), _) => Err(e.into()),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// Linearizable read of one key.
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<KeyValue>> {
        Ok(self.range(RangeRequest::key(key)).await?.kvs.into_iter().next())
    }

    /// Serializable (local, possibly stale) read of one key.
    pub async fn get_serializable(&self, key: impl Into<Vec<u8>>) -> Result<Option<KeyValue>> {
        let req = RangeRequest::key(key).with_serializable(true);
        Ok(self.range(req).await?.kvs.into_iter().next())
    }

    /// etcd Range: linearizable unless `req.serializable`. All keys come from one revision.
    #[tracing::instrument(level = "debug", skip_all, fields(serializable = req.serializable))]
    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        validate::check_range(&req)?;
        if !req.serializable {
            self.wait_read_index().await?;
        }
        let mut r = self.inner.reader.range(&req)?;
        let term = self.inner.raft.metrics().borrow().current_term;
        self.fill_header(&mut r.header, term);
        Ok(r)
    }

    /// The read-index protocol: the leader confirms it still leads and names the log index
    /// a linearizable read must see; we wait for our applied watermark to reach it.
    async fn wait_read_index(&self) -> Result<()> {
        use openraft::error::{CheckIsLeaderError, RaftError};
        let deadline = self.inner.request_timeout;
        let read = tokio::time::timeout(deadline, self.inner.raft.get_read_log_id())
            .await
            .map_err(|_| Error::Timeout("no leader confirmed the read in time".into()))?;
        let (read_log_id, _) = read.map_err(|e| match e {
            RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)) => Error::NotLeader {
                leader_id: f.leader_id,
                leader_client_urls: f.leader_node.map(|n| n.client_urls).unwrap_or_default(),
            },
            RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)) => Error::Timeout(q.to_string()),
            RaftError::Fatal(f) => Error::Shutdown(f.to_string()),
        })?;
        if let Some(id) = read_log_id {
            self.applied()
                .wait_for_timeout(id.index, deadline)
                .await
                .map_err(|e| Error::Timeout(e.to_string()))?;
        }
        Ok(())
    }

    /// Validate and propose a client write; a deterministic refusal becomes its error.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn write(&self, command: Command) -> Result<(Response, u64)> {
        let size = validate::check_command(&command, &self.inner.limits)?;
        match self.propose(command, size).await? {
            (Response::Rejected(e), _) => Err(e.into()),
            answer => Ok(answer),
        }
    }

    async fn propose(&self, command: Command, size: usize) -> Result<(Response, u64)> {
        let deadline = self.inner.request_timeout;
        let proposed = tokio::time::timeout(deadline, self.inner.proposer.propose(command, size))
            .await
            .map_err(|_| {
                Error::Unknown(format!(
                    "no answer within {deadline:?}; the write may or may not apply"
                ))
            })??;
        Ok((proposed.response, proposed.log_id.leader_id.term))
    }

    fn fill_header(&self, header: &mut ResponseHeader, term: u64) {
        header.member_id = self.inner.id;
        header.cluster_id = cluster_id(self.inner.id);
        header.raft_term = term;
    }
}

/// A single-node cluster's id, derived from its only member (the cluster work derives it
/// from the initial membership).
fn cluster_id(id: NodeId) -> u64 {
    id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1
}
