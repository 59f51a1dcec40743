//! The queue between the watch hub and a session: what the hub puts in it ([`SinkItem`])
//! and the bound on each watcher's share of it ([`Buffered`]). The queue itself is an
//! unbounded channel, but what a watcher may have in it is bounded: its events by
//! `WatchConfig::buffered_events` / `buffered_bytes` (one batch alone always fits), and
//! at most one replay notice and one progress marker at a time (`watch/hub.rs`,
//! `watch/session/`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use raftkv_core::kv::Revision;
use raftkv_core::watch::SharedEvent;

use crate::watch::config::WatchConfig;

/// Events and bytes a watcher has queued; the session takes them off as it consumes.
#[derive(Debug, Default)]
pub(crate) struct Buffered {
    events: AtomicUsize,
    bytes: AtomicUsize,
}

impl Buffered {
    /// Reserve room for `events` / `bytes` within `config`; an empty buffer always admits.
    pub(crate) fn admit(&self, events: usize, bytes: usize, config: &WatchConfig) -> bool {
        let (queued, queued_bytes) = (
            self.events.load(Ordering::Acquire),
            self.bytes.load(Ordering::Acquire),
        );
        if queued > 0
            && (queued + events > config.buffered_events || queued_bytes + bytes > config.buffered_bytes)
        {
            return false;
        }
        self.events.fetch_add(events, Ordering::AcqRel);
        self.bytes.fetch_add(bytes, Ordering::AcqRel);
        true
    }

    /// The consumer took `events` / `bytes`.
    pub(crate) fn release(&self, events: usize, bytes: usize) {
        let _ = self
            .events
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |e| {
                Some(e.saturating_sub(events))
            });
        let _ = self.bytes.fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
            Some(b.saturating_sub(bytes))
        });
    }
}

/// What the hub puts in a session's queue. `watcher` is the hub-wide id.
#[derive(Debug)]
pub(crate) enum SinkItem {
    /// A synced watcher's events of one batch; it is complete up to `revision`.
    Events {
        watcher: u64,
        events: Vec<Arc<SharedEvent>>,
        bytes: usize,
        revision: Revision,
    },
    /// The watcher is unsynced: replay from `from`.
    CatchUp { watcher: u64, from: Revision },
    /// The watcher has everything up to `revision` (a progress request's answer).
    Progress { watcher: u64, revision: Revision },
}
