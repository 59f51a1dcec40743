//! Range, put, delete and compaction requests and answers.

use raftkv_core::kv as core;

use super::InvalidMessage;
use crate::etcdserverpb as pb;
use crate::status::text;

use super::{header_from, kvs_from_pb, kvs_to_pb};

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
