//! The runtime a node expects and the order it shuts down in, as the crate docs state
//! them: a node works on a current-thread Tokio runtime too (everything shares the one
//! thread: slower, not wrong); `shutdown` ends open watch streams, then requests fail
//! with `Error::Shutdown`, an informer stops on its own (keeping its cache), and the data
//! directory opens again once the last handle to the node (a clone, a watch stream) is
//! gone.

use std::time::Duration;

use raftkv::*;

const WAIT: Duration = Duration::from_secs(20);

async fn exercise(node: &Node) {
    node.wait_for_leader(WAIT).await.unwrap();
    let mut watch = node.watch(WatchRequest::prefix("k/")).unwrap();
    let put = node.put("k/1", "v").await.unwrap();
    let got = node.get("k/1").await.unwrap().unwrap();
    assert_eq!(got.mod_revision, put.header.revision);
    let events = tokio::time::timeout(WAIT, async {
        loop {
            let response = watch.next().await.unwrap();
            if !response.events.is_empty() {
                return response.events;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(events[0].kv.key, b"k/1");
}

/// `#[tokio::test]`'s default runtime is current-thread.
#[tokio::test]
async fn a_node_works_on_a_current_thread_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::builder().id(1).data_dir(dir.path()).start().await.unwrap();
    tokio::time::timeout(WAIT, exercise(&node)).await.unwrap();
    // Leases run on timers of the same thread.
    let lease = node.lease_grant(0, 30).await.unwrap();
    assert!(node.lease_keep_alive(lease.id).await.unwrap().ttl > 0);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_watches_refuses_requests_and_frees_the_directory_with_the_last_handle() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::builder().id(1).data_dir(dir.path()).start().await.unwrap();
    exercise(&node).await;
    let mut open_watch = node.watch(WatchRequest::prefix("k/")).unwrap();
    let informer = node.informer("k/", ());
    informer.wait_synced(WAIT).await.unwrap();
    let clone = node.clone();

    tokio::time::timeout(WAIT, node.shutdown()).await.unwrap();
    // The open watch stream ends (after any response it still held).
    tokio::time::timeout(WAIT, async { while open_watch.next().await.is_some() {} })
        .await
        .expect("a watch stream outlived shutdown");
    let refused = clone.put("k/2", "v").await.unwrap_err();
    assert!(matches!(refused, Error::Shutdown(_)), "{refused:?}");
    // The informer stops on its own (its watch is refused with Shutdown), keeps its cache
    // and lets go of the node.
    let stopped = informer.wait_for_revision(i64::MAX, WAIT).await.unwrap_err();
    assert!(matches!(stopped, InformerError::Stopped { .. }), "{stopped:?}");
    assert_eq!(informer.len(), 1);

    // The directory is held while any handle lives: here the watch and a clone (not the
    // stopped informer). Once they are gone a new node opens it and finds the data.
    drop((open_watch, clone, node));
    let reopened = tokio::time::timeout(WAIT, Node::builder().id(1).data_dir(dir.path()).start())
        .await
        .unwrap()
        .unwrap();
    reopened.wait_for_leader(WAIT).await.unwrap();
    assert!(reopened.get("k/1").await.unwrap().is_some());
    drop(informer);
    reopened.shutdown().await;
}
