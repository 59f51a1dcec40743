//! Routing one published batch to the hub's synced watchers (`WatchHub::publish`, under
//! the hub's lock; see `watch/hub.rs`).
//!
//! Each event is wrapped once in an `Arc<SharedEvent>` that every watcher receiving it
//! shares, down to the wire (the gRPC service encodes it once, see `raftkv-core`'s
//! `watch` module). Watchers of a single key are found per event through the hub's
//! `by_key` map. Watchers of a range take their share of the whole batch at once, and the
//! share is computed once for all the watchers of the same range and filters that want
//! the whole batch: many watchers on one prefix cost one pass over the batch plus a copy
//! of a list of `Arc`s each, not a map lookup per event and watcher. A watcher whose
//! start revision falls inside the batch gets its own share.

use std::collections::HashMap;
use std::sync::Arc;

use raftkv_core::kv::Revision;
use raftkv_core::watch::{Event, SharedEvent};

use crate::watch::key_range::KeyRange;
use crate::watch::queue::SinkItem;
use crate::watch::registry::{HubInner, HubWatcher};

/// A range's share of a batch: its events and their approximate bytes.
type Share = (Vec<Arc<SharedEvent>>, usize);

/// Hand each synced watcher its share of a batch's events (see the module doc). Each
/// event is shared (one `Arc` for every watcher that gets it). Watchers of a single key
/// are found per event through `by_key`; watchers of a range take their share of the
/// whole batch at once, computed once for all watchers of the same range and filters
/// (the common case of many watchers on one prefix costs a copy of a list of `Arc`s
/// each).
pub(super) fn route(inner: &mut HubInner, events: Vec<Event>, first: Revision, last: Revision) {
    let events: Vec<Arc<SharedEvent>> = events
        .into_iter()
        .map(|e| Arc::new(SharedEvent::new(e)))
        .collect();
    // Per watcher: (events, bytes).
    let mut batches: Vec<(u64, Vec<Arc<SharedEvent>>, usize)> = Vec::new();
    let wanted = |w: &HubWatcher, event: &SharedEvent| {
        w.synced && event.revision() >= w.min_rev && w.request.admits(event.kind)
    };
    if !inner.by_key.is_empty() {
        let mut singles: HashMap<u64, usize> = HashMap::new();
        for event in &events {
            let Some(ids) = inner.by_key.get(event.kv.key.as_slice()) else {
                continue;
            };
            for id in ids {
                let Some(w) = inner.watchers.get(id) else {
                    continue;
                };
                if !wanted(w, event) {
                    continue;
                }
                let slot = *singles.entry(*id).or_insert_with(|| {
                    batches.push((*id, Vec::new(), 0));
                    batches.len() - 1
                });
                let batch = &mut batches[slot];
                batch.1.push(event.clone());
                batch.2 += event.approximate_size();
            }
        }
    }
    // A range watcher's share depends only on its range and filters, unless it starts
    // inside the batch.
    let mut shares: HashMap<(&KeyRange, bool, bool), Share> = HashMap::new();
    for id in &inner.ranges {
        let Some(w) = inner.watchers.get(id) else {
            continue;
        };
        if !w.synced {
            continue;
        }
        let share = |w: &HubWatcher| {
            let mine: Vec<_> = events
                .iter()
                .filter(|e| w.range.contains(&e.kv.key) && wanted(w, e))
                .cloned()
                .collect();
            let bytes = mine.iter().map(|e| e.approximate_size()).sum();
            (mine, bytes)
        };
        let (mine, bytes) = if w.min_rev <= first {
            let key = (&w.range, w.request.no_put, w.request.no_delete);
            shares.entry(key).or_insert_with(|| share(w)).clone()
        } else {
            share(w)
        };
        if !mine.is_empty() {
            batches.push((*id, mine, bytes));
        }
    }
    let config = inner.config;
    for (id, events, bytes) in batches {
        let Some(w) = inner.watchers.get(&id) else {
            continue;
        };
        if w.buffered.admit(events.len(), bytes, &config) {
            let session = w.session;
            inner.send(
                session,
                SinkItem::Events {
                    watcher: id,
                    events,
                    bytes,
                    revision: last,
                },
            );
        } else {
            tracing::debug!(watcher = id, "watcher fell behind; replaying it from the history");
            inner.demote(id, first);
        }
    }
}
