//! The List-Watch cache (`Client::informer`) as Kubernetes programs rely on it: it lists
//! a prefix, follows it through a watch, and when the member it watches dies and the
//! history it would resume from is compacted meanwhile, it lists again; the cache (and
//! the view its add / update / delete handlers built) ends equal to a fresh list.

use crate::support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use raftkv::testing::TestCluster;
use raftkv::*;
use raftkv_client::{Client, ClientOptions};

const WAIT: Duration = Duration::from_secs(30);

/// The state the handlers build: each call must fit what came before it.
#[derive(Default)]
struct Mirror(parking_lot::Mutex<BTreeMap<Vec<u8>, KeyValue>>);

impl InformerHandler for Mirror {
    fn on_add(&self, kv: &KeyValue) {
        let before = self.0.lock().insert(kv.key.clone(), kv.clone());
        assert!(before.is_none(), "add of a key present: {before:?}");
    }
    fn on_update(&self, old: &KeyValue, new: &KeyValue) {
        let before = self.0.lock().insert(new.key.clone(), new.clone());
        assert_eq!(
            before.as_ref(),
            Some(old),
            "update from a value the handler never saw"
        );
    }
    fn on_delete(&self, last: &KeyValue) {
        let before = self.0.lock().remove(&last.key);
        assert_eq!(
            before.as_ref(),
            Some(last),
            "delete of a key the handler never saw"
        );
    }
}

async fn fresh_list(node: &Node) -> (BTreeMap<Vec<u8>, KeyValue>, Revision) {
    let listed = node.range(RangeRequest::prefix("svc/")).await.unwrap();
    let map = listed.kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
    (map, listed.header.revision)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_survives_its_member_dying_and_the_history_compacted_past_it() {
    let _turn = support::ClusterTurn::take();
    let mut cluster = TestCluster::start(3).await.unwrap();
    let leader_id = cluster.wait_for_leader(WAIT).await.unwrap();
    let leader = cluster.node(leader_id).unwrap().clone();
    for i in 0..30 {
        leader
            .put(format!("svc/{i:02}"), format!("v1-{i}"))
            .await
            .unwrap();
    }
    leader.put("other/x", "outside the prefix").await.unwrap();

    // The informer's client prefers one follower (its list and watch go there) and
    // knows one more member to fail over to.
    let watched = cluster.ids().into_iter().find(|id| *id != leader_id).unwrap();
    let other = cluster
        .ids()
        .into_iter()
        .find(|id| *id != leader_id && *id != watched)
        .unwrap();
    let options = ClientOptions {
        request_timeout: Duration::from_secs(3),
        ..ClientOptions::default()
    };
    let watched_url = cluster.client_url(watched).unwrap();
    let client = Client::connect_with([watched_url.clone(), cluster.client_url(other).unwrap()], options)
        .await
        .unwrap();
    assert_eq!(client.preferred_endpoint(), Some(watched_url));
    let mirror = Arc::new(Mirror::default());
    let informer = client.informer("svc/", mirror.clone());
    informer.wait_synced(WAIT).await.unwrap();
    let (list, _) = fresh_list(&leader).await;
    assert_eq!(informer.snapshot(), list);

    // Live changes arrive through the watch.
    leader.put("svc/00", "v2").await.unwrap();
    leader.delete("svc/01").await.unwrap();
    let added = leader.put("svc/new", "v1").await.unwrap();
    informer
        .wait_for_revision(added.header.revision, WAIT)
        .await
        .unwrap();
    let (list, _) = fresh_list(&leader).await;
    assert_eq!(informer.snapshot(), list);
    assert_eq!(informer.stats().relists_after_compaction, 0);

    // The watched member is cut off (its watch stays open but hears nothing), keys
    // change and the history is compacted past every revision the informer could
    // resume from; then the member dies, and the watch resumes on the other member.
    let majority: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != watched).collect();
    cluster.partition(&[&[watched], &majority]).unwrap();
    for i in 2..10 {
        leader.put(format!("svc/{i:02}"), "v3").await.unwrap();
    }
    for i in 10..15 {
        leader.delete(format!("svc/{i:02}")).await.unwrap();
    }
    leader.put("svc/newer", "v1").await.unwrap();
    let last = leader.put("other/y", "outside").await.unwrap();
    leader.compact(last.header.revision).await.unwrap();
    cluster.kill(watched).await.unwrap();

    // The resume is refused as compacted, so the informer lists again.
    informer
        .wait_for_revision(last.header.revision, WAIT)
        .await
        .unwrap();
    let (list, _) = fresh_list(&leader).await;
    assert_eq!(informer.snapshot(), list, "the cache differs from a fresh list");
    assert_eq!(
        *mirror.0.lock(),
        list,
        "the handlers' view differs from a fresh list"
    );
    let stats = informer.stats();
    assert!(stats.relists_after_compaction >= 1, "{stats:?}");
    println!("informer: {stats:?}");
    drop((informer, client, leader));
    cluster.heal();
    cluster.shutdown().await;
}
