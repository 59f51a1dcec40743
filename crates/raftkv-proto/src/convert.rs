//! Mapping between etcd's protobuf messages and raftkv-core's types, both directions.
//! Requests from the wire are `TryFrom` (a missing oneof or an unknown enum value is the
//! sender's mistake); everything else is a plain `From`.

use raftkv_core::kv as core;
use raftkv_core::watch;

use crate::etcdserverpb as pb;
use crate::mvccpb;
use crate::status::text;

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

fn sort_order(v: i32) -> Result<core::SortOrder, InvalidMessage> {
    match pb::range_request::SortOrder::try_from(v) {
        Ok(pb::range_request::SortOrder::None) => Ok(core::SortOrder::None),
        Ok(pb::range_request::SortOrder::Ascend) => Ok(core::SortOrder::Ascend),
        Ok(pb::range_request::SortOrder::Descend) => Ok(core::SortOrder::Descend),
        // etcd: ErrGRPCInvalidSortOption, whatever the value.
        Err(_) => Err(InvalidMessage::Etcd(text::INVALID_SORT_OPTION)),
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
        Err(_) => Err(InvalidMessage::Etcd(text::INVALID_SORT_OPTION)),
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

impl From<watch::Event> for mvccpb::Event {
    fn from(e: watch::Event) -> Self {
        let kind = match e.kind {
            watch::EventType::Put => mvccpb::event::EventType::Put,
            watch::EventType::Delete => mvccpb::event::EventType::Delete,
        };
        Self {
            r#type: kind as i32,
            kv: Some(e.kv.into()),
            prev_kv: e.prev_kv.map(Into::into),
        }
    }
}

impl TryFrom<mvccpb::Event> for watch::Event {
    type Error = InvalidMessage;
    fn try_from(e: mvccpb::Event) -> Result<Self, InvalidMessage> {
        let kind = match mvccpb::event::EventType::try_from(e.r#type) {
            Ok(mvccpb::event::EventType::Put) => watch::EventType::Put,
            Ok(mvccpb::event::EventType::Delete) => watch::EventType::Delete,
            Err(_) => return Err(InvalidMessage::Other(format!("unknown event type {}", e.r#type))),
        };
        Ok(Self {
            kind,
            kv: e.kv.map(Into::into).unwrap_or_default(),
            prev_kv: e.prev_kv.map(Into::into),
        })
    }
}

/// etcd ignores filter values it does not know; so do we.
impl From<pb::WatchCreateRequest> for watch::WatchRequest {
    fn from(r: pb::WatchCreateRequest) -> Self {
        use pb::watch_create_request::FilterType;
        let has = |f: FilterType| r.filters.contains(&(f as i32));
        Self {
            no_put: has(FilterType::Noput),
            no_delete: has(FilterType::Nodelete),
            key: r.key,
            range_end: r.range_end,
            start_revision: r.start_revision,
            progress_notify: r.progress_notify,
            prev_kv: r.prev_kv,
            watch_id: r.watch_id,
            fragment: r.fragment,
        }
    }
}

impl From<watch::WatchRequest> for pb::WatchCreateRequest {
    fn from(r: watch::WatchRequest) -> Self {
        use pb::watch_create_request::FilterType;
        let mut filters = Vec::new();
        if r.no_put {
            filters.push(FilterType::Noput as i32);
        }
        if r.no_delete {
            filters.push(FilterType::Nodelete as i32);
        }
        Self {
            key: r.key,
            range_end: r.range_end,
            start_revision: r.start_revision,
            progress_notify: r.progress_notify,
            filters,
            prev_kv: r.prev_kv,
            watch_id: r.watch_id,
            fragment: r.fragment,
        }
    }
}

impl From<watch::WatchResponse> for pb::WatchResponse {
    fn from(r: watch::WatchResponse) -> Self {
        Self {
            header: Some(r.header.into()),
            watch_id: r.watch_id,
            created: r.created,
            canceled: r.canceled,
            compact_revision: r.compact_revision,
            cancel_reason: r.cancel_reason,
            fragment: r.fragment,
            events: r.events.into_iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<pb::WatchResponse> for watch::WatchResponse {
    type Error = InvalidMessage;
    fn try_from(r: pb::WatchResponse) -> Result<Self, InvalidMessage> {
        Ok(Self {
            header: header_from(r.header),
            watch_id: r.watch_id,
            created: r.created,
            canceled: r.canceled,
            compact_revision: r.compact_revision,
            cancel_reason: r.cancel_reason,
            fragment: r.fragment,
            events: r
                .events
                .into_iter()
                .map(watch::Event::try_from)
                .collect::<Result<_, _>>()?,
        })
    }
}

/// etcd's `sendFragments`: a response of at least `max_bytes` (encoded) with two or more
/// events is split into several, each under `max_bytes` where a single event allows, all
/// but the last marked `fragment`; the client joins them back into one. Anything else is
/// returned whole.
pub fn fragment_watch_response(response: pb::WatchResponse, max_bytes: usize) -> Vec<pb::WatchResponse> {
    use prost::Message;
    if response.encoded_len() < max_bytes || response.events.len() < 2 {
        return vec![response];
    }
    let pb::WatchResponse {
        header,
        watch_id,
        created,
        canceled,
        compact_revision,
        cancel_reason,
        events,
        ..
    } = response;
    let empty = pb::WatchResponse {
        header,
        watch_id,
        created,
        canceled,
        compact_revision,
        cancel_reason,
        fragment: true,
        events: Vec::new(),
    };
    let base = empty.encoded_len();
    let mut out = Vec::new();
    let mut current = empty.clone();
    let mut size = base;
    for event in events {
        // Field 11, length-delimited: a one-byte tag, the length, the event.
        let len = event.encoded_len();
        let event_size = 1 + prost::encoding::encoded_len_varint(len as u64) + len;
        if !current.events.is_empty() && size + event_size >= max_bytes {
            out.push(std::mem::replace(&mut current, empty.clone()));
            size = base;
        }
        size += event_size;
        current.events.push(event);
    }
    current.fragment = false;
    out.push(current);
    out
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
    fn watch_messages_round_trip() {
        let req = watch::WatchRequest::prefix("p")
            .with_start_revision(7)
            .with_no_delete(true)
            .with_prev_kv(true)
            .with_watch_id(3);
        let wire = pb::WatchCreateRequest::from(req.clone());
        assert_eq!(wire.filters, vec![1]);
        assert_eq!(watch::WatchRequest::from(wire), req);
        let resp = watch::WatchResponse {
            watch_id: 3,
            events: vec![watch::Event {
                kind: watch::EventType::Delete,
                kv: core::KeyValue {
                    key: b"p1".to_vec(),
                    mod_revision: 9,
                    ..core::KeyValue::default()
                },
                prev_kv: Some(core::KeyValue {
                    key: b"p1".to_vec(),
                    value: b"v".to_vec(),
                    ..core::KeyValue::default()
                }),
            }],
            ..watch::WatchResponse::default()
        };
        let wire = pb::WatchResponse::from(resp.clone());
        assert_eq!(watch::WatchResponse::try_from(wire), Ok(resp));
        let bad = mvccpb::Event {
            r#type: 7,
            ..mvccpb::Event::default()
        };
        assert!(watch::Event::try_from(bad).is_err());
    }

    #[test]
    fn large_watch_responses_are_fragmented_and_small_ones_are_not() {
        use prost::Message;
        let event = |i: u8| mvccpb::Event {
            kv: Some(mvccpb::KeyValue {
                key: vec![i],
                value: vec![i; 100],
                mod_revision: 5,
                ..mvccpb::KeyValue::default()
            }),
            ..mvccpb::Event::default()
        };
        let response = pb::WatchResponse {
            watch_id: 2,
            events: (0..10).map(event).collect(),
            ..pb::WatchResponse::default()
        };
        assert_eq!(fragment_watch_response(response.clone(), 1 << 20).len(), 1);
        let parts = fragment_watch_response(response.clone(), 350);
        assert!(parts.len() >= 3, "{}", parts.len());
        for (i, part) in parts.iter().enumerate() {
            assert_eq!(part.fragment, i + 1 < parts.len());
            assert_eq!(part.watch_id, 2);
            assert!(part.encoded_len() < 350, "{}", part.encoded_len());
        }
        let joined: Vec<_> = parts.into_iter().flat_map(|p| p.events).collect();
        assert_eq!(joined, response.events);
        // A single event larger than the limit still goes, alone.
        let parts = fragment_watch_response(response.clone(), 10);
        assert_eq!(parts.len(), 10);
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
