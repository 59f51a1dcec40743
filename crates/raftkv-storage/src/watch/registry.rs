//! The hub's registry: its watchers, their sessions' queues and the published revision,
//! all under the hub's one lock (see `watch/hub.rs`). Apart from the hub so that routing a
//! batch (`watch/route.rs`) works on the registry without depending on the hub.

use std::collections::HashMap;
use std::sync::Arc;

use raftkv_core::kv::Revision;
use raftkv_core::watch::WatchRequest;
use tokio::sync::mpsc::UnboundedSender;

use crate::watch::config::WatchConfig;
use crate::watch::key_range::KeyRange;
use crate::watch::queue::{Buffered, SinkItem};

/// A watcher as the hub sees it.
pub(super) struct HubWatcher {
    pub(super) session: u64,
    pub(super) range: KeyRange,
    pub(super) request: WatchRequest,
    /// The first revision it wants.
    pub(super) min_rev: Revision,
    pub(super) synced: bool,
    /// The hub generation it was registered in.
    pub(super) generation: u64,
    /// Answer a progress request once promoted.
    pub(super) progress_wanted: bool,
    pub(super) buffered: Arc<Buffered>,
}

/// What the hub's lock guards.
#[derive(Default)]
pub(super) struct HubInner {
    pub(super) published: Revision,
    pub(super) generation: u64,
    pub(super) next_id: u64,
    pub(super) sessions: HashMap<u64, UnboundedSender<SinkItem>>,
    pub(super) watchers: HashMap<u64, HubWatcher>,
    pub(super) by_key: HashMap<Vec<u8>, Vec<u64>>,
    pub(super) ranges: Vec<u64>,
    pub(super) config: WatchConfig,
    pub(super) closed: bool,
}

impl HubInner {
    pub(super) fn send(&self, session: u64, item: SinkItem) {
        if let Some(tx) = self.sessions.get(&session) {
            // A closed queue means the session is being dropped; it unregisters itself.
            let _ = tx.send(item);
        }
    }

    /// Make watcher `id` unsynced from `from` and tell its session.
    pub(super) fn demote(&mut self, id: u64, from: Revision) {
        let Some(w) = self.watchers.get_mut(&id) else {
            return;
        };
        w.synced = false;
        let from = from.max(w.min_rev);
        let session = w.session;
        self.send(session, SinkItem::CatchUp { watcher: id, from });
    }
}
