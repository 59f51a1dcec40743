//! Commit latency of an embedded single-node raftkv (every put is a Raft entry synced to
//! disk before it is acknowledged), and the cost of a watermark advance against a mutex.
//!
//! `cargo bench --bench commit_latency` (the three-node and ablation benchmarks come with
//! the cluster and performance work). `cargo bench --bench commit_latency -- --test` runs
//! each benchmark once, as a smoke test.

#![allow(clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use raftkv::{Node, Watermark};

fn single_node_put(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
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
    let mut group = c.benchmark_group("single_node_put");
    group.sample_size(50).measurement_time(Duration::from_secs(5));
    for size in [64usize, 1024, 16 * 1024] {
        let value = vec![0x5au8; size];
        let counter = AtomicU64::new(0);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &value, |b, value| {
            b.to_async(&rt).iter(|| {
                let key = format!("bench/{}", counter.fetch_add(1, Ordering::Relaxed) % 10_000);
                let node = node.clone();
                let value = value.clone();
                async move { node.put(key, value).await.expect("put") }
            });
        });
    }
    group.finish();
    rt.block_on(node.shutdown());
}

fn watermark_advance(c: &mut Criterion) {
    let mut group = c.benchmark_group("index_advance_uncontended");
    let mark = Arc::new(Watermark::new(0));
    let next = AtomicU64::new(1);
    group.bench_function("watermark_cas", |b| {
        b.iter(|| mark.advance(next.fetch_add(1, Ordering::Relaxed)));
    });
    let mutex = std::sync::Mutex::new(0u64);
    group.bench_function("std_mutex", |b| {
        b.iter(|| {
            let to = next.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut v) = mutex.lock()
                && to > *v
            {
                *v = to;
            }
        });
    });
    group.finish();
}

criterion_group!(benches, single_node_put, watermark_advance);
criterion_main!(benches);
