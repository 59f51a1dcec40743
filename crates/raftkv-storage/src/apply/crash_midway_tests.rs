//! A crash in the middle of a state-machine batch, at every write of it.
//!
//! Apply writes a batch's records one by one and the applied state last
//! (`raft/state_machine.rs`); sled recovers a prefix of the writes. Random SIGKILL rounds
//! (`tests/crash_sigkill/`) rarely stop inside a batch, so this test does it on
//! purpose: for every `k`, the batch is stopped after its first `k` writes (what a crash
//! there leaves on disk, since dropping the store writes out exactly those), the store is
//! reopened, and then
//! - the tree is exactly what it was before the batch (versions, history, attachments,
//!   lease records, members, undo records, metadata: every byte), and
//! - applying the batch again (openraft's replay) gives exactly the tree of a store that
//!   never crashed;
//! - or, when the stop came after the applied state was written, the tree is exactly
//!   that of a store that never crashed, without replay.

use openraft::EntryPayload;
use raftkv_core::Command;
use raftkv_core::kv::*;
use raftkv_core::types::{Entry, LogId};

use crate::failpoints::stop_writes_after;
use crate::{Store, StoreOptions};

fn entries(first: u64, commands: Vec<Command>) -> Vec<Entry> {
    commands
        .into_iter()
        .enumerate()
        .map(|(i, c)| Entry {
            log_id: LogId::new(raftkv_core::types::leader_id(2, 1), first + i as u64),
            payload: EntryPayload::Normal(c),
        })
        .collect()
}

fn put(key: &str, value: &str, lease: i64) -> Command {
    Command::Put(PutRequest {
        lease,
        ..PutRequest::new(key, value)
    })
}

/// What is applied before the batch that crashes, in three batches.
fn before() -> Vec<Vec<Entry>> {
    vec![
        entries(
            1,
            vec![
                Command::LeaseGrant { id: 5, ttl: 60 },
                Command::LeaseGrant { id: 7, ttl: 60 },
                put("a", "a1", 0),
                put("b", "b1", 5),
                put("c", "c1", 5),
            ],
        ),
        entries(6, vec![put("a", "a2", 7), put("d", "d1", 0), put("b", "b2", 5)]),
        entries(
            9,
            vec![Command::LeaseCheckpoint {
                remaining: vec![(5, 40)],
            }],
        ),
    ]
}

/// The batch that crashes: new and moved attachments, a revoke that deletes keys, a
/// grant, a checkpoint, a delete, a txn with several writes, a published member.
fn batch() -> Vec<Entry> {
    entries(
        10,
        vec![
            put("a", "a3", 5),
            Command::LeaseGrant { id: 9, ttl: 30 },
            put("e", "e1", 9),
            Command::LeaseCheckpoint {
                remaining: vec![(7, 20), (9, 25)],
            },
            Command::LeaseRevoke { id: 5 },
            Command::DeleteRange(DeleteRangeRequest::key("d")),
            Command::Txn(TxnRequest {
                compare: vec![],
                success: vec![
                    RequestOp::Put(PutRequest::new("f", "f1")),
                    RequestOp::Put(PutRequest {
                        lease: 7,
                        ..PutRequest::new("g", "g1")
                    }),
                ],
                failure: vec![],
            }),
            Command::PublishMember {
                id: 3,
                name: "n3".into(),
                client_urls: vec!["http://127.0.0.1:1".into()],
            },
            put("a", "a4", 0),
        ],
    )
}

type Dump = Vec<(Vec<u8>, Vec<u8>)>;

fn dump(store: &Store) -> Dump {
    store
        .shared
        .tree()
        .iter()
        .map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())))
        .collect::<Result<_, _>>()
        .unwrap()
}

async fn open_and_apply(dir: &std::path::Path, batches: Vec<Vec<Entry>>) -> Store {
    let mut store = Store::open(dir, StoreOptions::default()).unwrap();
    for batch in batches {
        store.state_machine.apply_committed(batch).await.unwrap();
    }
    store
}

#[tokio::test(flavor = "current_thread")]
async fn a_batch_stopped_after_any_write_rolls_back_and_replays_to_the_same_tree() {
    let control_dir = tempfile::tempdir().unwrap();
    let mut control = open_and_apply(control_dir.path(), before()).await;
    let expected_before = dump(&control);
    control.state_machine.apply_committed(batch()).await.unwrap();
    let expected_after = dump(&control);
    drop(control);

    let last_index = batch().last().unwrap().log_id.index;
    let mut stopped_inside = 0;
    let mut stopped_after_state = 0;
    for k in 0.. {
        assert!(k < 10_000, "the batch never completed");
        let dir = tempfile::tempdir().unwrap();
        let mut store = open_and_apply(dir.path(), before()).await;
        stop_writes_after(Some(k));
        let outcome = store.state_machine.apply_committed(batch()).await;
        stop_writes_after(None);
        if outcome.is_ok() {
            assert_eq!(dump(&store), expected_after);
            break;
        }
        stopped_inside += 1;
        drop(store);
        let mut store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        if store.shared.applied().get() == last_index {
            // Stopped after the applied state, among the removals of the undo records:
            // the batch is applied, and the open removed the rest of them.
            assert_eq!(dump(&store), expected_after, "after a stop at write {k}");
            stopped_after_state += 1;
            continue;
        }
        assert_eq!(
            dump(&store),
            expected_before,
            "after a stop at write {k} and the rollback"
        );
        store.state_machine.apply_committed(batch()).await.unwrap();
        assert_eq!(dump(&store), expected_after, "replayed after a stop at write {k}");
    }
    // The batch has dozens of writes; each was a stopping point.
    assert!(stopped_inside > 20, "only {stopped_inside} stopping points");
    // Four records overwritten in place (leases 5, 7 and 9, member 3): four undo records
    // removed after the applied state.
    assert_eq!(stopped_after_state, 4);
}
