//! Snapshot files, through the public install path.

use super::*;

/// A test-side model of the private `snapshot_file::Frame` (same serde shape), so a test
/// can read a file's header frame, measure its decoding, and ask the oracle about a frame.
/// The first checks of `garbage_snapshot_files_are_refused_and_change_nothing` keep it
/// honest.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum FrameModel {
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

pub(crate) const MAGIC: &[u8; 8] = b"RAFTKVSN";

/// The frames of a snapshot file as the documented layout cuts them (magic, u32 BE schema
/// version, then u32 BE length + bincode frame), as far as they are complete.
pub(crate) fn frames(file: &[u8]) -> Vec<&[u8]> {
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
pub(crate) fn snapshot_has_length_bomb(file: &[u8]) -> bool {
    frames(file)
        .into_iter()
        .any(|f| oracle::<FrameModel>(f).is_none())
}

pub(crate) fn put_entry(index: u64, key: &str, value: &str) -> Entry {
    Entry {
        log_id: LogId::new(raftkv_core::types::leader_id(1, 1), index),
        payload: EntryPayload::Normal(Command::Put(PutRequest::new(key, value))),
    }
}

/// What a store serves: revision, every key with its value, the applied log id.
pub(crate) type Served = (Revision, Vec<(Vec<u8>, Vec<u8>)>, Option<LogId>);

pub(crate) async fn served(store: &mut Store) -> Served {
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
pub(crate) async fn leader_snapshot(
    dir: &std::path::Path,
) -> (Vec<u8>, raftkv_core::types::SnapshotMeta, Served) {
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

pub(crate) async fn install(
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

pub(crate) fn snapshot_input(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let header = [&MAGIC[..], &SNAPSHOT_FORMAT_VERSION.to_be_bytes()].concat();
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
