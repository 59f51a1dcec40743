//! Leader election of a worker pool, as etcd users build it: every worker campaigns on
//! one election under a lease it keeps alive; the elected one does the pool's singleton
//! work, and fences each write with its leadership (a txn comparing its leader key's
//! create revision), so a leader that was paused past its lease and wakes up believing
//! it still leads cannot overwrite its successor's work.
//!
//! `cargo run --example leader_election` runs three workers, one on each member of an
//! embedded three-node cluster (`raftkv::testing::TestCluster`): the first leader
//! writes, is paused (stops renewing) until a second takes over, wakes and is fenced
//! out; the second resigns and the third takes over. Exits 0 when all of that held.

use std::time::Duration;

use raftkv::testing::TestCluster;
use raftkv::{LeaderKey, Node, PutRequest, RequestOp, TxnRequest};
use tokio::sync::mpsc;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const ELECTION: &str = "elections/scheduler";
const TTL_SECONDS: i64 = 2;
const WAIT: Duration = Duration::from_secs(20);

/// One worker of the pool: its member, its lease and what keeps it alive.
struct Worker {
    name: String,
    node: Node,
    lease: i64,
    keep_alive: tokio::task::JoinHandle<()>,
}

impl Worker {
    async fn start(name: String, node: Node) -> Res<Self> {
        let lease = node.lease_grant(0, TTL_SECONDS).await?.id;
        let renewing = node.clone();
        let keep_alive = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(TTL_SECONDS as u64 * 1000 / 3));
            loop {
                tick.tick().await;
                let _ = renewing.lease_keep_alive(lease).await;
            }
        });
        Ok(Self {
            name,
            node,
            lease,
            keep_alive,
        })
    }

    /// The singleton work: record who assigned the jobs, fenced by leadership.
    /// `Ok(false)` when the fence refused the write (this worker no longer leads).
    async fn assign_jobs(&self, leader: &LeaderKey, round: u32) -> Res<bool> {
        let fenced = TxnRequest {
            compare: vec![leader.fence()],
            success: vec![RequestOp::Put(PutRequest::new(
                "jobs/assigned-by",
                format!("{} (round {round})", self.name),
            ))],
            failure: vec![],
        };
        Ok(self.node.txn(fenced).await?.succeeded)
    }
}

/// The next worker to win, in the order the wins happen.
async fn next_leader(won: &mut mpsc::UnboundedReceiver<(usize, LeaderKey)>) -> Res<(usize, LeaderKey)> {
    let next = tokio::time::timeout(WAIT, won.recv()).await.ok().flatten();
    Ok(next.ok_or("no worker was elected in time")?)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Res<()> {
    let cluster = TestCluster::start(3).await?;
    cluster.wait_for_leader(WAIT).await?;
    let mut workers = Vec::new();
    for node in cluster.nodes() {
        workers.push(Worker::start(format!("worker-{}", node.id()), node.clone()).await?);
    }

    // Everyone campaigns; each win is reported here, in the order they happen.
    let (won_tx, mut won) = mpsc::unbounded_channel::<(usize, LeaderKey)>();
    for (index, worker) in workers.iter().enumerate() {
        let (node, lease, name, won_tx) = (
            worker.node.clone(),
            worker.lease,
            worker.name.clone(),
            won_tx.clone(),
        );
        tokio::spawn(async move {
            match node.campaign(ELECTION, lease, name.clone()).await {
                Ok((_, key)) => {
                    let _ = won_tx.send((index, key));
                }
                Err(e) => println!("{name}: campaign ended: {e}"),
            }
        });
    }
    // The first leader works.
    let (first, first_key) = next_leader(&mut won).await?;
    println!("{} leads", workers[first].name);
    if !workers[first].assign_jobs(&first_key, 1).await? {
        return Err("the leader's fenced write was refused".into());
    }

    // It is paused past its lease (say, a long GC pause): it stops renewing, the lease
    // expires, its leader key goes, and the next campaigner in line takes over.
    workers[first].keep_alive.abort();
    let (second, second_key) = next_leader(&mut won).await?;
    println!(
        "{} was paused; {} leads",
        workers[first].name, workers[second].name
    );
    if !workers[second].assign_jobs(&second_key, 2).await? {
        return Err("the new leader's fenced write was refused".into());
    }

    // The paused worker wakes believing it still leads: its fenced write is refused.
    if workers[first].assign_jobs(&first_key, 3).await? {
        return Err("a deposed leader's write went through the fence".into());
    }
    println!("{} woke up and was fenced out", workers[first].name);

    // The second leader hands over cleanly.
    workers[second].node.resign(&second_key).await?;
    let (third, third_key) = next_leader(&mut won).await?;
    if third == first || third == second {
        return Err("leadership went back to a worker that gave it up".into());
    }
    println!("{} resigned; {} leads", workers[second].name, workers[third].name);
    if !workers[third].assign_jobs(&third_key, 4).await? {
        return Err("the third leader's fenced write was refused".into());
    }

    let record = workers[0]
        .node
        .get("jobs/assigned-by")
        .await?
        .ok_or("no record")?;
    let expected = format!("{} (round 4)", workers[third].name);
    if record.value != expected.as_bytes() {
        return Err(format!("jobs/assigned-by is {:?}", String::from_utf8_lossy(&record.value)).into());
    }
    println!("jobs/assigned-by = {expected:?}, version {}: ok", record.version);
    for worker in &workers {
        worker.keep_alive.abort();
        let _ = worker.node.lease_revoke(worker.lease).await;
    }
    drop(workers);
    cluster.shutdown().await;
    Ok(())
}
