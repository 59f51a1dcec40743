//! What the server does with a decoded request, and the facts it must respect.

use super::*;

/// The etcd rule for a key and a range end: a key, and an end that is empty (one key),
/// `[0]` (to the end of the keyspace) or after the key.
pub(crate) fn key_and_end_valid(key: &[u8], range_end: &[u8]) -> bool {
    !key.is_empty() && (range_end.is_empty() || range_end == [0] || range_end > key)
}

/// What passes validation is as large as it says, within the limit, and decodes from the
/// log's encoding (a command every replica could not decode would poison the log).
pub(crate) fn check_accepted_command(command: &Command, size: usize, limits: &Limits) {
    let encoded = codec::encode(command).unwrap();
    assert_eq!(size, encoded.len());
    assert!(size <= limits.max_request_bytes);
    assert_eq!(codec::decode::<Command>(&encoded).unwrap(), *command);
}

pub(crate) fn then_range(wire: pb::RangeRequest) {
    use pb::range_request::{SortOrder, SortTarget};
    let known =
        SortOrder::try_from(wire.sort_order).is_ok() && SortTarget::try_from(wire.sort_target).is_ok();
    match core::RangeRequest::try_from(wire.clone()) {
        Err(e) => assert!(!known, "refused a range with known enums: {e}"),
        Ok(range) => {
            assert!(known, "accepted an unknown sort order or target");
            assert_eq!(
                pb::RangeRequest::from(range.clone()),
                wire,
                "the conversion lost something"
            );
            let verdict = validate::check_range(&range);
            assert_eq!(
                verdict.is_ok(),
                key_and_end_valid(&range.key, &range.range_end),
                "{verdict:?}"
            );
        }
    }
}

pub(crate) fn then_put(wire: pb::PutRequest) {
    let put = core::PutRequest::from(wire.clone());
    assert_eq!(
        pb::PutRequest::from(put.clone()),
        wire,
        "the conversion lost something"
    );
    let limits = Limits::default();
    let faulty = put.key.is_empty()
        || (put.ignore_value && !put.value.is_empty())
        || (put.ignore_lease && put.lease != 0);
    let command = Command::Put(put);
    match validate::check_command(&command, &limits) {
        Ok(size) => {
            assert!(!faulty, "accepted {command:?}");
            check_accepted_command(&command, size, &limits);
        }
        Err(e) => assert!(faulty, "refused {command:?}: {e}"),
    }
}

pub(crate) fn then_delete(wire: pb::DeleteRangeRequest) {
    let delete = core::DeleteRangeRequest::from(wire.clone());
    assert_eq!(
        pb::DeleteRangeRequest::from(delete.clone()),
        wire,
        "the conversion lost something"
    );
    let limits = Limits::default();
    let valid = key_and_end_valid(&delete.key, &delete.range_end);
    let command = Command::DeleteRange(delete);
    match validate::check_command(&command, &limits) {
        Ok(size) => {
            assert!(valid, "accepted {command:?}");
            check_accepted_command(&command, size, &limits);
        }
        Err(e) => assert!(!valid, "refused {command:?}: {e}"),
    }
}

/// Whether every enum and oneof in `txn` (nested ones included) holds a known value.
pub(crate) fn txn_convertible(txn: &pb::TxnRequest) -> bool {
    use pb::compare::{CompareResult, CompareTarget};
    use pb::range_request::{SortOrder, SortTarget};
    use pb::request_op::Request;
    let compares = txn
        .compare
        .iter()
        .all(|c| CompareResult::try_from(c.result).is_ok() && CompareTarget::try_from(c.target).is_ok());
    let ops = txn
        .success
        .iter()
        .chain(&txn.failure)
        .all(|op| match &op.request {
            None => false,
            Some(Request::RequestRange(r)) => {
                SortOrder::try_from(r.sort_order).is_ok() && SortTarget::try_from(r.sort_target).is_ok()
            }
            Some(Request::RequestPut(_) | Request::RequestDeleteRange(_)) => true,
            Some(Request::RequestTxn(nested)) => txn_convertible(nested),
        });
    compares && ops
}

/// Whether every key a transaction names (compares and operations, nested ones included)
/// is non-empty: validation refuses any transaction where one is not.
pub(crate) fn txn_keys_present(txn: &core::TxnRequest) -> bool {
    txn.compare.iter().all(|c| !c.key.is_empty())
        && txn.success.iter().chain(&txn.failure).all(|op| match op {
            core::RequestOp::Range(r) => !r.key.is_empty(),
            core::RequestOp::Put(p) => !p.key.is_empty(),
            core::RequestOp::DeleteRange(d) => !d.key.is_empty(),
            core::RequestOp::Txn(nested) => txn_keys_present(nested),
        })
}

pub(crate) fn then_txn(wire: pb::TxnRequest) {
    let convertible = txn_convertible(&wire);
    match core::TxnRequest::try_from(wire) {
        Err(e) => assert!(
            !convertible,
            "refused a transaction with known enums and oneofs: {e}"
        ),
        Ok(txn) => {
            assert!(convertible, "accepted an unknown enum or an empty oneof");
            let back = core::TxnRequest::try_from(pb::TxnRequest::from(txn.clone()));
            assert_eq!(back.as_ref(), Ok(&txn), "the conversion is not stable");
            let limits = Limits::default();
            let command = Command::Txn(txn.clone());
            if let Ok(size) = validate::check_command(&command, &limits) {
                assert!(txn_keys_present(&txn), "accepted an empty key: {command:?}");
                check_accepted_command(&command, size, &limits);
            }
        }
    }
}

pub(crate) fn then_compaction(wire: pb::CompactionRequest) {
    let compaction = core::CompactionRequest::from(wire);
    assert_eq!(
        (compaction.revision, compaction.physical),
        (wire.revision, wire.physical)
    );
}

pub(crate) fn then_alarm(wire: pb::AlarmRequest) {
    // The server matches on these; an unknown value must be a clean `Err`.
    let action = pb::alarm_request::AlarmAction::try_from(wire.action);
    let alarm = pb::AlarmType::try_from(wire.alarm);
    assert_eq!(action.is_ok(), (0..=2).contains(&wire.action));
    assert_eq!(alarm.is_ok(), (0..=2).contains(&wire.alarm));
}

/// Client side: a server's answers convert to core types and back without loss.
pub(crate) fn then_range_response(wire: pb::RangeResponse) {
    let answer = core::RangeResponse::from(wire);
    assert_eq!(
        core::RangeResponse::from(pb::RangeResponse::from(answer.clone())),
        answer
    );
}

pub(crate) fn then_txn_response(wire: pb::TxnResponse) {
    if let Ok(answer) = core::TxnResponse::try_from(wire) {
        let back = core::TxnResponse::try_from(pb::TxnResponse::from(answer.clone()));
        assert_eq!(back.as_ref(), Ok(&answer));
    }
}

/// Every message a raftkv server decodes from a client or a peer, and the KV answers a
/// raftkv client decodes from a server.
pub(crate) fn check_as_every_message(bytes: &[u8], tally: &Tally) {
    // KV.
    tally.add(check(bytes, then_range));
    tally.add(check(bytes, then_put));
    tally.add(check(bytes, then_delete));
    tally.add(check(bytes, then_txn));
    tally.add(check(bytes, then_compaction));
    // Cluster and Maintenance.
    tally.add(check(bytes, |_: pb::MemberAddRequest| {}));
    tally.add(check(bytes, |_: pb::MemberRemoveRequest| {}));
    tally.add(check(bytes, |_: pb::MemberUpdateRequest| {}));
    tally.add(check(bytes, |_: pb::MemberListRequest| {}));
    tally.add(check(bytes, |_: pb::MemberPromoteRequest| {}));
    tally.add(check(bytes, then_alarm));
    tally.add(check(bytes, |_: pb::StatusRequest| {}));
    tally.add(check(bytes, |_: pb::DefragmentRequest| {}));
    tally.add(check(bytes, |_: pb::HashKvRequest| {}));
    tally.add(check(bytes, |_: pb::SnapshotRequest| {}));
    tally.add(check(bytes, |_: pb::MoveLeaderRequest| {}));
    // Peer protocol.
    tally.add(check(bytes, |_: peer::RaftBytes| {}));
    tally.add(check(bytes, |_: peer::SnapshotChunk| {}));
    tally.add(check(bytes, |_: peer::ReadIndexRequest| {}));
    tally.add(check(bytes, |_: peer::ReadIndexResponse| {}));
    // KV answers (client side).
    tally.add(check(bytes, then_range_response));
    tally.add(check(bytes, |wire: pb::PutResponse| {
        let _ = core::PutResponse::from(wire);
    }));
    tally.add(check(bytes, |wire: pb::DeleteRangeResponse| {
        let _ = core::DeleteRangeResponse::from(wire);
    }));
    tally.add(check(bytes, then_txn_response));
}
