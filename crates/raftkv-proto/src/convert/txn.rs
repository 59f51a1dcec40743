//! Transactions: compares, operations, requests and answers (nested ones included).

use raftkv_core::kv as core;

use super::InvalidMessage;
use crate::etcdserverpb as pb;
use crate::status::text;

use super::header_from;

impl TryFrom<pb::Compare> for core::Compare {
    type Error = InvalidMessage;
    fn try_from(c: pb::Compare) -> Result<Self, InvalidMessage> {
        use pb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
        let result = match R::try_from(c.result) {
            Ok(R::Equal) => core::CompareResult::Equal,
            Ok(R::Greater) => core::CompareResult::Greater,
            Ok(R::Less) => core::CompareResult::Less,
            Ok(R::NotEqual) => core::CompareResult::NotEqual,
            Err(_) => {
                return Err(InvalidMessage::Other(format!(
                    "unknown compare result {}",
                    c.result
                )));
            }
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
            Err(_) => {
                return Err(InvalidMessage::Other(format!(
                    "unknown compare target {}",
                    c.target
                )));
            }
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
            // etcd's checkRequestOp answers an empty operation "key not found".
            None => Err(InvalidMessage::Etcd(text::KEY_NOT_FOUND)),
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
                None => return Err(InvalidMessage::Other("txn answer without a response".into())),
            });
        }
        Ok(Self {
            header: header_from(t.header),
            succeeded: t.succeeded,
            responses,
        })
    }
}
