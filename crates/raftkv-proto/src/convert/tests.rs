//! Unit tests of the conversions.

use raftkv_core::watch;

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
