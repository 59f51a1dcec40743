//! [`WatchHub`]: where applied events meet the watchers of this replica.
//!
//! It follows etcd's `watchableStore`: watchers are either **synced** (they have every
//! event up to the published revision, and get each new batch's events pushed to them as
//! it is applied) or **unsynced** (behind: their own session replays the history until it
//! reaches the published revision, then asks to be promoted, see `watch/session/`).
//!
//! **Publishing.** After apply's sled batch is in the tree and the revision is stored,
//! `StateMachine::apply` calls `WatchHub::publish` with the events of the batch, in
//! revision order. Under the hub's lock, each event goes to the synced watchers whose key
//! or range covers it (a map for single keys, a list for ranges), one message per watcher
//! per batch, into the watcher's session queue. Nothing here blocks or allocates per
//! watcher that the batch does not touch, so a watcher that does not keep up cannot slow
//! apply down.
//!
//! **Bounded buffers.** Each watcher may have at most [`WatchConfig::buffered_events`]
//! events and [`WatchConfig::buffered_bytes`] bytes waiting in its session's queue (one
//! batch alone always fits, so a huge revision is never split). A batch that does not fit
//! is not queued: the watcher becomes unsynced at the batch's first revision and its
//! session replays from the history, at its own pace; if compaction overtakes it there, it
//! is canceled with the compact revision, as etcd cancels a watcher it cannot catch up.
//!
//! **Interest.** Apply only collects events (cloning keys and values) for keys some
//! watcher covers: it reads an `Interest` snapshot (an `ArcSwap`, no lock) when it
//! starts. A watcher registered after that snapshot was built may miss events of that
//! batch, so `WatchHub::publish` makes every watcher newer than the snapshot's
//! generation unsynced at the batch's first revision, to be replayed from the history
//! (which holds the batch by then).
//!
//! **Installs.** A snapshot install replaces the tree and jumps the revision; every synced
//! watcher becomes unsynced and replays from the new tree's history (or is canceled if the
//! snapshot's compact revision passed it). Readers detect an install that overlapped
//! their read with a seqlock-style epoch (`WatchHub::install_epoch`).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use raftkv_core::kv::Revision;
use raftkv_core::watch::{Event, WatchRequest};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use crate::watch::config::WatchConfig;
use crate::watch::events::Interest;
use crate::watch::key_range::KeyRange;
use crate::watch::queue::{Buffered, SinkItem};
use crate::watch::registry::{HubInner, HubWatcher};
use crate::watch::route::route;

/// What registering a watcher gives its session.
pub(crate) struct Registration {
    pub(crate) id: u64,
    /// The published revision at registration (the "created" response's revision).
    pub(crate) revision: Revision,
    /// `Some(from)`: the watcher starts unsynced and must replay from `from`.
    pub(crate) catch_up_from: Option<Revision>,
    pub(crate) buffered: Arc<Buffered>,
}

/// The watch hub of one replica (see the module doc).
pub struct WatchHub {
    /// Watchers, sessions and the published revision. A mutex because publishing, which
    /// routes a batch's events to watchers, must not interleave with registration and
    /// promotion (each decides synced or not against the published revision). Held for
    /// map operations and non-blocking queue sends only: never across I/O or `.await`.
    inner: Mutex<HubInner>,
    interest: ArcSwap<Interest>,
    /// The interest snapshot is stale (a watcher came or went).
    interest_dirty: AtomicBool,
    /// The newest revision whose events were published (readable without the lock).
    published: AtomicI64,
    /// Odd while a snapshot install runs; bumped at its start and end.
    install_epoch: AtomicU64,
}

impl WatchHub {
    pub(crate) fn new(revision: Revision) -> Self {
        Self {
            inner: Mutex::new(HubInner {
                published: revision,
                ..HubInner::default()
            }),
            interest: ArcSwap::from_pointee(Interest::default()),
            interest_dirty: AtomicBool::new(false),
            published: AtomicI64::new(revision),
            install_epoch: AtomicU64::new(0),
        }
    }

    /// The newest revision whose events were published: every event at or below it is in
    /// the tree, and every synced watcher has been handed its share of them.
    pub fn published(&self) -> Revision {
        self.published.load(Ordering::Acquire)
    }

    /// Watchers registered now.
    pub fn watchers(&self) -> usize {
        self.inner.lock().watchers.len()
    }

    /// Watchers that are behind and replaying the history now.
    pub fn unsynced_watchers(&self) -> usize {
        self.inner.lock().watchers.values().filter(|w| !w.synced).count()
    }

    /// Set the limits (applies to batches published from now on and sessions opened later).
    pub fn configure(&self, config: WatchConfig) {
        self.inner.lock().config = config;
    }

    pub(crate) fn config(&self) -> WatchConfig {
        self.inner.lock().config
    }

    pub(crate) fn install_epoch(&self) -> u64 {
        self.install_epoch.load(Ordering::Acquire)
    }

    /// The interest snapshot for one apply call (rebuilt here if watchers changed).
    pub(crate) fn interest(&self) -> Arc<Interest> {
        if self.interest_dirty.swap(false, Ordering::AcqRel) {
            let inner = self.inner.lock();
            let mut interest = Interest {
                generation: inner.generation,
                ..Interest::default()
            };
            let mut ranges = HashSet::new();
            for w in inner.watchers.values() {
                interest.prev_kv |= w.request.prev_kv;
                match &w.range {
                    KeyRange::Single(key) => {
                        interest.keys.insert(key.clone());
                    }
                    range => {
                        if ranges.insert(range.clone()) {
                            interest.ranges.push(range.clone());
                        }
                    }
                }
            }
            self.interest.store(Arc::new(interest));
        }
        self.interest.load_full()
    }

    /// Publish the events of revisions `first..=last` (in order), collected with the
    /// interest of `generation`. Called by apply after the batch is in the tree.
    pub(crate) fn publish(&self, first: Revision, last: Revision, events: Vec<Event>, generation: u64) {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        if !inner.watchers.is_empty() {
            if inner.generation != generation {
                let newer: Vec<u64> = inner
                    .watchers
                    .iter()
                    .filter(|(_, w)| w.synced && w.generation > generation && w.min_rev <= last)
                    .map(|(id, _)| *id)
                    .collect();
                for id in newer {
                    inner.demote(id, first);
                }
            }
            if !events.is_empty() {
                route(inner, events, first, last);
            }
        }
        inner.published = last;
        self.published.store(last, Ordering::Release);
    }

    /// A new session's queue; `None` once the hub is closed.
    pub(crate) fn open_session(&self) -> Option<(u64, UnboundedReceiver<SinkItem>)> {
        let mut inner = self.inner.lock();
        if inner.closed {
            return None;
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let (tx, rx) = unbounded_channel();
        inner.sessions.insert(id, tx);
        Some((id, rx))
    }

    pub(crate) fn close_session(&self, session: u64) {
        self.inner.lock().sessions.remove(&session);
    }

    /// Register a watcher of `session` on `range` from `start_revision` (0: the next
    /// revision). `None` once the hub is closed.
    pub(crate) fn register(
        &self,
        session: u64,
        range: KeyRange,
        request: WatchRequest,
    ) -> Option<Registration> {
        let mut inner = self.inner.lock();
        if inner.closed || !inner.sessions.contains_key(&session) {
            return None;
        }
        let published = inner.published;
        let start = if request.start_revision > 0 {
            request.start_revision
        } else {
            published + 1
        };
        let id = inner.next_id;
        inner.next_id += 1;
        inner.generation += 1;
        let synced = start > published;
        let buffered = Arc::new(Buffered::default());
        match &range {
            KeyRange::Single(key) => inner.by_key.entry(key.clone()).or_default().push(id),
            KeyRange::Range { .. } => inner.ranges.push(id),
        }
        let watcher = HubWatcher {
            session,
            range,
            request,
            min_rev: start,
            synced,
            generation: inner.generation,
            progress_wanted: false,
            buffered: buffered.clone(),
        };
        inner.watchers.insert(id, watcher);
        self.interest_dirty.store(true, Ordering::Release);
        Some(Registration {
            id,
            revision: published,
            catch_up_from: (!synced).then_some(start),
            buffered,
        })
    }

    pub(crate) fn unregister(&self, id: u64) {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let Some(w) = inner.watchers.remove(&id) else {
            return;
        };
        match &w.range {
            KeyRange::Single(key) => {
                if let Some(ids) = inner.by_key.get_mut(key) {
                    ids.retain(|i| *i != id);
                    if ids.is_empty() {
                        inner.by_key.remove(key);
                    }
                }
            }
            KeyRange::Range { .. } => inner.ranges.retain(|i| *i != id),
        }
        self.interest_dirty.store(true, Ordering::Release);
    }

    /// An unsynced watcher replayed everything before `next`: if that is the published
    /// revision, it is synced from now on (and a pending progress request is answered).
    pub(crate) fn promote(&self, id: u64, next: Revision) -> bool {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let published = inner.published;
        let Some(w) = inner.watchers.get_mut(&id) else {
            return false;
        };
        if w.synced {
            return true;
        }
        if next != published + 1 {
            return false;
        }
        w.synced = true;
        let (session, answer) = (w.session, std::mem::take(&mut w.progress_wanted));
        if answer {
            inner.send(
                session,
                SinkItem::Progress {
                    watcher: id,
                    revision: published,
                },
            );
        }
        true
    }

    /// Queue a progress answer for watcher `id` behind its events: now if it is synced,
    /// else (when `wait`) once it is promoted. Returns whether an answer will come.
    pub(crate) fn request_progress(&self, id: u64, wait: bool) -> bool {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let published = inner.published;
        let Some(w) = inner.watchers.get_mut(&id) else {
            return false;
        };
        if w.synced {
            let session = w.session;
            inner.send(
                session,
                SinkItem::Progress {
                    watcher: id,
                    revision: published,
                },
            );
            true
        } else if wait {
            w.progress_wanted = true;
            true
        } else {
            false
        }
    }

    /// A snapshot install starts (see the module doc).
    pub(crate) fn begin_install(&self) {
        self.install_epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// A snapshot install ended with the store at `revision`.
    pub(crate) fn end_install(&self, revision: Revision) {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let first = inner.published + 1;
        if revision > inner.published {
            let synced: Vec<u64> = inner
                .watchers
                .iter()
                .filter(|(_, w)| w.synced && w.min_rev <= revision)
                .map(|(id, _)| *id)
                .collect();
            for id in synced {
                inner.demote(id, first);
            }
            inner.published = revision;
            self.published.store(revision, Ordering::Release);
        }
        self.install_epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Stop serving watches (node shutdown): every session's queue closes, so its stream
    /// ends, and nothing registers any more.
    pub fn close(&self) {
        let mut inner = self.inner.lock();
        inner.closed = true;
        inner.sessions.clear();
        inner.watchers.clear();
        inner.by_key.clear();
        inner.ranges.clear();
        self.interest_dirty.store(true, Ordering::Release);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#[path = "hub_tests.rs"]
mod tests;
