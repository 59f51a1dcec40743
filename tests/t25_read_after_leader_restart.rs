//! Linearizable reads right after the whole cluster restarts see every write acknowledged
//! before it.
//!
//! openraft 0.9 restores a leader that restarts with its own committed vote as leader at
//! once, in the same term: its "first entry of the term" is an old one, and the commit
//! index it loads is whatever was last saved, which is not synced. Without a floor
//! (`raftkv_net::leader_read_index`), a read it served right after the restart could
//! miss writes acknowledged just before the crash: `t18_full_restart`'s history checker
//! caught one. Here each round writes a burst through the leader, SIGKILLs every member
//! at once (the state machine is not synced on apply, so it restarts behind), restarts
//! the old leader first and the followers a moment later (so its replication to them is
//! backing off while reads, which reach them directly, can be confirmed), and reads the
//! last key from the old leader, again and again, until a read is answered.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::time::{Duration, Instant};

use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::{PutRequest, RangeRequest};
use support::process::ProcessCluster;
use support::scenario::SERVER_FLAGS;

const ROUNDS: usize = 6;
const WRITES_PER_ROUND: usize = 30;
const DEADLINE: Duration = Duration::from_secs(30);

async fn client(url: &str) -> Option<KvClient<tonic::transport::Channel>> {
    KvClient::connect(url.to_string()).await.ok()
}

/// The value of `key` by a linearizable read at `url`, retried (errors while the member
/// starts) until [`DEADLINE`].
async fn read_when_serving(url: &str, key: &[u8]) -> Option<Vec<u8>> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(mut kv) = client(url).await {
            let read = kv
                .range(RangeRequest {
                    key: key.to_vec(),
                    ..RangeRequest::default()
                })
                .await;
            if let Ok(response) = read {
                return response.into_inner().kvs.into_iter().next().map(|kv| kv.value);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no read answered at {url} within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_right_after_a_whole_cluster_restart_see_every_acknowledged_write() {
    let mut cluster = ProcessCluster::start(3, SERVER_FLAGS);
    let all = cluster.running();
    for round in 0..ROUNDS {
        let leader = cluster.agreed_leader(DEADLINE).await;
        let url = cluster.url(leader);
        let mut kv = client(&url).await.expect("the leader answers");
        let key = format!("round/{round}").into_bytes();
        for i in 0..WRITES_PER_ROUND {
            kv.put(PutRequest {
                key: key.clone(),
                value: format!("{round}-{i}").into_bytes(),
                ..PutRequest::default()
            })
            .await
            .unwrap_or_else(|e| panic!("round {round}: write {i} failed: {e}"));
        }
        for id in &all {
            cluster.kill(*id);
        }
        cluster.restart(leader);
        let reader = {
            let (url, key) = (url.clone(), key.clone());
            tokio::spawn(async move { read_when_serving(&url, &key).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        for id in all.iter().filter(|id| **id != leader) {
            cluster.restart(*id);
        }
        let seen = reader.await.unwrap();
        let last = format!("{round}-{}", WRITES_PER_ROUND - 1).into_bytes();
        assert_eq!(
            seen.as_deref().map(String::from_utf8_lossy),
            Some(String::from_utf8_lossy(&last)),
            "round {round}: a read at {url} (the old leader, {leader}) right after the restart \
             missed acknowledged writes"
        );
    }
}
