//! [`Quota`]: this member's disk quota (etcd's `--quota-backend-bytes`), measured at
//! most once a second on the write path. `api/alarms.rs` raises NOSPACE from it; the node
//! holds it and the metrics read it.

use std::sync::atomic::{AtomicU64, Ordering};

/// The disk quota of this member.
pub(crate) struct Quota {
    bytes: u64,
    /// When the disk usage was last measured (ms since the epoch): at most once a second.
    checked_at_ms: AtomicU64,
    usage: crate::disk_usage::DiskUsage,
}

impl Quota {
    /// A quota of `bytes` over the data directory `usage` measures.
    pub(crate) fn new(bytes: u64, usage: crate::disk_usage::DiskUsage) -> Self {
        Self {
            bytes,
            checked_at_ms: AtomicU64::new(0),
            usage,
        }
    }

    /// Whether the data directory exceeds the quota, measured at most once a second
    /// (`false` in between).
    pub(crate) fn exceeded_now(&self) -> bool {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let last = self.checked_at_ms.load(Ordering::Acquire);
        now_ms.saturating_sub(last) >= 1000
            && self
                .checked_at_ms
                .compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            && self.usage.bytes() > self.bytes
    }

    /// Measure again before the next write (after a disarm).
    pub(crate) fn measure_next_write(&self) {
        self.checked_at_ms.store(0, Ordering::Release);
    }

    /// The quota.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Bytes the data directory takes on disk.
    pub(crate) fn usage_bytes(&self) -> u64 {
        self.usage.bytes()
    }
}
