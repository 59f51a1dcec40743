//! Leases in the state machine, end to end through openraft's state-machine interface:
//! grants, attachments that follow every write of a key, a revoke deleting the attached
//! keys in one revision, checkpoints, and a snapshot that carries the lease records and
//! lets the receiver rebuild the attachment index.

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, LogId, RaftSnapshotBuilder};
use raftkv_core::kv::{DeleteRangeRequest, PutRequest, RangeRequest};
use raftkv_core::types::Entry;
use raftkv_core::{Command, RequestError, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::apply::lease_table::LeaseRecord;
use crate::{Store, StoreOptions};

pub(crate) fn entries(first: u64, commands: Vec<Command>) -> Vec<Entry> {
    commands
        .into_iter()
        .enumerate()
        .map(|(i, c)| Entry {
            log_id: LogId::new(raftkv_core::types::leader_id(1, 1), first + i as u64),
            payload: EntryPayload::Normal(c),
        })
        .collect()
}

/// Copy `snapshot` into a file `follower` receives, as the network would, and install it.
pub(crate) async fn install_snapshot(follower: &mut Store, snapshot: raftkv_core::types::Snapshot) {
    let mut incoming = follower.state_machine.begin_receiving_snapshot().await.unwrap();
    let mut data = Vec::new();
    let mut source = snapshot.snapshot;
    source.read_to_end(&mut data).await.unwrap();
    incoming.write_all(&data).await.unwrap();
    incoming.flush().await.unwrap();
    follower
        .state_machine
        .install_snapshot(&snapshot.meta, incoming)
        .await
        .unwrap();
}

fn put(key: &str, lease: i64) -> Command {
    Command::Put(PutRequest {
        lease,
        ..PutRequest::new(key, "v")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_apply_and_travel_in_snapshots() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut leader = Store::open(a.path(), StoreOptions::default()).unwrap();
    let changes = leader.reader.lease_changes();
    let answers = leader
        .state_machine
        .apply_committed(entries(
            1,
            vec![
                Command::LeaseGrant { id: 7, ttl: 60 },
                put("a", 7),
                put("b", 7),
                // Re-put without the lease: detached.
                put("b", 0),
                put("c", 7),
                Command::DeleteRange(DeleteRangeRequest::key("c")),
                put("x", 99),
                Command::LeaseGrant { id: 7, ttl: 5 },
                Command::LeaseCheckpoint {
                    remaining: vec![(7, 42), (1234, 3)],
                },
                Command::LeaseGrant { id: 8, ttl: 5 },
                put("d", 8),
                Command::LeaseRevoke { id: 8 },
            ],
        ))
        .await
        .unwrap();
    assert_eq!(answers[6], Response::Rejected(RequestError::LeaseNotFound(99)));
    assert_eq!(answers[7], Response::Rejected(RequestError::LeaseExists(7)));
    assert!(leader.reader.lease_changes() > changes);
    assert_eq!(
        leader.reader.lease(7).unwrap(),
        Some(LeaseRecord {
            ttl: 60,
            remaining: 42
        })
    );
    assert_eq!(leader.reader.lease(8).unwrap(), None);
    assert_eq!(leader.reader.lease_keys(7).unwrap(), vec![b"a".to_vec()]);
    assert!(
        leader
            .reader
            .range(&RangeRequest::key("d"))
            .unwrap()
            .kvs
            .is_empty()
    );

    let mut builder = leader.state_machine.get_snapshot_builder().await;
    let snapshot = builder.build_snapshot().await.unwrap();
    let mut follower = Store::open(b.path(), StoreOptions::default()).unwrap();
    let before = follower.reader.lease_changes();
    install_snapshot(&mut follower, snapshot).await;
    assert!(follower.reader.lease_changes() > before);
    assert_eq!(
        follower.reader.leases().unwrap(),
        vec![(
            7,
            LeaseRecord {
                ttl: 60,
                remaining: 42
            }
        )]
    );
    assert_eq!(follower.reader.lease_keys(7).unwrap(), vec![b"a".to_vec()]);

    // Revoking on the receiver deletes what the rebuilt index names, in one revision.
    let revision = follower.reader.revision();
    follower
        .state_machine
        .apply_committed(entries(13, vec![put("e", 7)]))
        .await
        .unwrap();
    let answers = follower
        .state_machine
        .apply_committed(entries(14, vec![Command::LeaseRevoke { id: 7 }]))
        .await
        .unwrap();
    assert_eq!(
        answers,
        vec![Response::Done {
            revision: revision + 2
        }]
    );
    let left = follower.reader.range(&RangeRequest::prefix("")).unwrap();
    let keys: Vec<&[u8]> = left.kvs.iter().map(|kv| kv.key.as_slice()).collect();
    assert_eq!(keys, vec![&b"b"[..]]);
    assert!(follower.reader.leases().unwrap().is_empty());
    assert!(follower.reader.lease_keys(7).unwrap().is_empty());
}
