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

#[path = "../support/mod.rs"]
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
use raftkv_storage::{SNAPSHOT_FORMAT_VERSION, Store, StoreOptions};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod children;
mod harness;
mod hostile;
mod memory;
mod near_limit;
mod snapshot_files;
mod values;

use harness::*;
use hostile::*;
use memory::*;
use snapshot_files::*;
use values::*;

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
