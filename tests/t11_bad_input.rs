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

fn refused(code: Code, message: &'static str) -> Expect {
    Expect::Status(code, message)
}

fn answer(what: &'static str, check: fn(&str) -> bool) -> Expect {
    Expect::Answer(what, check)
}

fn any_answer() -> Expect {
    answer("any OK answer", |_| true)
}

/// Which assertion a known bug suspends (all other checks of the row still run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    /// The code is checked, the message text is not.
    Message,
    /// Nothing about the answer is checked.
    #[allow(dead_code)]
    Answer,
    /// The "no `recv-*.tmp` file left behind" check.
    TmpFiles,
}

#[derive(Clone, Copy)]
struct Bug {
    skip: Skip,
    note: &'static str,
}

struct Case {
    name: &'static str,
    at: At,
    req: Req,
    expect: Expect,
    bug: Option<Bug>,
    /// A request that legitimately writes: excluded from the "nothing changed" check.
    writes: bool,
}

#[derive(Default)]
struct Table(Vec<Case>);

/// The rows `Table::add` just pushed, to mark them.
struct Rows<'a>(&'a mut [Case]);

impl Table {
    fn add(&mut self, name: &'static str, ats: &[At], req: Req, expect: Expect) -> Rows<'_> {
        let start = self.0.len();
        for at in ats {
            self.0.push(Case {
                name,
                at: *at,
                req: req.clone(),
                expect: expect.clone(),
                bug: None,
                writes: false,
            });
        }
        Rows(&mut self.0[start..])
    }
}

impl Rows<'_> {
    // No row has a known bug today; kept for the next one found.
    #[allow(dead_code)]
    fn known_bug(self, skip: Skip, note: &'static str) {
        for case in self.0 {
            case.bug = Some(Bug { skip, note });
        }
    }

    fn writes(self) {
        for case in self.0 {
            case.writes = true;
        }
    }
}

/// Deterministic garbage (xorshift64).
struct Garbage(u64);

impl Garbage {
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                (self.0 >> 24) as u8
            })
            .collect()
    }

    /// Bytes that are no valid protobuf message: a tag with field number 0, then ASCII.
    fn bad_protobuf(&mut self) -> Vec<u8> {
        let mut bytes = vec![0x07];
        bytes.extend(self.bytes(63).into_iter().map(|b| b & 0x7f));
        bytes
    }
}

fn put_with(key: &[u8], value: &[u8], edit: impl FnOnce(&mut pb::PutRequest)) -> Req {
    let mut put = pb::PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        ..Default::default()
    };
    edit(&mut put);
    Req::Put(put)
}

fn range(key: &[u8]) -> pb::RangeRequest {
    pb::RangeRequest {
        key: key.to_vec(),
        ..Default::default()
    }
}

fn range_with(key: &[u8], edit: impl FnOnce(&mut pb::RangeRequest)) -> Req {
    let mut range = range(key);
    edit(&mut range);
    Req::Range(range)
}

fn txn_with(edit: impl FnOnce(&mut pb::TxnRequest)) -> Req {
    let mut txn = pb::TxnRequest::default();
    edit(&mut txn);
    Req::Txn(txn)
}

fn op(request: pb::request_op::Request) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request),
    }
}

fn op_put(key: &[u8]) -> pb::RequestOp {
    op(pb::request_op::Request::RequestPut(pb::PutRequest {
        key: key.to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    }))
}

fn op_range(range: pb::RangeRequest) -> pb::RequestOp {
    op(pb::request_op::Request::RequestRange(range))
}

fn compare(key: &[u8], result: i32, target: i32) -> pb::Compare {
    pb::Compare {
        result,
        target,
        key: key.to_vec(),
        range_end: Vec::new(),
        target_union: Some(pb::compare::TargetUnion::Version(1)),
    }
}

fn compact_at(revision: i64, physical: bool) -> Req {
    Req::Compact(pb::CompactionRequest { revision, physical })
}

fn member_add(peer_urls: &[&str]) -> Req {
    Req::MemberAdd(pb::MemberAddRequest {
        peer_ur_ls: peer_urls.iter().map(|u| u.to_string()).collect(),
        is_learner: true,
    })
}

fn forward(command: &Command) -> Req {
    Req::Forward(codec::encode(command).unwrap())
}

/// Revisions the table refers to (written before it).
struct Revisions {
    compacted: i64,
    future: i64,
}

/// etcd texts raftkv's `status::text` does not have.
const BAD_URLS: &str = "etcdserver: given member URLs are invalid";

fn kv_rows(t: &mut Table, revisions: &Revisions, g: &mut Garbage) {
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

fn cluster_and_maintenance_rows(t: &mut Table, revisions: &Revisions, used_peer_url: &str, voter: u64) {
    let not_found = refused(Code::NotFound, text::MEMBER_NOT_FOUND);
    let remove = Req::MemberRemove(UNKNOWN_MEMBER);
    t.add(
        "cluster: member remove, unknown id",
        BOTH,
        remove,
        not_found.clone(),
    );
    let not_learner = refused(Code::FailedPrecondition, text::MEMBER_NOT_LEARNER);
    t.add(
        "cluster: member promote, a voter",
        BOTH,
        Req::MemberPromote(voter),
        not_learner,
    );
    let promote = Req::MemberPromote(UNKNOWN_MEMBER);
    t.add(
        "cluster: member promote, unknown id",
        BOTH,
        promote,
        not_found.clone(),
    );
    let bad_urls = refused(Code::InvalidArgument, BAD_URLS);
    t.add(
        "cluster: member add, no peer URL",
        BOTH,
        member_add(&[]),
        bad_urls.clone(),
    );
    t.add(
        "cluster: member add, not a URL",
        BOTH,
        member_add(&["not a url"]),
        bad_urls.clone(),
    );
    let no_port = member_add(&["http://127.0.0.1"]);
    t.add("cluster: member add, URL without a port", BOTH, no_port, bad_urls);
    let url_exists = refused(Code::FailedPrecondition, text::PEER_URL_EXISTS);
    t.add(
        "cluster: member add, peer URL already used",
        BOTH,
        member_add(&[used_peer_url]),
        url_exists,
    );
    let update = Req::MemberUpdate(pb::MemberUpdateRequest {
        id: UNKNOWN_MEMBER,
        peer_ur_ls: vec!["http://127.0.0.1:1".into()],
    });
    t.add("cluster: member update, unknown id", BOTH, update, not_found);

    let alarm = Req::Alarm(pb::AlarmRequest {
        action: 7,
        member_id: 0,
        alarm: 1,
    });
    // etcd answers an empty OK; refusing is fine (InvalidArgument would fit better).
    t.add(
        "maintenance: alarm, unknown action",
        BOTH,
        alarm,
        refused(Code::Unimplemented, "alarm action 7"),
    );
    // etcd checks leadership first, then the transferee; neither moves anything.
    t.add(
        "maintenance: move leader to a non-member",
        LEADER,
        Req::MoveLeader(0xdead),
        refused(Code::FailedPrecondition, text::BAD_LEADER_TRANSFEREE),
    );
    t.add(
        "maintenance: move leader, asked of a follower",
        FOLLOWER,
        Req::MoveLeader(voter),
        refused(Code::FailedPrecondition, text::NOT_LEADER),
    );
    let future = Req::HashKv(revisions.future);
    t.add(
        "maintenance: hash kv, future revision",
        BOTH,
        future,
        refused(Code::OutOfRange, text::FUTURE_REV),
    );
    let compacted = Req::HashKv(revisions.compacted - 1);
    t.add(
        "maintenance: hash kv, compacted revision",
        BOTH,
        compacted,
        refused(Code::OutOfRange, text::COMPACTED),
    );
}

fn peer_rows(t: &mut Table, revisions: &Revisions, g: &mut Garbage) {
    let undecodable = refused(Code::InvalidArgument, "undecodable peer message");
    let not_leader = answer("not leader", |a| a.starts_with("Err(NotLeader"));
    let unsupported = answer("unsupported", |a| a.starts_with("Err(Request(Unsupported"));
    let not_granted = answer("not granted", |a| a.contains("vote_granted: false"));

    t.add(
        "peer: AppendEntries, garbage",
        BOTH,
        Req::AppendEntries(g.bytes(1024)),
        undecodable.clone(),
    );
    let higher_vote = answer("refused: HigherVote", |a| a.starts_with("Ok(HigherVote"));
    t.add(
        "peer: AppendEntries from a stale leader",
        BOTH,
        Req::AppendEntriesStale,
        higher_vote,
    );
    t.add(
        "peer: Vote, garbage",
        BOTH,
        Req::Vote(g.bytes(1024)),
        undecodable.clone(),
    );
    t.add(
        "peer: Vote, bogus candidate, lower term",
        BOTH,
        Req::VoteLowerTerm,
        not_granted.clone(),
    );
    t.add(
        "peer: Vote, bogus candidate, current term, no log",
        BOTH,
        Req::VoteEqualTermNoLog,
        not_granted,
    );
    let empty = Req::Snapshot(Vec::new());
    t.add(
        "peer: InstallSnapshot, no messages",
        BOTH,
        empty,
        refused(Code::InvalidArgument, "empty snapshot"),
    );
    let garbage = Req::Snapshot(vec![SnapshotChunk {
        header: g.bytes(1024),
        data: g.bytes(1024),
    }]);
    t.add(
        "peer: InstallSnapshot, garbage header",
        BOTH,
        garbage,
        undecodable.clone(),
    );
    // The answer carries the receiver's own vote: the stale snapshot was not installed.
    let own_vote = answer("refused: answers its own vote", |a| {
        a.starts_with("Ok(SnapshotResponse") && !a.contains(&format!("node_id: {BOGUS_ID}"))
    });
    t.add(
        "peer: InstallSnapshot, stale vote, truncated data",
        BOTH,
        Req::SnapshotTruncated,
        own_vote,
    );
    let cut = Expect::Where("cut by the test, or refused", |o| match o {
        Err(_) => true,
        Ok(a) => !a.contains(&format!("node_id: {BOGUS_ID}")),
    });
    t.add(
        "peer: InstallSnapshot, stream cut mid-way",
        BOTH,
        Req::SnapshotCut,
        cut,
    );
    let bad_protobuf = Req::ReadIndexRaw(g.bad_protobuf());
    t.add(
        "peer: ReadIndex, undecodable protobuf",
        BOTH,
        bad_protobuf,
        refused(Code::Internal, ""),
    );
    let unknown_fields = Req::ReadIndexRaw(b"\x0a\x03abc".to_vec());
    let read_index = answer("a read index", |a| a.starts_with("Ok(") && a != "Ok(0)");
    t.add(
        "peer: ReadIndex, unknown fields (ignored)",
        LEADER,
        unknown_fields.clone(),
        read_index,
    );
    t.add(
        "peer: ReadIndex, unknown fields (ignored)",
        FOLLOWER,
        unknown_fields,
        not_leader.clone(),
    );
    t.add(
        "peer: Forward, garbage",
        BOTH,
        Req::Forward(g.bytes(1024)),
        undecodable.clone(),
    );
    let batch = forward(&Command::Batch(vec![Command::Put(raftkv::PutRequest::new(
        "fwd/b", "x",
    ))]));
    t.add("peer: Forward, a Batch", BOTH, batch, unsupported.clone());
    let lease = forward(&Command::LeaseGrant { id: 7, ttl: 60 });
    t.add("peer: Forward, a LeaseGrant", BOTH, lease, unsupported);
    let publish = forward(&Command::PublishMember {
        id: BOGUS_ID,
        name: "intruder".into(),
        client_urls: vec!["http://127.0.0.1:9".into()],
    });
    let refused_answer = answer("refused", |a| a.starts_with("Err("));
    t.add(
        "peer: Forward, PublishMember for a non-member",
        LEADER,
        publish.clone(),
        refused_answer,
    );
    t.add(
        "peer: Forward, PublishMember for a non-member",
        FOLLOWER,
        publish,
        not_leader.clone(),
    );
    let empty_key = forward(&Command::Put(raftkv::PutRequest::new("", "x")));
    let validated = answer("empty key", |a| a.starts_with("Err(Request(EmptyKey"));
    t.add(
        "peer: Forward, Put with an empty key (validated)",
        BOTH,
        empty_key,
        validated,
    );
    let compact = forward(&Command::Compact(raftkv::CompactionRequest {
        revision: revisions.future,
        physical: false,
    }));
    let rejected = answer("rejected at apply", |a| {
        a.starts_with("Ok((Rejected(FutureRevision")
    });
    t.add(
        "peer: Forward, Compact at a future revision",
        LEADER,
        compact.clone(),
        rejected,
    );
    t.add(
        "peer: Forward, Compact at a future revision",
        FOLLOWER,
        compact,
        not_leader.clone(),
    );
    let legit = forward(&Command::Put(raftkv::PutRequest::new("fwd/legit", "x")));
    let applied = answer("applied", |a| a.starts_with("Ok((Put("));
    // The peer port is trusted (as etcd's is without peer TLS): a follower's forwarded
    // write is applied. Excluded from the "nothing changed" check.
    t.add(
        "peer: Forward, a valid Put (legitimate write)",
        LEADER,
        legit.clone(),
        applied,
    )
    .writes();
    t.add(
        "peer: Forward, a valid Put (legitimate write)",
        FOLLOWER,
        legit,
        not_leader,
    );
    t.add(
        "peer: ChangeMembership, garbage",
        BOTH,
        Req::ChangeMembership(g.bytes(1024)),
        undecodable,
    );
    let lives = answer("refused, and the node lives", |a| {
        // Refused as a decoding error (InvalidArgument) or by the handler (Err(..)).
        a.contains("exit status: 0") && (a.contains("ANSWER Err(") || a.contains("ANSWER InvalidArgument"))
    });
    t.add(
        "peer: Forward, Txn nested 100 000 deep (child process)",
        LEADER,
        Req::NestedForwardInChild,
        lives,
    );

    t.add(
        "tcp: 1 KiB of garbage to the peer port",
        BOTH,
        Req::TcpGarbage { peer: true },
        any_answer(),
    );
    t.add(
        "tcp: 1 KiB of garbage to the client port",
        BOTH,
        Req::TcpGarbage { peer: false },
        any_answer(),
    );
}

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
async fn nested_forward_in_child() -> Outcome {
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

/// One node's addresses and channels.
struct Wire {
    client: Channel,
    peer: Channel,
    client_addr: SocketAddr,
    peer_addr: SocketAddr,
    snapshots: PathBuf,
}

fn addr(url: &str) -> SocketAddr {
    url.trim_start_matches("http://").parse().unwrap()
}

async fn wire(node: &Node, dir: &Path) -> Wire {
    let client_url = node.client_urls()[0].clone();
    let peer_url = node.peer_url().to_string();
    let connect = |url: String| async move { Channel::from_shared(url).unwrap().connect().await.unwrap() };
    Wire {
        client: connect(client_url.clone()).await,
        peer: connect(peer_url.clone()).await,
        client_addr: addr(&client_url),
        peer_addr: addr(&peer_url),
        snapshots: dir.join(format!("node-{}", node.id())).join("snapshots"),
    }
}

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("no answer within {WAIT:?}: {what}"))
}

fn show<T: Debug>(answer: Result<tonic::Response<T>, Status>) -> Outcome {
    answer.map(|a| format!("{:?}", a.into_inner()))
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

fn recv_files(snapshots: &Path) -> usize {
    std::fs::read_dir(snapshots).map_or(0, |entries| {
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("recv-"))
            .count()
    })
}

/// `(Vote, SnapshotMeta)` with a committed vote one term below `term`, for a bogus leader.
fn stale_snapshot_header(term: u64) -> Vec<u8> {
    let vote = Vote::new_committed(term.saturating_sub(1), BOGUS_ID);
    let meta = raftkv_core::types::SnapshotMeta {
        last_log_id: None,
        last_membership: StoredMembership::default(),
    };
    codec::encode(&(vote, meta)).unwrap()
}

/// A unary gRPC call with a hand-made body: the 5-byte frame header and `payload`. The
/// body type tonic accepts from outside is a `String`, so the payload must be ASCII and
/// shorter than 128 bytes (every byte of the frame is then valid UTF-8).
async fn raw_unary(channel: &Channel, path: &str, payload: &[u8]) -> Result<Vec<u8>, Status> {
    assert!(payload.is_ascii() && payload.len() < 0x80);
    let mut frame = vec![0u8, 0, 0, 0, payload.len() as u8];
    frame.extend_from_slice(payload);
    let request = tonic::codegen::http::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        // Peer calls carry this build's protocol version (t27 checks the refusal of
        // those that do not); the client API ignores it.
        .header(peer_protocol::HEADER, peer_protocol::VERSION.to_string())
        .body(tonic::body::Body::new(String::from_utf8(frame).unwrap()))
        .unwrap();
    let mut channel = channel.clone();
    let transport = |e: tonic::transport::Error| Status::unavailable(e.to_string());
    poll_fn(|cx| channel.poll_ready(cx)).await.map_err(transport)?;
    let response = channel.call(request).await.map_err(transport)?;
    if let Some(status) = Status::from_header_map(response.headers())
        && status.code() != Code::Ok
    {
        return Err(status);
    }
    let mut body = response.into_body();
    let mut data = Vec::new();
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        match frame?.into_data() {
            Ok(bytes) => data.extend_from_slice(&bytes),
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers()
                    && let Some(status) = Status::from_header_map(&trailers)
                    && status.code() != Code::Ok
                {
                    return Err(status);
                }
            }
        }
    }
    Ok(data.get(5..).unwrap_or_default().to_vec())
}

/// The `bytes data = 1` field of a one-field protobuf message.
fn field_one(message: &[u8]) -> Vec<u8> {
    let Some((&0x0a, rest)) = message.split_first() else {
        return Vec::new();
    };
    let (mut len, mut shift, mut at) = (0usize, 0, 0);
    while let Some(b) = rest.get(at) {
        len |= usize::from(b & 0x7f) << shift;
        shift += 7;
        at += 1;
        if b & 0x80 == 0 {
            break;
        }
    }
    rest.get(at..at + len).unwrap_or_default().to_vec()
}

async fn send(req: &Req, node: &Node, wire: &Wire) -> Outcome {
    let mut kv = KvClient::new(wire.client.clone());
    let mut cluster = ClusterClient::new(wire.client.clone());
    let mut maintenance = MaintenanceClient::new(wire.client.clone());
    let mut peer = RaftPeerClient::with_interceptor(wire.peer.clone(), StampRequests);
    let term = node.metrics().term;
    match req {
        Req::Put(r) => show(kv.put(r.clone()).await),
        Req::Range(r) => show(kv.range(r.clone()).await),
        Req::Delete(r) => show(kv.delete_range(r.clone()).await),
        Req::Txn(r) => show(kv.txn(r.clone()).await),
        Req::Compact(r) => show(kv.compact(*r).await),
        Req::RawClient(path, payload) => raw_unary(&wire.client, path, payload)
            .await
            .map(|a| format!("{} bytes", a.len())),
        Req::MemberAdd(r) => {
            let answer = cluster.member_add(r.clone()).await;
            if let Ok(added) = &answer
                && let Some(member) = &added.get_ref().member
            {
                // Undo an add that should have been refused, so later rows see the cluster
                // as it was.
                within(
                    "removing the wrongly added member",
                    cluster.member_remove(pb::MemberRemoveRequest { id: member.id }),
                )
                .await
                .unwrap();
            }
            show(answer)
        }
        Req::MemberRemove(id) => show(cluster.member_remove(pb::MemberRemoveRequest { id: *id }).await),
        Req::MemberUpdate(r) => show(cluster.member_update(r.clone()).await),
        Req::MemberPromote(id) => show(cluster.member_promote(pb::MemberPromoteRequest { id: *id }).await),
        Req::Alarm(r) => show(maintenance.alarm(*r).await),
        Req::MoveLeader(id) => show(
            maintenance
                .move_leader(pb::MoveLeaderRequest { target_id: *id })
                .await,
        ),
        Req::HashKv(revision) => show(
            maintenance
                .hash_kv(pb::HashKvRequest { revision: *revision })
                .await,
        ),
        Req::AppendEntries(data) => decoded!(
            peer.append_entries(RaftBytes { data: data.clone() }).await,
            Result<AppendEntriesResponse<TypeConfig>, RaftError<TypeConfig>>
        ),
        Req::AppendEntriesStale => {
            let rpc = AppendEntriesRequest::<TypeConfig> {
                vote: Vote::new_committed(term.saturating_sub(1), BOGUS_ID),
                prev_log_id: None,
                entries: Vec::new(),
                leader_commit: None,
            };
            let data = codec::encode(&rpc).unwrap();
            decoded!(
                peer.append_entries(RaftBytes { data }).await,
                Result<AppendEntriesResponse<TypeConfig>, RaftError<TypeConfig>>
            )
        }
        Req::Vote(data) => decoded!(
            peer.vote(RaftBytes { data: data.clone() }).await,
            Result<VoteResponse<TypeConfig>, RaftError<TypeConfig>>
        ),
        Req::VoteLowerTerm | Req::VoteEqualTermNoLog => {
            let rpc = VoteRequest::<TypeConfig> {
                vote: match req {
                    Req::VoteLowerTerm => Vote::new(term.saturating_sub(1), BOGUS_ID),
                    _ => Vote::new(term, BOGUS_ID),
                },
                last_log_id: None::<raftkv_core::types::LogId>,
                leadership_transfer: false,
            };
            let data = codec::encode(&rpc).unwrap();
            decoded!(
                peer.vote(RaftBytes { data }).await,
                Result<VoteResponse<TypeConfig>, RaftError<TypeConfig>>
            )
        }
        Req::Snapshot(chunks) => decoded!(
            peer.install_snapshot(tokio_stream::iter(chunks.clone())).await,
            Result<SnapshotResponse<TypeConfig>, Fatal<TypeConfig>>
        ),
        Req::SnapshotTruncated => {
            let chunk = SnapshotChunk {
                header: stale_snapshot_header(term),
                data: b"RAFTKV-SNAPSHOT but cut short".to_vec(),
            };
            decoded!(
                peer.install_snapshot(tokio_stream::iter(vec![chunk])).await,
                Result<SnapshotResponse<TypeConfig>, Fatal<TypeConfig>>
            )
        }
        Req::SnapshotCut => {
            let before = recv_files(&wire.snapshots);
            let chunk = SnapshotChunk {
                header: stale_snapshot_header(term),
                data: vec![0xAB; 64 * 1024],
            };
            let stream = tokio_stream::iter(vec![chunk]).chain(tokio_stream::pending());
            // Cut once the server has started writing the snapshot (its receive file
            // appeared), or after a second if it never does; the row's checks do not
            // depend on which.
            let started = async {
                let deadline = Instant::now() + Duration::from_secs(1);
                while recv_files(&wire.snapshots) == before && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            };
            tokio::select! {
                answer = peer.install_snapshot(stream) => {
                    decoded!(answer, Result<SnapshotResponse<TypeConfig>, Fatal<TypeConfig>>)
                }
                () = started => Err(Status::cancelled("stream cut by the test")),
            }
        }
        Req::ReadIndexRaw(payload) => raw_unary(&wire.peer, "/raftkvpeer.RaftPeer/ReadIndex", payload)
            .await
            .map(|message| {
                let data = field_one(&message);
                match codec::decode::<Result<u64, raftkv::Error>>(&data) {
                    Ok(v) => format!("{v:?}"),
                    Err(e) => format!("undecodable answer: {e}"),
                }
            }),
        Req::Forward(data) => decoded!(
            peer.forward(RaftBytes { data: data.clone() }).await,
            Result<(Response, u64), raftkv::Error>
        ),
        Req::ChangeMembership(data) => decoded!(
            peer.change_membership(RaftBytes { data: data.clone() }).await,
            Result<(), raftkv::Error>
        ),
        Req::NestedForwardInChild => nested_forward_in_child().await,
        Req::TcpGarbage { peer } => {
            let target = if *peer { wire.peer_addr } else { wire.client_addr };
            let mut socket = tokio::net::TcpStream::connect(target).await.unwrap();
            let garbage = Garbage(0xBAD_F00D ^ u64::from(target.port())).bytes(1024);
            // The server may close first; a failed write is an answer too.
            let wrote = socket.write_all(&garbage).await;
            let _ = socket.shutdown().await;
            let mut reply = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(2), socket.read_to_end(&mut reply)).await;
            Ok(format!(
                "write: {wrote:?}; server sent {} bytes, then {}",
                reply.len(),
                match read {
                    Ok(Ok(_)) => "closed".to_string(),
                    Ok(Err(e)) => format!("error {e}"),
                    Err(_) => "kept the connection open".to_string(),
                }
            ))
        }
    }
}

/// Everything a refused request must leave alone.
#[derive(Debug, PartialEq, Eq)]
struct Observed {
    /// Per node: its full key space, its store revision and its compact revision.
    stores: Vec<(Vec<KeyValue>, i64, i64)>,
    members: Vec<Member>,
    snapshot_index: Vec<Option<u64>>,
}

async fn observe(nodes: &[Node], wires: &[Wire], leader: &Node) -> Observed {
    let mut stores = Vec::new();
    for (node, wire) in nodes.iter().zip(wires) {
        let all = within("a linearizable full range", node.range(RangeRequest::prefix("")))
            .await
            .unwrap();
        let hash = within(
            "hash kv",
            MaintenanceClient::new(wire.client.clone()).hash_kv(pb::HashKvRequest { revision: 0 }),
        )
        .await
        .unwrap()
        .into_inner();
        stores.push((all.kvs, all.header.revision, hash.compact_revision));
    }
    Observed {
        stores,
        members: leader.members().unwrap(),
        snapshot_index: nodes.iter().map(|n| n.metrics().snapshot_index).collect(),
    }
}

/// A put and a linearizable get through a normal client.
async fn healthy(client: &raftkv_client::Client, row: usize) {
    let key = format!("health/{row:03}");
    let value = format!("ok after row {row}");
    within("a put through the client", client.put(key.clone(), value.clone()))
        .await
        .unwrap();
    let read = within("a get through the client", client.get(key)).await.unwrap();
    assert_eq!(
        read.map(|kv| kv.value),
        Some(value.into_bytes()),
        "after row {row}"
    );
}

fn verdict(expect: &Expect, outcome: &Outcome) -> (bool, bool) {
    match (expect, outcome) {
        (Expect::Status(code, text), Err(status)) => {
            (status.code() == *code, status.message().contains(text))
        }
        (Expect::Status(..), Ok(_)) => (false, false),
        (Expect::Answer(_, check), Ok(answer)) => (true, check(answer)),
        (Expect::Answer(..), Err(_)) => (false, false),
        (Expect::Where(_, check), outcome) => {
            let ok = check(outcome);
            (ok, ok)
        }
    }
}

fn describe(expect: &Expect) -> String {
    match expect {
        Expect::Status(code, text) => format!("{code:?} {text:?}"),
        Expect::Answer(what, _) | Expect::Where(what, _) => format!("OK: {what}"),
    }
}

fn brief(outcome: &Outcome) -> String {
    let full = match outcome {
        Ok(answer) => format!("OK {answer}"),
        Err(status) => format!("{:?} {:?}", status.code(), status.message()),
    };
    let chars: Vec<char> = full.chars().collect();
    if chars.len() <= 240 {
        return full;
    }
    // Long answers: their start and their end (where a decode error names its cause).
    let head: String = chars[..140].iter().collect();
    let tail: String = chars[chars.len() - 90..].iter().collect();
    format!("{head} [...] {tail}")
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
