//! Service registration and discovery, as etcd users build it: each instance of a
//! service registers `services/api/<instance>` under a lease it keeps alive; clients
//! discover instances with a List-Watch cache of the prefix (an informer) and hear of
//! every arrival, change and departure. An instance that dies stops renewing, its lease
//! expires and its key goes; one that stops cleanly revokes its lease.
//!
//! `cargo run --example service_registration` runs it against an embedded three-node
//! cluster (`raftkv::testing::TestCluster`) and exits 0 when discovery saw what happened.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use raftkv::testing::TestCluster;
use raftkv::{InformerHandler, KeyValue, Node, PutRequest};
use raftkv_client::Client;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const PREFIX: &str = "services/api/";
/// Short, so the example shows an expiry quickly (etcd users pick 10-60 s).
const TTL_SECONDS: i64 = 2;
const WAIT: Duration = Duration::from_secs(20);

/// One registered instance: its key, its lease, and the task that keeps the lease alive.
struct Instance {
    node: Node,
    key: String,
    lease: i64,
    keep_alive: tokio::task::JoinHandle<()>,
}

impl Instance {
    async fn register(node: &Node, name: &str, address: &str) -> Res<Self> {
        let lease = node.lease_grant(0, TTL_SECONDS).await?.id;
        let key = format!("{PREFIX}{name}");
        node.put_with(PutRequest {
            lease,
            ..PutRequest::new(key.clone(), address)
        })
        .await?;
        let renewing = node.clone();
        let keep_alive = tokio::spawn(async move {
            // Renew every third of the TTL, as etcd's clients do.
            let mut tick = tokio::time::interval(Duration::from_millis(TTL_SECONDS as u64 * 1000 / 3));
            loop {
                tick.tick().await;
                if let Err(e) = renewing.lease_keep_alive(lease).await {
                    eprintln!("keep-alive of {lease:x}: {e}");
                }
            }
        });
        Ok(Self {
            node: node.clone(),
            key,
            lease,
            keep_alive,
        })
    }

    /// A crash: nothing renews the lease any more.
    fn crash(self) {
        self.keep_alive.abort();
    }

    /// A clean stop: revoke the lease, which deletes the key at once.
    async fn deregister(self) -> Res<()> {
        self.keep_alive.abort();
        self.node.lease_revoke(self.lease).await?;
        Ok(())
    }
}

/// What discovery heard, in order.
#[derive(Default)]
struct Log(Mutex<Vec<String>>);

impl InformerHandler for Log {
    fn on_add(&self, kv: &KeyValue) {
        self.say(format!(
            "+ {} at {}",
            name(kv),
            String::from_utf8_lossy(&kv.value)
        ));
    }
    fn on_update(&self, _old: &KeyValue, new: &KeyValue) {
        self.say(format!(
            "~ {} moved to {}",
            name(new),
            String::from_utf8_lossy(&new.value)
        ));
    }
    fn on_delete(&self, last: &KeyValue) {
        self.say(format!("- {} gone", name(last)));
    }
}

impl Log {
    fn say(&self, line: String) {
        println!("discovery: {line}");
        self.0.lock().push(line);
    }
}

fn name(kv: &KeyValue) -> String {
    String::from_utf8_lossy(&kv.key[PREFIX.len()..]).into_owned()
}

/// Wait until `check` holds, or fail saying what was awaited.
async fn until(what: &str, mut check: impl FnMut() -> bool) -> Res<()> {
    let deadline = Instant::now() + WAIT;
    while !check() {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Res<()> {
    let cluster = TestCluster::start(3).await?;
    cluster.wait_for_leader(WAIT).await?;
    let nodes: Vec<Node> = cluster.nodes().cloned().collect();

    // Discovery: a client of the cluster (as another process would be) with an informer.
    let client = Client::connect(cluster.client_urls()).await?;
    let log = Arc::new(Log::default());
    let discovery = client.informer(PREFIX, log.clone());
    discovery.wait_synced(WAIT).await?;

    // Three instances register, each through a different member.
    let mut instances = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        instances.push(Instance::register(node, &format!("api-{i}"), &format!("10.0.0.{i}:8080")).await?);
    }
    until("three instances discovered", || discovery.len() == 3).await?;

    // api-0 moves (same lease, new address); api-1 crashes; api-2 stops cleanly.
    let api0 = &instances[0];
    api0.node
        .put_with(PutRequest {
            lease: api0.lease,
            ..PutRequest::new(api0.key.clone(), "10.0.1.0:8080")
        })
        .await?;
    let api2 = instances.pop().ok_or("no instance")?;
    let api1 = instances.pop().ok_or("no instance")?;
    let crashed_at = Instant::now();
    api1.crash();
    api2.deregister().await?;
    until("api-2 deregistered", || {
        discovery.get(b"services/api/api-2").is_none()
    })
    .await?;
    until("api-1's lease expired", || {
        discovery.get(b"services/api/api-1").is_none()
    })
    .await?;
    println!(
        "api-1 disappeared {:?} after it stopped renewing (TTL {TTL_SECONDS} s)",
        crashed_at.elapsed()
    );

    // What discovery holds is what the cluster holds; the handlers heard every step.
    let listed = nodes[0].range(raftkv::RangeRequest::prefix(PREFIX)).await?;
    let expected: BTreeMap<Vec<u8>, KeyValue> =
        listed.kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
    if discovery.snapshot() != expected || expected.len() != 1 {
        return Err(format!(
            "discovery holds {:?}, the cluster {expected:?}",
            discovery.snapshot()
        )
        .into());
    }
    let heard = log.0.lock().clone();
    let wanted = ["+ api-0", "+ api-1", "+ api-2", "~ api-0", "- api-2", "- api-1"];
    for step in wanted {
        if !heard.iter().any(|line| line.starts_with(step)) {
            return Err(format!("discovery never heard {step:?}: {heard:?}").into());
        }
    }
    println!(
        "discovery ends with {} instance(s), as the cluster: ok",
        expected.len()
    );

    for instance in instances {
        instance.deregister().await?;
    }
    drop((discovery, client, nodes));
    cluster.shutdown().await;
    Ok(())
}
