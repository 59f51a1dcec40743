//! A distributed lock around a critical section, as etcd users build it: workers on
//! different members take the lock `locks/counter` under their own leases, read a
//! counter, and write it back incremented, each write fenced with the lock (a txn
//! comparing the lock key's create revision) so that a holder whose lease ran out can
//! never write. A holder that dies without unlocking holds the lock only until its lease
//! expires (here: revoked, as a clean shutdown would).
//!
//! `cargo run --example distributed_lock` runs six workers, two on each member of an
//! embedded three-node cluster (`raftkv::testing::TestCluster`), five increments each;
//! exits 0 when the counter is exactly 30, no two workers were ever inside the section
//! at once, and a lock abandoned by its holder was taken over.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use raftkv::testing::TestCluster;
use raftkv::{Node, PutRequest, RequestOp, TxnRequest};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const LOCK: &str = "locks/counter";
const COUNTER: &str = "counter";
const WORKERS: usize = 6;
const INCREMENTS: usize = 5;
const WAIT: Duration = Duration::from_secs(30);

/// One worker: `INCREMENTS` times, lock, read, fenced write, unlock. `inside` counts the
/// workers in the critical section (a lock worth the name keeps it at most 1).
async fn worker(name: String, node: Node, inside: Arc<AtomicUsize>) -> Res<()> {
    let lease = node.lease_grant(0, 10).await?.id;
    for _ in 0..INCREMENTS {
        let lock = tokio::time::timeout(WAIT, node.lock(LOCK, lease)).await??;
        if inside.fetch_add(1, Ordering::SeqCst) != 0 {
            return Err(format!("{name} entered the critical section while another was in it").into());
        }
        let current = match node.get(COUNTER).await? {
            Some(kv) => String::from_utf8(kv.value)?.parse::<u64>()?,
            None => 0,
        };
        let write = TxnRequest {
            compare: vec![lock.fence()],
            success: vec![RequestOp::Put(PutRequest::new(
                COUNTER,
                (current + 1).to_string(),
            ))],
            failure: vec![],
        };
        let fenced = node.txn(write).await?.succeeded;
        inside.fetch_sub(1, Ordering::SeqCst);
        if !fenced {
            return Err(format!("{name}'s fenced write was refused while it held the lock").into());
        }
        node.unlock(lock.key).await?;
    }
    node.lease_revoke(lease).await?;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Res<()> {
    let cluster = TestCluster::start(3).await?;
    cluster.wait_for_leader(WAIT).await?;
    let nodes: Vec<Node> = cluster.nodes().cloned().collect();

    // A holder that vanishes: it takes the lock and never unlocks.
    let first = &nodes[0];
    let abandoned_lease = first.lease_grant(0, 10).await?.id;
    let abandoned = first.lock(LOCK, abandoned_lease).await?;
    println!("a holder took {LOCK} and went away without unlocking");

    let inside = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..WORKERS {
        let node = nodes[i % nodes.len()].clone();
        let name = format!("worker-{i} on member {}", node.id());
        tasks.push(tokio::spawn(worker(name, node, inside.clone())));
    }
    // Everyone waits behind the abandoned holder until its lease ends (revoked here, as
    // its process would on a clean exit; after a crash it expires after its TTL).
    tokio::time::sleep(Duration::from_millis(500)).await;
    if first.get(COUNTER).await?.is_some() {
        return Err("a worker wrote while the lock was held by someone else".into());
    }
    first.lease_revoke(abandoned_lease).await?;
    println!(
        "its lease ended; the lock key {:?} is gone",
        String::from_utf8_lossy(&abandoned.key)
    );

    for task in tasks {
        task.await??;
    }
    let counter = first.get(COUNTER).await?.ok_or("no counter")?;
    let value: usize = String::from_utf8(counter.value)?.parse()?;
    if value != WORKERS * INCREMENTS {
        return Err(format!("counter is {value}, not {}", WORKERS * INCREMENTS).into());
    }
    println!("{WORKERS} workers x {INCREMENTS} locked increments: counter = {value}: ok");
    drop(nodes);
    cluster.shutdown().await;
    Ok(())
}
