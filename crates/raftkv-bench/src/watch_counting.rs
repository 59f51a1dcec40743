//! Count-only decoding of etcd's `WatchResponse`, so that the load tool's own CPU does
//! not dominate a run with watchers.
//!
//! The watchers of a run only count events, but fully decoding them (every `mvccpb.Event`
//! with its key-values into owned buffers) costs the load tool more CPU than the server
//! spends producing them: with 100 watchers each receiving every event, that is hundreds
//! of thousands of decoded events a second on the same cores as the servers. The
//! server's own wire type, `raftkv_proto::watch_wire::EncodedWatchResponse`, decodes the
//! header and scalar fields and only counts the events while skipping them (no
//! allocation per event). [`watch`] opens a Watch stream that decodes with it (tonic's
//! `Grpc::streaming` with a `ProstCodec`), in place of the generated `WatchClient`.

use raftkv_proto::etcdserverpb::WatchRequest;
use raftkv_proto::watch_wire::EncodedWatchResponse;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Request, Status, Streaming};
use tonic_prost::ProstCodec;
// tonic re-exports tokio-stream; the raftkv client crate uses the same wrapper.
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;

/// etcd's Watch method.
const WATCH_PATH: &str = "/etcdserverpb.Watch/Watch";

/// Opens a Watch stream on `channel` sending `requests`, whose responses are decoded
/// count-only (see the module doc), each at most `max_response_bytes` long.
pub async fn watch(
    channel: Channel,
    requests: ReceiverStream<WatchRequest>,
    max_response_bytes: usize,
) -> Result<Streaming<EncodedWatchResponse>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(max_response_bytes);
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(format!("service was not ready: {e}")))?;
    let codec = ProstCodec::<WatchRequest, EncodedWatchResponse>::default();
    let path = PathAndQuery::from_static(WATCH_PATH);
    let response = grpc.streaming(Request::new(requests), path, codec).await?;
    Ok(response.into_inner())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use prost::Message;
    use raftkv_proto::etcdserverpb::{ResponseHeader, WatchResponse};
    use raftkv_proto::mvccpb::{Event, KeyValue};

    #[test]
    fn a_full_response_decodes_with_its_events_counted_and_its_accounting_fields() {
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
        let counted = EncodedWatchResponse::decode(full.encode_to_vec().as_slice()).unwrap();
        assert_eq!(
            (counted.watch_id, counted.compact_revision, counted.event_count()),
            (7, 3, 5)
        );
        assert!(counted.created && counted.canceled && counted.fragment);
        assert_eq!(counted.cancel_reason, "why");
        let empty = EncodedWatchResponse::decode(&[][..]).unwrap();
        assert_eq!(empty.event_count(), 0);
    }
}
