//! Rows of the Cluster and Maintenance services and of the peer protocol.

use super::*;

pub(crate) fn cluster_and_maintenance_rows(
    t: &mut Table,
    revisions: &Revisions,
    used_peer_url: &str,
    voter: u64,
) {
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

pub(crate) fn peer_rows(t: &mut Table, revisions: &Revisions, g: &mut Garbage) {
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
