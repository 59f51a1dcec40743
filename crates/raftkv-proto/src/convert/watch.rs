//! Watch events, create requests, responses, and the fragmenting of large responses.

use raftkv_core::watch;

use super::InvalidMessage;
use crate::etcdserverpb as pb;
use crate::mvccpb;

use super::header_from;

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
