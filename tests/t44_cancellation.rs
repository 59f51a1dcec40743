//! What happens when a caller drops a future of the embedded API halfway (cancellation
//! safety, as the crate docs state it):
//!
//! - a `put` or `txn` future dropped before its first poll sends nothing; one dropped at
//!   its first wait may still commit, at any later moment (group commit proposes batches
//!   from concurrent tasks, so a later write can reach the log first), but only whole: a
//!   txn's writes are never seen in part, and nothing that applied goes away;
//! - a dropped watch stream unregisters its watcher;
//! - a dropped `lock` wait deletes the waiter's key: `t23_lock_election`,
//!   `an_abandoned_wait_removes_the_waiters_key`, on a three-member cluster.
//!
//! Every wait has a deadline.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use raftkv::*;

const WAIT: Duration = Duration::from_secs(20);
const ROUNDS: usize = 40;

async fn single_node(dir: &std::path::Path) -> Node {
    let node = Node::builder().id(1).data_dir(dir).start().await.unwrap();
    node.wait_for_leader(WAIT).await.unwrap();
    node
}

/// Poll `future` once; `true` if it finished then.
async fn poll_once<F: Future>(future: &mut Pin<Box<F>>) -> bool {
    std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx).is_ready())).await
}

async fn value_of(node: &Node, key: &str) -> Option<Vec<u8>> {
    tokio::time::timeout(WAIT, node.get(key))
        .await
        .unwrap()
        .unwrap()
        .map(|kv| kv.value)
}

/// A write acknowledged after the dropped one (which does not order them: see the module
/// doc), so the checks run after some time has passed.
async fn barrier(node: &Node, round: usize) {
    tokio::time::timeout(WAIT, node.put(format!("barrier/{round}"), "x"))
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_dropped_unpolled_sends_nothing_and_one_dropped_waiting_applies_whole_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let node = single_node(dir.path()).await;
    let mut applied = 0;
    for round in 0..ROUNDS {
        let key = format!("put/{round}");
        let mut put = Box::pin(node.put(key.clone(), "v"));
        // Even rounds drop the future before its first poll; odd ones at its first wait.
        let polled = round % 2 == 1;
        if polled {
            poll_once(&mut put).await;
        }
        drop(put);
        let mut seen = None;
        for check in [round, round + ROUNDS] {
            barrier(&node, check).await;
            let now = value_of(&node, &key).await;
            if !polled {
                assert_eq!(now, None, "round {round}: a put never polled was applied");
            } else if seen.is_some() {
                assert_eq!(now, seen, "round {round}: an applied put went away");
            } else {
                assert!(now.is_none() || now.as_deref() == Some(&b"v"[..]), "{now:?}");
            }
            seen = now;
        }
        applied += usize::from(seen.is_some());
    }
    println!(
        "puts dropped at their first wait: {applied} of {} applied",
        ROUNDS / 2
    );
    // The node still serves writes and reads.
    node.put("after", "ok").await.unwrap();
    assert_eq!(value_of(&node, "after").await.as_deref(), Some(&b"ok"[..]));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_txn_is_never_seen_in_part() {
    let dir = tempfile::tempdir().unwrap();
    let node = single_node(dir.path()).await;
    for round in 0..ROUNDS {
        let (a, b) = (format!("txn/{round}/a"), format!("txn/{round}/b"));
        let txn = TxnRequest {
            compare: vec![],
            success: vec![
                RequestOp::Put(PutRequest::new(a.clone(), "1")),
                RequestOp::Put(PutRequest::new(b.clone(), "2")),
            ],
            failure: vec![],
        };
        let mut pending = Box::pin(node.txn(txn));
        poll_once(&mut pending).await;
        drop(pending);
        // Both keys read at one revision: none or both, and once both, always both.
        let whole = vec![(a.into_bytes(), b"1".to_vec()), (b.into_bytes(), b"2".to_vec())];
        let mut applied = false;
        for check in [round, round + ROUNDS] {
            barrier(&node, check).await;
            let read = node.range(RangeRequest::prefix(format!("txn/{round}/")));
            let kvs = tokio::time::timeout(WAIT, read).await.unwrap().unwrap().kvs;
            let seen: Vec<(Vec<u8>, Vec<u8>)> = kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
            if seen.is_empty() {
                assert!(!applied, "round {round}: an applied txn went away");
            } else {
                assert_eq!(seen, whole, "round {round}: a dropped txn applied in part");
                applied = true;
            }
        }
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_watch_stream_unregisters_its_watcher() {
    let dir = tempfile::tempdir().unwrap();
    let node = single_node(dir.path()).await;
    // Dropped at once, dropped while waiting for an event, dropped with events queued.
    let idle = node.watch(WatchRequest::prefix("w/")).unwrap();
    let mut waiting = node.watch(WatchRequest::prefix("w/")).unwrap();
    let mut next = Box::pin(waiting.next());
    poll_once(&mut next).await;
    drop(next);
    let queued = node.watch(WatchRequest::prefix("w/")).unwrap();
    for i in 0..10 {
        node.put(format!("w/{i}"), "v").await.unwrap();
    }
    assert_eq!(node.watch_counts().watchers, 3);
    drop((idle, waiting, queued));
    let deadline = Instant::now() + WAIT;
    while node.watch_counts().watchers != 0 {
        assert!(
            Instant::now() < deadline,
            "watchers left: {:?}",
            node.watch_counts()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A new watcher works as before.
    let mut fresh = node.watch(WatchRequest::key("w/new")).unwrap();
    node.put("w/new", "v").await.unwrap();
    let mut events = Vec::new();
    while events.is_empty() {
        events = tokio::time::timeout(WAIT, fresh.next())
            .await
            .unwrap()
            .unwrap()
            .events;
    }
    assert_eq!(events[0].kv.key, b"w/new");
    node.shutdown().await;
}
