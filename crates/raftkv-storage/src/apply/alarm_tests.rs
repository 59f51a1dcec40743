//! Alarms in the state machine: raised, listed and disarmed through applied entries, the
//! writes they refuse decided entry by entry (an alarm raised earlier in the same batch
//! already counts), kept across a reopen and carried by a snapshot.

use openraft::RaftSnapshotBuilder;
use openraft::storage::RaftStateMachine;
use raftkv_core::alarm::{ALARM_CORRUPT, ALARM_NONE, ALARM_NOSPACE, AlarmAction, AlarmMember, AlarmRequest};
use raftkv_core::kv::{DeleteRangeRequest, PutRequest};
use raftkv_core::{Command, RequestError, Response};

use crate::apply::alarm_table::{CORRUPT_ACTIVE, NOSPACE_ACTIVE};
use crate::apply::lease_tests::{entries, install_snapshot};
use crate::{Store, StoreOptions};

fn alarm(action: AlarmAction, member_id: u64, alarm: i32) -> Command {
    Command::Alarm(AlarmRequest {
        action,
        member_id,
        alarm,
    })
}

fn member(member_id: u64, alarm: i32) -> AlarmMember {
    AlarmMember { member_id, alarm }
}

fn put(key: &str) -> Command {
    Command::Put(PutRequest::new(key, "v"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_refuse_writes_as_applied_persist_and_travel_in_snapshots() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut store = Store::open(a.path(), StoreOptions::default()).unwrap();
    let answers = store
        .state_machine
        .apply_committed(entries(
            1,
            vec![
                put("before"),
                alarm(AlarmAction::Activate, 2, ALARM_NOSPACE),
                // Raised again: answered, nothing changes.
                alarm(AlarmAction::Activate, 2, ALARM_NOSPACE),
                put("refused"),
                Command::DeleteRange(DeleteRangeRequest::key("before")),
                Command::LeaseGrant { id: 5, ttl: 10 },
                // Member id 0 is kept as given, as etcd 3.4 does.
                alarm(AlarmAction::Activate, 0, ALARM_NOSPACE),
                alarm(AlarmAction::Get, 0, ALARM_NONE),
                // Not active: nothing disarmed.
                alarm(AlarmAction::Deactivate, 3, ALARM_NOSPACE),
            ],
        ))
        .await
        .unwrap();
    assert!(matches!(answers[0], Response::Put(_)));
    assert_eq!(answers[1], Response::Alarms(vec![member(2, ALARM_NOSPACE)]));
    assert_eq!(answers[2], Response::Alarms(vec![member(2, ALARM_NOSPACE)]));
    assert_eq!(answers[3], Response::Rejected(RequestError::NoSpace));
    assert!(
        matches!(answers[4], Response::DeleteRange(_)),
        "deletes free space"
    );
    assert_eq!(answers[5], Response::Rejected(RequestError::NoSpace));
    assert_eq!(
        answers[7],
        Response::Alarms(vec![member(0, ALARM_NOSPACE), member(2, ALARM_NOSPACE)])
    );
    assert_eq!(answers[8], Response::Alarms(vec![]));
    assert_eq!(store.reader.alarm_mask(), NOSPACE_ACTIVE);
    let revision = store.reader.revision();
    drop(store);

    // Reopened: the alarms are still there, and so are their refusals.
    let mut store = Store::open(a.path(), StoreOptions::default()).unwrap();
    assert_eq!(store.reader.alarm_mask(), NOSPACE_ACTIVE);
    let answers = store
        .state_machine
        .apply_committed(entries(
            10,
            vec![
                put("refused"),
                alarm(AlarmAction::Deactivate, 2, ALARM_NOSPACE),
                put("still refused"),
                alarm(AlarmAction::Deactivate, 0, ALARM_NOSPACE),
                put("taken"),
                alarm(AlarmAction::Activate, 1, ALARM_CORRUPT),
                Command::DeleteRange(DeleteRangeRequest::key("taken")),
            ],
        ))
        .await
        .unwrap();
    assert_eq!(answers[0], Response::Rejected(RequestError::NoSpace));
    assert_eq!(answers[1], Response::Alarms(vec![member(2, ALARM_NOSPACE)]));
    assert_eq!(answers[2], Response::Rejected(RequestError::NoSpace));
    assert!(matches!(answers[4], Response::Put(_)));
    assert_eq!(answers[6], Response::Rejected(RequestError::Corrupt));
    assert_eq!(store.reader.revision(), revision + 1, "only the one put wrote");
    assert_eq!(store.reader.alarms().unwrap(), vec![member(1, ALARM_CORRUPT)]);
    assert_eq!(store.reader.alarm_mask(), CORRUPT_ACTIVE);

    // A snapshot carries the alarms; the receiver refuses as the sender does.
    let snapshot = store
        .state_machine
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let mut follower = Store::open(b.path(), StoreOptions::default()).unwrap();
    assert_eq!(follower.reader.alarm_mask(), 0);
    let last = snapshot.meta.last_log_id;
    install_snapshot(&mut follower, snapshot).await;
    assert_eq!(follower.reader.alarms().unwrap(), vec![member(1, ALARM_CORRUPT)]);
    assert_eq!(follower.reader.alarm_mask(), CORRUPT_ACTIVE);
    let next = last.map_or(1, |id| id.index + 1);
    let answers = follower
        .state_machine
        .apply_committed(entries(next, vec![put("x")]))
        .await
        .unwrap();
    assert_eq!(answers, vec![Response::Rejected(RequestError::Corrupt)]);
}
