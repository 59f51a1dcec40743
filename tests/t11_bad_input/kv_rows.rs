//! Rows of the KV service: puts, ranges, deletes, txns, compactions.

use super::*;

/// etcd texts raftkv's `status::text` does not have.
pub(crate) const BAD_URLS: &str = "etcdserver: given member URLs are invalid";

pub(crate) fn kv_rows(t: &mut Table, revisions: &Revisions, g: &mut Garbage) {
    let Revisions { compacted, future } = *revisions;
    let (invalid, out_of_range) = (Code::InvalidArgument, Code::OutOfRange);
    let big_value = vec![b'x'; DEFAULT_MAX_REQUEST_BYTES + 1];
    // Over max-request-bytes, under etcd's gRPC limit (max-request-bytes + 512 KiB).
    let big_key = vec![b'k'; 1792 << 10];

    t.add(
        "kv: put, empty key",
        BOTH,
        put_with(b"", b"v", |_| ()),
        refused(invalid, text::EMPTY_KEY),
    );
    t.add(
        "kv: range, empty key",
        BOTH,
        range_with(b"", |_| ()),
        refused(invalid, text::EMPTY_KEY),
    );
    let delete = Req::Delete(pb::DeleteRangeRequest::default());
    t.add(
        "kv: delete, empty key",
        BOTH,
        delete,
        refused(invalid, text::EMPTY_KEY),
    );
    let empty_compare = txn_with(|t| t.compare = vec![compare(b"", 0, 0)]);
    t.add(
        "kv: txn, compare with an empty key",
        BOTH,
        empty_compare,
        refused(invalid, text::EMPTY_KEY),
    );
    let empty_range = txn_with(|t| t.success = vec![op_range(range(b""))]);
    t.add(
        "kv: txn, range op with an empty key",
        BOTH,
        empty_range,
        refused(invalid, text::EMPTY_KEY),
    );
    let too_large = refused(invalid, text::REQUEST_TOO_LARGE);
    t.add(
        "kv: put, value over 1.5 MiB",
        BOTH,
        put_with(b"big", &big_value, |_| ()),
        too_large.clone(),
    );
    t.add(
        "kv: put, 1.75 MiB key",
        BOTH,
        put_with(&big_key, b"v", |_| ()),
        too_large,
    );
    t.add(
        "kv: put, 5 MiB (over the gRPC message limit)",
        LEADER,
        put_with(b"big", &vec![b'x'; 5 << 20], |_| ()),
        // grpc-go's answer above max-request-bytes + 512 KiB, as etcd gives it.
        refused(
            Code::ResourceExhausted,
            "grpc: received message larger than max (",
        ),
    );
    t.add(
        "kv: range, 1.75 MiB key (a read: answered, empty)",
        BOTH,
        range_with(&big_key, |_| ()),
        answer("no kvs", |a| a.contains("kvs: []")),
    );
    let many_ops =
        txn_with(|t| t.success = (0..129).map(|i| op_put(format!("many/{i}").as_bytes())).collect());
    t.add(
        "kv: txn, 129 operations",
        BOTH,
        many_ops,
        refused(invalid, text::TOO_MANY_OPS),
    );
    let many_compares = txn_with(|t| t.compare = (0..129).map(|_| compare(b"ref/00", 0, 0)).collect());
    t.add(
        "kv: txn, 129 compares",
        BOTH,
        many_compares,
        refused(invalid, text::TOO_MANY_OPS),
    );
    let twice = txn_with(|t| t.success = vec![op_put(b"dup/a"), op_put(b"dup/a")]);
    t.add(
        "kv: txn, one key put twice",
        BOTH,
        twice,
        refused(invalid, text::DUPLICATE_KEY),
    );
    let delete_op = op(pb::request_op::Request::RequestDeleteRange(
        pb::DeleteRangeRequest {
            key: b"dup/b".to_vec(),
            ..Default::default()
        },
    ));
    let put_and_delete = txn_with(|t| t.failure = vec![op_put(b"dup/b"), delete_op]);
    t.add(
        "kv: txn, put and delete of one key",
        BOTH,
        put_and_delete,
        refused(invalid, text::DUPLICATE_KEY),
    );
    t.add(
        "kv: range at revision -1 (etcd: <= 0 is the latest)",
        BOTH,
        range_with(b"ref/00", |r| r.revision = -1),
        answer("ref/00", |a| a.contains("count: 1")),
    );
    t.add(
        "kv: range at a huge future revision",
        BOTH,
        range_with(b"ref/00", |r| r.revision = i64::MAX),
        refused(out_of_range, text::FUTURE_REV),
    );
    t.add(
        "kv: range below the compact revision",
        BOTH,
        range_with(b"ref/00", |r| r.revision = compacted - 1),
        refused(out_of_range, text::COMPACTED),
    );
    t.add(
        "kv: range at the compact revision (still readable)",
        BOTH,
        range_with(b"ref/00", |r| r.revision = compacted),
        answer("ref/00 as of then", |a| a.contains("count: 1")),
    );
    let compacted_status = refused(out_of_range, text::COMPACTED);
    t.add(
        "kv: compact at a future revision",
        BOTH,
        compact_at(future, false),
        refused(out_of_range, text::FUTURE_REV),
    );
    t.add(
        "kv: compact at the compacted revision",
        BOTH,
        compact_at(compacted, false),
        compacted_status.clone(),
    );
    t.add(
        "kv: compact at a negative revision",
        BOTH,
        compact_at(-5, true),
        compacted_status,
    );
    t.add(
        "kv: put with an unknown lease",
        BOTH,
        put_with(b"lease/k", b"v", |p| p.lease = 0x1234),
        refused(Code::NotFound, text::LEASE_NOT_FOUND),
    );
    t.add(
        "kv: put, ignore_value with a value",
        BOTH,
        put_with(b"ref/00", b"v", |p| p.ignore_value = true),
        refused(invalid, text::VALUE_PROVIDED),
    );
    t.add(
        "kv: put, ignore_lease with a lease",
        BOTH,
        put_with(b"ref/00", b"v", |p| (p.ignore_lease, p.lease) = (true, 7)),
        refused(invalid, text::LEASE_PROVIDED),
    );
    t.add(
        "kv: put, ignore_value on a missing key",
        BOTH,
        put_with(b"missing/k", b"", |p| p.ignore_value = true),
        refused(invalid, text::KEY_NOT_FOUND),
    );
    t.add(
        "kv: put, ignore_lease on a missing key",
        BOTH,
        put_with(b"missing/k", b"v", |p| p.ignore_lease = true),
        refused(invalid, text::KEY_NOT_FOUND),
    );
    // etcd answers ErrGRPCInvalidSortOption for any unknown sort order or target.
    let bad_order = range_with(b"ref/00", |r| r.sort_order = 9);
    t.add(
        "kv: range, unknown sort order",
        BOTH,
        bad_order,
        refused(invalid, text::INVALID_SORT_OPTION),
    );
    let bad_target = range_with(b"ref/00", |r| r.sort_target = 9);
    t.add(
        "kv: range, unknown sort target",
        BOTH,
        bad_target,
        refused(invalid, text::INVALID_SORT_OPTION),
    );
    let nested_order = txn_with(|t| {
        t.success = vec![op_range(pb::RangeRequest {
            sort_order: 9,
            ..range(b"ref/00")
        })]
    });
    t.add(
        "kv: txn, range op with an unknown sort order",
        BOTH,
        nested_order,
        refused(invalid, text::INVALID_SORT_OPTION),
    );
    let no_request = txn_with(|t| t.success = vec![pb::RequestOp { request: None }]);
    t.add(
        "kv: txn, RequestOp with no request",
        BOTH,
        no_request,
        refused(invalid, text::KEY_NOT_FOUND),
    );
    // etcd's checkRequestOp answers an empty op with ErrGRPCKeyNotFound.
    // Both stricter than etcd, which evaluates an unknown compare target as "equal" and an
    // unknown compare result as true.
    let bad_target = txn_with(|t| t.compare = vec![compare(b"ref/00", 0, 9)]);
    t.add(
        "kv: txn, compare with an unknown target",
        BOTH,
        bad_target,
        refused(invalid, "unknown compare"),
    );
    let bad_result = txn_with(|t| t.compare = vec![compare(b"ref/00", 9, 0)]);
    t.add(
        "kv: txn, compare with an unknown result",
        BOTH,
        bad_result,
        refused(invalid, "unknown compare"),
    );
    let backwards = Req::Delete(pb::DeleteRangeRequest {
        key: b"ref/05".to_vec(),
        range_end: b"ref/01".to_vec(),
        prev_kv: false,
    });
    t.add(
        "kv: delete, range end before the key (etcd: empty range)",
        BOTH,
        backwards,
        answer("nothing deleted", |a| a.contains("deleted: 0")),
    );
    t.add(
        "kv: range, negative limit (etcd: no limit)",
        BOTH,
        range_with(b"ref/", |r| (r.range_end, r.limit) = (b"ref0".to_vec(), -3)),
        answer("every ref/ key", |a| a.contains("more: false")),
    );
    // etcd bounds nesting only through --max-txn-ops: each level spends one operation of
    // the 128, so 128 levels (the innermost with its one read) are the most it accepts.
    t.add(
        "kv: txn nested 60 deep, read-only (etcd: accepted)",
        BOTH,
        Req::Txn(nested_txn(60)),
        answer("succeeded", |a| a.contains("succeeded: true")),
    );
    t.add(
        "kv: txn nested 128 deep, read-only (etcd: accepted)",
        BOTH,
        Req::Txn(nested_txn(128)),
        answer("succeeded", |a| a.contains("succeeded: true")),
    );
    t.add(
        "kv: txn nested 129 deep",
        BOTH,
        Req::Txn(nested_txn(129)),
        refused(invalid, text::TOO_MANY_OPS),
    );
    t.add(
        "kv: txn nested 200 deep",
        BOTH,
        Req::Txn(nested_txn(200)),
        refused(invalid, text::TOO_MANY_OPS),
    );
    t.add(
        "kv: txn nested 1,000 deep (refused before it is decoded)",
        BOTH,
        Req::Txn(nested_txn(1000)),
        refused(invalid, text::TOO_MANY_OPS),
    );
    let garbage = Req::RawClient("/etcdserverpb.KV/Put", g.bad_protobuf());
    // grpc-go answers the same code ("grpc: error unmarshalling request").
    t.add(
        "kv: Put with undecodable protobuf",
        BOTH,
        garbage,
        refused(Code::Internal, ""),
    );
}
