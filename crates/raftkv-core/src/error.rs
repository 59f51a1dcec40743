//! Errors. [`RequestError`] is deterministic: it is the request's fault, every replica
//! reaches the same verdict, and it goes back to the client unchanged (it is also what
//! the state machine records in a [`crate::Response::Rejected`]). [`Error`] adds the
//! failures of the machinery around a request (leadership, storage, shutdown), which a
//! client may retry.

use serde::{Deserialize, Serialize};

use crate::ids::NodeId;
use crate::kv::Revision;

/// A request that is wrong in itself. Every variant maps to one etcd error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RequestError {
    /// etcd: "key is not provided".
    #[error("key is not provided")]
    EmptyKey,
    /// etcd: "request is too large".
    #[error("request is too large: {size} bytes, limit {limit}")]
    RequestTooLarge {
        /// Encoded size of the request.
        size: usize,
        /// The configured `max_request_bytes`.
        limit: usize,
    },
    /// `range_end` sorts before `key` (and is not one of the special forms).
    #[error("range end must be greater than the key")]
    InvalidRangeEnd,
    /// etcd: "too many operations in txn request".
    #[error("too many operations in txn request: {ops}, limit {limit}")]
    TooManyTxnOps {
        /// Operations in the request.
        ops: usize,
        /// The limit.
        limit: usize,
    },
    /// etcd: "duplicate key given in txn request".
    #[error("duplicate key given in txn request")]
    DuplicateKey,
    /// etcd: "required revision has been compacted".
    #[error("required revision has been compacted (requested {requested}, compacted {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The compact revision.
        compacted: Revision,
    },
    /// etcd: "required revision is a future revision".
    #[error("required revision is a future revision (requested {requested}, current {current})")]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The current revision.
        current: Revision,
    },
    /// etcd: "requested lease not found".
    #[error("requested lease not found: {0}")]
    LeaseNotFound(i64),
    /// etcd: "too large lease TTL" (above [`crate::lease::MAX_LEASE_TTL`]).
    #[error("too large lease TTL: {0} s")]
    LeaseTtlTooLarge(i64),
    /// etcd: "lease already exists".
    #[error("lease already exists: {0}")]
    LeaseExists(i64),
    /// etcd: "value is provided" (ignore_value together with a value).
    #[error("value is provided")]
    ValueProvided,
    /// etcd: "lease is provided" (ignore_lease together with a lease).
    #[error("lease is provided")]
    LeaseProvided,
    /// etcd: "key not found" (ignore_value / ignore_lease on an absent key).
    #[error("key not found")]
    KeyNotFound,
    /// The request uses a feature this version does not implement yet.
    #[error("not supported yet: {0}")]
    Unsupported(String),
    /// etcd: "member not found".
    #[error("member not found: {0}")]
    MemberNotFound(u64),
    /// etcd: "can only promote a learner member".
    #[error("can only promote a learner member")]
    MemberNotLearner,
    /// etcd: "can only promote a learner member which is in sync with leader".
    #[error("can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    /// etcd: "Peer URLs already exists".
    #[error("peer URLs already exist")]
    PeerUrlExists,
    /// A peer URL that is not a URL.
    #[error("invalid peer URL: {0}")]
    InvalidPeerUrl(String),
    /// etcd: "bad leader transferee": leadership can only move to a voting member.
    #[error("bad leader transferee: {0:x} is not a voting member")]
    BadLeaderTransferee(u64),
    /// A NOSPACE alarm is active: the write adds data and was refused when applied.
    /// Leaves the library as [`Error::NoSpace`].
    #[error("database space exceeded")]
    NoSpace,
    /// A CORRUPT alarm is active: the write was refused when applied. Leaves the library
    /// as [`Error::Corrupt`].
    #[error("corrupt cluster")]
    Corrupt,
    /// etcd's auth errors (`crate::auth::AuthError`).
    #[error(transparent)]
    Auth(crate::auth::AuthError),
}

/// Everything a raftkv operation can fail with. Serializable, so a leader can send it back
/// to the follower that forwarded a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Error {
    /// The request itself is wrong; retrying it will not help.
    #[error(transparent)]
    Request(RequestError),
    /// This node is not the leader. `leader_id` is the leader this node knows of, if any.
    #[error("not leader (leader hint: {leader_id:?})")]
    NotLeader {
        /// The leader as far as this node knows.
        leader_id: Option<NodeId>,
        /// Its client URLs, when published.
        leader_client_urls: Vec<String>,
    },
    /// No leader could confirm the request in time (no quorum, or an election is running).
    #[error("timed out waiting for the cluster: {0}")]
    Timeout(String),
    /// The outcome of a write is unknown: it may or may not have been applied.
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// Local storage failed; the node stops serving writes.
    #[error("storage error: {0}")]
    Storage(String),
    /// The node is shutting down or its Raft core has stopped.
    #[error("node is shut down: {0}")]
    Shutdown(String),
    /// An internal invariant did not hold (a bug).
    #[error("internal error: {0}")]
    Internal(String),
    /// Apply lags commit too far: the node refuses new writes until it catches up
    /// (etcd: "too many requests"). Nothing was proposed; retry later.
    #[error("too many requests: applied index lags the commit index by {lag}")]
    TooManyRequests {
        /// How far apply lags.
        lag: u64,
    },
    /// A leadership transfer did not complete in time (etcd: "leader transfer took too
    /// long"); the cluster elects a leader on its own.
    #[error("leader transfer took too long")]
    LeaderTransferTimeout,
    /// The storage quota is exhausted (the NOSPACE alarm is raised): writes that add data
    /// are refused until an operator frees space and disarms the alarm.
    #[error("database space exceeded")]
    NoSpace,
    /// A CORRUPT alarm is active (etcd: "corrupt cluster"): writes are refused until it
    /// is disarmed.
    #[error("corrupt cluster")]
    Corrupt,
}

impl From<RequestError> for Error {
    /// The alarms' refusals, decided at apply time, read as the same errors a member
    /// gives before proposing; every other request error is the request's own.
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::NoSpace => Error::NoSpace,
            RequestError::Corrupt => Error::Corrupt,
            other => Error::Request(other),
        }
    }
}

impl Error {
    /// Whether the same request may succeed if retried (possibly elsewhere) unchanged.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::NotLeader { .. } | Error::Timeout(_) | Error::TooManyRequests { .. }
        )
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
