//! [`KvReader`]: serves reads straight from the MVCC keyspace, without the Raft actor and
//! without a lock. The caller decides how fresh the read must be (a linearizable read
//! first waits for the applied watermark to reach the read index); the reader pins a
//! revision and answers from it.

use std::sync::Arc;

use raftkv_core::kv::{KeyValue, RangeRequest, RangeResponse, ResponseHeader, Revision};
use raftkv_core::{Error, RequestError, Watermark, codec};

use crate::keys;
use crate::mvcc;
use crate::state::StateShared;

/// Read handle on the state machine; cheap to clone.
#[derive(Clone)]
pub struct KvReader {
    shared: Arc<StateShared>,
}

fn storage(e: impl std::fmt::Display) -> Error {
    Error::Storage(e.to_string())
}

impl KvReader {
    pub(crate) fn new(shared: Arc<StateShared>) -> Self {
        Self { shared }
    }

    /// The newest applied revision.
    pub fn revision(&self) -> Revision {
        self.shared.revision()
    }

    /// The compact revision.
    pub fn compact_revision(&self) -> Revision {
        self.shared.compact_revision()
    }

    /// The cluster id (0 until the first membership is applied).
    pub fn cluster_id(&self) -> u64 {
        self.shared.cluster_id()
    }

    /// The applied-index watermark.
    pub fn applied(&self) -> &Arc<Watermark> {
        self.shared.applied()
    }

    /// Serve an etcd Range at a pinned revision. `header.revision` is the store revision
    /// the read was served at (etcd reports the current revision, also for reads of an
    /// older one); `cluster_id`, `member_id` and `raft_term` are left for the caller.
    #[tracing::instrument(level = "debug", skip_all)]
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, Error> {
        raftkv_core::validate::check_range(req)?;
        // Pin the revision before loading the tree (see `snapshot::install`).
        let current = self.shared.revision();
        let tree = self.shared.tree();
        let compacted = self.shared.compact_revision();
        let rev = if req.revision <= 0 {
            current
        } else if req.revision > current {
            return Err(RequestError::FutureRevision {
                requested: req.revision,
                current,
            }
            .into());
        } else if req.revision < compacted {
            return Err(RequestError::Compacted {
                requested: req.revision,
                compacted,
            }
            .into());
        } else {
            req.revision
        };
        let kvs: Vec<KeyValue> = if req.range_end.is_empty() {
            mvcc::get_at(&tree, &req.key, rev)
                .map_err(storage)?
                .into_iter()
                .collect()
        } else {
            mvcc::scan_at(&tree, &req.key, &req.range_end, rev).map_err(storage)?
        };
        let (kvs, more, count) = mvcc::shape_range(kvs, req);
        Ok(RangeResponse {
            header: ResponseHeader {
                revision: current,
                ..ResponseHeader::default()
            },
            kvs,
            more,
            count,
        })
    }

    /// The name and client URLs member `id` published, if it did.
    pub fn published_member(&self, id: u64) -> Result<Option<(String, Vec<String>)>, Error> {
        match self.shared.tree().get(keys::member_key(id)).map_err(storage)? {
            Some(bytes) => Ok(Some(codec::decode(&bytes).map_err(storage)?)),
            None => Ok(None),
        }
    }
}
