//! [`LocalWatchSession`]: one watch stream served from this replica's applied history
//! (etcd's `watchStream`), the [`WatchSession`] behind both the gRPC `Watch` call and the
//! embedded `node.watch`.
//!
//! A session owns its watchers and one queue the hub fills (`watch/hub.rs`). Its consumer
//! polls it; each poll takes, in this order: responses already made, the next queued
//! item (a synced watcher's events, a progress answer, or word that a watcher fell
//! behind), one chunk of history replay for a watcher that is behind, the progress
//! timer. Replay happens here, on the consumer's task and at the consumer's pace: a
//! session that is not polled reads nothing and holds at most its watchers' bounded
//! buffers. Once a replaying watcher reaches the published revision the hub promotes it
//! and pushes its later events again.
//!
//! **Ordering.** A watcher's items reach the queue in revision order; it gets none while
//! it is behind, and its replayed events are handed out before the poll that could see
//! anything pushed after its promotion. So every watcher sees its events in order, with
//! no gap and no repeat, and each revision whole. A poll takes every item queued at the
//! time (up to `MAX_ITEMS_PER_POLL`), so that the batches of a watcher that wait
//! together go out as one response (`watch/ready.rs` says how order is kept).
//!
//! **Progress.** Every response carries the revision the watcher is complete up to. A
//! progress request for the whole stream notes the published revision `T` and asks the
//! hub for a marker behind the events of each watcher not yet complete up to `T` (a
//! watcher that is behind gets its marker once promoted); once every watcher is complete
//! up to `T` it yields one response with [`INVALID_WATCH_ID`] at the lowest revision
//! every watcher reached (etcd answers only when all its watchers are synced; requests
//! made meanwhile share the answer). Watchers created with `progress_notify` get a
//! response of their own each interval in which they got no event. A watcher has at most
//! one marker on its way, so requests cannot flood the queue.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use raftkv_core::kv::{ResponseHeader, Revision};
use raftkv_core::watch::{
    INVALID_WATCH_ID, SharedWatchResponse, WatchId, WatchRequest, WatchResponse, WatchSession, cancel_reason,
};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{Interval, MissedTickBehavior, Sleep};

mod replay;

use crate::state::StateShared;
use crate::watch::history::ChunkLimits;
use crate::watch::key_range::KeyRange;
use crate::watch::queue::{Buffered, SinkItem};
use crate::watch::ready::ReadyQueue;

/// Watchers one session (one gRPC stream) may have: a bound on what one client can make
/// the node hold, far above what etcd clients multiplex on a stream.
pub const MAX_WATCHERS_PER_SESSION: usize = 100_000;

/// Queued items taken per poll (and coalesced, see the module doc).
const MAX_ITEMS_PER_POLL: usize = 1024;

/// History chunks replayed per poll before yielding to the executor.
const MAX_REPLAY_STEPS_PER_POLL: usize = 8;

/// One watcher of a session.
struct SessionWatcher {
    hub_id: u64,
    request: WatchRequest,
    range: KeyRange,
    buffered: Arc<Buffered>,
    /// `Some(next)`: behind, replaying from `next`.
    replay_from: Option<Revision>,
    /// Every event at or below this revision has been handed out.
    sent_up_to: Revision,
    /// Events handed out since the last progress tick.
    sent_since_tick: bool,
    /// A progress marker is on its way from the hub.
    marker_pending: bool,
    /// The next marker answers a periodic progress notification.
    periodic_wanted: bool,
}

/// A watch stream served from the local replica (see the module doc).
pub struct LocalWatchSession {
    shared: Arc<StateShared>,
    /// The hub's id of this session and its queue; `None` if the hub was closed.
    queue: Option<(u64, UnboundedReceiver<SinkItem>)>,
    watchers: HashMap<WatchId, SessionWatcher>,
    by_hub_id: HashMap<u64, WatchId>,
    next_auto_id: WatchId,
    /// Responses made, not yet handed out.
    ready: ReadyQueue,
    /// Watchers that are behind, in replay order (round robin).
    replaying: VecDeque<WatchId>,
    /// A stream progress request waits until every watcher is complete up to this.
    progress_target: Option<Revision>,
    progress_interval: Duration,
    ticker: Option<Interval>,
    retry: Option<Pin<Box<Sleep>>>,
    limits: ChunkLimits,
    ended: bool,
}

impl LocalWatchSession {
    /// Open a session on the replica whose state `shared` is.
    pub fn open(shared: Arc<StateShared>) -> Self {
        let queue = shared.watch_hub.open_session();
        let progress_interval = shared.watch_hub.config().progress_interval;
        Self {
            shared,
            ended: queue.is_none(),
            queue,
            watchers: HashMap::new(),
            by_hub_id: HashMap::new(),
            next_auto_id: 0,
            ready: ReadyQueue::default(),
            replaying: VecDeque::new(),
            progress_target: None,
            progress_interval,
            ticker: None,
            retry: None,
            limits: ChunkLimits::default(),
        }
    }

    /// The watchers of this session now.
    pub fn watch_ids(&self) -> Vec<WatchId> {
        let mut ids: Vec<_> = self.watchers.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    fn published(&self) -> Revision {
        self.shared.watch_hub.published()
    }

    fn response(&self, watch_id: WatchId, revision: Revision) -> WatchResponse {
        WatchResponse {
            header: ResponseHeader {
                revision,
                ..ResponseHeader::default()
            },
            watch_id,
            ..WatchResponse::default()
        }
    }

    fn refused(&self, reason: &str) -> WatchResponse {
        WatchResponse {
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..self.response(INVALID_WATCH_ID, self.published())
        }
    }

    /// Remove watcher `id` (hub included) and hand out `last` as its final response.
    fn end_watcher(&mut self, id: WatchId, last: Option<WatchResponse>) {
        if let Some(w) = self.watchers.remove(&id) {
            self.by_hub_id.remove(&w.hub_id);
            self.shared.watch_hub.unregister(w.hub_id);
        }
        if let Some(last) = last {
            self.ready.push(last.into());
        }
        self.answer_stream_progress();
    }

    /// Answer the pending stream progress request once every watcher is complete up to
    /// its target.
    fn answer_stream_progress(&mut self) {
        let Some(target) = self.progress_target else {
            return;
        };
        let lowest = self.watchers.values().map(|w| w.sent_up_to).min();
        if lowest.is_some_and(|lowest| lowest < target) {
            return;
        }
        self.progress_target = None;
        let response = self.response(INVALID_WATCH_ID, lowest.unwrap_or(target));
        self.ready.push(response.into());
    }

    fn handle(&mut self, item: SinkItem) {
        match item {
            SinkItem::Events {
                watcher,
                events,
                bytes,
                revision,
            } => {
                let Some(id) = self.by_hub_id.get(&watcher).copied() else {
                    return;
                };
                let Some(w) = self.watchers.get_mut(&id) else {
                    return;
                };
                w.buffered.release(events.len(), bytes);
                let prev_kv = w.request.prev_kv;
                w.sent_up_to = w.sent_up_to.max(revision);
                w.sent_since_tick = true;
                let response = SharedWatchResponse {
                    response: self.response(id, revision),
                    events,
                    prev_kv,
                };
                self.ready.push_events(id, response, bytes);
                self.answer_stream_progress();
            }
            SinkItem::CatchUp { watcher, from } => {
                let Some(id) = self.by_hub_id.get(&watcher).copied() else {
                    return;
                };
                if let Some(w) = self.watchers.get_mut(&id) {
                    w.replay_from = Some(from);
                    self.replaying.push_back(id);
                }
            }
            SinkItem::Progress { watcher, revision } => {
                let Some(id) = self.by_hub_id.get(&watcher).copied() else {
                    return;
                };
                let Some(w) = self.watchers.get_mut(&id) else {
                    return;
                };
                w.sent_up_to = w.sent_up_to.max(revision);
                w.marker_pending = false;
                let periodic = std::mem::take(&mut w.periodic_wanted);
                if self.progress_target.is_some_and(|target| w.sent_up_to < target)
                    && self.shared.watch_hub.request_progress(w.hub_id, true)
                {
                    // Behind the pending request's target still: another marker.
                    w.marker_pending = true;
                }
                if periodic {
                    self.ready.push(self.response(id, revision).into());
                }
                self.answer_stream_progress();
            }
        }
    }

    /// Poll the progress timer; returns whether it ticked.
    fn poll_ticker(&mut self, cx: &mut Context<'_>) -> bool {
        let wanted = self.watchers.values().any(|w| w.request.progress_notify);
        if !wanted {
            self.ticker = None;
            return false;
        }
        if self.ticker.is_none() {
            // Without a Tokio runtime there is no timer: no periodic progress then.
            if tokio::runtime::Handle::try_current().is_err() {
                return false;
            }
            let start = tokio::time::Instant::now() + self.progress_interval;
            let mut ticker = tokio::time::interval_at(start, self.progress_interval);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            self.ticker = Some(ticker);
        }
        let Some(ticker) = self.ticker.as_mut() else {
            return false;
        };
        if ticker.poll_tick(cx).is_pending() {
            return false;
        }
        // etcd: a watcher that got no event during the interval gets a progress response.
        for w in self.watchers.values_mut() {
            if w.request.progress_notify && !w.sent_since_tick && !w.periodic_wanted {
                if w.marker_pending {
                    w.periodic_wanted = true;
                } else if self.shared.watch_hub.request_progress(w.hub_id, false) {
                    w.marker_pending = true;
                    w.periodic_wanted = true;
                }
            }
            w.sent_since_tick = false;
        }
        true
    }
}

impl WatchSession for LocalWatchSession {
    fn create(&mut self, request: WatchRequest) -> WatchResponse {
        let Some((session, _)) = &self.queue else {
            return self.refused(cancel_reason::STOPPED);
        };
        let session = *session;
        if request.start_revision < 0 {
            // etcd (3.5 on) refuses a negative start revision as compacted.
            return self.refused(cancel_reason::COMPACTED);
        }
        if self.watchers.len() >= MAX_WATCHERS_PER_SESSION {
            return self.refused(cancel_reason::TOO_MANY_WATCHERS);
        }
        let range = match KeyRange::from_request(&request) {
            Ok(range) => range,
            Err(reason) => return self.refused(reason),
        };
        let id = if request.watch_id != 0 {
            if self.watchers.contains_key(&request.watch_id) {
                return self.refused(cancel_reason::DUPLICATE_ID);
            }
            request.watch_id
        } else {
            while self.watchers.contains_key(&self.next_auto_id) {
                self.next_auto_id += 1;
            }
            self.next_auto_id += 1;
            self.next_auto_id - 1
        };
        let Some(registration) = self
            .shared
            .watch_hub
            .register(session, range.clone(), request.clone())
        else {
            return self.refused(cancel_reason::STOPPED);
        };
        let sent_up_to = match registration.catch_up_from {
            Some(from) => from - 1,
            None => registration.revision,
        };
        self.by_hub_id.insert(registration.id, id);
        self.watchers.insert(
            id,
            SessionWatcher {
                hub_id: registration.id,
                request,
                range,
                buffered: registration.buffered,
                replay_from: registration.catch_up_from,
                sent_up_to,
                sent_since_tick: false,
                marker_pending: false,
                periodic_wanted: false,
            },
        );
        if registration.catch_up_from.is_some() {
            self.replaying.push_back(id);
        }
        WatchResponse {
            created: true,
            ..self.response(id, registration.revision)
        }
    }

    fn cancel(&mut self, watch_id: WatchId) -> Option<WatchResponse> {
        if !self.watchers.contains_key(&watch_id) {
            return None;
        }
        // Its "canceled" goes out now: nothing of it made before may follow.
        self.ready.discard(watch_id);
        self.end_watcher(watch_id, None);
        Some(WatchResponse {
            canceled: true,
            ..self.response(watch_id, self.published())
        })
    }

    fn request_progress(&mut self) {
        let target = self.published();
        self.progress_target = Some(self.progress_target.map_or(target, |t| t.max(target)));
        let hub = &self.shared.watch_hub;
        for w in self.watchers.values_mut() {
            if w.sent_up_to < target && !w.marker_pending && hub.request_progress(w.hub_id, true) {
                w.marker_pending = true;
            }
        }
        self.answer_stream_progress();
    }

    fn poll_next_shared(&mut self, cx: &mut Context<'_>) -> Poll<Option<SharedWatchResponse>> {
        let mut replayed = 0;
        loop {
            if let Some(response) = self.ready.pop_front() {
                return Poll::Ready(Some(response));
            }
            if self.ended {
                return Poll::Ready(None);
            }
            let Some((_, queue)) = self.queue.as_mut() else {
                self.ended = true;
                continue;
            };
            match queue.poll_recv(cx) {
                Poll::Ready(Some(item)) => {
                    let mut items = vec![item];
                    while items.len() < MAX_ITEMS_PER_POLL
                        && let Ok(item) = queue.try_recv()
                    {
                        items.push(item);
                    }
                    for item in items {
                        self.handle(item);
                    }
                    continue;
                }
                Poll::Ready(None) => {
                    // The hub closed: the node stopped serving watches.
                    self.ended = true;
                    continue;
                }
                Poll::Pending => {}
            }
            if !self.replaying.is_empty() && self.replay_allowed(cx) {
                if replayed == MAX_REPLAY_STEPS_PER_POLL {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                replayed += 1;
                self.replay_step();
                continue;
            }
            if self.poll_ticker(cx) {
                continue;
            }
            return Poll::Pending;
        }
    }
}

impl Drop for LocalWatchSession {
    fn drop(&mut self) {
        let hub = &self.shared.watch_hub;
        for w in self.watchers.values() {
            hub.unregister(w.hub_id);
        }
        if let Some((session, _)) = &self.queue {
            hub.close_session(*session);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
