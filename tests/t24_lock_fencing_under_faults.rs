//! The Lock service under faults: three holders compete for one lock through
//! raftkv-client against a three-node cluster of real processes while the leader is
//! SIGKILLed and restarted, and each holder, on its second acquisition, "pauses" (stops
//! renewing its lease and sleeps past the TTL while it believes it holds the lock, as a
//! GC pause or a SIGSTOP would). Every write a holder makes under the lock is fenced: a
//! txn comparing the lock key's create revision. Checked on the writes that landed, in
//! revision order: each acquisition's writes form one contiguous block (fenced writes of
//! two holders never interleave), every write acknowledged as applied is there, none
//! acknowledged as refused is, and a paused holder's writes after its lease expired were
//! refused whenever someone else had taken the lock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use raftkv_client::{Client, ClientOptions, PutRequest, RangeRequest, RequestOp, TxnRequest};
use support::faults::Faults;
use support::process::ProcessCluster;
use support::scenario::{FAILOVER_BOUND, Scenario, summary};
use support::workload::Rng;

const HOLDERS: u64 = 3;
const WRITES_PER_HOLD: u64 = 4;
const LEASE_TTL: i64 = 2;

/// One fenced write and what its answer said.
#[derive(Clone, Debug)]
struct Attempt {
    key: Vec<u8>,
    /// `Some(true)`: applied; `Some(false)`: the fence refused it; `None`: unknown.
    applied: Option<bool>,
    /// Made after the holder's pause (its lease may have expired meanwhile).
    after_pause: bool,
}

async fn holder(
    h: u64,
    client: Client,
    stop: Arc<AtomicBool>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    seed: u64,
) -> (u64, u64) {
    let mut rng = Rng::new(seed ^ (h + 1).wrapping_mul(0x9e37_79b9));
    let (mut acquisitions, mut pauses) = (0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        let Ok(grant) = client.lease_grant(0, LEASE_TTL).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let keeper = client.keep_alive(grant.id);
        let locked = tokio::time::timeout(Duration::from_secs(15), client.lock("fault-lock", grant.id)).await;
        let Ok(Ok(lock)) = locked else {
            drop(keeper);
            let _ = client.lease_revoke(grant.id).await;
            continue;
        };
        acquisitions += 1;
        let mut keeper = Some(keeper);
        let mut after_pause = false;
        for n in 0..WRITES_PER_HOLD {
            if acquisitions == 2 && n == 1 {
                // The pause: no renewals, and asleep past the lease's TTL.
                keeper = None;
                pauses += 1;
                after_pause = true;
                tokio::time::sleep(Duration::from_secs(LEASE_TTL as u64 + 3)).await;
            }
            let key = format!("fenced/{h}-{acquisitions}-{n}").into_bytes();
            let txn = TxnRequest {
                compare: vec![lock.fence()],
                success: vec![RequestOp::Put(PutRequest::new(key.clone(), "x"))],
                failure: vec![],
            };
            let applied = client.txn(txn).await.ok().map(|r| r.succeeded);
            attempts.lock().push(Attempt {
                key,
                applied,
                after_pause,
            });
            tokio::time::sleep(rng.between(Duration::ZERO, Duration::from_millis(150))).await;
        }
        let _ = client.unlock(lock.key.clone()).await;
        drop(keeper);
        let _ = client.lease_revoke(grant.id).await;
    }
    (acquisitions, pauses)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_lock_writes_never_interleave_under_leader_kills_and_paused_holders() {
    let mut scenario = Scenario::begin("lock_fencing", Duration::from_secs(45));
    let mut cluster = ProcessCluster::start(
        3,
        &["--request-timeout-ms", "3000", "--lease-checkpoint-ms", "1000"],
    );
    let faults = Faults::new(&cluster, scenario.seed);
    cluster.agreed_leader(Duration::from_secs(30)).await;
    let options = ClientOptions {
        request_timeout: Duration::from_secs(5),
        ..ClientOptions::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for h in 0..HOLDERS {
        let client = Client::connect_with(cluster.client_urls(), options.clone())
            .await
            .unwrap();
        tasks.push(tokio::spawn(holder(
            h,
            client,
            stop.clone(),
            attempts.clone(),
            scenario.seed,
        )));
    }

    let mut kills = 0;
    while kills < 2 || scenario.time_left() {
        tokio::time::sleep(
            scenario
                .rng
                .between(Duration::from_secs(3), Duration::from_secs(7)),
        )
        .await;
        let leader = cluster.agreed_leader(FAILOVER_BOUND).await;
        let killed_at = Instant::now();
        cluster.kill(leader);
        faults.count_event();
        kills += 1;
        cluster.agreed_leader(FAILOVER_BOUND * 2).await;
        scenario.failover(killed_at.elapsed());
        cluster.restart(leader);
    }
    cluster.agreed_leader(FAILOVER_BOUND).await;
    // Let every holder finish its current hold (a paused one sleeps TTL + 3 s).
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acquisitions = 0;
    let mut pauses = 0;
    for task in tasks {
        let (a, p) = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .unwrap()
            .unwrap();
        acquisitions += a;
        pauses += p;
    }

    // The writes that landed, in revision order.
    let reader = Client::connect_with(cluster.client_urls(), options)
        .await
        .unwrap();
    let mut landed = reader.range(RangeRequest::prefix("fenced/")).await.unwrap().kvs;
    landed.sort_by_key(|kv| kv.mod_revision);
    let order: Vec<String> = landed
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect();
    let acquisition_of = |key: &str| key.rsplit_once('-').map(|(a, _)| a.to_string()).unwrap();

    // 1. Each acquisition's landed writes are one contiguous block.
    let mut finished: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    for key in &order {
        let acq = acquisition_of(key);
        if current.as_deref() != Some(acq.as_str()) {
            assert!(
                !finished.contains(&acq),
                "fenced writes interleaved: {acq} wrote again after another holder (order: {order:?})"
            );
            if let Some(previous) = current.replace(acq) {
                finished.insert(previous);
            }
        }
    }
    // 2. Applied writes are there; refused ones are not.
    let landed_keys: BTreeSet<Vec<u8>> = landed.iter().map(|kv| kv.key.clone()).collect();
    let attempts = attempts.lock().clone();
    let mut refused_after_pause = 0;
    for attempt in &attempts {
        let name = String::from_utf8_lossy(&attempt.key);
        match attempt.applied {
            Some(true) => assert!(
                landed_keys.contains(&attempt.key),
                "acknowledged write {name} lost"
            ),
            Some(false) => {
                assert!(!landed_keys.contains(&attempt.key), "refused write {name} landed");
                refused_after_pause += u64::from(attempt.after_pause);
            }
            None => {}
        }
    }
    let by_holder: BTreeMap<String, usize> = order.iter().fold(BTreeMap::new(), |mut m, k| {
        *m.entry(acquisition_of(k)).or_default() += 1;
        m
    });
    assert!(
        acquisitions >= HOLDERS,
        "too few acquisitions to test anything: {acquisitions}"
    );
    assert!(pauses > 0, "no holder paused while holding");
    summary(&format!(
        "RELIABILITY lock_fencing seed={} secs={} acquisitions={acquisitions} blocks={} fenced_writes={} \
         landed={} paused_holders={pauses} refused_after_pause={refused_after_pause} leader_kills={kills} \
         interleavings=0 violations=0",
        scenario.seed,
        scenario.elapsed().as_secs(),
        by_holder.len(),
        attempts.len(),
        order.len(),
    ));
}
