//! Watches in clusters: a watcher on a follower, slow watchers, a thousand watchers, a client
//! watch that resumes on another member, a watch surviving kill -9 of the leader.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_on_a_follower_sees_the_writes_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = support::start_cluster(3, dir.path()).await;
    let leader_id = support::wait_for_agreed_leader(&nodes, WAIT).await;
    let leader = nodes.iter().find(|n| n.id() == leader_id).unwrap();
    let follower = nodes.iter().find(|n| n.id() != leader_id).unwrap();
    let mut embedded = follower.watch(WatchRequest::prefix("f/")).unwrap();
    let client = raftkv_client::Client::connect(follower.client_urls().to_vec())
        .await
        .unwrap();
    let mut remote = client.watch(WatchRequest::prefix("f/")).await.unwrap();
    let mut written = Vec::new();
    for i in 0..10 {
        let rev = leader.put(format!("f/{i}"), "v").await.unwrap().header.revision;
        written.push((EventType::Put, format!("f/{i}"), rev));
    }
    assert_eq!(summary(&take_events(&mut embedded, 10).await), written);
    let mut seen = Vec::new();
    while seen.len() < 10 {
        let r = tokio::time::timeout(WAIT, remote.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(r.header.member_id, follower.id(), "served by the follower");
        seen.extend(r.events);
    }
    assert_eq!(summary(&seen), written);
    for node in &nodes {
        node.shutdown().await;
    }
}

/// Time `count` puts under `prefix`, from 8 concurrent writers.
pub(crate) async fn timed_puts(node: &Node, prefix: &str, count: usize) -> (Duration, Vec<i64>) {
    let started = Instant::now();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let node = node.clone();
            let prefix = prefix.to_string();
            tokio::spawn(async move {
                let mut revs = Vec::new();
                for i in (w..count).step_by(8) {
                    revs.push(
                        node.put(format!("{prefix}{i:05}"), "v")
                            .await
                            .unwrap()
                            .header
                            .revision,
                    );
                }
                revs
            })
        })
        .collect();
    let mut revs = Vec::new();
    for w in writers {
        revs.extend(tokio::time::timeout(WAIT * 3, w).await.unwrap().unwrap());
    }
    revs.sort_unstable();
    (started.elapsed(), revs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_watcher_does_not_slow_writes_and_is_caught_up_from_history_or_canceled() {
    let dir = tempfile::tempdir().unwrap();
    let config = WatchConfig {
        buffered_events: 64,
        buffered_bytes: 1 << 20,
        ..WatchConfig::default()
    };
    let node = single_node(dir.path(), config).await;
    let (baseline, _) = timed_puts(&node, "warm/", 1000).await;
    // Two watchers nobody reads while the writes run.
    let mut slow = node.watch(WatchRequest::prefix("s/")).unwrap();
    let mut doomed = node.watch(WatchRequest::prefix("s/")).unwrap();
    let (with_slow, revs) = timed_puts(&node, "s/", 1000).await;
    println!("1000 puts: {baseline:?} without watchers, {with_slow:?} with two stuck watchers");
    assert!(
        with_slow < baseline * 3 + Duration::from_secs(2),
        "stuck watchers slowed writes: {with_slow:?} vs {baseline:?}"
    );
    assert_eq!(
        node.watch_counts().unsynced,
        2,
        "both fell behind and wait for replay"
    );

    // Caught up from the history: every revision once, in order.
    let caught_up = take_events(&mut slow, revs.len()).await;
    let seen: Vec<i64> = caught_up.iter().map(|e| e.kv.mod_revision).collect();
    assert_eq!(seen, revs);
    let live = node.put("s/live", "v").await.unwrap().header.revision;
    assert_eq!(take_events(&mut slow, 1).await[0].kv.mod_revision, live);
    assert_eq!(node.watch_counts().unsynced, 1, "the slow one is synced again");

    // Compaction overtakes the other one: canceled with the reason.
    node.compact(live).await.unwrap();
    let mut last = 0;
    let canceled = loop {
        let r = next_response(&mut doomed).await;
        if r.canceled {
            break r;
        }
        for e in &r.events {
            assert!(e.kv.mod_revision > last);
            last = e.kv.mod_revision;
        }
    };
    assert_eq!(canceled.compact_revision, live);
    assert_eq!(
        canceled.cancel_reason,
        "mvcc: required revision has been compacted"
    );
    assert!(last < revs[revs.len() - 1], "it was behind");
    assert_eq!(node.watch_counts().watchers, 1);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_watchers_on_one_node_each_get_their_own_events() {
    let dir = tempfile::tempdir().unwrap();
    let node = single_node(dir.path(), WatchConfig::default()).await;
    let (baseline, _) = timed_puts(&node, "warm/", 500).await;
    let mut embedded: Vec<WatchStream> = (0..1000)
        .map(|i| node.watch(WatchRequest::key(format!("w/{i:04}"))).unwrap())
        .collect();
    // And a thousand more on one gRPC stream, as an etcd client multiplexes them.
    let mut stream = RawStream::open(&node.client_urls()[0]).await;
    for i in 0..1000 {
        stream
            .create(WatchRequest::key(format!("g/{i:04}")).with_watch_id(i + 1))
            .await;
    }
    for _ in 0..1000 {
        assert!(stream.recv().await.created);
    }
    assert_eq!(node.watch_counts().watchers, 2000);

    // Unwatched writes at full speed meanwhile.
    let (unwatched, _) = timed_puts(&node, "other/", 500).await;
    println!("500 puts: {baseline:?} without watchers, {unwatched:?} with 2000 watchers on other keys");
    let mut revision_of = BTreeMap::new();
    for prefix in ["w", "g"] {
        for chunk in 0..10 {
            let success = (chunk * 100..chunk * 100 + 100)
                .map(|i| RequestOp::Put(PutRequest::new(format!("{prefix}/{i:04}"), format!("{i}"))))
                .collect();
            let txn = node
                .txn(TxnRequest {
                    success,
                    ..TxnRequest::default()
                })
                .await
                .unwrap();
            revision_of.insert((prefix, chunk), txn.header.revision);
        }
    }
    for (i, watcher) in embedded.iter_mut().enumerate() {
        let events = take_events(watcher, 1).await;
        assert_eq!(events[0].kv.key, format!("w/{i:04}").into_bytes());
        assert_eq!(events[0].kv.mod_revision, revision_of[&("w", i / 100)]);
    }
    let mut got = BTreeMap::new();
    while got.len() < 1000 {
        let r = stream.recv().await;
        assert_eq!(r.events.len(), 1, "{r:?}");
        assert!(
            got.insert(r.watch_id, r.events[0].clone()).is_none(),
            "one event each"
        );
    }
    for (id, event) in got {
        let i = (id - 1) as usize;
        let kv = event.kv.unwrap();
        assert_eq!(kv.key, format!("g/{i:04}").into_bytes());
        assert_eq!(kv.mod_revision, revision_of[&("g", i / 100)]);
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_watch_resumes_on_another_node_when_the_leader_stops_without_gap_or_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = support::start_cluster(3, dir.path()).await;
    let leader_id = support::wait_for_agreed_leader(&nodes, WAIT).await;
    let leader = nodes.iter().find(|n| n.id() == leader_id).unwrap().clone();
    let survivors: Vec<Node> = nodes.iter().filter(|n| n.id() != leader_id).cloned().collect();
    // The leader first: the watch starts there.
    let mut urls = leader.client_urls().to_vec();
    urls.extend(survivors.iter().flat_map(|n| n.client_urls().to_vec()));
    let client = raftkv_client::Client::connect(urls).await.unwrap();
    let mut watcher = client.watch(WatchRequest::prefix("r/")).await.unwrap();
    let start = watcher.created_revision() + 1;

    let writer = survivors[0].clone();
    let writes = tokio::spawn(async move {
        for i in 0..60 {
            // Writes during the election may fail or have unknown outcomes: the check
            // below compares with the history, not with this list.
            let _ = tokio::time::timeout(WAIT, writer.put(format!("r/{i:02}"), format!("{i}"))).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let mut seen: Vec<Event> = Vec::new();
    while seen.len() < 20 {
        let r = tokio::time::timeout(WAIT, watcher.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.extend(r.events);
    }
    leader.shutdown().await;
    writes.await.unwrap();
    let last = survivors[0]
        .range(RangeRequest::prefix("r/"))
        .await
        .unwrap()
        .kvs
        .iter()
        .map(|kv| kv.mod_revision)
        .max()
        .unwrap();
    while seen.last().map(|e| e.kv.mod_revision) != Some(last) {
        let r = tokio::time::timeout(WAIT, watcher.next())
            .await
            .expect("the watch resumed")
            .unwrap()
            .unwrap();
        assert!(!r.canceled, "{r:?}");
        if !r.events.is_empty() {
            assert_ne!(
                r.header.member_id, leader_id,
                "served by a survivor after the stop"
            );
        }
        seen.extend(r.events);
    }
    // Exactly the history: replayed from a survivor, event for event.
    let mut replay = survivors[1]
        .watch(WatchRequest::prefix("r/").with_start_revision(start))
        .unwrap();
    let history = take_events(&mut replay, seen.len()).await;
    assert_eq!(summary(&seen), summary(&history));
    let revisions: Vec<i64> = seen.iter().map(|e| e.kv.mod_revision).collect();
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "a repeat: {revisions:?}"
    );
    for node in &survivors {
        node.shutdown().await;
    }
}

/// The events of the next response of a client watcher (which must not be canceled).
pub(crate) async fn client_events(watcher: &mut raftkv_client::Watcher) -> Vec<Event> {
    let r = tokio::time::timeout(WAIT, watcher.next())
        .await
        .expect("the watch went on")
        .unwrap()
        .unwrap();
    assert!(!r.canceled, "{r:?}");
    r.events
}

/// With real processes: a watcher started at revision R after N
/// writes gets exactly the events R..N, then the live ones, in order, across a leader
/// change (the leader it watches on is SIGKILLed mid-stream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_past_revision_survives_kill_9_of_the_leader_in_a_process_cluster() {
    use support::process::ProcessCluster;
    let mut cluster = ProcessCluster::start(3, &[]);
    let leader = cluster.agreed_leader(WAIT).await;
    // The leader first, so the watch stream is on the node that dies.
    let mut urls = vec![cluster.url(leader)];
    urls.extend(
        cluster
            .client_urls()
            .into_iter()
            .filter(|u| *u != cluster.url(leader)),
    );
    let client = raftkv_client::Client::connect(urls).await.unwrap();
    let mut revs = Vec::new();
    for i in 0..20 {
        revs.push(
            client
                .put(format!("w/{i:03}"), "before")
                .await
                .unwrap()
                .header
                .revision,
        );
    }
    let start = revs[5];
    let mut watcher = client
        .watch(WatchRequest::prefix("w/").with_start_revision(start))
        .await
        .unwrap();
    let mut seen: Vec<Event> = Vec::new();
    while seen.len() < revs.len() - 5 {
        seen.extend(client_events(&mut watcher).await);
    }
    let writer = client.clone();
    let writes = tokio::spawn(async move {
        for i in 20..80 {
            // During the election some writes fail or end unknown: the check is against
            // the history, not this list.
            let _ = writer.put(format!("w/{i:03}"), "after").await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    cluster.kill(leader);
    writes.await.unwrap();
    let last = client
        .range(RangeRequest::prefix("w/"))
        .await
        .unwrap()
        .kvs
        .iter()
        .map(|kv| kv.mod_revision)
        .max()
        .unwrap();
    while seen.last().map(|e| e.kv.mod_revision) != Some(last) {
        seen.extend(client_events(&mut watcher).await);
    }
    let revisions: Vec<i64> = seen.iter().map(|e| e.kv.mod_revision).collect();
    assert_eq!(revisions, (start..=last).collect::<Vec<_>>(), "a gap or a repeat");
    assert!(seen[..15].iter().all(|e| e.kv.value == b"before"));
    assert!(seen[15..].iter().all(|e| e.kv.value == b"after"));
}
