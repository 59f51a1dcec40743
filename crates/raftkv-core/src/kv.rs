//! etcd v3's key-value data model: key-values with revisions, and the requests and
//! responses of the KV service (Range, Put, DeleteRange, Txn, Compact).
//!
//! Field names and meanings follow etcd's `rpc.proto` / `kv.proto`, so the gRPC layer maps
//! them one to one. Revisions are `i64` as in etcd. An empty `range_end` means "just
//! `key`"; `range_end == [0]` means "every key >= `key`".

use serde::{Deserialize, Serialize};

/// A store revision. The empty store is at revision 1; each request that changes the
/// keyspace adds one.
pub type Revision = i64;

/// One key with its value and MVCC metadata (etcd's `mvccpb.KeyValue`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// The key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// Revision of the last creation of this key.
    pub create_revision: Revision,
    /// Revision of the last modification of this key.
    pub mod_revision: Revision,
    /// Number of modifications since creation (1 on create).
    pub version: i64,
    /// The value.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// The lease attached to the key, 0 for none.
    pub lease: i64,
}

/// The header every response carries (etcd's `ResponseHeader`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseHeader {
    /// Id of the cluster that answered.
    pub cluster_id: u64,
    /// Id of the member that answered.
    pub member_id: u64,
    /// Store revision when the request was applied (writes) or served (reads).
    pub revision: Revision,
    /// Raft term when the request was applied or served.
    pub raft_term: u64,
}

/// Order of range results.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortOrder {
    /// Key order, ascending (etcd's default).
    #[default]
    None,
    /// Ascending by the sort target.
    Ascend,
    /// Descending by the sort target.
    Descend,
}

/// What a range is sorted by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortTarget {
    /// The key.
    #[default]
    Key,
    /// The version.
    Version,
    /// The create revision.
    Create,
    /// The mod revision.
    Mod,
    /// The value.
    Value,
}

/// etcd's `RangeRequest`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeRequest {
    /// First key of the range.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// End of the range (exclusive); see the module doc for the special forms.
    #[serde(with = "serde_bytes")]
    pub range_end: Vec<u8>,
    /// Maximum number of keys returned, 0 for no limit.
    pub limit: i64,
    /// Read at this revision; 0 (or below) for the newest.
    pub revision: Revision,
    /// Sort order.
    pub sort_order: SortOrder,
    /// Sort target.
    pub sort_target: SortTarget,
    /// Serve from local state without confirming leadership.
    pub serializable: bool,
    /// Return keys without values.
    pub keys_only: bool,
    /// Return only the count.
    pub count_only: bool,
    /// Lower bound on mod revision (0: none).
    pub min_mod_revision: Revision,
    /// Upper bound on mod revision (0: none).
    pub max_mod_revision: Revision,
    /// Lower bound on create revision (0: none).
    pub min_create_revision: Revision,
    /// Upper bound on create revision (0: none).
    pub max_create_revision: Revision,
}

impl RangeRequest {
    /// A request for one key.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            ..Self::default()
        }
    }

    /// A request for every key starting with `prefix` (every key if it is empty).
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let key: Vec<u8> = prefix.into();
        let range_end = prefix_end(&key);
        let key = if key.is_empty() { vec![0] } else { key };
        Self {
            key,
            range_end,
            ..Self::default()
        }
    }

    /// A request for the half-open interval `[start, end)`.
    pub fn interval(start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Self {
        Self {
            key: start.into(),
            range_end: end.into(),
            ..Self::default()
        }
    }

    /// Return at most `limit` keys.
    pub fn with_limit(mut self, limit: i64) -> Self {
        self.limit = limit;
        self
    }

    /// Read at `revision` instead of the newest.
    pub fn with_revision(mut self, revision: Revision) -> Self {
        self.revision = revision;
        self
    }

    /// Serve from local state (may be stale) instead of a linearizable read.
    pub fn with_serializable(mut self, serializable: bool) -> Self {
        self.serializable = serializable;
        self
    }
}

/// The smallest key greater than every key with prefix `prefix` (etcd's
/// `GetPrefixRangeEnd`); `[0]` ("to the end") when no such key exists.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// etcd's `RangeResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeResponse {
    /// Header.
    pub header: ResponseHeader,
    /// The key-values, at most `limit`.
    pub kvs: Vec<KeyValue>,
    /// Whether more keys matched than were returned.
    pub more: bool,
    /// Number of keys in the range.
    pub count: i64,
}

/// etcd's `PutRequest`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutRequest {
    /// Key to write.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// Value to write.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Lease to attach, 0 for none.
    pub lease: i64,
    /// Return the previous key-value.
    pub prev_kv: bool,
    /// Keep the current value (the key must exist).
    pub ignore_value: bool,
    /// Keep the current lease (the key must exist).
    pub ignore_lease: bool,
}

impl PutRequest {
    /// A plain put of `value` at `key`.
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            ..Self::default()
        }
    }
}

/// etcd's `PutResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResponse {
    /// Header; `revision` is the revision of this put.
    pub header: ResponseHeader,
    /// The previous key-value, if asked for and present.
    pub prev_kv: Option<KeyValue>,
}

/// etcd's `DeleteRangeRequest`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRangeRequest {
    /// First key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// End of range (see the module doc).
    #[serde(with = "serde_bytes")]
    pub range_end: Vec<u8>,
    /// Return the deleted key-values.
    pub prev_kv: bool,
}

impl DeleteRangeRequest {
    /// Delete one key.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            ..Self::default()
        }
    }

    /// Delete every key starting with `prefix`.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let r = RangeRequest::prefix(prefix);
        Self {
            key: r.key,
            range_end: r.range_end,
            prev_kv: false,
        }
    }
}

/// etcd's `DeleteRangeResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRangeResponse {
    /// Header.
    pub header: ResponseHeader,
    /// Number of keys deleted.
    pub deleted: i64,
    /// Deleted key-values, if asked for.
    pub prev_kvs: Vec<KeyValue>,
}

/// What a compare looks at and the value it compares with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    /// The key's version (0 if absent).
    Version(i64),
    /// The key's create revision (0 if absent).
    Create(Revision),
    /// The key's mod revision (0 if absent).
    Mod(Revision),
    /// The key's value (an absent key fails every value compare, as in etcd).
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The key's lease (0 if absent or none).
    Lease(i64),
}

/// How a compare relates the key's field to the given value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareResult {
    /// Field == value.
    Equal,
    /// Field > value.
    Greater,
    /// Field < value.
    Less,
    /// Field != value.
    NotEqual,
}

/// etcd's `Compare`: one condition of a transaction, over a key or a range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    /// The relation.
    pub result: CompareResult,
    /// The field and the value to compare with.
    pub target: CompareTarget,
    /// Key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// Range end; empty for just `key`.
    #[serde(with = "serde_bytes")]
    pub range_end: Vec<u8>,
}

impl Compare {
    /// Compare one key.
    pub fn key(key: impl Into<Vec<u8>>, result: CompareResult, target: CompareTarget) -> Self {
        Self {
            result,
            target,
            key: key.into(),
            range_end: Vec::new(),
        }
    }
}

/// One operation of a transaction branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestOp {
    /// A read.
    Range(RangeRequest),
    /// A put.
    Put(PutRequest),
    /// A delete.
    DeleteRange(DeleteRangeRequest),
    /// A nested transaction.
    Txn(#[serde(deserialize_with = "crate::codec::nesting::txn_request")] TxnRequest),
}

pub use crate::codec::nesting::MAX_TXN_NESTING;

/// The answer to one [`RequestOp`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseOp {
    /// Answer to a read.
    Range(RangeResponse),
    /// Answer to a put.
    Put(PutResponse),
    /// Answer to a delete.
    DeleteRange(DeleteRangeResponse),
    /// Answer to a nested transaction.
    Txn(#[serde(deserialize_with = "crate::codec::nesting::txn_response")] TxnResponse),
}

/// etcd's `TxnRequest`: if every compare holds, run `success`, else `failure`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRequest {
    /// Conditions, all of which must hold.
    pub compare: Vec<Compare>,
    /// Operations run when they do.
    pub success: Vec<RequestOp>,
    /// Operations run when they do not.
    pub failure: Vec<RequestOp>,
}

/// etcd's `TxnResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResponse {
    /// Header; one revision for the whole transaction.
    pub header: ResponseHeader,
    /// Whether the compares held.
    pub succeeded: bool,
    /// One answer per operation of the chosen branch.
    pub responses: Vec<ResponseOp>,
}

impl TxnResponse {
    /// Set the header of this response and of every response nested in it (etcd answers
    /// every operation of a transaction with the transaction's header).
    pub fn set_header(&mut self, header: &ResponseHeader) {
        self.header = header.clone();
        for op in &mut self.responses {
            match op {
                ResponseOp::Range(r) => r.header = header.clone(),
                ResponseOp::Put(p) => p.header = header.clone(),
                ResponseOp::DeleteRange(d) => d.header = header.clone(),
                ResponseOp::Txn(t) => t.set_header(header),
            }
        }
    }
}

/// etcd's `CompactionRequest`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactionRequest {
    /// Revisions below this one become unreadable.
    pub revision: Revision,
    /// Wait until the compaction is physically done.
    pub physical: bool,
}

/// etcd's `CompactionResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactionResponse {
    /// Header.
    pub header: ResponseHeader,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> TxnRequest {
        let mut txn = TxnRequest::default();
        for _ in 0..depth {
            txn = TxnRequest {
                success: vec![RequestOp::Txn(txn)],
                ..TxnRequest::default()
            };
        }
        txn
    }

    #[test]
    fn decoding_refuses_transactions_nested_too_deep() {
        let ok = crate::codec::encode(&nested(MAX_TXN_NESTING)).unwrap();
        assert!(crate::codec::decode::<TxnRequest>(&ok).is_ok());
        let deep = crate::codec::encode(&nested(MAX_TXN_NESTING + 1)).unwrap();
        let err = crate::codec::decode::<TxnRequest>(&deep).unwrap_err();
        assert!(err.to_string().contains("nested deeper"), "{err}");
        // Hostile bytes far deeper than any encoder would make: refused, not a stack
        // overflow (each level is the variant tag of `Txn` (3), then empty compare and
        // success lists would follow; the decoder stops at the limit first).
        let mut hostile = Vec::new();
        for _ in 0..100_000 {
            hostile.extend([0u8, 1, 3]);
        }
        assert!(crate::codec::decode::<TxnRequest>(&hostile).is_err());
        // The depth counter is restored after an error: a normal decode still works.
        assert!(crate::codec::decode::<TxnRequest>(&ok).is_ok());
    }
}
