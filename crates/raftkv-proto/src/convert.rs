//! Mapping between etcd's protobuf messages and raftkv-core's types, both directions.
//! Requests from the wire are `TryFrom` (a missing oneof or an unknown enum value is the
//! sender's mistake); everything else is a plain `From`.

use raftkv_core::kv as core;

use crate::etcdserverpb as pb;
use crate::mvccpb;

/// A message that does not map onto a valid request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid request: {0}")]
pub struct InvalidMessage(pub String);

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

fn sort_order(v: i32) -> Result<core::SortOrder, InvalidMessage> {
    match pb::range_request::SortOrder::try_from(v) {
        Ok(pb::range_request::SortOrder::None) => Ok(core::SortOrder::None),
        Ok(pb::range_request::SortOrder::Ascend) => Ok(core::SortOrder::Ascend),
        Ok(pb::range_request::SortOrder::Descend) => Ok(core::SortOrder::Descend),
        Err(_) => Err(InvalidMessage(format!("unknown sort order {v}"))),
    }
}

fn sort_target(v: i32) -> Result<core::SortTarget, InvalidMessage> {
    use pb::range_request::SortTarget as T;
    match T::try_from(v) {
        Ok(T::Key) => Ok(core::SortTarget::Key),
        Ok(T::Version) => Ok(core::SortTarget::Version),
        Ok(T::Create) => Ok(core::SortTarget::Create),
        Ok(T::Mod) => Ok(core::SortTarget::Mod),
        Ok(T::Value) => Ok(core::SortTarget::Value),
        Err(_) => Err(InvalidMessage(format!("unknown sort target {v}"))),
    }
}

impl TryFrom<pb::RangeRequest> for core::RangeRequest {
    type Error = InvalidMessage;
    fn try_from(r: pb::RangeRequest) -> Result<Self, InvalidMessage> {
        Ok(Self {
            sort_order: sort_order(r.sort_order)?,
            sort_target: sort_target(r.sort_target)?,
            key: r.key,
            range_end: r.range_end,
            limit: r.limit,
            revision: r.revision,
            serializable: r.serializable,
            keys_only: r.keys_only,
            count_only: r.count_only,
            min_mod_revision: r.min_mod_revision,
            max_mod_revision: r.max_mod_revision,
            min_create_revision: r.min_create_revision,
            max_create_revision: r.max_create_revision,
        })
    }
}

impl From<core::RangeRequest> for pb::RangeRequest {
    fn from(r: core::RangeRequest) -> Self {
        let sort_order = match r.sort_order {
            core::SortOrder::None => pb::range_request::SortOrder::None,
            core::SortOrder::Ascend => pb::range_request::SortOrder::Ascend,
            core::SortOrder::Descend => pb::range_request::SortOrder::Descend,
        };
        let sort_target = match r.sort_target {
            core::SortTarget::Key => pb::range_request::SortTarget::Key,
            core::SortTarget::Version => pb::range_request::SortTarget::Version,
            core::SortTarget::Create => pb::range_request::SortTarget::Create,
            core::SortTarget::Mod => pb::range_request::SortTarget::Mod,
            core::SortTarget::Value => pb::range_request::SortTarget::Value,
        };
        Self {
            key: r.key,
            range_end: r.range_end,
            limit: r.limit,
            revision: r.revision,
            sort_order: sort_order as i32,
            sort_target: sort_target as i32,
            serializable: r.serializable,
            keys_only: r.keys_only,
            count_only: r.count_only,
            min_mod_revision: r.min_mod_revision,
            max_mod_revision: r.max_mod_revision,
            min_create_revision: r.min_create_revision,
            max_create_revision: r.max_create_revision,
        }
    }
}

impl From<core::RangeResponse> for pb::RangeResponse {
    fn from(r: core::RangeResponse) -> Self {
        Self {
            header: Some(r.header.into()),
            kvs: kvs_to_pb(r.kvs),
            more: r.more,
            count: r.count,
        }
    }
}

impl From<pb::RangeResponse> for core::RangeResponse {
    fn from(r: pb::RangeResponse) -> Self {
        Self {
            header: header_from(r.header),
            kvs: kvs_from_pb(r.kvs),
            more: r.more,
            count: r.count,
        }
    }
}

impl From<pb::PutRequest> for core::PutRequest {
    fn from(r: pb::PutRequest) -> Self {
        Self {
            key: r.key,
            value: r.value,
            lease: r.lease,
            prev_kv: r.prev_kv,
            ignore_value: r.ignore_value,
            ignore_lease: r.ignore_lease,
        }
    }
}

impl From<core::PutRequest> for pb::PutRequest {
    fn from(r: core::PutRequest) -> Self {
        Self {
            key: r.key,
            value: r.value,
            lease: r.lease,
            prev_kv: r.prev_kv,
            ignore_value: r.ignore_value,
            ignore_lease: r.ignore_lease,
        }
    }
}

impl From<core::PutResponse> for pb::PutResponse {
    fn from(r: core::PutResponse) -> Self {
        Self {
            header: Some(r.header.into()),
            prev_kv: r.prev_kv.map(Into::into),
        }
    }
}

impl From<pb::PutResponse> for core::PutResponse {
    fn from(r: pb::PutResponse) -> Self {
        Self {
            header: header_from(r.header),
            prev_kv: r.prev_kv.map(Into::into),
        }
    }
}

impl From<pb::DeleteRangeRequest> for core::DeleteRangeRequest {
    fn from(r: pb::DeleteRangeRequest) -> Self {
        Self {
            key: r.key,
            range_end: r.range_end,
            prev_kv: r.prev_kv,
        }
    }
}

impl From<core::DeleteRangeRequest> for pb::DeleteRangeRequest {
    fn from(r: core::DeleteRangeRequest) -> Self {
        Self {
            key: r.key,
            range_end: r.range_end,
            prev_kv: r.prev_kv,
        }
    }
}

impl From<core::DeleteRangeResponse> for pb::DeleteRangeResponse {
    fn from(r: core::DeleteRangeResponse) -> Self {
        Self {
            header: Some(r.header.into()),
            deleted: r.deleted,
            prev_kvs: kvs_to_pb(r.prev_kvs),
        }
    }
}

impl From<pb::DeleteRangeResponse> for core::DeleteRangeResponse {
    fn from(r: pb::DeleteRangeResponse) -> Self {
        Self {
            header: header_from(r.header),
            deleted: r.deleted,
            prev_kvs: kvs_from_pb(r.prev_kvs),
        }
    }
}

impl TryFrom<pb::Compare> for core::Compare {
    type Error = InvalidMessage;
    fn try_from(c: pb::Compare) -> Result<Self, InvalidMessage> {
        use pb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
        let result = match R::try_from(c.result) {
            Ok(R::Equal) => core::CompareResult::Equal,
            Ok(R::Greater) => core::CompareResult::Greater,
            Ok(R::Less) => core::CompareResult::Less,
            Ok(R::NotEqual) => core::CompareResult::NotEqual,
            Err(_) => return Err(InvalidMessage(format!("unknown compare result {}", c.result))),
        };
        // etcd reads the union member named by `target`; an unset member is its zero value.
        let union = c.target_union;
        let target = match T::try_from(c.target) {
            Ok(T::Version) => core::CompareTarget::Version(match union {
                Some(U::Version(v)) => v,
                _ => 0,
            }),
            Ok(T::Create) => core::CompareTarget::Create(match union {
                Some(U::CreateRevision(v)) => v,
                _ => 0,
            }),
            Ok(T::Mod) => core::CompareTarget::Mod(match union {
                Some(U::ModRevision(v)) => v,
                _ => 0,
            }),
            Ok(T::Value) => core::CompareTarget::Value(match union {
                Some(U::Value(v)) => v,
                _ => Vec::new(),
            }),
            Ok(T::Lease) => core::CompareTarget::Lease(match union {
                Some(U::Lease(v)) => v,
                _ => 0,
            }),
            Err(_) => return Err(InvalidMessage(format!("unknown compare target {}", c.target))),
        };
        Ok(Self {
            result,
            target,
            key: c.key,
            range_end: c.range_end,
        })
    }
}

impl From<core::Compare> for pb::Compare {
    fn from(c: core::Compare) -> Self {
        use pb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
        let result = match c.result {
            core::CompareResult::Equal => R::Equal,
            core::CompareResult::Greater => R::Greater,
            core::CompareResult::Less => R::Less,
            core::CompareResult::NotEqual => R::NotEqual,
        };
        let (target, union) = match c.target {
            core::CompareTarget::Version(v) => (T::Version, U::Version(v)),
            core::CompareTarget::Create(v) => (T::Create, U::CreateRevision(v)),
            core::CompareTarget::Mod(v) => (T::Mod, U::ModRevision(v)),
            core::CompareTarget::Value(v) => (T::Value, U::Value(v)),
            core::CompareTarget::Lease(v) => (T::Lease, U::Lease(v)),
        };
        Self {
            result: result as i32,
            target: target as i32,
            key: c.key,
            range_end: c.range_end,
            target_union: Some(union),
        }
    }
}

impl TryFrom<pb::RequestOp> for core::RequestOp {
    type Error = InvalidMessage;
    fn try_from(op: pb::RequestOp) -> Result<Self, InvalidMessage> {
        use pb::request_op::Request;
        match op.request {
            Some(Request::RequestRange(r)) => Ok(core::RequestOp::Range(r.try_into()?)),
            Some(Request::RequestPut(r)) => Ok(core::RequestOp::Put(r.into())),
            Some(Request::RequestDeleteRange(r)) => Ok(core::RequestOp::DeleteRange(r.into())),
            Some(Request::RequestTxn(r)) => Ok(core::RequestOp::Txn(r.try_into()?)),
            None => Err(InvalidMessage("txn operation without a request".into())),
        }
    }
}

impl From<core::RequestOp> for pb::RequestOp {
    fn from(op: core::RequestOp) -> Self {
        use pb::request_op::Request;
        let request = match op {
            core::RequestOp::Range(r) => Request::RequestRange(r.into()),
            core::RequestOp::Put(r) => Request::RequestPut(r.into()),
            core::RequestOp::DeleteRange(r) => Request::RequestDeleteRange(r.into()),
            core::RequestOp::Txn(r) => Request::RequestTxn(r.into()),
        };
        Self {
            request: Some(request),
        }
    }
}

impl TryFrom<pb::TxnRequest> for core::TxnRequest {
    type Error = InvalidMessage;
    fn try_from(t: pb::TxnRequest) -> Result<Self, InvalidMessage> {
        Ok(Self {
            compare: t
                .compare
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_, _>>()?,
            success: t
                .success
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_, _>>()?,
            failure: t
                .failure
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_, _>>()?,
        })
    }
}

impl From<core::TxnRequest> for pb::TxnRequest {
    fn from(t: core::TxnRequest) -> Self {
        Self {
            compare: t.compare.into_iter().map(Into::into).collect(),
            success: t.success.into_iter().map(Into::into).collect(),
            failure: t.failure.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<core::TxnResponse> for pb::TxnResponse {
    fn from(t: core::TxnResponse) -> Self {
        use pb::response_op::Response;
        let responses = t
            .responses
            .into_iter()
            .map(|op| pb::ResponseOp {
                response: Some(match op {
                    core::ResponseOp::Range(r) => Response::ResponseRange(r.into()),
                    core::ResponseOp::Put(r) => Response::ResponsePut(r.into()),
                    core::ResponseOp::DeleteRange(r) => Response::ResponseDeleteRange(r.into()),
                    core::ResponseOp::Txn(r) => Response::ResponseTxn(r.into()),
                }),
            })
            .collect();
        Self {
            header: Some(t.header.into()),
            succeeded: t.succeeded,
            responses,
        }
    }
}

impl TryFrom<pb::TxnResponse> for core::TxnResponse {
    type Error = InvalidMessage;
    fn try_from(t: pb::TxnResponse) -> Result<Self, InvalidMessage> {
        use pb::response_op::Response;
        let mut responses = Vec::with_capacity(t.responses.len());
        for op in t.responses {
            responses.push(match op.response {
                Some(Response::ResponseRange(r)) => core::ResponseOp::Range(r.into()),
                Some(Response::ResponsePut(r)) => core::ResponseOp::Put(r.into()),
                Some(Response::ResponseDeleteRange(r)) => core::ResponseOp::DeleteRange(r.into()),
                Some(Response::ResponseTxn(r)) => core::ResponseOp::Txn(r.try_into()?),
                None => return Err(InvalidMessage("txn answer without a response".into())),
            });
        }
        Ok(Self {
            header: header_from(t.header),
            succeeded: t.succeeded,
            responses,
        })
    }
}

impl From<pb::CompactionRequest> for core::CompactionRequest {
    fn from(r: pb::CompactionRequest) -> Self {
        Self {
            revision: r.revision,
            physical: r.physical,
        }
    }
}

impl From<core::CompactionResponse> for pb::CompactionResponse {
    fn from(r: core::CompactionResponse) -> Self {
        Self {
            header: Some(r.header.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txn_round_trips() {
        let txn = core::TxnRequest {
            compare: vec![core::Compare::key(
                "a",
                core::CompareResult::NotEqual,
                core::CompareTarget::Value(b"x".to_vec()),
            )],
            success: vec![
                core::RequestOp::Put(core::PutRequest::new("a", "b")),
                core::RequestOp::Txn(core::TxnRequest {
                    failure: vec![core::RequestOp::DeleteRange(core::DeleteRangeRequest::prefix(
                        "p",
                    ))],
                    ..core::TxnRequest::default()
                }),
            ],
            failure: vec![core::RequestOp::Range(
                core::RangeRequest::prefix("a").with_limit(3),
            )],
        };
        let wire: pb::TxnRequest = txn.clone().into();
        assert_eq!(core::TxnRequest::try_from(wire), Ok(txn));
    }

    #[test]
    fn unknown_enum_values_are_refused() {
        let bad = pb::RangeRequest {
            key: b"a".to_vec(),
            sort_order: 9,
            ..Default::default()
        };
        assert!(core::RangeRequest::try_from(bad).is_err());
        assert!(core::RequestOp::try_from(pb::RequestOp { request: None }).is_err());
    }
}
