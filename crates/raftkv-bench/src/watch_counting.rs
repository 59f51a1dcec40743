//! Count-only decoding of etcd's `WatchResponse`, so that the load tool's own CPU does
//! not dominate a run with watchers.
//!
//! The watchers of a run only count events, but fully decoding them (every `mvccpb.Event`
//! with its key-values into owned buffers) costs the load tool more CPU than the server
//! spends producing them: with 100 watchers each receiving every event, that is hundreds
//! of thousands of decoded events a second on the same cores as the servers.
//! [`CountedWatchResponse`] is a hand-written prost message for the same wire format
//! that keeps the few scalar fields the accounting needs and, for `events` (field 11),
//! only skips each event and counts it: no allocation per event. [`watch`] opens a Watch
//! stream that decodes with it (tonic's `Grpc::streaming` with a `ProstCodec` of
//! `(WatchRequest, CountedWatchResponse)`), in place of the generated `WatchClient`.

use prost::bytes::{Buf, BufMut};
use prost::encoding::{self, DecodeContext, WireType};
use raftkv_proto::etcdserverpb::WatchRequest;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Request, Status, Streaming};
use tonic_prost::ProstCodec;
// tonic re-exports tokio-stream; the raftkv client crate uses the same wrapper.
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;

/// etcd's Watch method.
const WATCH_PATH: &str = "/etcdserverpb.Watch/Watch";

/// `etcdserverpb.WatchResponse` with its events counted, not decoded (see the module doc).
/// The header and `fragment` are skipped too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CountedWatchResponse {
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
    /// How many `events` (field 11) the response carried.
    pub events: usize,
}

impl prost::Message for CountedWatchResponse {
    // Only for completeness (the load tool never sends one): the counted events are lost.
    fn encode_raw(&self, buf: &mut impl BufMut) {
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
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        match tag {
            2 => encoding::int64::merge(wire_type, &mut self.watch_id, buf, ctx),
            3 => encoding::bool::merge(wire_type, &mut self.created, buf, ctx),
            4 => encoding::bool::merge(wire_type, &mut self.canceled, buf, ctx),
            5 => encoding::int64::merge(wire_type, &mut self.compact_revision, buf, ctx),
            6 => encoding::string::merge(wire_type, &mut self.cancel_reason, buf, ctx),
            11 => {
                encoding::check_wire_type(WireType::LengthDelimited, wire_type)?;
                self.events += 1;
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
        let reason = if self.cancel_reason.is_empty() {
            0
        } else {
            encoding::string::encoded_len(6, &self.cancel_reason)
        };
        int64(2, &self.watch_id)
            + flag(3, &self.created)
            + flag(4, &self.canceled)
            + int64(5, &self.compact_revision)
            + reason
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// Opens a Watch stream on `channel` sending `requests`, whose responses are decoded as
/// [`CountedWatchResponse`]s, each at most `max_response_bytes` long.
pub async fn watch(
    channel: Channel,
    requests: ReceiverStream<WatchRequest>,
    max_response_bytes: usize,
) -> Result<Streaming<CountedWatchResponse>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(max_response_bytes);
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(format!("service was not ready: {e}")))?;
    let codec = ProstCodec::<WatchRequest, CountedWatchResponse>::default();
    let path = PathAndQuery::from_static(WATCH_PATH);
    let response = grpc.streaming(Request::new(requests), path, codec).await?;
    Ok(response.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use raftkv_proto::etcdserverpb::{ResponseHeader, WatchResponse};
    use raftkv_proto::mvccpb::{Event, KeyValue};

    #[test]
    fn counts_events_and_keeps_the_accounting_fields() {
        let event = |i: u8| Event {
            kv: Some(KeyValue {
                key: vec![i],
                value: vec![i; 300],
                mod_revision: 9,
                ..KeyValue::default()
            }),
            prev_kv: Some(KeyValue::default()),
            ..Event::default()
        };
        let full = WatchResponse {
            header: Some(ResponseHeader {
                revision: 9,
                ..ResponseHeader::default()
            }),
            watch_id: 7,
            created: true,
            canceled: true,
            compact_revision: 3,
            cancel_reason: "why".to_string(),
            fragment: true,
            events: (0..5).map(event).collect(),
        };
        let counted = CountedWatchResponse::decode(full.encode_to_vec().as_slice()).unwrap();
        assert_eq!(
            counted,
            CountedWatchResponse {
                watch_id: 7,
                created: true,
                canceled: true,
                compact_revision: 3,
                cancel_reason: "why".to_string(),
                events: 5,
            }
        );
        // What it encodes (the scalar fields) decodes as the full message's.
        let back = WatchResponse::decode(counted.encode_to_vec().as_slice()).unwrap();
        assert_eq!(counted.encoded_len(), counted.encode_to_vec().len());
        assert_eq!((back.watch_id, back.compact_revision), (7, 3));
        assert!(back.created && back.canceled && back.events.is_empty());
        let empty = CountedWatchResponse::decode(&[][..]).unwrap();
        assert_eq!(empty, CountedWatchResponse::default());
    }
}
