//! Collecting watch events while applying: what `apply/applier.rs` hands to the watch hub.
//!
//! An [`EventCollector`] lives for one `apply()` call. It holds the hub's interest
//! snapshot ([`Interest`]: which keys some watcher covers, rebuilt by the hub when
//! watchers come and go) and turns each staged write of a covered key into an [`Event`]
//! carrying the key-value after the write and, when some watcher wants it, the one
//! before. Writes of keys nobody watches cost one lookup and no copy. A request's events
//! are staged with its writes and kept only if the request succeeds, so the events are
//! exactly the history's, in (revision, sub) order.

use std::collections::HashSet;
use std::sync::Arc;

use raftkv_core::kv::{KeyValue, Revision};
use raftkv_core::watch::{Event, EventType};

use crate::watch::key_range::KeyRange;

/// The events of one apply call.
#[derive(Debug, Default)]
pub(crate) struct EventCollector {
    interest: Option<Arc<Interest>>,
    /// The interest generation the events were collected with (see `WatchHub::publish`).
    pub(crate) generation: u64,
    /// Events of the requests that succeeded so far, in order.
    pub(crate) events: Vec<Event>,
}

impl EventCollector {
    pub(crate) fn new(interest: Arc<Interest>) -> Self {
        let generation = interest.generation;
        Self {
            interest: (!interest.is_empty()).then_some(interest),
            generation,
            events: Vec::new(),
        }
    }

    /// Whether the event of a write of `key` carries the key's previous value (a watcher
    /// covering it asked for previous values): only then must apply read the old value.
    pub(crate) fn wants_prev_of(&self, key: &[u8]) -> bool {
        self.interest
            .as_ref()
            .is_some_and(|interest| interest.prev_kv() && interest.matches(key))
    }

    /// The event of a staged write of `key` at `revision` (`state` after it, `prev` before
    /// it), if some watcher covers `key`.
    pub(crate) fn event(
        &self,
        key: &[u8],
        revision: Revision,
        state: Option<&KeyValue>,
        prev: Option<&KeyValue>,
    ) -> Option<Event> {
        let interest = self.interest.as_ref()?;
        if !interest.matches(key) {
            return None;
        }
        let (kind, kv) = match state {
            Some(kv) => (EventType::Put, kv.clone()),
            None => (
                EventType::Delete,
                KeyValue {
                    key: key.to_vec(),
                    mod_revision: revision,
                    ..KeyValue::default()
                },
            ),
        };
        let prev_kv = if interest.prev_kv() { prev.cloned() } else { None };
        Some(Event { kind, kv, prev_kv })
    }
}

/// What apply collects events for: the keys and ranges of every registered watcher.
#[derive(Debug, Default)]
pub(crate) struct Interest {
    /// The hub generation this snapshot covers (watchers registered up to it).
    pub(crate) generation: u64,
    pub(crate) keys: HashSet<Vec<u8>>,
    pub(crate) ranges: Vec<KeyRange>,
    pub(crate) prev_kv: bool,
}

impl Interest {
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.ranges.is_empty()
    }

    pub(crate) fn matches(&self, key: &[u8]) -> bool {
        self.keys.contains(key) || self.ranges.iter().any(|r| r.contains(key))
    }

    /// Whether some watcher wants previous key-values.
    pub(crate) fn prev_kv(&self) -> bool {
        self.prev_kv
    }
}
