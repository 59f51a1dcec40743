//! Tests of [`LocalWatchSession`] over a real store, applying entries directly (no Raft).

use std::task::{Context, Poll, Waker};
use std::time::Duration;

use openraft::storage::RaftStateMachine;
use raftkv_core::Command;
use raftkv_core::kv::{CompactionRequest, DeleteRangeRequest, PutRequest, RequestOp, TxnRequest};
use raftkv_core::watch::{EventType, INVALID_WATCH_ID, WatchRequest, WatchResponse, WatchSession};

use super::*;
use crate::WatchConfig;
use crate::test_store::TestStore as Fixture;

impl Fixture {
    fn session(&self) -> LocalWatchSession {
        LocalWatchSession::open(self.store.shared.clone())
    }
}

fn put(key: &str, value: &str) -> Command {
    Command::Put(PutRequest::new(key, value))
}

async fn next(session: &mut LocalWatchSession) -> WatchResponse {
    tokio::time::timeout(
        Duration::from_secs(10),
        std::future::poll_fn(|cx| session.poll_next(cx)),
    )
    .await
    .expect("a response within 10 s")
    .expect("the session is open")
}

/// Nothing more is ready right now.
fn idle(session: &mut LocalWatchSession) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match session.poll_next(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Some(r)) => panic!("unexpected response {r:?}"),
        Poll::Ready(None) => false,
    }
}

/// Collect responses until `count` events arrived; returns (revision, value or "") pairs.
async fn events(session: &mut LocalWatchSession, count: usize) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    while out.len() < count {
        let response = next(session).await;
        assert!(!response.canceled, "{response:?}");
        let mut last = 0;
        for e in response.events {
            assert!(e.kv.mod_revision >= last, "events out of order");
            last = e.kv.mod_revision;
            let value = match e.kind {
                EventType::Put => String::from_utf8(e.kv.value).unwrap(),
                EventType::Delete => String::new(),
            };
            out.push((e.kv.mod_revision, value));
        }
        assert!(response.header.revision >= last, "revision below its events");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_from_the_start_revision_then_goes_live_with_filters_and_prev_kv() {
    let mut f = Fixture::new();
    for i in 1..=5 {
        f.put("k", &format!("v{i}")).await; // revisions 2..=6
    }
    f.put("other", "x").await; // 7
    let mut session = f.session();
    let created = session.create(WatchRequest::key("k").with_start_revision(3).with_prev_kv(true));
    assert!(created.created && !created.canceled);
    assert_eq!(created.watch_id, 0, "server-chosen ids start at 0");
    assert_eq!(created.header.revision, 7);
    let replayed = next(&mut session).await;
    let values: Vec<_> = replayed.events.iter().map(|e| e.kv.value.clone()).collect();
    assert_eq!(values, [b"v2", b"v3", b"v4", b"v5"]);
    assert_eq!(replayed.events[0].prev_kv.as_ref().unwrap().value, b"v1");
    assert!(idle(&mut session));

    // A prefix watcher without puts sees only deletes; one from now sees the live put.
    let deletes = session.create(WatchRequest::prefix("").with_no_put(true).with_watch_id(7));
    assert_eq!(deletes.watch_id, 7);
    let live = session.create(WatchRequest::key("k"));
    assert_eq!(live.watch_id, 1);
    let duplicate = session.create(WatchRequest::key("k").with_watch_id(7));
    assert!(duplicate.canceled && duplicate.watch_id == INVALID_WATCH_ID);
    f.put("k", "v6").await; // 8
    f.apply(vec![Command::DeleteRange(DeleteRangeRequest::prefix(""))])
        .await; // 9
    let mut by_watcher: HashMap<WatchId, Vec<(EventType, i64, bool)>> = HashMap::new();
    while by_watcher.values().map(Vec::len).sum::<usize>() < 6 {
        let r = next(&mut session).await;
        for e in r.events {
            by_watcher
                .entry(r.watch_id)
                .or_default()
                .push((e.kind, e.kv.mod_revision, e.prev_kv.is_some()));
        }
    }
    assert_eq!(
        by_watcher[&created.watch_id],
        [(EventType::Put, 8, true), (EventType::Delete, 9, true)]
    );
    assert_eq!(
        by_watcher[&1],
        [(EventType::Put, 8, false), (EventType::Delete, 9, false)]
    );
    assert_eq!(
        by_watcher[&7],
        [(EventType::Delete, 9, false), (EventType::Delete, 9, false)]
    );
    assert!(idle(&mut session));
    let canceled = session.cancel(7).unwrap();
    assert!(canceled.canceled);
    assert!(session.cancel(7).is_none());
    assert_eq!(f.store.shared.watch_hub().watchers(), 2);
    drop(session);
    assert_eq!(f.store.shared.watch_hub().watchers(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_watcher_is_replayed_from_the_history_without_gaps() {
    let mut f = Fixture::new();
    f.store.shared.watch_hub().configure(WatchConfig {
        buffered_events: 4,
        ..WatchConfig::default()
    });
    let mut session = f.session();
    session.create(WatchRequest::prefix("k"));
    // Batches of several requests (several revisions per apply) and a txn (one revision,
    // several events), while nobody polls the session.
    for round in 0..50 {
        let mut batch: Vec<Command> = (0..3)
            .map(|i| put(&format!("k{i}"), &format!("{round}")))
            .collect();
        batch.push(Command::Txn(TxnRequest {
            success: vec![
                RequestOp::Put(PutRequest::new("ka", "t")),
                RequestOp::Put(PutRequest::new("kb", "t")),
            ],
            ..TxnRequest::default()
        }));
        f.apply(batch).await;
    }
    assert_eq!(f.store.shared.watch_hub().unsynced_watchers(), 1);
    let got = events(&mut session, 50 * 5).await;
    let revisions: Vec<i64> = got.iter().map(|(r, _)| *r).collect();
    let mut expected = Vec::new();
    for rev in 2..=201 {
        expected.push(rev);
        if (rev - 1) % 4 == 0 {
            expected.push(rev); // the txn's second event
        }
    }
    assert_eq!(revisions, expected);
    assert!(idle(&mut session));
    assert_eq!(f.store.shared.watch_hub().unsynced_watchers(), 0, "promoted");
    f.put("k9", "live").await;
    assert_eq!(events(&mut session, 1).await, [(202, "live".to_string())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_history_cancels_with_the_oldest_startable_revision() {
    let mut f = Fixture::new();
    for i in 0..10 {
        f.put("k", &i.to_string()).await; // 2..=11
    }
    f.apply(vec![Command::Compact(CompactionRequest {
        revision: 6,
        physical: false,
    })])
    .await;
    let mut session = f.session();
    let created = session.create(WatchRequest::key("k").with_start_revision(5));
    assert!(created.created && !created.canceled, "created first, as etcd");
    let canceled = next(&mut session).await;
    assert!(canceled.canceled && canceled.events.is_empty());
    assert_eq!(canceled.compact_revision, 6);
    assert_eq!(canceled.watch_id, created.watch_id);
    session.create(WatchRequest::key("k").with_start_revision(6));
    let replayed = events(&mut session, 6).await;
    assert_eq!(replayed.first().map(|e| e.0), Some(6));

    // A watcher that fell behind and was overtaken by compaction is canceled too.
    f.store.shared.watch_hub().configure(WatchConfig {
        buffered_events: 1,
        ..WatchConfig::default()
    });
    let mut lagging = f.session();
    lagging.create(WatchRequest::key("k"));
    for i in 0..5 {
        f.put("k", &format!("late{i}")).await; // 12..=16
    }
    f.apply(vec![Command::Compact(CompactionRequest {
        revision: 14,
        physical: false,
    })])
    .await;
    let first = next(&mut lagging).await;
    assert_eq!(first.events.len(), 1, "the one batch that fitted: {first:?}");
    let canceled = next(&mut lagging).await;
    assert!(canceled.canceled);
    assert_eq!(canceled.compact_revision, 14);
    assert!(lagging.watch_ids().is_empty());
    assert!(idle(&mut lagging));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_requests_answer_once_every_watcher_is_caught_up() {
    let mut f = Fixture::new();
    for i in 0..20 {
        f.put("a", &i.to_string()).await; // 2..=21
    }
    let mut session = f.session();
    session.request_progress();
    let empty = next(&mut session).await;
    assert_eq!((empty.watch_id, empty.header.revision), (INVALID_WATCH_ID, 21));
    session.create(WatchRequest::key("quiet"));
    session.create(WatchRequest::key("a").with_start_revision(2));
    session.request_progress();
    // The replaying watcher's events come before the answer, which covers them.
    let replay = next(&mut session).await;
    assert_eq!(replay.events.len(), 20);
    let progress = next(&mut session).await;
    assert!(progress.is_progress_notify(), "{progress:?}");
    assert_eq!(
        (progress.watch_id, progress.header.revision),
        (INVALID_WATCH_ID, 21)
    );
    assert!(idle(&mut session));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_progress_goes_to_quiet_watchers_only() {
    let mut f = Fixture::new();
    f.store.shared.watch_hub().configure(WatchConfig {
        progress_interval: Duration::from_millis(100),
        ..WatchConfig::default()
    });
    let mut session = f.session();
    let quiet = session.create(WatchRequest::key("quiet").with_progress_notify(true));
    f.put("x", "1").await;
    let progress = next(&mut session).await;
    assert!(progress.is_progress_notify());
    assert_eq!((progress.watch_id, progress.header.revision), (quiet.watch_id, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_hub_ends_every_session() {
    let f = Fixture::new();
    let mut session = f.session();
    session.create(WatchRequest::key("a"));
    f.store.shared.watch_hub().close();
    let end = tokio::time::timeout(
        Duration::from_secs(5),
        std::future::poll_fn(|cx| session.poll_next(cx)),
    )
    .await
    .unwrap();
    assert!(end.is_none());
    let mut late = f.session();
    assert!(late.create(WatchRequest::key("a")).canceled);
}

/// Install `leader`'s current state into `follower` as openraft would.
async fn install_snapshot_of(leader: &mut Fixture, follower: &mut Fixture) {
    use openraft::RaftSnapshotBuilder;
    let mut builder = leader.store.state_machine.get_snapshot_builder().await;
    let snapshot = builder.build_snapshot().await.unwrap();
    crate::apply::lease_tests::install_snapshot(&mut follower.store, snapshot).await;
    follower.index = leader.index;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_snapshot_install_watchers_replay_the_gap_or_are_canceled_past_compaction() {
    let mut leader = Fixture::new();
    let mut follower = Fixture::new();
    let mut session = follower.session();
    let all = session.create(WatchRequest::prefix("k"));
    let from_5 = session.create(WatchRequest::prefix("k").with_start_revision(5));
    assert_eq!(all.header.revision, 1);
    for i in 0..10 {
        leader.put(&format!("k{i}"), "v").await; // 2..=11
    }
    install_snapshot_of(&mut leader, &mut follower).await;
    assert_eq!(follower.store.shared.watch_hub().published(), 11);
    let mut seen: HashMap<WatchId, Vec<i64>> = HashMap::new();
    while seen.values().map(Vec::len).sum::<usize>() < 10 + 7 {
        let r = next(&mut session).await;
        seen.entry(r.watch_id)
            .or_default()
            .extend(r.events.iter().map(|e| e.kv.mod_revision));
    }
    assert_eq!(seen[&all.watch_id], (2..=11).collect::<Vec<_>>());
    assert_eq!(seen[&from_5.watch_id], (5..=11).collect::<Vec<_>>());
    follower.put("k0", "live").await;
    assert_eq!(events(&mut session, 2).await.len(), 2, "both live again");

    // A snapshot whose compact revision passed a watcher's position cancels it.
    let mut lagging = Fixture::new();
    let mut late = lagging.session();
    let w = late.create(WatchRequest::prefix("k"));
    leader
        .apply(vec![Command::Compact(CompactionRequest {
            revision: 8,
            physical: false,
        })])
        .await;
    install_snapshot_of(&mut leader, &mut lagging).await;
    let canceled = next(&mut late).await;
    assert!(canceled.canceled, "{canceled:?}");
    assert_eq!((canceled.watch_id, canceled.compact_revision), (w.watch_id, 8));
}

/// Since layout 4 a delete is a history event alone. Replayed from the past, a key's
/// deletes come as Delete events (a single key's from the key index, a range's from the
/// kinds in the history), a delete's previous key-value is the put before it, and a put
/// that re-creates a key has none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_replay_from_the_history_with_their_previous_values() {
    let mut f = Fixture::new();
    f.put("k", "v1").await; // 2
    f.apply(vec![Command::DeleteRange(DeleteRangeRequest::key("k"))])
        .await; // 3
    f.put("k", "v2").await; // 4
    f.put("k", "v3").await; // 5
    f.apply(vec![Command::DeleteRange(DeleteRangeRequest::prefix(""))])
        .await; // 6
    let mut session = f.session();
    for (id, request) in [(10, WatchRequest::key("k")), (11, WatchRequest::prefix("k"))] {
        let created = session.create(
            request
                .with_start_revision(2)
                .with_prev_kv(true)
                .with_watch_id(id),
        );
        assert!(created.created && !created.canceled);
    }
    type Seen = Vec<(EventType, i64, Option<Vec<u8>>)>;
    let mut by_watcher: HashMap<WatchId, Seen> = HashMap::new();
    while by_watcher.values().map(Vec::len).sum::<usize>() < 10 {
        let r = next(&mut session).await;
        for e in r.events {
            let prev = e.prev_kv.map(|p| p.value);
            by_watcher
                .entry(r.watch_id)
                .or_default()
                .push((e.kind, e.kv.mod_revision, prev));
        }
    }
    let want: Seen = vec![
        (EventType::Put, 2, None),
        (EventType::Delete, 3, Some(b"v1".to_vec())),
        (EventType::Put, 4, None),
        (EventType::Put, 5, Some(b"v2".to_vec())),
        (EventType::Delete, 6, Some(b"v3".to_vec())),
    ];
    assert_eq!(by_watcher[&10], want, "single key");
    assert_eq!(by_watcher[&11], want, "range");
    assert!(idle(&mut session));
}
