//! Fuzzing of every bincode decoder that reads bytes raftkv did not just produce itself:
//! what sled gives back (log entries, the vote, log ids, the state machine's records), what
//! a peer sends inside `RaftBytes` (openraft's messages, forwarded commands and membership
//! changes, the snapshot header, and the answers a follower decodes), and a snapshot file
//! handed to `install_snapshot`. All of it goes through `raftkv_core::codec::decode`
//! (bincode 2, standard config, a byte limit by the input's size class, and nesting limits)
//! except the snapshot file, which is read through the public install path because its
//! frame reader is private.
//!
//! **What it proves**, for the inputs generated (random bytes, and valid encodings that are
//! truncated, bit-flipped, overwritten, extended, spliced with another valid encoding, or
//! given a length prefix claiming up to 2^64 elements): decoding returns a value or an
//! error without panicking, within a second, and with a bounded peak of live memory
//! (measured by a counting global allocator, per thread); it refuses every input that
//! bincode with a 1 MiB byte limit refuses as a length claim beyond the input, and
//! decodes every input that bincode so limited decodes whole (the limit changes no
//! verdict on inputs this small); whatever decodes re-encodes to a canonical form that is
//! no longer than the input and decodes to itself; a hand-built 10,000-deep nested `Txn`
//! is refused by the nesting limit; a garbage snapshot file is refused and leaves the
//! store serving exactly its old state, and a snapshot that is accepted is exactly the
//! leader's.
//!
//! Two tests run hostile inputs that used to abort the process, each case in a child
//! process so that a regression fails the test instead of killing the test binary:
//! `string_length_prefix_bombs_...` proves that a `String` length prefix claiming 2^60
//! bytes (a dozen bytes of input) is refused by the byte limit, with no more than 64 KiB
//! live, in every record, peer message and answer that holds a string, and in a snapshot
//! file's header frame (decoded alone, and through `install_snapshot`);
//! `deeply_nested_batches_...` proves that 100,000 nested `Command::Batch`es (also inside
//! a log entry and an AppendEntries), `Response::Batch`es and `ResponseOp::Txn` answers
//! are refused by the nesting limits (2 levels of batches, `MAX_TXN_NESTING` of
//! transactions) rather than by a stack overflow.
//!
//! **What it cannot prove**: coverage is sampling, not exhaustive, and the counts are kept
//! small for CI (set `RAFTKV_FUZZ_SCALE=n` to run `n` times as many cases, and
//! `PROPTEST_RNG_SEED` to replay a run). A decoder that loops forever hangs the test
//! rather than failing it (proptest's timeout needs its `fork` feature, which is off).
//! Memory is counted on the decoding thread only, so the snapshot install (a blocking
//! task) is not measured; the same header frame is measured through `codec::decode`
//! instead, and the reader bounds frames at 64 MiB. The generated inputs are a few
//! kilobytes at most (under 8 KiB, asserted), so they exercise only the smallest size
//! class of the byte limit, and a hostile claim below it (up to 64 KiB) is allocated
//! before the input runs out; that is within the memory budget. Records are decoded
//! directly rather than planted in sled, so the store's own error mapping for a corrupt
//! log is not exercised. A transaction 64 levels deep whose every branch claims 2^60
//! operations holds about 64 MiB while it fails (serde preallocates 1 MiB per open
//! sequence, and sequences are not counted by the byte limit); that is bounded by the
//! nesting limit, and asserted, not treated as a bug.
//!
//! **Valid values at the limit**: bincode's byte limit counts values at their decoded size
//! (8 bytes for every one-byte varint `u64`), so `valid_values_near_the_byte_limit_decode`
//! checks that the limit leaves room for valid encodings made mostly of small integers and
//! short lengths (a group commit of 1024 small puts, a snapshot frame of 1,000 small pairs,
//! a large lease checkpoint).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::time::{Duration, Instant};

use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, Membership, SnapshotMeta, Vote};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{TestCaseError, TestRunner};
use raftkv_core::kv::{
    CompactionRequest, Compare, CompareResult, CompareTarget, DeleteRangeRequest, KeyValue, MAX_TXN_NESTING,
    PutRequest, PutResponse, RangeRequest, RequestOp, ResponseHeader, Revision, SortOrder, SortTarget,
    TxnRequest,
};
use raftkv_core::types::{Entry, LogId, MemberNode, NodeId, StoredMembership, TypeConfig};
use raftkv_core::{
    AlarmAction, AlarmMember, AlarmRequest, Command, Error as CoreError, MembershipChange, RequestError,
    Response, codec,
};
use raftkv_storage::mvcc::VersionRecord;
use raftkv_storage::{SCHEMA_VERSION, Store, StoreOptions};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// serde preallocates at most 1 MiB for a sequence whatever length it claims, and one is
/// open per nesting level; transactions nest at most `MAX_TXN_NESTING` deep. The rest is
/// slack for the decoded value itself (a few hundred bytes of struct per input byte).
fn alloc_budget(input_len: usize) -> usize {
    ((MAX_TXN_NESTING + 8) << 20) + 512 * input_len
}

const SLOW: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------
// The check every property runs on every input, for every type.

/// Byte limit of the oracle decode.
const ORACLE_LIMIT: usize = 1 << 20;

/// Every generated input is smaller. bincode's byte limit counts what it reads at its
/// decoded size (a one-byte varint `u64` counts 8), so an input that decodes counts at
/// most 8 bytes per input byte (no type here holds a 128-bit integer): below 8 KiB only a
/// length prefix claiming more than the input holds exhausts the 64 KiB limit that
/// `codec::decode` sets for small inputs, and its verdict must be the oracle's.
const SMALL_INPUT: usize = 8 << 10;

/// What bincode makes of `bytes` as a `T` given a 1 MiB byte budget, which it checks a
/// `String`'s (or byte buffer's) claimed length against before allocating it: `Some(true)`
/// if it decodes all of `bytes`, `Some(false)` if it refuses them otherwise, `None` if it
/// refuses them because a length claims more than the budget (a length-prefix bomb).
fn oracle<T: DeserializeOwned>(bytes: &[u8]) -> Option<bool> {
    let limited = bincode::config::standard().with_limit::<ORACLE_LIMIT>();
    match bincode::serde::decode_from_slice::<T, _>(bytes, limited) {
        Ok((_, read)) => Some(read == bytes.len()),
        Err(bincode::error::DecodeError::LimitExceeded) => None,
        Err(_) => Some(false),
    }
}

/// How one decode ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Refused,
    Decoded,
    /// Refused, and a length prefix in it claims more than the input holds (see [`oracle`]).
    RefusedLengthBomb,
}

/// Decode `bytes` as a `T` and check the outcome: no panic (proptest catches it), quick,
/// bounded memory, the verdict of bincode with a byte limit, and a value that decodes must
/// re-encode canonically and stably.
fn check<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Verdict {
    let name = std::any::type_name::<T>();
    assert!(bytes.len() < SMALL_INPUT);
    let oracle = oracle::<T>(bytes);
    let started = Instant::now();
    let (result, peak) = peak_bytes(|| codec::decode::<T>(bytes));
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
    // The oracle's budget is larger than codec::decode's (64 KiB for an input this small),
    // so it refuses no more; and it refuses no less, see [`SMALL_INPUT`].
    assert_eq!(
        result.is_ok(),
        oracle == Some(true),
        "{name}: codec::decode: {:?}; bincode with a {ORACLE_LIMIT}-byte limit: {oracle:?} \
         (Some(true): decodes, None: a length bomb): {bytes:02x?}",
        result.as_ref().map(|_| "decodes")
    );
    match result {
        Err(e) => {
            assert!(!e.0.is_empty(), "an empty error for {name}");
            if oracle.is_none() {
                Verdict::RefusedLengthBomb
            } else {
                Verdict::Refused
            }
        }
        Ok(value) => {
            let canonical = codec::encode(&value).unwrap();
            assert!(
                canonical.len() <= bytes.len(),
                "{name}: canonical form ({} bytes) longer than the input ({} bytes)",
                canonical.len(),
                bytes.len()
            );
            assert_eq!(codec::encoded_len(&value).unwrap(), canonical.len());
            let again: T = codec::decode(&canonical).unwrap();
            assert_eq!(
                codec::encode(&again).unwrap(),
                canonical,
                "{name}: not a fixed point"
            );
            Verdict::Decoded
        }
    }
}

/// How many inputs of a property ended which way, so a property can assert that it
/// reached both outcomes (a fuzzer that only ever sees errors proves little).
#[derive(Default)]
struct Tally(Cell<[u32; 3]>);

impl Tally {
    fn add(&self, verdict: Verdict) {
        let mut counts = self.0.get();
        counts[verdict as usize] += 1;
        self.0.set(counts);
    }

    fn assert_reached_both(&self, what: &str) {
        let [refused, decoded, bombs] = self.0.get();
        assert!(
            refused + bombs > 0 && decoded > 0,
            "{what}: {refused} refused, {bombs} refused as length bombs, {decoded} decoded"
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
// Mutations of valid encodings.

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(Index),
    FlipBit(Index, u8),
    Overwrite(Index, u8),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
    Duplicate(Index, usize),
    /// Replace one byte with bincode's u64 varint form (0xFD, 8 bytes LE) of `claim`: a
    /// length-prefix bomb wherever that byte was a length.
    Bomb(Index, u64),
    /// Replace a window with one of the same length (or less) from another valid encoding.
    Splice {
        at: Index,
        from: Index,
        len: usize,
    },
}

/// A length-prefix bomb somewhere.
fn bomb() -> impl Strategy<Value = Mutation> {
    let claim = prop_oneof![Just(u64::MAX), Just(1u64 << 60), Just(1u64 << 32), any::<u64>()];
    (any::<Index>(), claim).prop_map(|(i, claim)| Mutation::Bomb(i, claim))
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), 0u8..8).prop_map(|(i, bit)| Mutation::FlipBit(i, bit)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, byte)| Mutation::Overwrite(i, byte)),
        (any::<Index>(), vec(any::<u8>(), 1..8)).prop_map(|(i, bytes)| Mutation::Insert(i, bytes)),
        (any::<Index>(), 1usize..16).prop_map(|(i, n)| Mutation::Remove(i, n)),
        (any::<Index>(), 1usize..16).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        bomb(),
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
                let mut varint = vec![0xfd];
                varint.extend(claim.to_le_bytes());
                let at = pos(i);
                bytes.splice(at..(at + 1).min(len), varint);
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

/// Encode a valid `T`, check that it round-trips, mutate it and check the result.
fn check_mutated<T: Serialize + DeserializeOwned>(value: &T, donor: &T, mutations: &[Mutation]) -> Verdict {
    let valid = codec::encode(value).unwrap();
    let back: T = codec::decode(&valid).unwrap();
    assert_eq!(
        codec::encode(&back).unwrap(),
        valid,
        "a valid encoding did not round-trip"
    );
    check::<T>(&mutate(valid, &codec::encode(donor).unwrap(), mutations))
}

fn mutated_property<T>(cases: u32, values: BoxedStrategy<T>)
where
    T: Serialize + DeserializeOwned + Debug + Clone + 'static,
{
    let tally = Tally::default();
    run(
        cases,
        (values.clone(), values, mutations()),
        |(value, donor, m)| {
            tally.add(check_mutated(&value, &donor, &m));
            Ok(())
        },
    );
    tally.assert_reached_both(std::any::type_name::<T>());
}

// ---------------------------------------------------------------------------------------
// Valid values.

fn small_bytes() -> BoxedStrategy<Vec<u8>> {
    vec(any::<u8>(), 0..6).boxed()
}

fn text() -> BoxedStrategy<String> {
    "[a-z0-9:/.-]{0,12}".boxed()
}

fn number() -> BoxedStrategy<i64> {
    prop_oneof![-2i64..300, any::<i64>()].boxed()
}

fn put_request() -> BoxedStrategy<PutRequest> {
    (small_bytes(), small_bytes(), number(), any::<[bool; 3]>())
        .prop_map(
            |(key, value, lease, [prev_kv, ignore_value, ignore_lease])| PutRequest {
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

fn range_request() -> BoxedStrategy<RangeRequest> {
    let orders = prop_oneof![
        Just(SortOrder::None),
        Just(SortOrder::Ascend),
        Just(SortOrder::Descend)
    ];
    let targets = prop_oneof![
        Just(SortTarget::Key),
        Just(SortTarget::Version),
        Just(SortTarget::Create),
        Just(SortTarget::Mod),
        Just(SortTarget::Value),
    ];
    (
        (small_bytes(), small_bytes(), number(), number()),
        (orders, targets, any::<[bool; 3]>()),
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
                RangeRequest {
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

fn delete_request() -> BoxedStrategy<DeleteRangeRequest> {
    (small_bytes(), small_bytes(), any::<bool>())
        .prop_map(|(key, range_end, prev_kv)| DeleteRangeRequest {
            key,
            range_end,
            prev_kv,
        })
        .boxed()
}

fn compare() -> BoxedStrategy<Compare> {
    let result = prop_oneof![
        Just(CompareResult::Equal),
        Just(CompareResult::Greater),
        Just(CompareResult::Less),
        Just(CompareResult::NotEqual),
    ];
    let target = prop_oneof![
        number().prop_map(CompareTarget::Version),
        number().prop_map(CompareTarget::Create),
        number().prop_map(CompareTarget::Mod),
        small_bytes().prop_map(CompareTarget::Value),
        number().prop_map(CompareTarget::Lease),
    ];
    (result, target, small_bytes(), small_bytes())
        .prop_map(|(result, target, key, range_end)| Compare {
            result,
            target,
            key,
            range_end,
        })
        .boxed()
}

fn txn_request() -> BoxedStrategy<TxnRequest> {
    let simple = prop_oneof![
        range_request().prop_map(RequestOp::Range),
        put_request().prop_map(RequestOp::Put),
        delete_request().prop_map(RequestOp::DeleteRange),
    ];
    let leaf = (
        vec(compare(), 0..2),
        vec(simple.clone(), 0..3),
        vec(simple.clone(), 0..2),
    )
        .prop_map(|(compare, success, failure)| TxnRequest {
            compare,
            success,
            failure,
        });
    leaf.prop_recursive(3, 12, 3, move |inner| {
        let op = prop_oneof![simple.clone(), inner.prop_map(RequestOp::Txn)];
        (vec(compare(), 0..2), vec(op.clone(), 0..3), vec(op, 0..2)).prop_map(
            |(compare, success, failure)| TxnRequest {
                compare,
                success,
                failure,
            },
        )
    })
    .boxed()
}

fn command() -> BoxedStrategy<Command> {
    let single = prop_oneof![
        put_request().prop_map(Command::Put),
        delete_request().prop_map(Command::DeleteRange),
        txn_request().prop_map(Command::Txn),
        (number(), any::<bool>())
            .prop_map(|(revision, physical)| Command::Compact(CompactionRequest { revision, physical })),
        (number(), number()).prop_map(|(id, ttl)| Command::LeaseGrant { id, ttl }),
        number().prop_map(|id| Command::LeaseRevoke { id }),
        vec((number(), number()), 0..3).prop_map(|remaining| Command::LeaseCheckpoint { remaining }),
        (any::<u64>(), text(), vec(text(), 0..3)).prop_map(|(id, name, client_urls)| {
            Command::PublishMember {
                id,
                name,
                client_urls,
            }
        }),
        (0i32..3, any::<u64>(), number()).prop_map(|(action, member_id, alarm)| {
            Command::Alarm(AlarmRequest {
                action: AlarmAction::from_wire(action).unwrap_or(AlarmAction::Get),
                member_id,
                alarm: alarm as i32,
            })
        }),
    ];
    prop_oneof![
        3 => single.clone(),
        1 => vec(single, 0..4).prop_map(Command::Batch),
    ]
    .boxed()
}

fn log_id() -> BoxedStrategy<LogId> {
    (0u64..300, 0u64..8, prop_oneof![0u64..300, any::<u64>()])
        .prop_map(|(term, node, index)| LogId::new(raftkv_core::types::leader_id(term, node), index))
        .boxed()
}

fn vote() -> BoxedStrategy<raftkv_core::types::Vote> {
    (0u64..300, 0u64..8, any::<bool>())
        .prop_map(|(term, node, committed)| {
            if committed {
                Vote::new_committed(term, node)
            } else {
                Vote::new(term, node)
            }
        })
        .boxed()
}

fn member_node() -> BoxedStrategy<MemberNode> {
    (text(), vec(text(), 0..3))
        .prop_map(|(peer_url, client_urls)| MemberNode {
            peer_url,
            client_urls,
        })
        .boxed()
}

fn membership() -> BoxedStrategy<Membership<NodeId, MemberNode>> {
    let voters = vec(proptest::collection::btree_set(1u64..6, 1..3), 1..3);
    (
        voters,
        proptest::collection::btree_map(1u64..8, member_node(), 0..4),
    )
        .prop_map(|(configs, mut nodes)| {
            // 0.10 refuses a membership whose voters have no node: give every voter one.
            for id in configs.iter().flatten() {
                nodes.entry(*id).or_insert_with(MemberNode::default);
            }
            Membership::new(configs, nodes).unwrap()
        })
        .boxed()
}

fn stored_membership() -> BoxedStrategy<StoredMembership> {
    (proptest::option::of(log_id()), membership())
        .prop_map(|(log_id, m)| StoredMembership::new(log_id, m))
        .boxed()
}

fn entry() -> BoxedStrategy<Entry> {
    let payload = prop_oneof![
        1 => Just(EntryPayload::Blank),
        4 => command().prop_map(EntryPayload::Normal),
        1 => membership().prop_map(EntryPayload::Membership),
    ];
    (log_id(), payload)
        .prop_map(|(log_id, payload)| Entry { log_id, payload })
        .boxed()
}

fn version_record() -> BoxedStrategy<VersionRecord> {
    prop_oneof![
        (number(), number(), number(), small_bytes(), any::<u32>()).prop_map(
            |(create_revision, version, lease, value, sub)| VersionRecord::Put {
                create_revision,
                version,
                lease,
                value,
                sub,
            }
        ),
        any::<u32>().prop_map(|sub| VersionRecord::Delete { sub }),
    ]
    .boxed()
}

/// What `KvReader::published_member` decodes: a member's name and client URLs.
type MemberRecord = (String, Vec<String>);

fn member_record() -> BoxedStrategy<MemberRecord> {
    (text(), vec(text(), 0..3)).boxed()
}

/// The first chunk of an `InstallSnapshot` stream: the sender's vote and the metadata.
type SnapshotHeaderMsg = (raftkv_core::types::Vote, raftkv_core::types::SnapshotMeta);

fn snapshot_header() -> BoxedStrategy<SnapshotHeaderMsg> {
    (vote(), proptest::option::of(log_id()), stored_membership())
        .prop_map(|(vote, last_log_id, last_membership)| {
            (
                vote,
                SnapshotMeta {
                    last_log_id,
                    last_membership,
                },
            )
        })
        .boxed()
}

fn append_entries() -> BoxedStrategy<AppendEntriesRequest<TypeConfig>> {
    (
        vote(),
        proptest::option::of(log_id()),
        vec(entry(), 0..3),
        proptest::option::of(log_id()),
    )
        .prop_map(
            |(vote, prev_log_id, entries, leader_commit)| AppendEntriesRequest {
                vote,
                prev_log_id,
                entries,
                leader_commit,
            },
        )
        .boxed()
}

fn vote_request() -> BoxedStrategy<VoteRequest<TypeConfig>> {
    (vote(), proptest::option::of(log_id()))
        .prop_map(|(vote, last)| VoteRequest::new(vote, last))
        .boxed()
}

fn membership_change() -> BoxedStrategy<MembershipChange> {
    let ids = || proptest::collection::btree_set(any::<u64>(), 0..3);
    prop_oneof![
        (any::<u64>(), text(), any::<bool>()).prop_map(|(id, peer_url, wait)| MembershipChange::AddLearner {
            id,
            peer_url,
            wait
        }),
        ids().prop_map(MembershipChange::Promote),
        ids().prop_map(MembershipChange::Remove),
        (any::<u64>(), text()).prop_map(|(id, peer_url)| MembershipChange::UpdatePeerUrl { id, peer_url }),
    ]
    .boxed()
}

fn request_error() -> BoxedStrategy<RequestError> {
    prop_oneof![
        Just(RequestError::EmptyKey),
        (any::<usize>(), any::<usize>())
            .prop_map(|(size, limit)| RequestError::RequestTooLarge { size, limit }),
        Just(RequestError::DuplicateKey),
        (number(), number())
            .prop_map(|(requested, compacted)| RequestError::Compacted { requested, compacted }),
        text().prop_map(RequestError::Unsupported),
        text().prop_map(RequestError::InvalidPeerUrl),
        Just(RequestError::NoSpace),
        Just(RequestError::Corrupt),
    ]
    .boxed()
}

fn core_error() -> BoxedStrategy<CoreError> {
    prop_oneof![
        request_error().prop_map(CoreError::Request),
        (proptest::option::of(any::<u64>()), vec(text(), 0..3)).prop_map(
            |(leader_id, leader_client_urls)| {
                CoreError::NotLeader {
                    leader_id,
                    leader_client_urls,
                }
            }
        ),
        text().prop_map(CoreError::Timeout),
        any::<u64>().prop_map(|lag| CoreError::TooManyRequests { lag }),
        Just(CoreError::NoSpace),
        Just(CoreError::Corrupt),
    ]
    .boxed()
}

fn key_value() -> BoxedStrategy<KeyValue> {
    (
        small_bytes(),
        number(),
        number(),
        number(),
        small_bytes(),
        number(),
    )
        .prop_map(
            |(key, create_revision, mod_revision, version, value, lease)| KeyValue {
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

fn response() -> BoxedStrategy<Response> {
    let header = (any::<u64>(), any::<u64>(), number(), any::<u64>()).prop_map(
        |(cluster_id, member_id, revision, raft_term)| ResponseHeader {
            cluster_id,
            member_id,
            revision,
            raft_term,
        },
    );
    let single = prop_oneof![
        Just(Response::Empty),
        (header, proptest::option::of(key_value()))
            .prop_map(|(header, prev_kv)| Response::Put(PutResponse { header, prev_kv })),
        number().prop_map(|revision| Response::Done { revision }),
        request_error().prop_map(Response::Rejected),
        vec((any::<u64>(), any::<i32>()), 0..3).prop_map(|alarms| {
            Response::Alarms(
                alarms
                    .into_iter()
                    .map(|(member_id, alarm)| AlarmMember { member_id, alarm })
                    .collect(),
            )
        }),
    ];
    prop_oneof![3 => single.clone(), 1 => vec(single, 0..3).prop_map(Response::Batch)].boxed()
}

/// What a follower decodes from the leader's answer to a forwarded write.
type ForwardAnswer = Result<(Response, u64), CoreError>;
/// What a follower decodes from the leader's answer to a read-index request.
type ReadIndexAnswer = Result<Option<LogId>, CoreError>;

fn forward_answer() -> BoxedStrategy<ForwardAnswer> {
    prop_oneof![
        (response(), any::<u64>()).prop_map(ForwardAnswer::Ok),
        core_error().prop_map(ForwardAnswer::Err),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------------------
// Random bytes.

/// Random bytes, half of them small so that enum tags and lengths are often valid and the
/// decoder gets past the first field; half of the inputs short, since a decode must use up
/// every byte to succeed.
fn random_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    let byte = || prop_oneof![any::<u8>(), 0u8..4];
    prop_oneof![vec(byte(), 0..12), vec(byte(), 0..max)]
}

/// Every type raftkv-storage decodes from sled.
fn check_as_stored_types(bytes: &[u8], tally: &Tally) {
    tally.add(check::<Entry>(bytes));
    tally.add(check::<Command>(bytes));
    tally.add(check::<raftkv_core::types::Vote>(bytes));
    tally.add(check::<LogId>(bytes));
    tally.add(check::<Option<LogId>>(bytes));
    tally.add(check::<StoredMembership>(bytes));
    tally.add(check::<VersionRecord>(bytes));
    tally.add(check::<MemberRecord>(bytes));
    tally.add(check::<Revision>(bytes));
    tally.add(check::<u64>(bytes));
}

/// Every type a node decodes from a peer's `RaftBytes` / `SnapshotChunk.header`.
fn check_as_peer_payloads(bytes: &[u8], tally: &Tally) {
    tally.add(check::<AppendEntriesRequest<TypeConfig>>(bytes));
    tally.add(check::<VoteRequest<TypeConfig>>(bytes));
    tally.add(check::<SnapshotHeaderMsg>(bytes));
    tally.add(check::<Command>(bytes));
    tally.add(check::<MembershipChange>(bytes));
    tally.add(check::<ForwardAnswer>(bytes));
    tally.add(check::<ReadIndexAnswer>(bytes));
}

#[test]
fn random_bytes_decode_cleanly_as_every_stored_type() {
    let tally = Tally::default();
    run(2500, random_bytes(300), |bytes| {
        check_as_stored_types(&bytes, &tally);
        Ok(())
    });
    tally.assert_reached_both("random bytes as stored types");
}

#[test]
fn random_bytes_decode_cleanly_as_every_peer_payload() {
    let tally = Tally::default();
    run(2500, random_bytes(300), |bytes| {
        check_as_peer_payloads(&bytes, &tally);
        Ok(())
    });
    tally.assert_reached_both("random bytes as peer payloads");
}

// ---------------------------------------------------------------------------------------
// Mutated valid encodings.

#[test]
fn mutated_log_entries_fail_cleanly_or_round_trip() {
    mutated_property(3000, entry());
}

#[test]
fn mutated_commands_fail_cleanly_or_round_trip() {
    mutated_property(2000, command());
}

#[test]
fn mutated_stored_records_fail_cleanly_or_round_trip() {
    mutated_property(800, vote());
    mutated_property(800, log_id());
    mutated_property(800, proptest::option::of(log_id()).boxed());
    mutated_property(1000, stored_membership());
    mutated_property(800, version_record());
    mutated_property(800, member_record());
}

#[test]
fn mutated_peer_payloads_fail_cleanly_or_round_trip() {
    mutated_property(1500, append_entries());
    mutated_property(800, vote_request());
    mutated_property(1000, snapshot_header());
    mutated_property(800, membership_change());
    mutated_property(1000, forward_answer());
}

// ---------------------------------------------------------------------------------------
// Hand-built hostile inputs.

/// bincode's u64 varint form: 0xFD then 8 bytes little-endian.
fn varint_u64(value: u64) -> Vec<u8> {
    let mut out = vec![0xfd];
    out.extend(value.to_le_bytes());
    out
}

/// `Command::Txn` whose success branch nests `depth` more transactions (each level: empty
/// compares, one success op which is `RequestOp::Txn` (tag 3), then after the nested one an
/// empty failure branch). `claim` is the length each success branch announces: 1 is
/// honest, anything larger is a length bomb that fails after the nested transaction.
fn nested_txn_command(depth: usize, claim: u64) -> Vec<u8> {
    let claim = if claim < 251 {
        vec![claim as u8]
    } else {
        varint_u64(claim)
    };
    let mut out = vec![2]; // Command::Txn
    for _ in 0..depth {
        out.push(0); // no compares
        out.extend(&claim); // success: `claim` ops, the first one:
        out.push(3); // RequestOp::Txn
    }
    out.extend([0, 0, 0]); // the innermost transaction is empty
    out.extend(std::iter::repeat_n(0, if claim == [1] { depth } else { 0 })); // failure branches
    out
}

#[test]
fn deeply_nested_transactions_are_refused_by_the_nesting_limit() {
    // The boundary: `Command::Txn` itself is the outermost level and not counted.
    let deepest = codec::decode::<Command>(&nested_txn_command(MAX_TXN_NESTING, 1)).unwrap();
    assert_eq!(
        codec::encode(&deepest).unwrap(),
        nested_txn_command(MAX_TXN_NESTING, 1)
    );
    let err = codec::decode::<Command>(&nested_txn_command(MAX_TXN_NESTING + 1, 1)).unwrap_err();
    assert!(err.0.contains("nested deeper"), "{err}");
    // Far deeper than any encoder makes: refused by the same limit, not by a stack overflow.
    let hostile = nested_txn_command(10_000, 1);
    let err = codec::decode::<Command>(&hostile).unwrap_err();
    assert!(err.0.contains("nested deeper"), "{err}");
    // The same bytes inside a log entry (log id 1/2/3, EntryPayload::Normal) and inside an
    // AppendEntries from a peer.
    let mut entry = vec![1, 2, 3, 1];
    entry.extend(&hostile);
    assert!(
        codec::decode::<Entry>(&entry)
            .unwrap_err()
            .0
            .contains("nested deeper")
    );
    let mut append = codec::encode(&AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(1, 1),
        prev_log_id: None,
        entries: Vec::new(),
        leader_commit: None,
    })
    .unwrap();
    let entries_len = append.len() - 2; // the entry count, before `leader_commit: None`
    assert_eq!(append[entries_len..], [0, 0]);
    append[entries_len] = 1;
    append.splice(entries_len + 1..entries_len + 1, entry);
    let err = codec::decode::<AppendEntriesRequest<TypeConfig>>(&append).unwrap_err();
    assert!(err.0.contains("nested deeper"), "{err}");
    // The depth counter is per thread and restored after every refusal.
    assert_eq!(
        codec::decode::<Command>(&nested_txn_command(MAX_TXN_NESTING, 1)).unwrap(),
        deepest
    );
}

/// One input for [`check`]: what it is, its bytes, and `check` at the type to decode.
type CheckCase = (&'static str, Vec<u8>, fn(&[u8]) -> Verdict);

#[test]
fn length_prefixes_of_sequences_cost_at_most_a_bounded_preallocation() {
    // Each claims 2^60 elements of a sequence (serde's `Vec`, `BTreeSet`, `BTreeMap`):
    // refused at the end of the input, after preallocating at most 1 MiB.
    let bomb = varint_u64(1 << 60);
    let cases: Vec<CheckCase> = vec![
        ("PutRequest.key", [&[0u8][..], &bomb].concat(), check::<Command>),
        (
            "PutRequest.value",
            [&[0u8, 1, b'k'][..], &bomb].concat(),
            check::<Command>,
        ),
        ("Command::Batch", [&[3u8][..], &bomb].concat(), check::<Command>),
        ("LeaseCheckpoint", [&[7u8][..], &bomb].concat(), check::<Command>),
        (
            "TxnRequest.compare",
            [&[2u8][..], &bomb].concat(),
            check::<Command>,
        ),
        (
            "VersionRecord.value",
            [&[0u8, 2, 2, 0][..], &bomb].concat(),
            check::<VersionRecord>,
        ),
        (
            "Membership.configs",
            [&[1u8, 2, 3, 2][..], &bomb].concat(),
            check::<Entry>,
        ),
        (
            "Promote ids",
            [&[1u8][..], &bomb].concat(),
            check::<MembershipChange>,
        ),
        ("client URLs", [&[0u8][..], &bomb].concat(), check::<MemberRecord>),
        (
            "AppendEntries.entries",
            [&[1u8, 1, 1, 0][..], &bomb].concat(),
            check::<AppendEntriesRequest<TypeConfig>>,
        ),
    ];
    for (what, bytes, check) in cases {
        let (verdict, peak) = peak_bytes(|| check(&bytes));
        // Keys and values are byte strings (`serde_bytes`): bincode checks their claimed
        // length against the byte limit before reading, so they are refused at once.
        let byte_string = what.ends_with(".key") || what.ends_with(".value");
        let expected = if byte_string {
            Verdict::RefusedLengthBomb
        } else {
            Verdict::Refused
        };
        assert_eq!(verdict, expected, "{what}");
        assert!(peak <= 2 << 20, "{what}: {peak} bytes live");
    }
    // The worst a transaction can do: every level claims 2^60 operations, so each keeps a
    // 1 MiB preallocation open while the next level decodes. Bounded by the nesting limit
    // (about 64 MiB from 700 bytes); the limit must not be raised without revisiting this.
    let worst = nested_txn_command(MAX_TXN_NESTING, 1 << 60);
    let (verdict, peak) = peak_bytes(|| check::<Command>(&worst));
    assert_eq!(verdict, Verdict::Refused);
    assert!(
        peak <= (MAX_TXN_NESTING + 2) << 20,
        "{peak} bytes live for {} input bytes",
        worst.len()
    );
}

// ---------------------------------------------------------------------------------------
// Inputs that used to abort the process, run in a child process: an abort or a stack
// overflow kills the child, and the test reports it instead of taking the whole test
// binary down.

const CHILD_CASE: &str = "RAFTKV_DECODE_FUZZ_CHILD_CASE";

/// Which case this process runs, if it is a child started by [`run_cases_in_children`].
fn child_case() -> Option<usize> {
    std::env::var(CHILD_CASE).ok().map(|case| case.parse().unwrap())
}

/// Run each case of the test `test` in a child process (this binary, running only `test`);
/// panic listing the cases whose child did not exit cleanly or ran no test.
fn run_cases_in_children(test: &str, cases: &[&str]) {
    let mut died = Vec::new();
    for (i, what) in cases.iter().enumerate() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_CASE, i.to_string())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            // The abort message, or a panic's location and (on the next line) its message.
            let lines: Vec<&str> = stderr.lines().collect();
            let why = lines
                .iter()
                .position(|l| {
                    l.contains("memory allocation") || l.contains("overflow") || l.contains("panicked")
                })
                .map_or("(no message)".to_string(), |at| {
                    lines[at..lines.len().min(at + 2)].join(" ")
                });
            died.push(format!("{what}: {}: {why}", out.status));
        } else if !stdout.contains("test result: ok. 1 passed") {
            // A child that filtered its test out would pass without checking anything.
            died.push(format!("{what}: the child ran no test: {stdout}"));
        }
    }
    assert!(
        died.is_empty(),
        "{} of {} cases died:\n{}",
        died.len(),
        cases.len(),
        died.join("\n")
    );
}

fn replace_once(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let at = haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("marker not found");
    [&haystack[..at], with, &haystack[at + needle.len()..]].concat()
}

/// `encoded` with the string `marker` (with its length byte) replaced by a length prefix
/// claiming 2^60 bytes, and everything after it cut off.
fn string_bomb(encoded: &[u8], marker: &str) -> Vec<u8> {
    let with_len = [&[marker.len() as u8][..], marker.as_bytes()].concat();
    let at = encoded
        .windows(with_len.len())
        .position(|w| w == with_len)
        .expect("marker not found");
    [&encoded[..at], &varint_u64(1 << 60)[..]].concat()
}

const MARK: &str = "MARK";

/// How a decoder ended on one hostile input: the error it refused the input with (`None`
/// if it decoded it), and the most bytes it had live at once, where that can be measured.
struct Outcome {
    error: Option<String>,
    peak: Option<usize>,
}

/// One hostile input: what it is, its bytes, and the decoder that must refuse it.
type Case = (&'static str, Vec<u8>, fn(&[u8]) -> Outcome);

/// `codec::decode` of `bytes` as a `T`, straight (without [`check`]'s oracle).
fn decode_as<T: DeserializeOwned>(bytes: &[u8]) -> Outcome {
    let (result, peak) = peak_bytes(|| codec::decode::<T>(bytes));
    Outcome {
        error: result.err().map(|e| e.0),
        peak: Some(peak),
    }
}

fn enc<T: Serialize>(value: &T) -> Vec<u8> {
    codec::encode(value).unwrap()
}

fn string_bomb_cases() -> Vec<Case> {
    let node = MemberNode::new(MARK);
    let membership = Membership::new(vec![BTreeSet::from([1])], BTreeMap::from([(1, node)])).unwrap();
    let log_id = LogId::new(raftkv_core::types::leader_id(1, 1), 1);
    let entry = Entry {
        log_id,
        payload: EntryPayload::Membership(membership.clone()),
    };
    let stored = StoredMembership::new(Some(log_id), membership.clone());
    let header: SnapshotHeaderMsg = (
        Vote::new_committed(1, 1),
        SnapshotMeta {
            last_log_id: Some(log_id),
            last_membership: stored.clone(),
        },
    );
    let append = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(1, 1),
        prev_log_id: None,
        entries: vec![entry.clone()],
        leader_commit: None,
    };
    let publish = Command::PublishMember {
        id: 1,
        name: MARK.into(),
        client_urls: Vec::new(),
    };
    let add = MembershipChange::AddLearner {
        id: 2,
        peer_url: MARK.into(),
        wait: true,
    };
    let rejected: ForwardAnswer = Ok((Response::Rejected(RequestError::Unsupported(MARK.into())), 1));
    let record: MemberRecord = (MARK.into(), Vec::new());
    // A snapshot file whose header frame holds the bomb, for `install_snapshot`.
    let frame = string_bomb(
        &enc(&FrameModel::Header {
            meta: header.1.clone(),
            revision: 1,
            compact_revision: 0,
        }),
        MARK,
    );
    let file = [
        &MAGIC[..],
        &SCHEMA_VERSION.to_be_bytes(),
        &(frame.len() as u32).to_be_bytes(),
        &frame,
    ]
    .concat();
    vec![
        (
            "log entry (membership peer URL)",
            string_bomb(&enc(&entry), MARK),
            decode_as::<Entry>,
        ),
        (
            "stored membership",
            string_bomb(&enc(&stored), MARK),
            decode_as::<StoredMembership>,
        ),
        (
            "published member record",
            string_bomb(&enc(&record), MARK),
            decode_as::<MemberRecord>,
        ),
        (
            "Command::PublishMember (Forward RPC, log)",
            string_bomb(&enc(&publish), MARK),
            decode_as::<Command>,
        ),
        (
            "MembershipChange (ChangeMembership RPC)",
            string_bomb(&enc(&add), MARK),
            decode_as::<MembershipChange>,
        ),
        (
            "AppendEntries RPC",
            string_bomb(&enc(&append), MARK),
            decode_as::<AppendEntriesRequest<TypeConfig>>,
        ),
        (
            "InstallSnapshot header chunk",
            string_bomb(&enc(&header), MARK),
            decode_as::<SnapshotHeaderMsg>,
        ),
        (
            "forwarded write's answer",
            string_bomb(&enc(&rejected), MARK),
            decode_as::<ForwardAnswer>,
        ),
        ("snapshot header frame", frame, decode_as::<FrameModel>),
        ("snapshot file (install_snapshot)", file, install_into_fresh_store),
    ]
}

/// A fresh store installing `bytes` as a snapshot. The frames are decoded on a blocking
/// thread, so memory is not measured here (the same header frame is, by `decode_as`).
fn install_into_fresh_store(bytes: &[u8]) -> Outcome {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let meta = SnapshotMeta {
        last_log_id: None,
        last_membership: StoredMembership::default(),
    };
    Outcome {
        error: runtime.block_on(install(&mut store, &meta, bytes)).err(),
        peak: None,
    }
}

/// A `String` length prefix claiming 2^60 bytes, wherever a record, a peer message or an
/// answer holds a string: refused by `codec::decode`'s byte limit before it allocates.
/// (bincode allocates a claimed length before reading it: without the limit, a dozen
/// bytes such as `[8, 1, 0xFD, 0,0,0,0,0,0,0,0x10]` as a `Command` aborted the process.)
#[test]
fn string_length_prefix_bombs_are_refused_without_allocating_them() {
    let cases = string_bomb_cases();
    if let Some(i) = child_case() {
        let (what, bytes, decode) = &cases[i];
        let Outcome { error, peak } = decode(bytes);
        let error = error.unwrap_or_else(|| panic!("{what}: decoded"));
        assert!(
            error.contains("LimitExceeded"),
            "{what}: refused otherwise: {error}"
        );
        // The claim is never allocated; what was decoded before it is a few hundred bytes.
        if let Some(peak) = peak {
            assert!(peak <= 64 << 10, "{what}: {peak} bytes live");
        }
        return;
    }
    let names: Vec<&str> = cases.iter().map(|c| c.0).collect();
    run_cases_in_children(
        "string_length_prefix_bombs_are_refused_without_allocating_them",
        &names,
    );
}

fn nested_batch(depth: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 * depth + 2);
    for _ in 0..depth {
        out.extend([3, 1]); // Command::Batch of one command:
    }
    out.extend([3, 0]); // an empty batch
    out
}

fn nested_batch_cases() -> Vec<Case> {
    const DEPTH: usize = 100_000;
    let entry = [&[1u8, 2, 3, 1][..], &nested_batch(DEPTH)].concat();
    let marker = Entry {
        log_id: LogId::new(raftkv_core::types::leader_id(1, 2), 3),
        payload: EntryPayload::Normal(Command::LeaseRevoke { id: 77 }),
    };
    let append = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(1, 1),
        prev_log_id: None,
        entries: vec![marker],
        leader_commit: None,
    };
    let append = replace_once(&enc(&append), &enc(&append.entries[0]), &entry);
    // Response::Batch (tag 4) of one response, DEPTH times, in a forwarded write's answer.
    let mut batch_answer = vec![0]; // Ok
    for _ in 0..DEPTH {
        batch_answer.extend([4, 1]);
    }
    batch_answer.extend([4, 0, 1]); // an empty batch, then the term
    // Response::Txn whose one ResponseOp is ResponseOp::Txn (tag 3), DEPTH times.
    let mut txn_answer = vec![0, 3]; // Ok, Response::Txn
    for _ in 0..DEPTH {
        txn_answer.extend([0, 0, 0, 0, 0, 1, 3]); // header, succeeded, one response: Txn
    }
    txn_answer.extend([0, 0, 0, 0, 0, 0, 1]); // the innermost, then the term
    vec![
        (
            "Command::Batch (Forward RPC)",
            nested_batch(DEPTH),
            decode_as::<Command>,
        ),
        ("log entry", entry, decode_as::<Entry>),
        (
            "AppendEntries RPC",
            append,
            decode_as::<AppendEntriesRequest<TypeConfig>>,
        ),
        (
            "Response::Batch (forwarded write's answer)",
            batch_answer,
            decode_as::<ForwardAnswer>,
        ),
        (
            "TxnResponse (forwarded write's answer)",
            txn_answer,
            decode_as::<ForwardAnswer>,
        ),
    ]
}

/// 100,000 nested batches (a few hundred kilobytes), in every message that holds a
/// command or an answer, and as many nested transaction answers: refused by the nesting
/// limits in `raftkv_core::codec` (2 levels of batches, `MAX_TXN_NESTING` of
/// transactions). Without them decoding recursed once per level: 2,000 levels overflowed
/// a debug build's 2 MiB thread stack and aborted the process, 100,000 a release build's.
#[test]
fn deeply_nested_batches_and_answers_are_refused_without_stack_overflow() {
    let cases = nested_batch_cases();
    if let Some(i) = child_case() {
        let (what, bytes, decode) = &cases[i];
        let Outcome { error, peak } = decode(bytes);
        let error = error.unwrap_or_else(|| panic!("{what}: decoded"));
        assert!(
            error.contains("nested deeper"),
            "{what}: refused otherwise: {error}"
        );
        // Refused at the limit, not after decoding every level: no more live than the
        // levels within it (each a one-element `Vec`).
        let peak = peak.unwrap();
        assert!(peak <= 64 << 10, "{what}: {peak} bytes live");
        return;
    }
    let names: Vec<&str> = cases.iter().map(|c| c.0).collect();
    run_cases_in_children(
        "deeply_nested_batches_and_answers_are_refused_without_stack_overflow",
        &names,
    );
}

// ---------------------------------------------------------------------------------------
// Snapshot files, through the public install path.

/// A test-side model of the private `snapshot_file::Frame` (same serde shape), so a test
/// can read a file's header frame, measure its decoding, and ask the oracle about a frame.
/// The first checks of `garbage_snapshot_files_are_refused_and_change_nothing` keep it
/// honest.
#[derive(Debug, Serialize, Deserialize)]
enum FrameModel {
    Header {
        meta: raftkv_core::types::SnapshotMeta,
        revision: Revision,
        compact_revision: Revision,
    },
    Pairs(Vec<(Vec<u8>, Vec<u8>)>),
    /// The end of a file written before 2026-12-06 (FNV-1a 64).
    End {
        pairs: u64,
        checksum: u64,
    },
    /// The end: the pair count and a CRC-32.
    EndCrc32 {
        pairs: u64,
        crc32: u32,
    },
}

const MAGIC: &[u8; 8] = b"RAFTKVSN";

/// The frames of a snapshot file as the documented layout cuts them (magic, u32 BE schema
/// version, then u32 BE length + bincode frame), as far as they are complete.
fn frames(file: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = file.get(12..).unwrap_or_default();
    while let Some(len) = rest.get(..4) {
        let n = u32::from_be_bytes(len.try_into().unwrap()) as usize;
        let Some(frame) = rest.get(4..4 + n) else { break };
        out.push(frame);
        rest = &rest[4 + n..];
    }
    out
}

/// Whether a frame of `file` claims a length beyond what the file holds (see [`oracle`]).
fn snapshot_has_length_bomb(file: &[u8]) -> bool {
    frames(file)
        .into_iter()
        .any(|f| oracle::<FrameModel>(f).is_none())
}

fn put_entry(index: u64, key: &str, value: &str) -> Entry {
    Entry {
        log_id: LogId::new(raftkv_core::types::leader_id(1, 1), index),
        payload: EntryPayload::Normal(Command::Put(PutRequest::new(key, value))),
    }
}

/// What a store serves: revision, every key with its value, the applied log id.
type Served = (Revision, Vec<(Vec<u8>, Vec<u8>)>, Option<LogId>);

async fn served(store: &mut Store) -> Served {
    let all = store.reader.range(&RangeRequest::prefix("")).unwrap();
    let (applied, _) = store.state_machine.applied_state().await.unwrap();
    assert_eq!(store.shared.applied().get(), applied.map_or(0, |id| id.index));
    (
        store.reader.revision(),
        all.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect(),
        applied,
    )
}

/// A leader's snapshot (with a membership, so its header carries strings) and its state.
async fn leader_snapshot(dir: &std::path::Path) -> (Vec<u8>, raftkv_core::types::SnapshotMeta, Served) {
    let mut leader = Store::open(dir, StoreOptions::default()).unwrap();
    let membership = Membership::new(
        vec![BTreeSet::from([1])],
        BTreeMap::from([(1, MemberNode::new("http://127.0.0.1:2380"))]),
    )
    .unwrap();
    let mut entries = vec![Entry {
        log_id: LogId::new(raftkv_core::types::leader_id(1, 1), 1),
        payload: EntryPayload::Membership(membership),
    }];
    entries.extend((2..=12).map(|i| put_entry(i, &format!("k{}", i % 5), &format!("v{i}"))));
    leader.state_machine.apply_committed(entries).await.unwrap();
    let snapshot = support::build_snapshot(&mut leader).await;
    let mut bytes = Vec::new();
    let mut file = snapshot.snapshot;
    file.read_to_end(&mut bytes).await.unwrap();
    (bytes, snapshot.meta, served(&mut leader).await)
}

async fn install(
    store: &mut Store,
    meta: &raftkv_core::types::SnapshotMeta,
    bytes: &[u8],
) -> Result<(), String> {
    let mut incoming = store.state_machine.begin_receiving_snapshot().await.unwrap();
    incoming.write_all(bytes).await.unwrap();
    incoming.flush().await.unwrap();
    store
        .state_machine
        .install_snapshot(meta, incoming)
        .await
        .map_err(|e| format!("{e:?}"))
}

fn snapshot_input(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let header = [&MAGIC[..], &SCHEMA_VERSION.to_be_bytes()].concat();
    let framed = header.clone();
    let whole = valid.clone();
    let reframed = valid.clone();
    prop_oneof![
        1 => vec(any::<u8>(), 0..256),
        1 => vec(any::<u8>(), 0..512).prop_map(move |tail| [&header[..], &tail].concat()),
        // Frames with honest lengths around random bytes, so the frame decoder sees them.
        2 => vec(random_bytes(48), 0..4).prop_map(move |bodies| {
            let mut file = framed.clone();
            for body in bodies {
                file.extend((body.len() as u32).to_be_bytes());
                file.extend(body);
            }
            file
        }),
        4 => mutations().prop_map(move |m| mutate(valid.clone(), &[], &m)),
        // The leader's file with its header frame mutated and its length made honest again,
        // so the frame decoder sees the mutation; half the time a lone length bomb, which
        // hits one of the metadata's strings about one time in twenty.
        2 => prop_oneof![mutations(), bomb().prop_map(|b| vec![b])].prop_map(move |m| {
            let first = frames(&reframed)[0];
            let body = mutate(first.to_vec(), &[], &m);
            let rest = &reframed[12 + 4 + first.len()..];
            [&reframed[..12], &(body.len() as u32).to_be_bytes(), &body, rest].concat()
        }),
        // The leader's file, perhaps with bytes after its end frame: accepted.
        1 => random_bytes(16).prop_map(move |tail| [&whole[..], &tail].concat()),
    ]
}

#[test]
fn garbage_snapshot_files_are_refused_and_change_nothing() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (leader_dir, follower_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (valid, meta, leader_state) = runtime.block_on(leader_snapshot(leader_dir.path()));

    // The frame model reads the real file: a header with the real metadata, pairs, an end.
    let model: Vec<FrameModel> = frames(&valid)
        .into_iter()
        .map(|f| codec::decode(f).unwrap())
        .collect();
    assert!(matches!(model.first(), Some(FrameModel::Header { meta: m, .. }) if *m == meta));
    assert!(matches!(model.last(), Some(FrameModel::EndCrc32 { .. })));
    assert!(
        model
            .iter()
            .any(|f| matches!(f, FrameModel::Pairs(p) if !p.is_empty()))
    );

    let mut follower = Store::open(follower_dir.path(), StoreOptions::default()).unwrap();
    let mine = runtime.block_on(async {
        let entries = [put_entry(1, "mine", "keep")];
        follower.state_machine.apply_committed(entries).await.unwrap();
        served(&mut follower).await
    });
    let (follower, expected) = (RefCell::new(follower), RefCell::new(mine));
    let newest = follower_dir.path().join("snapshots").join(format!(
        "snapshot-{}-{}.snap",
        "9".repeat(20),
        "9".repeat(20)
    ));
    let tally = Tally::default();
    run(250, snapshot_input(valid.clone()), |bytes| {
        let bomb = snapshot_has_length_bomb(&bytes);
        let mut store = follower.borrow_mut();
        runtime.block_on(async {
            match install(&mut store, &meta, &bytes).await {
                Err(e) => {
                    assert!(!e.contains("panicked"), "install panicked: {e}");
                    assert_eq!(
                        served(&mut store).await,
                        *expected.borrow(),
                        "a refused install changed the state"
                    );
                    tally.add(if bomb {
                        Verdict::RefusedLengthBomb
                    } else {
                        Verdict::Refused
                    });
                }
                Ok(()) => {
                    assert!(!bomb, "installed a file with a length bomb in a frame");
                    // Only the leader's file (perhaps with bytes after its end) passes the
                    // checksum, and then the store serves exactly the leader's state.
                    assert_eq!(
                        bytes.get(..valid.len()),
                        Some(&valid[..]),
                        "installed a changed file"
                    );
                    assert_eq!(served(&mut store).await, leader_state);
                    *expected.borrow_mut() = leader_state.clone();
                    tally.add(Verdict::Decoded);
                }
            }
            // The same bytes as the newest snapshot on disk: served with the metadata its
            // header frame holds, or refused.
            std::fs::write(&newest, &bytes).unwrap();
            let current = store.state_machine.get_current_snapshot().await;
            std::fs::remove_file(&newest).unwrap();
            match current {
                Err(e) => assert!(!format!("{e:?}").contains("panicked"), "{e:?}"),
                Ok(None) => panic!("a snapshot file exists"),
                Ok(Some(snapshot)) => {
                    let first = frames(&bytes).first().map(|f| codec::decode::<FrameModel>(f));
                    assert!(
                        matches!(first, Some(Ok(FrameModel::Header { meta: m, .. })) if m == snapshot.meta),
                        "served metadata its file does not hold"
                    );
                }
            }
        });
        Ok(())
    });
    tally.assert_reached_both("snapshot files");
}

// ---------------------------------------------------------------------------------------
// Valid values near the byte limit.

/// Valid values that `codec::decode` must decode, sized within its smallest size classes,
/// whose encodings are mostly one-byte varints (lengths, small integers, enum tags).
#[test]
fn valid_values_near_the_byte_limit_decode() {
    let mut refused = Vec::new();
    let mut expect = |what: String, command: Command| {
        let bytes = codec::encode(&command).unwrap();
        match codec::decode::<Command>(&bytes) {
            Ok(back) => assert_eq!(back, command, "{what}"),
            Err(e) => refused.push(format!("{what} ({} bytes): {e}", bytes.len())),
        }
    };
    // The worst ratio: pairs of one-byte varints, each pair counted as 16 bytes.
    for pairs in [5_000, 30_000, 500_000] {
        let remaining = vec![(1, 1); pairs];
        expect(
            format!("LeaseCheckpoint of {pairs} pairs"),
            Command::LeaseCheckpoint { remaining },
        );
    }
    // What the proposer makes: a group commit of as many puts as it packs into one entry.
    let requests = raftkv_core::ProposerConfig::default().max_batch_requests;
    let puts = (0..requests)
        .map(|i| Command::Put(PutRequest::new(format!("key-{i:016}"), format!("value-{i:016}"))))
        .collect();
    expect(format!("a batch of {requests} puts"), Command::Batch(puts));

    // A leader's snapshot of 1,000 keys, installed by a follower.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (leader_dir, follower_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    runtime.block_on(async {
        let mut leader = Store::open(leader_dir.path(), StoreOptions::default()).unwrap();
        let entries = (1..=1000).map(|i| put_entry(i, &format!("key-{i}"), &format!("value-{i}")));
        leader.state_machine.apply_committed(entries).await.unwrap();
        let snapshot = support::build_snapshot(&mut leader).await;
        let mut bytes = Vec::new();
        let mut file = snapshot.snapshot;
        file.read_to_end(&mut bytes).await.unwrap();
        let mut follower = Store::open(follower_dir.path(), StoreOptions::default()).unwrap();
        match install(&mut follower, &snapshot.meta, &bytes).await {
            Ok(()) => assert_eq!(served(&mut follower).await, served(&mut leader).await),
            Err(e) => {
                let sizes: Vec<usize> = frames(&bytes).iter().map(|f| f.len()).collect();
                refused.push(format!(
                    "a snapshot of 1,000 keys (frames of {sizes:?} bytes): {e}"
                ));
            }
        }
    });
    assert!(
        refused.is_empty(),
        "valid values refused:\n{}",
        refused.join("\n")
    );
}
