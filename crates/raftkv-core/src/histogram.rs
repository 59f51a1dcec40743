//! [`Histogram`]: durations counted into fixed buckets with atomics, as Prometheus
//! histograms expose them (`_bucket{le=...}`, `_sum`, `_count`).
//!
//! Recording is a bucket search over a dozen bounds and two relaxed atomic adds, so it can
//! sit on the write path (each log sync records one); reading takes a [`HistogramSnapshot`]
//! at scrape time. A snapshot taken while observations land may count one in `_count`
//! and not yet in `_sum`: Prometheus tolerates that, as it does from Go's client.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// etcd's buckets for its disk histograms (`etcd_disk_wal_fsync_duration_seconds`,
/// `etcd_disk_backend_commit_duration_seconds`): 1 ms doubling 14 times, in seconds.
pub const ETCD_DISK_BUCKETS: [f64; 14] = [
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192,
];

/// Durations counted into buckets bounded by `bounds` (seconds, ascending); one more
/// bucket past the last bound (`+Inf`).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    counts: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

/// A histogram read at one moment, cumulative as Prometheus wants it.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound in seconds, observations at or below it)`, ascending, without `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    /// Every observation (the `+Inf` bucket).
    pub count: u64,
    /// Sum of the observations, in seconds.
    pub sum_seconds: f64,
}

impl Default for Histogram {
    /// etcd's disk buckets.
    fn default() -> Self {
        Self::new(&ETCD_DISK_BUCKETS)
    }
}

impl Histogram {
    /// An empty histogram over `bounds` (seconds, ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Count one observation.
    pub fn observe(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        // `le` buckets: the first bound the value does not exceed.
        let bucket = self.bounds.partition_point(|&bound| bound < seconds);
        if let Some(count) = self.counts.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The observations so far.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(self.bounds.len());
        for (bound, count) in self.bounds.iter().zip(self.counts.iter()) {
            cumulative += count.load(Ordering::Relaxed);
            buckets.push((*bound, cumulative));
        }
        let beyond = self.counts.last().map_or(0, |c| c.load(Ordering::Relaxed));
        HistogramSnapshot {
            buckets,
            count: cumulative + beyond,
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_le_buckets_and_add_up() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(200)); // <= 1 ms
        h.observe(Duration::from_millis(1)); // exactly on a bound: that bucket
        h.observe(Duration::from_millis(3)); // <= 4 ms
        h.observe(Duration::from_secs(20)); // +Inf only
        let s = h.snapshot();
        assert_eq!(s.buckets.len(), ETCD_DISK_BUCKETS.len());
        assert_eq!(s.buckets[0], (0.001, 2));
        assert_eq!(s.buckets[1], (0.002, 2));
        assert_eq!(s.buckets[2], (0.004, 3));
        assert_eq!(s.buckets.last().map(|b| b.1), Some(3));
        assert_eq!(s.count, 4);
        assert!((s.sum_seconds - 20.0042).abs() < 1e-9, "{}", s.sum_seconds);
    }
}
