//! Fuzzing of the protobuf decoders that see bytes from the network: every request message
//! the etcd services accept (KV, Cluster, Maintenance), the peer protocol's messages, and
//! the KV responses the client crate decodes. Whatever prost decodes then goes the way the
//! server sends it: through `convert` into raftkv-core's types and through
//! `raftkv_core::validate`, which must not panic either. The bincode payloads inside the
//! peer messages (`RaftBytes.data`, `SnapshotChunk.header`) are fuzzed in
//! `crates/raftkv-storage/tests/decode_fuzz.rs`, which has openraft's types at hand.
//!
//! **What it proves**, for the inputs generated (random bytes, and valid encodings that are
//! truncated, bit-flipped, overwritten, extended, spliced with another valid encoding, or
//! given a length prefix claiming up to 2^64 bytes): decoding returns a message or an
//! error without panicking, within a second, and with a bounded peak of live memory
//! (measured by a counting global allocator, per thread); a decoded message re-encodes to
//! bytes that decode to the same message; conversion accepts exactly the messages whose
//! enums and oneofs are known, and what it produces converts back to itself; validation
//! agrees with a few independent facts (an empty key is refused, what passes is as large
//! as it says and decodes again from the log's encoding). Deep nesting is stopped by
//! prost's recursion limit (100 messages, so at most 50 nested transactions), which is
//! what keeps prost's own decoding and dropping off a deep stack: 10,000 levels built by
//! hand are refused. Transactions reach the server through `txn_decode` instead (prost's
//! codec would stop at 50 levels where etcd accepts 128): it decodes exactly what prost
//! decodes, on any input, and goes as deep as `MAX_TXN_NESTING`, which validation and the
//! log's decoder accept too, so it can never become an entry that replicas fail to
//! decode; 10,000 levels are refused before they are walked.
//!
//! **What it cannot prove**: coverage is sampling, not exhaustive, and the counts are kept
//! small for CI (set `RAFTKV_FUZZ_SCALE=n` to run `n` times as many cases, and
//! `PROPTEST_RNG_SEED` to replay a run). A decoder that loops forever hangs the test
//! rather than failing it (proptest's timeout needs its `fork` feature, which is off). The
//! Cluster and Maintenance requests are only decoded: what the server does with their
//! fields lives in raftkv-net. tonic's own framing (message size limit, compression) is
//! not exercised.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fmt::Debug;
use std::time::{Duration, Instant};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{TestCaseError, TestRunner};
use prost::Message;
use raftkv_core::kv as core;
use raftkv_core::validate::{self, Limits};
use raftkv_core::{Command, codec};
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::{mvccpb, raftkvpeer as peer, txn_decode};

// ---------------------------------------------------------------------------------------
// Memory: a counting allocator, so a check can see the most a decode had live at once.

/// Forwards to `System` and counts the bytes each thread has live.
struct CountingAllocator;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    // `try_with`: the allocator also runs while a thread's locals are being torn down.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is forwarded unchanged to `System`; besides, only thread-local
// counters (const-initialised, no destructor, never allocating) are touched.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's guarantees are passed on unchanged.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            note(layout.size() as isize);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            note(layout.size() as isize);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `alloc`.
        unsafe { System.dealloc(ptr, layout) };
        note(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            note(new_size as isize - layout.size() as isize);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Run `f` and return its result with the most bytes it had allocated at once on this thread.
fn peak_bytes<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(start));
    let result = f();
    let peak = PEAK.with(Cell::get);
    (result, usize::try_from(peak - start).unwrap_or(0))
}

/// prost allocates what the input holds, but an empty message on the wire (2 bytes) is a
/// whole struct in memory (up to ~200 bytes) and a repeated field's `Vec` may be twice as
/// long as it needs: a few hundred bytes per input byte, plus slack.
fn alloc_budget(input_len: usize) -> usize {
    (1 << 20) + 512 * input_len
}

const SLOW: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------
// The check every property runs on every input, for every message type.

/// How one decode ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Refused,
    Decoded,
}

/// Decode `bytes` as an `M` and check the outcome: no panic (proptest catches it), quick,
/// bounded memory, and a message that decodes must re-encode to bytes that decode to the
/// same message (and to the same bytes again). Then hand it to `then`.
fn check<M: Message + Default + PartialEq>(bytes: &[u8], then: impl FnOnce(M)) -> Verdict {
    let name = std::any::type_name::<M>();
    let started = Instant::now();
    let (result, peak) = peak_bytes(|| M::decode(bytes));
    let took = started.elapsed();
    assert!(
        took < SLOW,
        "decoding {} bytes as {name} took {took:?}",
        bytes.len()
    );
    assert!(
        peak <= alloc_budget(bytes.len()),
        "decoding {} bytes as {name} had {peak} bytes live: {bytes:02x?}",
        bytes.len()
    );
    match result {
        Err(e) => {
            assert!(!e.to_string().is_empty(), "an empty error for {name}");
            Verdict::Refused
        }
        Ok(message) => {
            let canonical = message.encode_to_vec();
            assert_eq!(message.encoded_len(), canonical.len(), "{name}");
            let again = M::decode(canonical.as_slice()).unwrap();
            assert!(again == message, "{name}: re-encoding changed the message");
            assert_eq!(again.encode_to_vec(), canonical, "{name}: not a fixed point");
            then(message);
            Verdict::Decoded
        }
    }
}

/// How many inputs of a property ended which way, so a property can assert that it
/// reached both outcomes (a fuzzer that only ever sees errors proves little).
#[derive(Default)]
struct Tally(Cell<[u32; 2]>);

impl Tally {
    fn add(&self, verdict: Verdict) {
        let mut counts = self.0.get();
        counts[verdict as usize] += 1;
        self.0.set(counts);
    }

    fn assert_reached_both(&self, what: &str) {
        let [refused, decoded] = self.0.get();
        assert!(
            refused > 0 && decoded > 0,
            "{what}: {refused} refused, {decoded} decoded"
        );
    }
}

/// The case counts below suit CI (the whole file in seconds, in a debug build); set
/// `RAFTKV_FUZZ_SCALE=n` to run each property `n` times as long.
fn config(cases: u32) -> ProptestConfig {
    let scale = std::env::var("RAFTKV_FUZZ_SCALE").map_or(1, |s| s.parse().expect("RAFTKV_FUZZ_SCALE"));
    ProptestConfig {
        cases: cases * scale,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Run a property for `cases` inputs; a failure panics with the shrunk input.
fn run<S: Strategy>(cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>) {
    if let Err(e) = TestRunner::new(config(cases)).run(&strategy, test) {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------------------
// What the server does with a decoded request, and the facts it must respect.

/// The etcd rule for a key and a range end: a key, and an end that is empty (one key),
/// `[0]` (to the end of the keyspace) or after the key.
fn key_and_end_valid(key: &[u8], range_end: &[u8]) -> bool {
    !key.is_empty() && (range_end.is_empty() || range_end == [0] || range_end > key)
}

/// What passes validation is as large as it says, within the limit, and decodes from the
/// log's encoding (a command every replica could not decode would poison the log).
fn check_accepted_command(command: &Command, size: usize, limits: &Limits) {
    let encoded = codec::encode(command).unwrap();
    assert_eq!(size, encoded.len());
    assert!(size <= limits.max_request_bytes);
    assert_eq!(codec::decode::<Command>(&encoded).unwrap(), *command);
}

fn then_range(wire: pb::RangeRequest) {
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

fn then_put(wire: pb::PutRequest) {
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

fn then_delete(wire: pb::DeleteRangeRequest) {
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
fn txn_convertible(txn: &pb::TxnRequest) -> bool {
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
fn txn_keys_present(txn: &core::TxnRequest) -> bool {
    txn.compare.iter().all(|c| !c.key.is_empty())
        && txn.success.iter().chain(&txn.failure).all(|op| match op {
            core::RequestOp::Range(r) => !r.key.is_empty(),
            core::RequestOp::Put(p) => !p.key.is_empty(),
            core::RequestOp::DeleteRange(d) => !d.key.is_empty(),
            core::RequestOp::Txn(nested) => txn_keys_present(nested),
        })
}

fn then_txn(wire: pb::TxnRequest) {
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

fn then_compaction(wire: pb::CompactionRequest) {
    let compaction = core::CompactionRequest::from(wire);
    assert_eq!(
        (compaction.revision, compaction.physical),
        (wire.revision, wire.physical)
    );
}

fn then_alarm(wire: pb::AlarmRequest) {
    // The server matches on these; an unknown value must be a clean `Err`.
    let action = pb::alarm_request::AlarmAction::try_from(wire.action);
    let alarm = pb::AlarmType::try_from(wire.alarm);
    assert_eq!(action.is_ok(), (0..=2).contains(&wire.action));
    assert_eq!(alarm.is_ok(), (0..=2).contains(&wire.alarm));
}

/// Client side: a server's answers convert to core types and back without loss.
fn then_range_response(wire: pb::RangeResponse) {
    let answer = core::RangeResponse::from(wire);
    assert_eq!(
        core::RangeResponse::from(pb::RangeResponse::from(answer.clone())),
        answer
    );
}

fn then_txn_response(wire: pb::TxnResponse) {
    if let Ok(answer) = core::TxnResponse::try_from(wire) {
        let back = core::TxnResponse::try_from(pb::TxnResponse::from(answer.clone()));
        assert_eq!(back.as_ref(), Ok(&answer));
    }
}

/// Every message a raftkv server decodes from a client or a peer, and the KV answers a
/// raftkv client decodes from a server.
fn check_as_every_message(bytes: &[u8], tally: &Tally) {
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

// ---------------------------------------------------------------------------------------
// Mutations of valid encodings.

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(Index),
    FlipBit(Index, u8),
    Overwrite(Index, u8),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
    Duplicate(Index, usize),
    /// Replace one byte with the protobuf varint of `claim`: a length-prefix bomb wherever
    /// that byte was a length.
    Bomb(Index, u64),
    /// Replace a window with one of the same length (or less) from another valid encoding.
    Splice {
        at: Index,
        from: Index,
        len: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let claim = prop_oneof![Just(u64::MAX), Just(1u64 << 60), Just(1u64 << 32), any::<u64>()];
    prop_oneof![
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), 0u8..8).prop_map(|(i, bit)| Mutation::FlipBit(i, bit)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, byte)| Mutation::Overwrite(i, byte)),
        (any::<Index>(), vec(any::<u8>(), 1..8)).prop_map(|(i, bytes)| Mutation::Insert(i, bytes)),
        (any::<Index>(), 1usize..16).prop_map(|(i, n)| Mutation::Remove(i, n)),
        (any::<Index>(), 1usize..16).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        (any::<Index>(), claim).prop_map(|(i, claim)| Mutation::Bomb(i, claim)),
        (any::<Index>(), any::<Index>(), 1usize..16).prop_map(|(at, from, len)| Mutation::Splice {
            at,
            from,
            len
        }),
    ]
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    vec(mutation(), 1..4)
}

fn varint(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
    out
}

fn mutate(mut bytes: Vec<u8>, donor: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len();
        let pos = |i: &Index| if len == 0 { 0 } else { i.index(len) };
        match m {
            Mutation::Truncate(i) => bytes.truncate(i.index(len + 1)),
            Mutation::FlipBit(i, bit) if len > 0 => bytes[pos(i)] ^= 1 << bit,
            Mutation::Overwrite(i, byte) if len > 0 => bytes[pos(i)] = *byte,
            Mutation::FlipBit(..) | Mutation::Overwrite(..) => {}
            Mutation::Insert(i, extra) => {
                let at = i.index(len + 1);
                bytes.splice(at..at, extra.iter().copied());
            }
            Mutation::Remove(i, n) => {
                let at = pos(i);
                bytes.drain(at..(at + n).min(len));
            }
            Mutation::Duplicate(i, n) => {
                let at = pos(i);
                let copy = bytes[at..(at + n).min(len)].to_vec();
                bytes.splice(at..at, copy);
            }
            Mutation::Bomb(i, claim) => {
                let at = pos(i);
                bytes.splice(at..(at + 1).min(len), varint(*claim));
            }
            Mutation::Splice { at, from, len: n } => {
                if !donor.is_empty() {
                    let from = from.index(donor.len());
                    let piece = &donor[from..(from + n).min(donor.len())];
                    let at = at.index(len + 1);
                    bytes.splice(at..(at + piece.len()).min(len), piece.iter().copied());
                }
            }
        }
    }
    bytes
}

/// For messages of one type: the valid encoding decodes to the message, and the mutated
/// one passes [`check`] (then `then`).
fn mutated_property<M>(cases: u32, messages: BoxedStrategy<M>, then: fn(M))
where
    M: Message + Default + PartialEq + Clone + Debug + 'static,
{
    let tally = Tally::default();
    run(
        cases,
        (messages.clone(), messages, mutations()),
        |(message, donor, m)| {
            let valid = message.encode_to_vec();
            assert!(
                M::decode(valid.as_slice()).unwrap() == message,
                "a valid encoding did not round-trip"
            );
            tally.add(check(&mutate(valid, &donor.encode_to_vec(), &m), then));
            Ok(())
        },
    );
    tally.assert_reached_both(std::any::type_name::<M>());
}

// ---------------------------------------------------------------------------------------
// Messages: any field values, enums mostly known but sometimes not, oneofs sometimes empty.

fn small_bytes() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![vec(0u8..4, 0..3), vec(any::<u8>(), 0..6)].boxed()
}

fn text() -> BoxedStrategy<String> {
    "[a-z0-9:/.-]{0,12}".boxed()
}

fn number() -> BoxedStrategy<i64> {
    prop_oneof![-2i64..300, any::<i64>()].boxed()
}

/// An enum field: one of its `known` values mostly, any i32 sometimes.
fn enum_value(known: i32) -> BoxedStrategy<i32> {
    prop_oneof![6 => 0..known, 1 => any::<i32>()].boxed()
}

fn pb_range() -> BoxedStrategy<pb::RangeRequest> {
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

fn pb_put() -> BoxedStrategy<pb::PutRequest> {
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

fn pb_delete() -> BoxedStrategy<pb::DeleteRangeRequest> {
    (small_bytes(), small_bytes(), any::<bool>())
        .prop_map(|(key, range_end, prev_kv)| pb::DeleteRangeRequest {
            key,
            range_end,
            prev_kv,
        })
        .boxed()
}

fn pb_compare() -> BoxedStrategy<pb::Compare> {
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

fn pb_txn() -> BoxedStrategy<pb::TxnRequest> {
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

fn pb_header() -> impl Strategy<Value = Option<pb::ResponseHeader>> {
    proptest::option::of((any::<u64>(), any::<u64>(), number(), any::<u64>()).prop_map(
        |(cluster_id, member_id, revision, raft_term)| pb::ResponseHeader {
            cluster_id,
            member_id,
            revision,
            raft_term,
        },
    ))
}

fn pb_key_value() -> BoxedStrategy<mvccpb::KeyValue> {
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

fn pb_txn_response() -> BoxedStrategy<pb::TxnResponse> {
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

fn pb_member_add() -> BoxedStrategy<pb::MemberAddRequest> {
    (vec(text(), 0..3), any::<bool>())
        .prop_map(|(peer_ur_ls, is_learner)| pb::MemberAddRequest {
            peer_ur_ls,
            is_learner,
        })
        .boxed()
}

fn pb_member_update() -> BoxedStrategy<pb::MemberUpdateRequest> {
    (any::<u64>(), vec(text(), 0..3))
        .prop_map(|(id, peer_ur_ls)| pb::MemberUpdateRequest { id, peer_ur_ls })
        .boxed()
}

fn pb_alarm() -> BoxedStrategy<pb::AlarmRequest> {
    (enum_value(3), any::<u64>(), enum_value(3))
        .prop_map(|(action, member_id, alarm)| pb::AlarmRequest {
            action,
            member_id,
            alarm,
        })
        .boxed()
}

fn pb_snapshot_chunk() -> BoxedStrategy<peer::SnapshotChunk> {
    (small_bytes(), small_bytes())
        .prop_map(|(header, data)| peer::SnapshotChunk { header, data })
        .boxed()
}

// ---------------------------------------------------------------------------------------
// Properties.

/// Random bytes, half of them small so that tags, wire types and lengths are often valid
/// and the decoder gets past the first field.
fn random_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    let byte = || prop_oneof![any::<u8>(), 0u8..32];
    prop_oneof![vec(byte(), 0..12), vec(byte(), 0..max)]
}

#[test]
fn random_bytes_decode_cleanly_as_every_message() {
    let tally = Tally::default();
    run(3000, random_bytes(300), |bytes| {
        check_as_every_message(&bytes, &tally);
        Ok(())
    });
    tally.assert_reached_both("random bytes");
}

/// Encodings of valid messages of every kind, spliced together: the bytes a decoder sees
/// when fields of another message (or a repeated field) are read as this one's.
fn some_encoding() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        pb_range().prop_map(|m| m.encode_to_vec()),
        pb_put().prop_map(|m| m.encode_to_vec()),
        pb_delete().prop_map(|m| m.encode_to_vec()),
        pb_txn().prop_map(|m| m.encode_to_vec()),
        pb_txn_response().prop_map(|m| m.encode_to_vec()),
        pb_member_add().prop_map(|m| m.encode_to_vec()),
        pb_alarm().prop_map(|m| m.encode_to_vec()),
        pb_snapshot_chunk().prop_map(|m| m.encode_to_vec()),
    ]
}

#[test]
fn spliced_valid_encodings_decode_cleanly_as_every_message() {
    let tally = Tally::default();
    run(1500, (vec(some_encoding(), 1..4), mutations()), |(parts, m)| {
        let bytes = mutate(parts.concat(), &parts[0], &m);
        check_as_every_message(&bytes, &tally);
        Ok(())
    });
    tally.assert_reached_both("spliced encodings");
}

#[test]
fn mutated_kv_requests_fail_cleanly_or_convert() {
    mutated_property(3000, pb_txn(), then_txn);
    mutated_property(1000, pb_range(), then_range);
    mutated_property(800, pb_put(), then_put);
    mutated_property(800, pb_delete(), then_delete);
}

/// The server and the client decode transactions with `txn_decode` (deeper than prost
/// goes): on any input it must agree with prost, the same message or an error both.
fn same_as_prost<M: Message + Default + PartialEq + Debug>(
    bytes: &[u8],
    by_hand: fn(&[u8]) -> Result<M, txn_decode::TxnDecodeError>,
) -> Result<(), TestCaseError> {
    match (by_hand(bytes), M::decode(bytes)) {
        (Ok(ours), Ok(prosts)) => prop_assert_eq!(ours, prosts),
        (Err(_), Err(_)) => {}
        (ours, prosts) => prop_assert!(false, "txn_decode: {ours:?}, prost: {prosts:?}"),
    }
    Ok(())
}

#[test]
fn transactions_decode_by_hand_as_prost_decodes_them() {
    run(3000, (pb_txn(), pb_txn(), mutations()), |(txn, donor, m)| {
        let valid = txn.encode_to_vec();
        same_as_prost(&valid, txn_decode::txn_request)?;
        same_as_prost(
            &mutate(valid, &donor.encode_to_vec(), &m),
            txn_decode::txn_request,
        )
    });
    run(
        2000,
        (pb_txn_response(), pb_txn_response(), mutations()),
        |(txn, donor, m)| {
            let valid = txn.encode_to_vec();
            same_as_prost(&valid, txn_decode::txn_response)?;
            same_as_prost(
                &mutate(valid, &donor.encode_to_vec(), &m),
                txn_decode::txn_response,
            )
        },
    );
    run(2000, (vec(some_encoding(), 1..4), mutations()), |(parts, m)| {
        let bytes = mutate(parts.concat(), &parts[0], &m);
        same_as_prost(&bytes, txn_decode::txn_request)?;
        same_as_prost(&bytes, txn_decode::txn_response)
    });
}

#[test]
fn mutated_cluster_peer_and_answer_messages_fail_cleanly() {
    mutated_property(600, pb_member_add(), |_| {});
    mutated_property(600, pb_member_update(), |_| {});
    mutated_property(600, pb_alarm(), then_alarm);
    mutated_property(600, pb_snapshot_chunk(), |_| {});
    mutated_property(1500, pb_txn_response(), then_txn_response);
}

// ---------------------------------------------------------------------------------------
// Hand-built hostile inputs.

/// Wire bytes of a `TxnRequest` whose success branch nests `depth` transactions:
/// `TxnRequest { success: [RequestOp { request_txn: ... }] }`, the innermost empty.
fn nested_txn(depth: usize) -> Vec<u8> {
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
fn nested_txn_response(depth: usize) -> Vec<u8> {
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

fn recursion_limit_reached(e: &prost::DecodeError) -> bool {
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
type Case = (&'static str, Vec<u8>, fn(&[u8]) -> bool);

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
