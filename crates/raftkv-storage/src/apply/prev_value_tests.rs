//! A key's previous value is read only when someone needs it (a `prev_kv`, `ignore_value`,
//! a value compare, a watcher asking for previous values): everything else apply needs of
//! it (revisions, version, lease) comes from the key index. These check the answers are
//! the same either way, including for keys written earlier in the same apply call.

use raftkv_core::kv::*;
use raftkv_core::{Command, Response};

use crate::test_store::TestStore as Fixture;

fn get(f: &Fixture, key: &str) -> Option<KeyValue> {
    f.store
        .reader
        .range(&RangeRequest::key(key))
        .unwrap()
        .kvs
        .into_iter()
        .next()
}

fn put(key: &str, value: &str) -> Command {
    Command::Put(PutRequest::new(key, value))
}

fn values(kvs: &[KeyValue]) -> Vec<(&[u8], &[u8])> {
    kvs.iter()
        .map(|kv| (kv.key.as_slice(), kv.value.as_slice()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_see_the_previous_version_with_or_without_its_value() {
    let mut f = Fixture::new();
    f.apply(vec![Command::LeaseGrant { id: 5, ttl: 60 }]).await;
    f.apply(vec![Command::Put(PutRequest {
        lease: 5,
        ..PutRequest::new("a", "v1")
    })])
    .await;
    let answers = f
        .apply(vec![
            put("a", "v2"),
            Command::Put(PutRequest {
                prev_kv: true,
                ..PutRequest::new("a", "v3")
            }),
            Command::Put(PutRequest {
                ignore_value: true,
                lease: 5,
                ..PutRequest::new("a", "")
            }),
        ])
        .await;
    let Response::Put(second) = &answers[1] else {
        panic!("{answers:?}")
    };
    assert_eq!(
        second.prev_kv.as_ref().map(|kv| kv.value.as_slice()),
        Some(&b"v2"[..])
    );
    let a = get(&f, "a").unwrap();
    assert_eq!((a.value.as_slice(), a.version, a.lease), (&b"v3"[..], 4, 5));
    assert_eq!(a.create_revision, 2, "created by the first put");
    // The plain put moved the key off lease 5 and the last put back onto it: a revoke
    // deletes it.
    f.apply(vec![Command::LeaseRevoke { id: 5 }]).await;
    assert_eq!(get(&f, "a"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_deletes_count_and_return_values_only_when_asked() {
    let mut f = Fixture::new();
    f.apply(vec![Command::LeaseGrant { id: 9, ttl: 60 }]).await;
    f.apply(vec![
        put("p/a", "1"),
        Command::Put(PutRequest {
            lease: 9,
            ..PutRequest::new("p/b", "2")
        }),
        put("q", "x"),
    ])
    .await;
    let answers = f
        .apply(vec![
            put("p/c", "3"), // in the overlay of the same call
            Command::DeleteRange(DeleteRangeRequest {
                prev_kv: true,
                ..DeleteRangeRequest::prefix("p/")
            }),
        ])
        .await;
    let Response::DeleteRange(deleted) = &answers[1] else {
        panic!("{answers:?}")
    };
    assert_eq!(deleted.deleted, 3);
    assert_eq!(
        values(&deleted.prev_kvs),
        [(&b"p/a"[..], &b"1"[..]), (b"p/b", b"2"), (b"p/c", b"3")]
    );
    f.apply(vec![put("p/d", "4"), put("p/e", "5")]).await;
    let answers = f
        .apply(vec![
            Command::DeleteRange(DeleteRangeRequest::prefix("p/")),
            Command::DeleteRange(DeleteRangeRequest::prefix("p/")),
        ])
        .await;
    let counts: Vec<_> = answers
        .iter()
        .map(|r| match r {
            Response::DeleteRange(d) => (d.deleted, d.prev_kvs.len()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(counts, [(2, 0), (0, 0)]);
    assert_eq!(get(&f, "q").map(|kv| kv.value), Some(b"x".to_vec()));
    // p/b's attachment went with its delete: revoking lease 9 deletes nothing more.
    let revision = f.store.shared.revision();
    f.apply(vec![Command::LeaseRevoke { id: 9 }]).await;
    assert_eq!(f.store.shared.revision(), revision);
}

fn txn(compare: Compare) -> Command {
    Command::Txn(TxnRequest {
        compare: vec![compare],
        success: vec![],
        failure: vec![],
    })
}

fn over_prefix(result: CompareResult, target: CompareTarget) -> Compare {
    Compare {
        range_end: prefix_end(b"x/"),
        ..Compare::key("x/", result, target)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compares_over_ranges_see_metadata_and_values() {
    let mut f = Fixture::new();
    f.apply(vec![put("x/1", "a"), put("x/1", "b"), put("x/2", "b")])
        .await;
    let answers = f
        .apply(vec![
            put("x/3", "b"), // version 1, in the overlay
            txn(over_prefix(CompareResult::Greater, CompareTarget::Version(0))),
            txn(over_prefix(CompareResult::Equal, CompareTarget::Version(2))),
            txn(over_prefix(CompareResult::Less, CompareTarget::Mod(5))),
            txn(over_prefix(
                CompareResult::Equal,
                CompareTarget::Value(b"b".to_vec()),
            )),
            txn(over_prefix(CompareResult::Equal, CompareTarget::Lease(0))),
            txn(over_prefix(CompareResult::Less, CompareTarget::Create(4))),
        ])
        .await;
    let held: Vec<bool> = answers[1..]
        .iter()
        .map(|r| match r {
            Response::Txn(t) => t.succeeded,
            other => panic!("{other:?}"),
        })
        .collect();
    // x/3 was written at revision 5 in this call: Mod < 5 and Create < 4 fail on it.
    assert_eq!(held, [true, false, false, true, true, false]);
}
