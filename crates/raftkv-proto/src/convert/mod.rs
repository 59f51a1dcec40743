//! Mapping between etcd's protobuf messages and raftkv-core's types, both directions.
//! Requests from the wire are `TryFrom` (a missing oneof or an unknown enum value is the
//! sender's mistake); everything else is a plain `From`. One file per message family:
//! keys and values, range, put and delete here and in `kv.rs`, transactions in `txn.rs`,
//! watches in `watch.rs`; what they share (the error, keys, headers) here.

use raftkv_core::kv as core;

use crate::etcdserverpb as pb;
use crate::mvccpb;

/// A message that does not map onto a valid request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidMessage {
    /// One etcd refuses too, with this text (`crate::status::text`), which its clients
    /// match on.
    #[error("{0}")]
    Etcd(&'static str),
    /// One etcd has no text for (it accepts it, or cannot receive it).
    #[error("invalid request: {0}")]
    Other(String),
}

impl From<core::KeyValue> for mvccpb::KeyValue {
    fn from(kv: core::KeyValue) -> Self {
        Self {
            key: kv.key,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            value: kv.value,
            lease: kv.lease,
        }
    }
}

impl From<mvccpb::KeyValue> for core::KeyValue {
    fn from(kv: mvccpb::KeyValue) -> Self {
        Self {
            key: kv.key,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            value: kv.value,
            lease: kv.lease,
        }
    }
}

impl From<core::ResponseHeader> for pb::ResponseHeader {
    fn from(h: core::ResponseHeader) -> Self {
        Self {
            cluster_id: h.cluster_id,
            member_id: h.member_id,
            revision: h.revision,
            raft_term: h.raft_term,
        }
    }
}

impl From<pb::ResponseHeader> for core::ResponseHeader {
    fn from(h: pb::ResponseHeader) -> Self {
        Self {
            cluster_id: h.cluster_id,
            member_id: h.member_id,
            revision: h.revision,
            raft_term: h.raft_term,
        }
    }
}

fn header_from(h: Option<pb::ResponseHeader>) -> core::ResponseHeader {
    h.map(Into::into).unwrap_or_default()
}

fn kvs_to_pb(kvs: Vec<core::KeyValue>) -> Vec<mvccpb::KeyValue> {
    kvs.into_iter().map(Into::into).collect()
}

fn kvs_from_pb(kvs: Vec<mvccpb::KeyValue>) -> Vec<core::KeyValue> {
    kvs.into_iter().map(Into::into).collect()
}

mod kv;
mod txn;
mod watch;

pub use watch::fragment_watch_response;

#[cfg(test)]
mod tests;
