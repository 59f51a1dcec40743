//! [`WatchConfig`]: the watch limits of a node, read by the hub and by each watcher's
//! queue (`watch/queue.rs`).

use std::time::Duration;

/// Watch limits of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchConfig {
    /// Events one watcher may have queued, not yet taken by its consumer (default 1024).
    pub buffered_events: usize,
    /// Bytes of events one watcher may have queued (default 4 MiB).
    pub buffered_bytes: usize,
    /// Interval of progress notifications to watchers that asked for them and had no
    /// event meanwhile (default 10 minutes, as etcd).
    pub progress_interval: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            buffered_events: 1024,
            buffered_bytes: 4 << 20,
            progress_interval: Duration::from_secs(600),
        }
    }
}
