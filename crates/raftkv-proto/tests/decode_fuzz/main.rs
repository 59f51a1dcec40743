//! Fuzzing of the protobuf decoders that see bytes from the network: every request message
//! the etcd services accept (KV, Cluster, Maintenance), the peer protocol's messages, and
//! the KV responses the client crate decodes. Whatever prost decodes then goes the way the
//! server sends it: through `convert` into raftkv-core's types and through
//! `raftkv_core::validate`, which must not panic either. The bincode payloads inside the
//! peer messages (`RaftBytes.data`, `SnapshotChunk.header`) are fuzzed in
//! `crates/raftkv-storage/tests/decode_fuzz/`, which has openraft's types at hand.
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

mod harness;
mod hostile;
mod memory;
mod messages;
mod mutations;
mod server_facts;

use harness::*;
use memory::*;
use messages::*;
use mutations::*;
use server_facts::*;

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
