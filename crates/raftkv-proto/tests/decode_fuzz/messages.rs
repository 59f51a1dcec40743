//! Messages: any field values, enums mostly known but sometimes not, oneofs sometimes empty.

use super::*;

pub(crate) fn small_bytes() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![vec(0u8..4, 0..3), vec(any::<u8>(), 0..6)].boxed()
}

pub(crate) fn text() -> BoxedStrategy<String> {
    "[a-z0-9:/.-]{0,12}".boxed()
}

pub(crate) fn number() -> BoxedStrategy<i64> {
    prop_oneof![-2i64..300, any::<i64>()].boxed()
}

/// An enum field: one of its `known` values mostly, any i32 sometimes.
pub(crate) fn enum_value(known: i32) -> BoxedStrategy<i32> {
    prop_oneof![6 => 0..known, 1 => any::<i32>()].boxed()
}

pub(crate) fn pb_range() -> BoxedStrategy<pb::RangeRequest> {
    (
        (small_bytes(), small_bytes(), number(), number()),
        (enum_value(3), enum_value(5), any::<[bool; 3]>()),
        [number(), number(), number(), number()],
    )
        .prop_map(
            |((key, range_end, limit, revision), (sort_order, sort_target, flags), bounds)| {
                let [serializable, keys_only, count_only] = flags;
                let [
                    min_mod_revision,
                    max_mod_revision,
                    min_create_revision,
                    max_create_revision,
                ] = bounds;
                pb::RangeRequest {
                    key,
                    range_end,
                    limit,
                    revision,
                    sort_order,
                    sort_target,
                    serializable,
                    keys_only,
                    count_only,
                    min_mod_revision,
                    max_mod_revision,
                    min_create_revision,
                    max_create_revision,
                }
            },
        )
        .boxed()
}

pub(crate) fn pb_put() -> BoxedStrategy<pb::PutRequest> {
    (small_bytes(), small_bytes(), number(), any::<[bool; 3]>())
        .prop_map(
            |(key, value, lease, [prev_kv, ignore_value, ignore_lease])| pb::PutRequest {
                key,
                value,
                lease,
                prev_kv,
                ignore_value,
                ignore_lease,
            },
        )
        .boxed()
}

pub(crate) fn pb_delete() -> BoxedStrategy<pb::DeleteRangeRequest> {
    (small_bytes(), small_bytes(), any::<bool>())
        .prop_map(|(key, range_end, prev_kv)| pb::DeleteRangeRequest {
            key,
            range_end,
            prev_kv,
        })
        .boxed()
}

pub(crate) fn pb_compare() -> BoxedStrategy<pb::Compare> {
    use pb::compare::TargetUnion as U;
    let union = proptest::option::of(prop_oneof![
        number().prop_map(U::Version),
        number().prop_map(U::CreateRevision),
        number().prop_map(U::ModRevision),
        small_bytes().prop_map(U::Value),
        number().prop_map(U::Lease),
    ]);
    (enum_value(4), enum_value(5), small_bytes(), small_bytes(), union)
        .prop_map(|(result, target, key, range_end, target_union)| pb::Compare {
            result,
            target,
            key,
            range_end,
            target_union,
        })
        .boxed()
}

pub(crate) fn pb_txn() -> BoxedStrategy<pb::TxnRequest> {
    use pb::request_op::Request;
    let simple = prop_oneof![
        1 => Just(pb::RequestOp { request: None }),
        3 => pb_range().prop_map(|r| pb::RequestOp { request: Some(Request::RequestRange(r)) }),
        3 => pb_put().prop_map(|p| pb::RequestOp { request: Some(Request::RequestPut(p)) }),
        3 => pb_delete().prop_map(|d| pb::RequestOp { request: Some(Request::RequestDeleteRange(d)) }),
    ];
    let leaf = (
        vec(pb_compare(), 0..2),
        vec(simple.clone(), 0..3),
        vec(simple.clone(), 0..2),
    )
        .prop_map(|(compare, success, failure)| pb::TxnRequest {
            compare,
            success,
            failure,
        });
    leaf.prop_recursive(3, 12, 3, move |inner| {
        let nested = inner.prop_map(|t| pb::RequestOp {
            request: Some(Request::RequestTxn(t)),
        });
        let op = prop_oneof![simple.clone(), nested];
        (vec(pb_compare(), 0..2), vec(op.clone(), 0..3), vec(op, 0..2)).prop_map(
            |(compare, success, failure)| pb::TxnRequest {
                compare,
                success,
                failure,
            },
        )
    })
    .boxed()
}

pub(crate) fn pb_header() -> impl Strategy<Value = Option<pb::ResponseHeader>> {
    proptest::option::of((any::<u64>(), any::<u64>(), number(), any::<u64>()).prop_map(
        |(cluster_id, member_id, revision, raft_term)| pb::ResponseHeader {
            cluster_id,
            member_id,
            revision,
            raft_term,
        },
    ))
}

pub(crate) fn pb_key_value() -> BoxedStrategy<mvccpb::KeyValue> {
    (
        small_bytes(),
        number(),
        number(),
        number(),
        small_bytes(),
        number(),
    )
        .prop_map(
            |(key, create_revision, mod_revision, version, value, lease)| mvccpb::KeyValue {
                key,
                create_revision,
                mod_revision,
                version,
                value,
                lease,
            },
        )
        .boxed()
}

pub(crate) fn pb_txn_response() -> BoxedStrategy<pb::TxnResponse> {
    use pb::response_op::Response;
    let simple = prop_oneof![
        1 => Just(pb::ResponseOp { response: None }),
        3 => (pb_header(), vec(pb_key_value(), 0..2), any::<bool>(), number()).prop_map(
            |(header, kvs, more, count)| pb::ResponseOp {
                response: Some(Response::ResponseRange(pb::RangeResponse { header, kvs, more, count })),
            }
        ),
        3 => (pb_header(), proptest::option::of(pb_key_value())).prop_map(|(header, prev_kv)| pb::ResponseOp {
            response: Some(Response::ResponsePut(pb::PutResponse { header, prev_kv })),
        }),
    ];
    let leaf =
        (pb_header(), any::<bool>(), vec(simple.clone(), 0..3)).prop_map(|(header, succeeded, responses)| {
            pb::TxnResponse {
                header,
                succeeded,
                responses,
            }
        });
    leaf.prop_recursive(3, 12, 3, move |inner| {
        let nested = inner.prop_map(|t| pb::ResponseOp {
            response: Some(Response::ResponseTxn(t)),
        });
        (
            pb_header(),
            any::<bool>(),
            vec(prop_oneof![simple.clone(), nested], 0..3),
        )
            .prop_map(|(header, succeeded, responses)| pb::TxnResponse {
                header,
                succeeded,
                responses,
            })
    })
    .boxed()
}

pub(crate) fn pb_member_add() -> BoxedStrategy<pb::MemberAddRequest> {
    (vec(text(), 0..3), any::<bool>())
        .prop_map(|(peer_ur_ls, is_learner)| pb::MemberAddRequest {
            peer_ur_ls,
            is_learner,
        })
        .boxed()
}

pub(crate) fn pb_member_update() -> BoxedStrategy<pb::MemberUpdateRequest> {
    (any::<u64>(), vec(text(), 0..3))
        .prop_map(|(id, peer_ur_ls)| pb::MemberUpdateRequest { id, peer_ur_ls })
        .boxed()
}

pub(crate) fn pb_alarm() -> BoxedStrategy<pb::AlarmRequest> {
    (enum_value(3), any::<u64>(), enum_value(3))
        .prop_map(|(action, member_id, alarm)| pb::AlarmRequest {
            action,
            member_id,
            alarm,
        })
        .boxed()
}

pub(crate) fn pb_snapshot_chunk() -> BoxedStrategy<peer::SnapshotChunk> {
    (small_bytes(), small_bytes())
        .prop_map(|(header, data)| peer::SnapshotChunk { header, data })
        .boxed()
}
