//! [`ReadyQueue`]: a session's responses made and not yet handed out, where the event
//! batches of one watcher that wait together are coalesced into one response.
//!
//! When a stream's consumer falls behind its hub queue (a busy node, a slow client), a
//! watcher has several batches waiting. Handing them out as one response saves a header,
//! an encoding and an HTTP/2 frame per batch, which is what lets a stream with many
//! watchers catch up instead of falling further behind. etcd's guarantees are kept:
//! - a batch is only appended to the watcher's **last** response in the queue, and only
//!   while that is an events response nothing else of the watcher follows: any other
//!   response of the watcher (progress, replay, canceled) closes it, so the watcher's
//!   responses keep their order and a later event never overtakes an earlier response;
//! - a stream-wide response ([`INVALID_WATCH_ID`], a progress answer that speaks for every
//!   watcher) closes every open response, so no event moves ahead of it;
//! - batches are appended whole (a batch holds whole revisions), so a revision is never
//!   split; the response's revision becomes the later batch's;
//! - a response grows to at most [`MAX_COALESCED_EVENTS`] events or
//!   [`MAX_COALESCED_BYTES`] (approximate) bytes, beyond which the next batch starts a
//!   new one (fragmenting, for watchers that asked, happens later, in the server).

use std::collections::{HashMap, VecDeque};

use raftkv_core::kv::Revision;
use raftkv_core::watch::{INVALID_WATCH_ID, SharedWatchResponse, WatchId};

/// The most events one coalesced response carries (etcd batches at most 1,000
/// revisions per response).
pub(crate) const MAX_COALESCED_EVENTS: usize = 1000;
/// The most bytes (by `Event::approximate_size`) one coalesced response carries.
pub(crate) const MAX_COALESCED_BYTES: usize = 1 << 20;

/// An open response: where it is and what it holds.
#[derive(Debug, Clone, Copy)]
struct Open {
    /// Its sequence number (see [`ReadyQueue::front`]).
    seq: u64,
    bytes: usize,
}

/// Responses waiting to be handed out, in order (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct ReadyQueue {
    items: VecDeque<SharedWatchResponse>,
    /// The sequence number of `items[0]`; each response pushed gets the next one.
    front: u64,
    /// Per watcher, its last response if more events may be appended to it.
    open: HashMap<WatchId, Open>,
}

impl ReadyQueue {
    /// Queue a response that is not an event batch (created, canceled, progress, a
    /// replayed chunk): it closes its watcher's open response, or every one if it speaks
    /// for the whole stream.
    pub(crate) fn push(&mut self, response: SharedWatchResponse) {
        let id = response.response.watch_id;
        if id == INVALID_WATCH_ID {
            self.open.clear();
        } else {
            self.open.remove(&id);
        }
        self.items.push_back(response);
    }

    /// Queue a batch of watcher `id`'s events (`bytes` approximate), complete up to
    /// `revision`: appended to its open response if there is one with room, else queued
    /// as `response` and left open.
    pub(crate) fn push_events(&mut self, id: WatchId, mut response: SharedWatchResponse, bytes: usize) {
        let revision: Revision = response.response.header.revision;
        if let Some(open) = self.open.get_mut(&id)
            && let Some(index) = open.seq.checked_sub(self.front)
            && let Some(last) = usize::try_from(index).ok().and_then(|i| self.items.get_mut(i))
            && last.events.len() + response.events.len() <= MAX_COALESCED_EVENTS
            && open.bytes + bytes <= MAX_COALESCED_BYTES
        {
            last.events.append(&mut response.events);
            last.response.header.revision = last.response.header.revision.max(revision);
            open.bytes += bytes;
            return;
        }
        let seq = self.front + self.items.len() as u64;
        self.open.insert(id, Open { seq, bytes });
        self.items.push_back(response);
    }

    /// Drop every response of watcher `id` not yet handed out (the client canceled it:
    /// nothing of it may follow its "canceled"). Coalescing restarts for every watcher.
    pub(crate) fn discard(&mut self, id: WatchId) {
        self.items.retain(|r| r.response.watch_id != id);
        self.open.clear();
    }

    /// The next response to hand out.
    pub(crate) fn pop_front(&mut self) -> Option<SharedWatchResponse> {
        let response = self.items.pop_front()?;
        let id = response.response.watch_id;
        if self.open.get(&id).is_some_and(|open| open.seq == self.front) {
            self.open.remove(&id);
        }
        self.front += 1;
        Some(response)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use raftkv_core::kv::{KeyValue, ResponseHeader};
    use raftkv_core::watch::{Event, EventType, SharedEvent, WatchResponse};

    use super::*;

    fn batch(id: WatchId, revisions: &[Revision]) -> SharedWatchResponse {
        let event = |rev| {
            Arc::new(SharedEvent::new(Event {
                kind: EventType::Put,
                kv: KeyValue {
                    key: b"k".to_vec(),
                    mod_revision: rev,
                    ..KeyValue::default()
                },
                prev_kv: None,
            }))
        };
        SharedWatchResponse {
            response: response(id, *revisions.last().unwrap()),
            events: revisions.iter().map(|r| event(*r)).collect(),
            prev_kv: false,
        }
    }

    fn response(id: WatchId, revision: Revision) -> WatchResponse {
        WatchResponse {
            watch_id: id,
            header: ResponseHeader {
                revision,
                ..ResponseHeader::default()
            },
            ..WatchResponse::default()
        }
    }

    /// (watch id, revision, event revisions) of what comes out.
    fn drain(queue: &mut ReadyQueue) -> Vec<(WatchId, Revision, Vec<Revision>)> {
        std::iter::from_fn(|| queue.pop_front())
            .map(|r| {
                let revs = r.events.iter().map(|e| e.revision()).collect();
                (r.response.watch_id, r.response.header.revision, revs)
            })
            .collect()
    }

    #[test]
    fn batches_of_a_watcher_waiting_together_go_out_as_one_in_order() {
        let mut queue = ReadyQueue::default();
        queue.push_events(1, batch(1, &[2, 2]), 10);
        queue.push_events(2, batch(2, &[2]), 10);
        queue.push_events(1, batch(1, &[3]), 10);
        queue.push_events(2, batch(2, &[3, 4]), 10);
        queue.push_events(1, batch(1, &[4]), 10);
        assert_eq!(
            drain(&mut queue),
            vec![(1, 4, vec![2, 2, 3, 4]), (2, 4, vec![2, 3, 4])]
        );
        // Once handed out, a response is not appended to.
        queue.push_events(1, batch(1, &[5]), 10);
        assert_eq!(queue.pop_front().map(|r| r.events.len()), Some(1));
        queue.push_events(1, batch(1, &[6]), 10);
        assert_eq!(drain(&mut queue), vec![(1, 6, vec![6])]);
    }

    #[test]
    fn other_responses_close_what_they_must_and_limits_hold() {
        let mut queue = ReadyQueue::default();
        queue.push_events(1, batch(1, &[2]), 10);
        queue.push_events(2, batch(2, &[2]), 10);
        // Watcher 1's progress: its later events must follow it.
        queue.push(response(1, 2).into());
        queue.push_events(1, batch(1, &[3]), 10);
        queue.push_events(2, batch(2, &[3]), 10);
        // A stream-wide answer closes every watcher's.
        queue.push(response(INVALID_WATCH_ID, 3).into());
        queue.push_events(2, batch(2, &[4]), 10);
        queue.push_events(1, batch(1, &[4]), 10);
        assert_eq!(
            drain(&mut queue),
            vec![
                (1, 2, vec![2]),
                (2, 3, vec![2, 3]),
                (1, 2, vec![]),
                (1, 3, vec![3]),
                (INVALID_WATCH_ID, 3, vec![]),
                (2, 4, vec![4]),
                (1, 4, vec![4]),
            ]
        );
        // Bounded by events and by bytes; batches stay whole.
        let big: Vec<Revision> = vec![7; MAX_COALESCED_EVENTS - 1];
        queue.push_events(1, batch(1, &big), 10);
        queue.push_events(1, batch(1, &[8, 8]), 10);
        queue.push_events(1, batch(1, &[9]), MAX_COALESCED_BYTES);
        queue.push_events(1, batch(1, &[10]), 1);
        let sizes: Vec<_> = drain(&mut queue)
            .into_iter()
            .map(|(_, rev, e)| (rev, e.len()))
            .collect();
        assert_eq!(
            sizes,
            vec![(7, MAX_COALESCED_EVENTS - 1), (8, 2), (9, 1), (10, 1)]
        );
    }
}
