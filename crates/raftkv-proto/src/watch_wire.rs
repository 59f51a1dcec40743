//! [`EncodedWatchResponse`]: etcd's `WatchResponse` as the server sends it, each event
//! encoded once and shared by every watcher that gets it.
//!
//! A watch stream with many watchers on the same keys sends each event once per
//! watcher. Converting and encoding `mvccpb.Event` per watcher would cost a copy of every
//! key and value and a protobuf encoding per watcher; instead, each event is a
//! [`SharedEvent`] (shared by the watchers, see `raftkv-core`'s `watch` module) whose
//! encoding is made the first time a response carrying it is encoded and then reused
//! (two at most: with and without `prev_kv`). On the wire a message field and a `bytes`
//! field holding that message's encoding are the same thing (tag 11, length-delimited),
//! so an [`EncodedWatchResponse`] encodes byte for byte as the `etcdserverpb.WatchResponse`
//! built the usual way (the tests check this), and etcd clients cannot tell them apart.
//!
//! Decoding one keeps the header and scalar fields and counts the events while skipping
//! them, with no allocation per event: clients that need the events decode
//! `etcdserverpb::WatchResponse`; the load tool's watchers, which only count them, decode
//! this (so its CPU does not compete with the servers' for more than reading the bytes).

use std::sync::Arc;

use prost::Message;
use prost::bytes::{Buf, BufMut};
use prost::encoding::{self, DecodeContext, WireType};
use raftkv_core::watch::{Event, SharedEvent, SharedWatchResponse};

use crate::etcdserverpb as pb;
use crate::mvccpb;

/// The field number of `WatchResponse.events`.
const EVENTS_TAG: u32 = 11;

/// A `WatchResponse` whose events are encoded once and shared (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct EncodedWatchResponse {
    /// Field 1.
    pub header: Option<pb::ResponseHeader>,
    /// Field 2.
    pub watch_id: i64,
    /// Field 3.
    pub created: bool,
    /// Field 4.
    pub canceled: bool,
    /// Field 5.
    pub compact_revision: i64,
    /// Field 6.
    pub cancel_reason: String,
    /// Field 7.
    pub fragment: bool,
    /// Field 11, each encoded with its `prev_kv` only if `prev_kv`.
    events: Vec<Arc<SharedEvent>>,
    prev_kv: bool,
    /// Events a decoded response carried (counted, not kept).
    skipped_events: usize,
}

impl EncodedWatchResponse {
    /// The wire form of a session's `response`, with `header` (whose revision the caller
    /// set).
    pub fn new(response: SharedWatchResponse, header: pb::ResponseHeader) -> Self {
        let SharedWatchResponse {
            response,
            events,
            prev_kv,
        } = response;
        Self {
            header: Some(header),
            watch_id: response.watch_id,
            created: response.created,
            canceled: response.canceled,
            compact_revision: response.compact_revision,
            cancel_reason: response.cancel_reason,
            fragment: response.fragment,
            events,
            prev_kv,
            skipped_events: 0,
        }
    }

    /// Events carried (by a decoded response: counted while skipped).
    pub fn event_count(&self) -> usize {
        self.events.len() + self.skipped_events
    }

    fn event_bytes<'a>(&self, event: &'a SharedEvent) -> &'a [u8] {
        event.encoded(self.prev_kv, encode_event)
    }

    fn event_len(&self, event: &SharedEvent) -> usize {
        let len = self.event_bytes(event).len();
        encoding::key_len(EVENTS_TAG) + encoding::encoded_len_varint(len as u64) + len
    }

    /// etcd's `sendFragments`, as [`crate::convert::fragment_watch_response`]: a response
    /// of at least `max_bytes` (encoded) with two or more events is split into several,
    /// each under `max_bytes` where a single event allows, all but the last marked
    /// `fragment`. Anything else is returned whole.
    pub fn fragment(self, max_bytes: usize) -> Vec<Self> {
        if self.events.len() < 2 || self.encoded_len() < max_bytes {
            return vec![self];
        }
        let empty = Self {
            events: Vec::new(),
            fragment: true,
            skipped_events: 0,
            ..self.clone()
        };
        let base = empty.encoded_len();
        let mut out = Vec::new();
        let mut current = empty.clone();
        let mut size = base;
        for event in &self.events {
            let event_size = self.event_len(event);
            if !current.events.is_empty() && size + event_size >= max_bytes {
                out.push(std::mem::replace(&mut current, empty.clone()));
                size = base;
            }
            size += event_size;
            current.events.push(event.clone());
        }
        current.fragment = false;
        out.push(current);
        out
    }
}

/// `mvccpb.Event`'s encoding of `event`, with its previous key-value if `prev_kv`.
fn encode_event(event: &Event, prev_kv: bool) -> Vec<u8> {
    let mut wire = mvccpb::Event::from(Event {
        kind: event.kind,
        kv: event.kv.clone(),
        prev_kv: None,
    });
    if prev_kv {
        wire.prev_kv = event.prev_kv.clone().map(Into::into);
    }
    wire.encode_to_vec()
}

impl Message for EncodedWatchResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if let Some(header) = &self.header {
            encoding::message::encode(1, header, buf);
        }
        if self.watch_id != 0 {
            encoding::int64::encode(2, &self.watch_id, buf);
        }
        if self.created {
            encoding::bool::encode(3, &self.created, buf);
        }
        if self.canceled {
            encoding::bool::encode(4, &self.canceled, buf);
        }
        if self.compact_revision != 0 {
            encoding::int64::encode(5, &self.compact_revision, buf);
        }
        if !self.cancel_reason.is_empty() {
            encoding::string::encode(6, &self.cancel_reason, buf);
        }
        if self.fragment {
            encoding::bool::encode(7, &self.fragment, buf);
        }
        for event in &self.events {
            let bytes = self.event_bytes(event);
            encoding::encode_key(EVENTS_TAG, WireType::LengthDelimited, buf);
            encoding::encode_varint(bytes.len() as u64, buf);
            buf.put_slice(bytes);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        match tag {
            1 => encoding::message::merge(
                wire_type,
                self.header.get_or_insert_with(Default::default),
                buf,
                ctx,
            ),
            2 => encoding::int64::merge(wire_type, &mut self.watch_id, buf, ctx),
            3 => encoding::bool::merge(wire_type, &mut self.created, buf, ctx),
            4 => encoding::bool::merge(wire_type, &mut self.canceled, buf, ctx),
            5 => encoding::int64::merge(wire_type, &mut self.compact_revision, buf, ctx),
            6 => encoding::string::merge(wire_type, &mut self.cancel_reason, buf, ctx),
            7 => encoding::bool::merge(wire_type, &mut self.fragment, buf, ctx),
            // Events are counted and skipped, unknown fields skipped: see the module doc.
            EVENTS_TAG => {
                encoding::check_wire_type(WireType::LengthDelimited, wire_type)?;
                self.skipped_events += 1;
                encoding::skip_field(wire_type, tag, buf, ctx)
            }
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let int64 = |tag, v: &i64| {
            if *v != 0 {
                encoding::int64::encoded_len(tag, v)
            } else {
                0
            }
        };
        let flag = |tag, v: &bool| {
            if *v {
                encoding::bool::encoded_len(tag, v)
            } else {
                0
            }
        };
        let header = self
            .header
            .as_ref()
            .map_or(0, |h| encoding::message::encoded_len(1, h));
        let reason = if self.cancel_reason.is_empty() {
            0
        } else {
            encoding::string::encoded_len(6, &self.cancel_reason)
        };
        let events: usize = self.events.iter().map(|e| self.event_len(e)).sum();
        header
            + int64(2, &self.watch_id)
            + flag(3, &self.created)
            + flag(4, &self.canceled)
            + int64(5, &self.compact_revision)
            + reason
            + flag(7, &self.fragment)
            + events
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use raftkv_core::kv::{KeyValue, ResponseHeader};
    use raftkv_core::watch::{EventType, WatchResponse};

    use super::*;
    use crate::convert::fragment_watch_response;

    fn event(i: u8, kind: EventType) -> Event {
        let kv = |value: Vec<u8>, rev| KeyValue {
            key: vec![b'k', i],
            value,
            mod_revision: rev,
            create_revision: 2,
            version: 3,
            lease: if i % 2 == 0 { 0 } else { 77 },
        };
        Event {
            kind,
            kv: kv(vec![i; 60 + usize::from(i)], 10 + i64::from(i)),
            prev_kv: (i % 3 != 0).then(|| kv(vec![b'p'; 40], 9)),
        }
    }

    /// The session's response for a watcher with `prev_kv`, and the owned one the usual
    /// path would convert and encode.
    fn pair(
        events: &[Arc<SharedEvent>],
        prev_kv: bool,
        base: WatchResponse,
    ) -> (SharedWatchResponse, WatchResponse) {
        let shared = SharedWatchResponse {
            response: base,
            events: events.to_vec(),
            prev_kv,
        };
        (shared.clone(), shared.into_response())
    }

    fn header(revision: i64) -> pb::ResponseHeader {
        pb::ResponseHeader::from(ResponseHeader {
            cluster_id: 5,
            member_id: 6,
            revision,
            raft_term: 7,
        })
    }

    #[test]
    fn encodes_as_the_generated_watch_response_with_and_without_prev_kv_and_in_fragments() {
        let events: Vec<_> = (0..12u8)
            .map(|i| {
                let kind = if i % 4 == 3 {
                    EventType::Delete
                } else {
                    EventType::Put
                };
                Arc::new(SharedEvent::new(event(i, kind)))
            })
            .collect();
        let bases = [
            WatchResponse {
                watch_id: 3,
                ..WatchResponse::default()
            },
            WatchResponse {
                watch_id: -1,
                created: true,
                canceled: true,
                compact_revision: 4,
                cancel_reason: "gone".to_string(),
                ..WatchResponse::default()
            },
        ];
        for prev_kv in [false, true, false] {
            for base in &bases {
                for count in [0, 1, events.len()] {
                    let (shared, owned) = pair(&events[..count], prev_kv, base.clone());
                    let encoded = EncodedWatchResponse::new(shared, header(21));
                    let mut usual = pb::WatchResponse::from(owned);
                    usual.header = Some(header(21));
                    assert_eq!(encoded.encoded_len(), usual.encoded_len());
                    assert_eq!(encoded.encode_to_vec(), usual.encode_to_vec());
                    for max in [1 << 20, 600, 300, 10] {
                        let ours = encoded.clone().fragment(max);
                        let theirs = fragment_watch_response(usual.clone(), max);
                        assert_eq!(ours.len(), theirs.len(), "max {max}");
                        for (a, b) in ours.iter().zip(&theirs) {
                            assert_eq!(a.encode_to_vec(), b.encode_to_vec());
                        }
                        let joined: usize = ours.iter().map(EncodedWatchResponse::event_count).sum();
                        assert_eq!(joined, count);
                    }
                }
            }
        }
        // Decoding keeps the scalars and counts the events.
        let (shared, _) = pair(&events, true, bases[1].clone());
        let bytes = EncodedWatchResponse::new(shared, header(3)).encode_to_vec();
        let back = EncodedWatchResponse::decode(bytes.as_slice()).unwrap();
        assert_eq!(
            (back.watch_id, back.compact_revision, back.event_count()),
            (-1, 4, events.len())
        );
        assert!(back.created && back.canceled && back.cancel_reason == "gone");
        assert_eq!(back.header, Some(header(3)));
    }
}
