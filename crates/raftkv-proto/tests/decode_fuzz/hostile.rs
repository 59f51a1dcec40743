//! Hand-built hostile inputs.

use super::*;

/// Wire bytes of a `TxnRequest` whose success branch nests `depth` transactions:
/// `TxnRequest { success: [RequestOp { request_txn: ... }] }`, the innermost empty.
pub(crate) fn nested_txn(depth: usize) -> Vec<u8> {
    // Lengths from the inside out: (length of the nested txn, length of its RequestOp).
    let mut levels = Vec::with_capacity(depth);
    let mut inner = 0usize;
    for _ in 0..depth {
        let op = 1 + varint(inner as u64).len() + inner;
        levels.push((inner, op));
        inner = 1 + varint(op as u64).len() + op;
    }
    let mut out = Vec::with_capacity(inner);
    for &(txn, op) in levels.iter().rev() {
        out.push(0x12); // field 2 (success), length-delimited
        out.extend(varint(op as u64));
        out.push(0x22); // field 4 (request_txn), length-delimited
        out.extend(varint(txn as u64));
    }
    assert_eq!(out.len(), inner);
    out
}

/// Wire bytes of a `TxnResponse` nesting `depth` transaction answers the same way.
pub(crate) fn nested_txn_response(depth: usize) -> Vec<u8> {
    // TxnResponse.responses is field 3, ResponseOp.response_txn field 4: same shape with 0x1A.
    let mut bytes = nested_txn(depth);
    let mut i = 0;
    while i < bytes.len() {
        // Rewrite each TxnRequest.success key (0x12) to TxnResponse.responses (0x1A); the
        // layout alternates key, varint length, key, varint length.
        bytes[i] = if bytes[i] == 0x12 { 0x1a } else { bytes[i] };
        i += 1;
        while bytes[i] & 0x80 != 0 {
            i += 1;
        }
        i += 1;
    }
    bytes
}

pub(crate) fn recursion_limit_reached(e: &prost::DecodeError) -> bool {
    e.to_string().contains("recursion limit reached")
}

#[test]
fn deep_nesting_is_bounded_by_prost_and_by_the_transaction_decoder() {
    // The deepest transaction prost accepts, and the first it refuses.
    let deepest = (1..200)
        .take_while(|&depth| pb::TxnRequest::decode(nested_txn(depth).as_slice()).is_ok())
        .last()
        .unwrap();
    let err = pb::TxnRequest::decode(nested_txn(deepest + 1).as_slice()).unwrap_err();
    assert!(recursion_limit_reached(&err), "{err}");
    // 100 messages (prost's limit, as in C++ protobuf) are 50 transactions: a transaction
    // and its RequestOp are one message each. This is what bounds the recursion of prost
    // itself and of `convert` (which has no limit of its own); validation's limit is higher.
    assert_eq!(deepest, 50);
    assert!(deepest < core::MAX_TXN_NESTING);
    // That deepest transaction converts, passes validation (it is empty), and its log
    // encoding decodes: prost's bound is inside the log decoder's.
    let wire = pb::TxnRequest::decode(nested_txn(deepest).as_slice()).unwrap();
    assert_eq!(wire.encode_to_vec(), nested_txn(deepest));
    let command = Command::Txn(core::TxnRequest::try_from(wire).unwrap());
    let limits = Limits::default();
    let size = validate::check_command(&command, &limits).unwrap();
    check_accepted_command(&command, size, &limits);

    // 10,000 levels, built by hand: refused the same way, without a deep stack.
    let hostile = nested_txn(10_000);
    let (result, peak) = peak_bytes(|| pb::TxnRequest::decode(hostile.as_slice()));
    assert!(recursion_limit_reached(&result.unwrap_err()));
    assert!(peak <= alloc_budget(hostile.len()), "{peak} bytes live");
    // The same through the other branch and inside a RequestOp.
    let mut failure = hostile.clone();
    failure[0] = 0x1a; // field 3 (failure) instead of 2 (success)
    assert!(recursion_limit_reached(
        &pb::TxnRequest::decode(failure.as_slice()).unwrap_err()
    ));
    let op: Vec<u8> = [&[0x22][..], &varint(hostile.len() as u64)[..], &hostile[..]].concat();
    assert!(recursion_limit_reached(
        &pb::RequestOp::decode(op.as_slice()).unwrap_err()
    ));
    // A client decoding a server's answer is protected alike.
    assert!(pb::TxnResponse::decode(nested_txn_response(deepest).as_slice()).is_ok());
    let answer = nested_txn_response(10_000);
    assert!(recursion_limit_reached(
        &pb::TxnResponse::decode(answer.as_slice()).unwrap_err()
    ));
    // Transactions themselves are decoded by `txn_decode`: as deep as etcd accepts them
    // (128 levels spending one operation each, then an empty one), no deeper, and a
    // hostile depth is refused before it is walked.
    // `nested_txn(n)` is n transactions inside an outer one.
    let deepest_etcd = core::MAX_TXN_NESTING - 1;
    let wire = txn_decode::txn_request(&nested_txn(deepest_etcd)).unwrap();
    assert_eq!(wire.encode_to_vec(), nested_txn(deepest_etcd));
    let command = Command::Txn(core::TxnRequest::try_from(wire).unwrap());
    let size = validate::check_command(&command, &limits).unwrap();
    check_accepted_command(&command, size, &limits);
    assert_eq!(
        txn_decode::txn_request(&nested_txn(deepest_etcd + 1)),
        Err(txn_decode::TxnDecodeError::TooDeep)
    );
    let (result, peak) = peak_bytes(|| txn_decode::txn_request(&hostile));
    assert_eq!(result, Err(txn_decode::TxnDecodeError::TooDeep));
    assert!(peak <= alloc_budget(hostile.len()), "{peak} bytes live");
    assert!(txn_decode::txn_response(&nested_txn_response(deepest_etcd)).is_ok());
    assert_eq!(
        txn_decode::txn_response(&nested_txn_response(10_000)),
        Err(txn_decode::TxnDecodeError::TooDeep)
    );
    // Unknown fields are skipped, but nested groups in one count against the same limit:
    // 10,000 start-group keys of field 15, then as many end-group keys.
    let groups = [vec![0x7b; 10_000], vec![0x7c; 10_000]].concat();
    for result in [
        pb::PutRequest::decode(groups.as_slice()).map(drop),
        peer::RaftBytes::decode(groups.as_slice()).map(drop),
        pb::StatusRequest::decode(groups.as_slice()).map(drop),
    ] {
        assert!(recursion_limit_reached(&result.unwrap_err()));
    }
    // ... and in a transaction decoded by hand, at every level.
    assert!(txn_decode::txn_request(&groups).is_err());
    let in_op: Vec<u8> = [&[0x12][..], &varint(groups.len() as u64)[..], &groups[..]].concat();
    assert!(txn_decode::txn_request(&in_op).is_err());
    assert!(txn_decode::txn_response(&groups).is_err());
}

/// One hostile input: what it is, its bytes, and whether the decoder under test refused it.
pub(crate) type Case = (&'static str, Vec<u8>, fn(&[u8]) -> bool);

#[test]
fn length_prefixes_beyond_the_input_are_refused_without_allocating() {
    for claim in [1u64 << 60, u64::MAX, 1 << 32, 1 << 20] {
        let len = varint(claim);
        let cases: Vec<Case> = vec![
            ("PutRequest.key", [&[0x0a][..], &len, b"k"].concat(), |b| {
                pb::PutRequest::decode(b).is_err()
            }),
            ("TxnRequest.success", [&[0x12][..], &len].concat(), |b| {
                pb::TxnRequest::decode(b).is_err()
            }),
            ("MemberAddRequest.peerURLs", [&[0x0a][..], &len].concat(), |b| {
                pb::MemberAddRequest::decode(b).is_err()
            }),
            ("RaftBytes.data", [&[0x0a][..], &len].concat(), |b| {
                peer::RaftBytes::decode(b).is_err()
            }),
            (
                "SnapshotChunk.header",
                [&[0x0a][..], &len, &[0; 8]].concat(),
                |b| peer::SnapshotChunk::decode(b).is_err(),
            ),
            (
                "unknown field 9 of StatusRequest",
                [&[0x4a][..], &len].concat(),
                |b| pb::StatusRequest::decode(b).is_err(),
            ),
        ];
        for (what, bytes, refused) in cases {
            let (refused, peak) = peak_bytes(|| refused(&bytes));
            assert!(refused, "{what} claiming {claim} bytes decoded");
            assert!(peak <= 4096, "{what} claiming {claim} bytes: {peak} bytes live");
        }
    }
    // A varint longer than 10 bytes is refused, not read on.
    let overlong = [&[0x18][..], &[0xff; 11], &[0x01]].concat();
    assert!(pb::PutRequest::decode(overlong.as_slice()).is_err());
}
