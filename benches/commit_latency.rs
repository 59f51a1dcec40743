//! Commit latency, measured with criterion (HTML report under `target/criterion/`) and,
//! since criterion reports means, printed as p50/p99/p99.9 from an HDR histogram of every
//! timed operation.
//!
//! - `single_node_put/<index variant>/<value size>`: an embedded single-node `Node`; every
//!   put is a Raft entry synced to disk before it is acknowledged. The index variant is the
//!   one compiled in: run with `--features watermark-std-mutex` or
//!   `--features watermark-parking-lot` to put the commit/applied index of the REAL node
//!   behind a lock, and compare.
//! - `three_node/*`: three nodes in one process, separate data dirs, loopback gRPC: put
//!   through the leader, through a follower (forwarded), linearizable reads on both.
//! - `index_advance/<variant>/<threads>`: the lock-free `Watermark` against `Mutex<u64>`
//!   and `parking_lot::Mutex<u64>`, advanced by 2 or 4 writer threads while a reader polls
//!   and waits (the machine has 2 cores: more threads measure the scheduler).
//! - `proposer/<batching_on|batching_off|direct>/<writers>`: put throughput with 1, 16,
//!   64 concurrent writers: group commit, the proposer with one request per entry, and no
//!   proposer at all (each caller calls openraft's `client_write`).
//!
//! `cargo bench --bench commit_latency` runs them all (a few minutes);
//! `cargo test --benches` runs each once as a smoke test (CI does).

#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hdrhistogram::Histogram;
use raftkv::{IndexCell, Node, ProposerConfig, Watermark};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Latencies of every timed operation of one benchmark, in microseconds (or nanoseconds
/// for the index ablation, whose operations take nanoseconds).
struct Latencies {
    histogram: Mutex<Histogram<u64>>,
    nanos: bool,
}

impl Latencies {
    fn new() -> Self {
        Self {
            histogram: Mutex::new(Histogram::new(3).expect("histogram")),
            nanos: false,
        }
    }

    fn in_nanos() -> Self {
        Self {
            nanos: true,
            ..Self::new()
        }
    }

    fn record(&self, d: Duration) {
        let v = if self.nanos { d.as_nanos() } else { d.as_micros() };
        let _ = self.histogram.lock().unwrap().record(v.max(1) as u64);
    }

    fn print(&self, name: &str) {
        let h = self.histogram.lock().unwrap();
        if h.is_empty() {
            return;
        }
        let unit = if self.nanos { "ns" } else { "us" };
        println!(
            "{name}: n={} p50={}{unit} p99={}{unit} p99.9={}{unit} max={}{unit}",
            h.len(),
            h.value_at_quantile(0.50),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        );
    }
}

fn single_node_put(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let node = rt.block_on(async {
        let node = Node::builder()
            .id(1)
            .data_dir(dir.path())
            .start()
            .await
            .expect("start");
        node.wait_for_leader(Duration::from_secs(10))
            .await
            .expect("leader");
        node
    });
    let mut group = c.benchmark_group(format!("single_node_put/{}", IndexCell::VARIANT));
    group.sample_size(50).measurement_time(Duration::from_secs(5));
    for size in [64usize, 1024, 16 * 1024] {
        let value = vec![0x5au8; size];
        let counter = AtomicU64::new(0);
        let latencies = Latencies::new();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &value, |b, value| {
            b.to_async(&rt).iter_custom(|iters| {
                let node = node.clone();
                let value = value.clone();
                let (counter, latencies) = (&counter, &latencies);
                async move {
                    let started = Instant::now();
                    for _ in 0..iters {
                        let key = format!("bench/{}", counter.fetch_add(1, Ordering::Relaxed) % 10_000);
                        let t = Instant::now();
                        node.put(key, value.clone()).await.expect("put");
                        latencies.record(t.elapsed());
                    }
                    started.elapsed()
                }
            });
        });
        latencies.print(&format!("single_node_put/{}/{size}", IndexCell::VARIANT));
    }
    group.finish();
    rt.block_on(node.shutdown());
}

fn three_node(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let (leader, follower, nodes) = rt.block_on(async {
        let nodes = support::start_cluster(3, dir.path()).await;
        let leader_id = support::wait_for_agreed_leader(&nodes, Duration::from_secs(30)).await;
        let leader = nodes.iter().find(|n| n.id() == leader_id).unwrap().clone();
        let follower = nodes.iter().find(|n| n.id() != leader_id).unwrap().clone();
        // Warm the channels and the key space.
        for i in 0..100 {
            leader.put(format!("k/{i}"), "v").await.unwrap();
        }
        (leader, follower, nodes)
    });
    let mut group = c.benchmark_group("three_node");
    group.sample_size(30).measurement_time(Duration::from_secs(5));
    let value = vec![0x5au8; 256];
    let cases: [(&str, &Node, bool); 4] = [
        ("put_via_leader", &leader, true),
        ("put_via_follower", &follower, true),
        ("linearizable_get_on_leader", &leader, false),
        ("linearizable_get_on_follower", &follower, false),
    ];
    for (name, node, is_put) in cases {
        let latencies = Latencies::new();
        let counter = AtomicU64::new(0);
        group.bench_function(name, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let node = node.clone();
                let value = value.clone();
                let (counter, latencies) = (&counter, &latencies);
                async move {
                    let started = Instant::now();
                    for _ in 0..iters {
                        let key = format!("k/{}", counter.fetch_add(1, Ordering::Relaxed) % 100);
                        let t = Instant::now();
                        if is_put {
                            node.put(key, value.clone()).await.expect("put");
                        } else {
                            node.get(key).await.expect("get");
                        }
                        latencies.record(t.elapsed());
                    }
                    started.elapsed()
                }
            });
        });
        latencies.print(&format!("three_node/{name}"));
    }
    group.finish();
    rt.block_on(async {
        for n in &nodes {
            n.shutdown().await;
        }
    });
}

/// The three index implementations, behind one interface for the ablation.
trait Index: Send + Sync + 'static {
    fn advance(&self, to: u64);
    fn get(&self) -> u64;
}

impl Index for Watermark {
    fn advance(&self, to: u64) {
        Watermark::advance(self, to);
    }
    fn get(&self) -> u64 {
        Watermark::get(self)
    }
}

struct StdMutexIndex(std::sync::Mutex<u64>);

impl Index for StdMutexIndex {
    fn advance(&self, to: u64) {
        let mut v = self.0.lock().unwrap();
        if to > *v {
            *v = to;
        }
    }
    fn get(&self) -> u64 {
        *self.0.lock().unwrap()
    }
}

struct ParkingLotIndex(parking_lot::Mutex<u64>);

impl Index for ParkingLotIndex {
    fn advance(&self, to: u64) {
        let mut v = self.0.lock();
        if to > *v {
            *v = to;
        }
    }
    fn get(&self) -> u64 {
        *self.0.lock()
    }
}

/// Time `iters` advances on this thread while `threads - 1` other writers advance the same
/// index and one reader polls and waits for the values it sees to move.
fn contended_advances<I: Index>(
    index: Arc<I>,
    threads: usize,
    iters: u64,
    latencies: &Latencies,
) -> Duration {
    let next = Arc::new(AtomicU64::new(index.get() + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let mut helpers = Vec::new();
    for _ in 1..threads {
        let (index, next, stop) = (index.clone(), next.clone(), stop.clone());
        helpers.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                index.advance(next.fetch_add(1, Ordering::Relaxed));
            }
        }));
    }
    {
        let (index, stop) = (index.clone(), stop.clone());
        helpers.push(std::thread::spawn(move || {
            let mut seen = 0;
            while !stop.load(Ordering::Relaxed) {
                // Wait (by polling) until the index moves past what was seen.
                let now = index.get();
                if now > seen {
                    seen = now;
                } else {
                    std::hint::spin_loop();
                }
            }
        }));
    }
    let started = Instant::now();
    for _ in 0..iters {
        let to = next.fetch_add(1, Ordering::Relaxed);
        let t = Instant::now();
        index.advance(to);
        latencies.record(t.elapsed());
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for h in helpers {
        h.join().unwrap();
    }
    elapsed
}

/// One variant of the index ablation: run `iters` contended advances, record each.
type AdvanceRun = Box<dyn Fn(u64, &Latencies) -> Duration>;

fn index_advance(c: &mut Criterion) {
    let mut group = c.benchmark_group("index_advance");
    group.sample_size(30).measurement_time(Duration::from_secs(3));
    for threads in [2usize, 4] {
        let variants: [(&str, AdvanceRun); 3] = [
            (
                "watermark_cas",
                Box::new(move |iters, l| contended_advances(Arc::new(Watermark::new(0)), threads, iters, l)),
            ),
            (
                "std_mutex",
                Box::new(move |iters, l| {
                    contended_advances(
                        Arc::new(StdMutexIndex(std::sync::Mutex::new(0))),
                        threads,
                        iters,
                        l,
                    )
                }),
            ),
            (
                "parking_lot_mutex",
                Box::new(move |iters, l| {
                    contended_advances(
                        Arc::new(ParkingLotIndex(parking_lot::Mutex::new(0))),
                        threads,
                        iters,
                        l,
                    )
                }),
            ),
        ];
        for (name, run) in variants {
            let latencies = Latencies::in_nanos();
            group.bench_function(BenchmarkId::new(name, threads), |b| {
                b.iter_custom(|iters| run(iters, &latencies));
            });
            latencies.print(&format!("index_advance/{name}/{threads}"));
        }
    }
    group.finish();
}

fn proposer(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("proposer");
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    let variants = [
        ("batching_on", ProposerConfig::default()),
        (
            "batching_off",
            ProposerConfig {
                batching: false,
                ..ProposerConfig::default()
            },
        ),
        (
            "direct",
            ProposerConfig {
                mode: raftkv::ProposalMode::Direct,
                ..ProposerConfig::default()
            },
        ),
    ];
    for (label, config) in variants {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = rt.block_on(async {
            let node = Node::builder()
                .id(1)
                .data_dir(dir.path())
                .proposer(config)
                .start()
                .await
                .expect("start");
            node.wait_for_leader(Duration::from_secs(10))
                .await
                .expect("leader");
            node
        });
        for writers in [1u64, 16, 64] {
            group.throughput(Throughput::Elements(writers));
            group.bench_function(BenchmarkId::new(label, writers), |b| {
                // One iteration = one put by each of `writers` concurrent writers.
                b.to_async(&rt).iter_custom(|iters| {
                    let node = node.clone();
                    async move {
                        let started = Instant::now();
                        let tasks: Vec<_> = (0..writers)
                            .map(|w| {
                                let node = node.clone();
                                tokio::spawn(async move {
                                    for i in 0..iters {
                                        node.put(format!("p/{w}/{}", i % 1000), "v").await.expect("put");
                                    }
                                })
                            })
                            .collect();
                        for t in tasks {
                            t.await.unwrap();
                        }
                        started.elapsed()
                    }
                });
            });
        }
        let stats = node.storage_stats();
        println!(
            "proposer/{label}: {} requests in {} Raft entries, {} log syncs",
            stats.proposed_requests, stats.proposals, stats.log_syncs
        );
        rt.block_on(node.shutdown());
    }
    group.finish();
}

criterion_group!(benches, single_node_put, three_node, index_advance, proposer);
criterion_main!(benches);
