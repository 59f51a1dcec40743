//! Membership changes while writes go on: start one node, add two learners, promote them,
//! remove one; every write is acknowledged throughout, and the removed node stops
//! receiving replication.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use raftkv::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grow_promote_and_shrink_under_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (s1, s2, s3) = (support::slot(1), support::slot(2), support::slot(3));
    let (url2, url3) = (s2.peer_url.clone(), s3.peer_url.clone());
    let n1 = support::builder(&s1, dir.path()).start().await.unwrap();
    n1.wait_for_leader(Duration::from_secs(20)).await.unwrap();
    let n2 = support::builder(&s2, dir.path()).join().start().await.unwrap();
    let n3 = support::builder(&s3, dir.path()).join().start().await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (n1, stop, written) = (n1.clone(), stop.clone(), written.clone());
        tokio::spawn(async move {
            for i in 0..1_000_000u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                n1.put(format!("w/{i:07}"), "v")
                    .await
                    .expect("every write succeeds during membership changes");
                written.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let wait_writes = |n: u64| {
        let written = written.clone();
        async move {
            let target = written.load(Ordering::Relaxed) + n;
            support::wait_until("writes", Duration::from_secs(20), || {
                written.load(Ordering::Relaxed) >= target
            })
            .await;
        }
    };

    wait_writes(20).await;
    n1.add_learner(2, &url2).await.unwrap();
    n1.add_learner(3, &url3).await.unwrap();
    assert_eq!(n1.metrics().learners, vec![2, 3]);
    wait_writes(20).await;
    n1.promote(BTreeSet::from([2, 3])).await.unwrap();
    assert_eq!(n1.metrics().voters, vec![1, 2, 3]);
    wait_writes(20).await;
    // A follower serves linearizable reads of everything written so far.
    let seen = written.load(Ordering::Relaxed);
    let count = n2.range(RangeRequest::prefix("w/")).await.unwrap().count;
    assert!(count as u64 >= seen, "node 2 saw {count} of {seen}");

    n1.remove(BTreeSet::from([3])).await.unwrap();
    assert_eq!(n1.metrics().voters, vec![1, 2]);
    assert!(n1.metrics().learners.is_empty());
    // Wait for in-flight replication to node 3 to settle, then show it gets nothing more.
    wait_writes(20).await;
    let before = n3.metrics().last_log_index;
    wait_writes(100).await;
    let after = n3.metrics().last_log_index;
    assert_eq!(before, after, "removed node 3 still receives entries");
    assert!(n1.metrics().last_log_index > after + 50);
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let total = written.load(Ordering::Relaxed);
    assert_eq!(
        n2.range(RangeRequest::prefix("w/")).await.unwrap().count as u64,
        total
    );
    println!("{total} writes across add-learner, promote and remove");
    for n in [n1, n2, n3] {
        n.shutdown().await;
    }
}
