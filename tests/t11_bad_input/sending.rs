//! Sending a row over the wire to one node, and what a refused request must leave alone.

use super::*;

/// One node's addresses and channels.
pub(crate) struct Wire {
    pub(crate) client: Channel,
    pub(crate) peer: Channel,
    pub(crate) client_addr: SocketAddr,
    pub(crate) peer_addr: SocketAddr,
    pub(crate) snapshots: PathBuf,
}

pub(crate) fn addr(url: &str) -> SocketAddr {
    url.trim_start_matches("http://").parse().unwrap()
}

pub(crate) async fn wire(node: &Node, dir: &Path) -> Wire {
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

pub(crate) async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("no answer within {WAIT:?}: {what}"))
}

pub(crate) fn show<T: Debug>(answer: Result<tonic::Response<T>, Status>) -> Outcome {
    answer.map(|a| format!("{:?}", a.into_inner()))
}

pub(crate) fn recv_files(snapshots: &Path) -> usize {
    std::fs::read_dir(snapshots).map_or(0, |entries| {
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("recv-"))
            .count()
    })
}

/// `(Vote, SnapshotMeta)` with a committed vote one term below `term`, for a bogus leader.
pub(crate) fn stale_snapshot_header(term: u64) -> Vec<u8> {
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
pub(crate) async fn raw_unary(channel: &Channel, path: &str, payload: &[u8]) -> Result<Vec<u8>, Status> {
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
pub(crate) fn field_one(message: &[u8]) -> Vec<u8> {
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

pub(crate) async fn send(req: &Req, node: &Node, wire: &Wire) -> Outcome {
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
pub(crate) struct Observed {
    /// Per node: its full key space, its store revision and its compact revision.
    pub(crate) stores: Vec<(Vec<KeyValue>, i64, i64)>,
    pub(crate) members: Vec<Member>,
    pub(crate) snapshot_index: Vec<Option<u64>>,
}

pub(crate) async fn observe(nodes: &[Node], wires: &[Wire], leader: &Node) -> Observed {
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
pub(crate) async fn healthy(client: &raftkv_client::Client, row: usize) {
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

pub(crate) fn verdict(expect: &Expect, outcome: &Outcome) -> (bool, bool) {
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

pub(crate) fn describe(expect: &Expect) -> String {
    match expect {
        Expect::Status(code, text) => format!("{code:?} {text:?}"),
        Expect::Answer(what, _) | Expect::Where(what, _) => format!("OK: {what}"),
    }
}

pub(crate) fn brief(outcome: &Outcome) -> String {
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
