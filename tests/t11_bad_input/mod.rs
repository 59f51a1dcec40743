#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Malformed and hostile requests against a three-node cluster in one process, sent with
//! the raw generated gRPC clients (and, where the clients cannot produce the bytes, raw
//! HTTP/2 frames or a plain TCP socket) to the leader's and a follower's client and peer
//! ports. One table: each row is a request, where it goes, and the answer expected (etcd's
//! gRPC code and text for the client API). After every row the cluster must still agree
//! on a leader, serve a put and a linearizable get through a normal client, and, for a
//! refused request, show no change: every node's full key space (keys, values,
//! revisions), store and compact revisions, the membership and the snapshot index.
//!
//! Rows marked `KNOWN BUG` record a server defect: the row still runs and every other
//! check still applies; only the assertion named by its [`Skip`] is reported instead of
//! enforced. One row (a Forward nested deep enough to overflow the stack) goes to a
//! one-node server in a child process, since it aborts the process it reaches; one row
//! (a valid Forward to the leader) legitimately writes and is left out of the "nothing
//! changed" check.

use crate::support;

use std::fmt::Debug;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use openraft::StoredMembership;
use openraft::error::{Fatal, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use raftkv::{DEFAULT_MAX_REQUEST_BYTES, KeyValue, Member, Node, RangeRequest};
use raftkv_core::types::Vote;
use raftkv_core::{Command, Response, TypeConfig, codec};
use raftkv_net::peer_protocol::{self, StampRequests};
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::cluster_client::ClusterClient;
use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use raftkv_proto::raftkvpeer::raft_peer_client::RaftPeerClient;
use raftkv_proto::raftkvpeer::{RaftBytes, SnapshotChunk};
use raftkv_proto::status::text;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tonic::codegen::Body as HttpBody;
use tonic::codegen::Service;
use tonic::codegen::tokio_stream::{self, StreamExt};
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Deadline of every wait and every request in this test.
const WAIT: Duration = Duration::from_secs(15);
/// A node id no member has.
const BOGUS_ID: u64 = 999;
/// A member id no member has (the Cluster API's ids).
const UNKNOWN_MEMBER: u64 = 0xDEAD_BEEF;

/// Which node a row is sent to (resolved when the row runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    Leader,
    Follower,
}
const BOTH: &[At] = &[At::Leader, At::Follower];
const LEADER: &[At] = &[At::Leader];
const FOLLOWER: &[At] = &[At::Follower];

/// One request, exactly as sent. The peer-protocol rows that must carry a vote lower than
/// the current one are built when they run, from the target's current term.
#[derive(Clone)]
enum Req {
    Put(pb::PutRequest),
    Range(pb::RangeRequest),
    Delete(pb::DeleteRangeRequest),
    Txn(pb::TxnRequest),
    Compact(pb::CompactionRequest),
    /// A raw gRPC message (protobuf bytes, ASCII, under 128 bytes) to a client-port path.
    RawClient(&'static str, Vec<u8>),
    /// MemberAdd; a member added against expectations is removed again at once.
    MemberAdd(pb::MemberAddRequest),
    MemberRemove(u64),
    MemberUpdate(pb::MemberUpdateRequest),
    MemberPromote(u64),
    Alarm(pb::AlarmRequest),
    MoveLeader(u64),
    HashKv(i64),
    AppendEntries(Vec<u8>),
    /// A decodable AppendEntries from a stale "leader" (a lower, committed vote).
    AppendEntriesStale,
    Vote(Vec<u8>),
    /// A decodable Vote for a bogus candidate at a lower term.
    VoteLowerTerm,
    /// A decodable Vote for a bogus candidate at the current term, with no log.
    VoteEqualTermNoLog,
    Snapshot(Vec<SnapshotChunk>),
    /// A valid header with a lower vote, then a few bytes of data, then the end.
    SnapshotTruncated,
    /// A valid header with a lower vote and some data; the stream is then cut mid-way.
    SnapshotCut,
    /// A raw gRPC message (protobuf bytes, ASCII, under 128 bytes) to the peer ReadIndex.
    ReadIndexRaw(Vec<u8>),
    Forward(Vec<u8>),
    ChangeMembership(Vec<u8>),
    /// A Forward of a Txn nested 100 000 deep, sent to a one-node server in a child
    /// process (this test binary run again): the node may abort, and an in-process one
    /// would take this test down with it.
    NestedForwardInChild,
    /// 1 KiB of random bytes on a plain TCP connection, then close.
    TcpGarbage {
        peer: bool,
    },
}

/// What came back: the Debug rendering of the (decoded) answer, or the gRPC status.
type Outcome = Result<String, Status>;

#[derive(Clone)]
enum Expect {
    /// Refused with this code, the message containing this text.
    Status(Code, &'static str),
    /// Answered OK, and the answer (Debug of the decoded message) satisfies the predicate.
    Answer(&'static str, fn(&str) -> bool),
    /// Anything the predicate accepts.
    Where(&'static str, fn(&Outcome) -> bool),
}

/// The Debug rendering of a bincode answer of type `$ty` carried in `.data`.
macro_rules! decoded {
    ($answer:expr, $ty:ty) => {
        $answer.map(|a| {
            let data = a.into_inner().data;
            match codec::decode::<$ty>(&data) {
                Ok(v) => format!("{v:?}"),
                Err(e) => format!("undecodable answer ({} bytes): {e}", data.len()),
            }
        })
    };
}

mod kv_rows;
mod sending;
mod service_rows;
mod table;

use kv_rows::*;
use sending::*;
use service_rows::*;
use table::*;

fn build_table(revisions: &Revisions, used_peer_url: &str, voter: u64) -> Table {
    let mut garbage = Garbage(0x5EED_1234_ABCD_0011);
    let mut table = Table::default();
    kv_rows(&mut table, revisions, &mut garbage);
    cluster_and_maintenance_rows(&mut table, revisions, used_peer_url, voter);
    peer_rows(&mut table, revisions, &mut garbage);
    table
}

/// A read-only txn nested `depth` deep (the innermost reads `ref/00`).
fn nested_txn(depth: usize) -> pb::TxnRequest {
    let mut txn = pb::TxnRequest {
        success: vec![op(pb::request_op::Request::RequestRange(range(b"ref/00")))],
        ..Default::default()
    };
    for _ in 1..depth {
        txn = pb::TxnRequest {
            success: vec![op(pb::request_op::Request::RequestTxn(txn))],
            ..Default::default()
        };
    }
    txn
}

/// bincode of `Command::Txn` nested `depth` deep through `success: [RequestOp::Txn(..)]`,
/// built byte by byte: encoding (or dropping) a value this deep would itself overflow
/// the stack. Layout (bincode 2, standard config): variant indices and lengths as
/// varints; `Command::Txn` is variant 2, `RequestOp::Txn` variant 3; a `TxnRequest` is
/// `compare`, `success`, `failure`.
fn nested_txn_command(depth: usize) -> Vec<u8> {
    let mut bytes = vec![2u8];
    for _ in 1..depth {
        bytes.extend([0, 1, 3]);
    }
    bytes.extend([0, 0, 0]);
    bytes.extend(std::iter::repeat_n(0u8, depth - 1));
    bytes
}

/// Set in the child process that runs [`child_nested_forward`].
const CHILD_ENV: &str = "T11_NESTED_FORWARD_CHILD";

/// Run [`child_nested_forward`] in a child process; what it printed and how it ended.
pub(crate) async fn nested_forward_in_child() -> Outcome {
    let output = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "t11_bad_input::child_nested_forward",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // libtest may print the test's name on the same line first.
    let answer = stdout
        .lines()
        .find_map(|l| l.find("ANSWER").map(|i| &l[i..]))
        .unwrap_or("no ANSWER");
    let overflow = stderr.lines().find(|l| l.contains("overflow")).unwrap_or("");
    Ok(format!("child {}: {answer} {overflow}", output.status))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_hostile_requests_change_nothing() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let nodes = support::start_cluster(3, dir.path()).await;
    support::wait_for_agreed_leader(&nodes, Duration::from_secs(20)).await;
    support::wait_until("client urls published", Duration::from_secs(20), || {
        nodes[0]
            .members()
            .unwrap()
            .iter()
            .all(|m| !m.client_urls.is_empty())
    })
    .await;
    let mut wires = Vec::new();
    for node in &nodes {
        wires.push(wire(node, dir.path()).await);
    }
    let urls: Vec<String> = nodes.iter().map(|n| n.client_urls()[0].clone()).collect();
    let client = raftkv_client::Client::connect(urls).await.unwrap();

    // The reference key space: history below a compaction, then newer versions.
    for i in 0..10 {
        client
            .put(format!("ref/{i:02}"), format!("v1 {i}"))
            .await
            .unwrap();
    }
    let compacted = client.put("ref/ignore", "present").await.unwrap().header.revision;
    for i in (0..10).step_by(2) {
        client
            .put(format!("ref/{i:02}"), format!("v2 {i}"))
            .await
            .unwrap();
    }
    client.delete("ref/09").await.unwrap();
    client.compact(compacted).await.unwrap();
    let current = client
        .put("ref/after", "compaction")
        .await
        .unwrap()
        .header
        .revision;
    let revisions = Revisions {
        compacted,
        future: current + 1_000_000,
    };
    let table = build_table(&revisions, nodes[2].peer_url(), nodes[1].id());
    println!("{} rows; setup took {:?}", table.0.len(), started.elapsed());

    let mut report = Vec::new();
    for (row, case) in table.0.iter().enumerate() {
        let leader_id = support::wait_for_agreed_leader(&nodes, WAIT).await;
        let leader = nodes.iter().find(|n| n.id() == leader_id).unwrap();
        let index = match case.at {
            At::Leader => nodes.iter().position(|n| n.id() == leader_id),
            At::Follower => nodes.iter().position(|n| n.id() != leader_id),
        }
        .unwrap();
        let (node, wire) = (&nodes[index], &wires[index]);
        let what = format!("row {row} [{}] @{:?} (node {})", case.name, case.at, node.id());

        let before = observe(&nodes, &wires, leader).await;
        let term_before = leader.metrics().term;
        let recv_before: usize = wires.iter().map(|w| recv_files(&w.snapshots)).sum();

        let outcome = within(&what, send(&case.req, node, wire)).await;

        let (code_ok, message_ok) = verdict(&case.expect, &outcome);
        let passed = code_ok && message_ok;
        let suspended = case.bug.map(|b| b.skip);
        let label = match case.bug {
            Some(bug) if bug.skip != Skip::TmpFiles && !passed => {
                if bug.skip == Skip::Message {
                    assert!(
                        code_ok,
                        "{what}: expected {}, got {}",
                        describe(&case.expect),
                        brief(&outcome)
                    );
                }
                format!("KNOWN BUG ({})", bug.note)
            }
            Some(bug) if bug.skip != Skip::TmpFiles => format!("known bug seems FIXED ({})", bug.note),
            _ => {
                assert!(
                    passed,
                    "{what}: expected {}, got {}",
                    describe(&case.expect),
                    brief(&outcome)
                );
                "pass".to_string()
            }
        };

        // The cluster still agrees on a leader; after a message on the peer port (or raw
        // bytes) it is the same leader in the same term: no hostile message moved it.
        // (Not asserted after client-API rows, where a leader change on a loaded machine
        // would be an unrelated flake.)
        let leader_after = support::wait_for_agreed_leader(&nodes, WAIT).await;
        if case.name.starts_with("peer:") || case.name.starts_with("tcp:") {
            assert_eq!(leader_after, leader_id, "{what}: the leader changed");
            assert_eq!(leader.metrics().term, term_before, "{what}: the term changed");
        }
        let after = observe(&nodes, &wires, leader).await;
        if !case.writes {
            assert_eq!(before, after, "{what}: a refused request changed the cluster");
        }
        let recv_after: usize = wires.iter().map(|w| recv_files(&w.snapshots)).sum();
        let label = if recv_after > recv_before {
            let leak = format!(
                "{} snapshots/recv-*.tmp file(s) left behind",
                recv_after - recv_before
            );
            assert_eq!(suspended, Some(Skip::TmpFiles), "{what}: {leak}");
            format!("KNOWN BUG ({leak})")
        } else if suspended == Some(Skip::TmpFiles) {
            format!("{label}; known bug not seen this time (no recv file left)")
        } else {
            label
        };
        healthy(&client, row).await;
        report.push((case.name, case.at, label, brief(&outcome)));
    }

    println!("\n{:<62} {:<9} verdict / answer", "row", "at");
    for (name, at, label, outcome) in &report {
        println!("{name:<62} {:<9} {label}\n    -> {outcome}", format!("{at:?}"));
    }
    for category in ["kv", "cluster", "maintenance", "peer", "tcp"] {
        let rows: Vec<_> = report.iter().filter(|r| r.0.starts_with(category)).collect();
        let bugs = rows.iter().filter(|r| r.2.contains("KNOWN BUG")).count();
        println!(
            "{category}: {} rows, {bugs} with a known bug, all others pass",
            rows.len()
        );
    }
    let leftovers: Vec<usize> = wires.iter().map(|w| recv_files(&w.snapshots)).collect();
    println!("recv-*.tmp files left per node: {leftovers:?}");
    println!("{} rows in {:?}", report.len(), started.elapsed());

    drop(client);
    for node in &nodes {
        node.shutdown().await;
    }
}

/// The body of the "Forward, Txn nested 100 000 deep" row, run in a child process by
/// [`nested_forward_in_child`]; does nothing in a normal test run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_nested_forward() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    // The hand-built bytes mean what they claim: three levels decode to the value.
    let mut three = raftkv::TxnRequest::default();
    for _ in 1..3 {
        three = raftkv::TxnRequest {
            success: vec![raftkv::RequestOp::Txn(three)],
            ..raftkv::TxnRequest::default()
        };
    }
    assert_eq!(
        codec::decode::<Command>(&nested_txn_command(3)),
        Ok(Command::Txn(three))
    );

    let dir = tempfile::tempdir().unwrap();
    let nodes = support::start_cluster(1, dir.path()).await;
    support::wait_for_agreed_leader(&nodes, WAIT).await;
    let channel = tonic::transport::Endpoint::from_shared(nodes[0].peer_url().to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut peer = RaftPeerClient::with_interceptor(channel, StampRequests);
    let data = nested_txn_command(100_000);
    let answer = within("the nested Forward", peer.forward(RaftBytes { data })).await;
    println!(
        "ANSWER {}",
        brief(&decoded!(answer, Result<(Response, u64), raftkv::Error>))
    );
    nodes[0].shutdown().await;
}
