//! Soak, by hand (not in CI): put/delete churn over a bounded key space on a three-node
//! cluster of real processes, with periodic compaction, for 20 minutes by default. Every
//! 30 s it samples each member's RSS and on-disk size; at the end it checks that both
//! level off (sled is known for memory and disk-space growth): the upper quartile of
//! RSS and of disk use over the last third of the run is less than a quarter above the
//! middle third's, and every key holds its last acknowledged value (each key is owned by
//! one client, so that value is known). The upper quartile is the level the sawtooth of
//! compaction and defragmentation reaches: it ignores the few samples taken mid-rewrite
//! (two page caches, two files for a few seconds) and, unlike the median, does not flip
//! between the low and the high plateau when the 60 s compaction cycle splits a third's
//! 30 s samples evenly between them.
//!
//! Run (release build, the numbers in RELIABILITY.md):
//!
//! ```text
//! RAFTKV_SOAK_SECS=1200 cargo test --release --features failpoints --test behaviour t19_soak:: -- --ignored --nocapture
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use raftkv_client::{Client, ClientOptions};
use support::process::ProcessCluster;
use support::workload::Rng;

const CLIENTS: u64 = 8;
const KEYS_PER_CLIENT: u64 = 1_250;
const SAMPLE_EVERY: Duration = Duration::from_secs(30);
const COMPACT_EVERY: Duration = Duration::from_secs(60);

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Defragmentations a member's log reports, and the longest write pause among them
/// (`pause: <Duration as Debug>` in each report line).
fn defrag_summary(log: &str) -> (usize, Duration) {
    let mut count = 0;
    let mut longest = Duration::ZERO;
    for line in log
        .lines()
        .filter(|l| l.contains("defragmented the state database"))
    {
        count += 1;
        let Some(pause) = line.split("pause: ").nth(1).and_then(|p| p.split(' ').next()) else {
            continue;
        };
        let split = pause
            .find(|c: char| c.is_ascii_alphabetic() || c == 'µ')
            .unwrap_or(pause.len());
        let (number, unit) = pause.split_at(split);
        let Ok(number) = number.parse::<f64>() else {
            continue;
        };
        let secs = match unit {
            "s" => number,
            "ms" => number / 1e3,
            "µs" => number / 1e6,
            "ns" => number / 1e9,
            _ => continue,
        };
        longest = longest.max(Duration::from_secs_f64(secs));
    }
    (count, longest)
}

fn disk_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_bytes(&e.path()),
            Ok(m) => {
                use std::os::unix::fs::MetadataExt;
                m.blocks() * 512
            }
            Err(_) => 0,
        })
        .sum()
}

#[derive(Clone, Debug)]
struct Sample {
    at: Duration,
    ops: u64,
    revision: i64,
    rss_mib: Vec<f64>,
    disk_mib: Vec<f64>,
}

/// What one key should hold: the last acknowledged write, unless a later write's outcome
/// is unknown.
#[derive(Clone, Debug)]
enum Expect {
    Value(Option<Vec<u8>>),
    Unsure,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: 20 minutes by hand; see the module docs"]
async fn soak_put_delete_churn_levels_off() {
    let secs: u64 = std::env::var("RAFTKV_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1200);
    let cluster = ProcessCluster::start(3, &[]);
    cluster.agreed_leader(Duration::from_secs(30)).await;
    let options = ClientOptions {
        request_timeout: Duration::from_secs(10),
        ..ClientOptions::default()
    };
    let client = Client::connect_with(cluster.client_urls(), options)
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let expected: Arc<Mutex<BTreeMap<Vec<u8>, Expect>>> = Arc::default();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (client, stop, ops, errors, expected) = (
            client.clone(),
            stop.clone(),
            ops.clone(),
            errors.clone(),
            expected.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(c + 1);
            let mut seq = 0u64;
            // Bounded in time (the deadline) and count (2 billion ops is days).
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && seq < 2_000_000_000 {
                seq += 1;
                let key = format!("soak/{c}/{:05}", rng.below(KEYS_PER_CLIENT)).into_bytes();
                let (outcome, value) = if rng.below(100) < 70 {
                    let len = 256 + rng.below(768) as usize;
                    let mut value = format!("{c}-{seq}-").into_bytes();
                    value.resize(len, b'x');
                    (
                        client.put(key.clone(), value.clone()).await.map(|_| ()),
                        Some(value),
                    )
                } else {
                    (client.delete(key.clone()).await.map(|_| ()), None)
                };
                ops.fetch_add(1, Ordering::Relaxed);
                let expect = match outcome {
                    Ok(()) => Expect::Value(value),
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        Expect::Unsure
                    }
                };
                expected.lock().insert(key, expect);
            }
        }));
    }

    let mut samples: Vec<Sample> = Vec::new();
    let mut last_compact = Instant::now();
    let mut compactions = 0;
    println!(
        "soak: {secs} s, {CLIENTS} clients, {} keys",
        CLIENTS * KEYS_PER_CLIENT
    );
    println!("   t(s)        ops   revision  rss MiB (n1 n2 n3)    disk MiB (n1 n2 n3)");
    while Instant::now() < deadline {
        tokio::time::sleep(SAMPLE_EVERY.min(deadline.saturating_duration_since(Instant::now()))).await;
        let revision = client
            .range(raftkv_client::RangeRequest::key(b"soak/none".to_vec()))
            .await
            .map(|r| r.header.revision)
            .unwrap_or(0);
        let sample = Sample {
            at: started.elapsed(),
            ops: ops.load(Ordering::Relaxed),
            revision,
            rss_mib: cluster
                .nodes
                .values()
                .map(|n| n.pid().map_or(0.0, |p| rss_kib(p) as f64 / 1024.0))
                .collect(),
            disk_mib: cluster
                .nodes
                .keys()
                .map(|id| disk_bytes(&cluster.dir.path().join(format!("node-{id}"))) as f64 / 1048576.0)
                .collect(),
        };
        println!(
            "{:7.0} {:10} {:10}  {:>22}  {:>22}",
            sample.at.as_secs_f64(),
            sample.ops,
            sample.revision,
            format!("{:.0?}", sample.rss_mib),
            format!("{:.0?}", sample.disk_mib)
        );
        samples.push(sample);
        if last_compact.elapsed() >= COMPACT_EVERY && revision > 10_000 {
            // Keep the last 10,000 revisions of history, as a controller would.
            client.compact(revision - 10_000).await.unwrap();
            compactions += 1;
            last_compact = Instant::now();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }

    // Every key holds its last acknowledged value.
    let expected = expected.lock().clone();
    let mut checked = 0;
    for (key, expect) in &expected {
        if let Expect::Value(value) = expect {
            let got = client.get(key.clone()).await.unwrap().map(|kv| kv.value);
            assert_eq!(&got, value, "key {}", String::from_utf8_lossy(key));
            checked += 1;
        }
    }

    // Level off: the upper quartile of the last third vs the middle third's, per member
    // (the module doc says why not the mean nor the median).
    assert!(
        samples.len() >= 6,
        "too short to judge growth: {} samples",
        samples.len()
    );
    let third = samples.len() / 3;
    let upper_quartile = |range: &[Sample], f: &dyn Fn(&Sample) -> f64| {
        let mut values: Vec<f64> = range.iter().map(f).collect();
        values.sort_by(f64::total_cmp);
        values[(values.len() - 1) * 3 / 4]
    };
    let peak = |range: &[Sample], f: &dyn Fn(&Sample) -> f64| range.iter().map(f).fold(0.0, f64::max);
    let mut growth = Vec::new();
    let mut peaks = Vec::new();
    for n in 0..3 {
        let middle = &samples[third..2 * third];
        let last = &samples[2 * third..];
        let rss = upper_quartile(last, &|s| s.rss_mib[n]) / upper_quartile(middle, &|s| s.rss_mib[n]);
        let disk = upper_quartile(last, &|s| s.disk_mib[n]) / upper_quartile(middle, &|s| s.disk_mib[n]);
        growth.push((rss, disk));
        peaks.push((
            peak(&samples, &|s| s.rss_mib[n]).round(),
            peak(&samples, &|s| s.disk_mib[n]).round(),
        ));
    }
    let total_ops = ops.load(Ordering::Relaxed);
    // The automatic defragmentations each member logged, and the longest write pause.
    let defrags: Vec<(usize, Duration)> = cluster
        .nodes
        .keys()
        .map(|id| {
            let log = std::fs::read_to_string(cluster.dir.path().join(format!("node-{id}.log")));
            defrag_summary(&log.unwrap_or_default())
        })
        .collect();
    println!(
        "RELIABILITY soak secs={} ops={total_ops} errors={} compactions={compactions} keys_checked={checked} \
         upper_quartile_last_vs_middle_third(rss,disk)={growth:.2?} peak_mib(rss,disk)={peaks:?} \
         defrags_and_longest_pause={defrags:?} violations=0",
        started.elapsed().as_secs(),
        errors.load(Ordering::Relaxed),
    );
    for (n, (rss, disk)) in growth.iter().enumerate() {
        assert!(*rss < 1.25, "node {}: RSS keeps growing ({rss:.2}x)", n + 1);
        assert!(
            *disk < 1.25,
            "node {}: disk use keeps growing ({disk:.2}x)",
            n + 1
        );
    }
}
