//! etcd v3's Watch, as raftkv's crates share it: the request that creates a watcher
//! ([`WatchRequest`]), the events it delivers ([`Event`]), the responses a watch stream
//! carries ([`WatchResponse`]), and [`WatchSession`], the interface between whoever serves
//! a stream of watchers (the gRPC service, the embedded `node.watch`) and the storage that
//! produces the events.
//!
//! The semantics are etcd's: a watcher covers a key, a range `[key, range_end)` or every
//! key `>= key` (`range_end == [0]`); it starts at `start_revision` (0: the next revision)
//! and receives every change in order, each revision whole (a response is split only when
//! the watcher asked for fragments); its first response is the "created" one; a start
//! revision whose history is gone is answered with `compact_revision` and the watcher is
//! canceled.
//!
//! Sessions hand their responses out as [`SharedWatchResponse`]s: each event is an
//! `Arc<`[`SharedEvent`]`>` shared by every watcher that receives it, with a slot where a
//! server keeps the event's wire encoding, so that fanning one event out to many
//! watchers neither copies it nor encodes it once per watcher (the gRPC service fills
//! the slot; this crate knows nothing of protobuf). [`WatchSession::poll_next`] gives
//! the plain, owned [`WatchResponse`] for those who want it (the embedded API).

use std::ops::Deref;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use serde::{Deserialize, Serialize};

use crate::kv::{KeyValue, ResponseHeader, Revision, prefix_end};

/// A watcher's id within its stream (etcd's `WatchID`). Ids chosen by the server start at
/// 0, as etcd's do; a client choosing its own ids uses non-zero ones.
pub type WatchId = i64;

/// etcd's `clientv3.InvalidWatchID`: the id of a response that belongs to no watcher (a
/// refused create, a progress notification for the whole stream).
pub const INVALID_WATCH_ID: WatchId = -1;

/// etcd's cancel reasons (the `mvcc` package's error texts), kept identical so etcd
/// clients show the same messages.
pub mod cancel_reason {
    /// The watcher's range holds no key (`range_end` at or before `key`).
    pub const EMPTY_RANGE: &str = "mvcc: watcher range is empty";
    /// The client chose a watch id that is in use on the stream.
    pub const DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
    /// The start revision (or the watcher's position) has been compacted away.
    pub const COMPACTED: &str = "mvcc: required revision has been compacted";
    /// The stream already has the most watchers one stream may have.
    pub const TOO_MANY_WATCHERS: &str = "raftkv: too many watchers on this stream";
    /// The node stopped serving watches (shutdown).
    pub const STOPPED: &str = "raftkv: the node stopped serving watches";
    /// Reading the history failed (a storage error).
    pub const STORAGE: &str = "raftkv: reading the watch history failed";
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    /// The key was written.
    Put,
    /// The key was deleted.
    Delete,
}

/// One change of one key (etcd's `mvccpb.Event`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Put or delete.
    pub kind: EventType,
    /// For a put, the key-value after it; for a delete, the key with `mod_revision` set to
    /// the revision of the delete (the other fields zero), as etcd sends it.
    pub kv: KeyValue,
    /// The key-value before the change, if the watcher asked for it and the key existed.
    pub prev_kv: Option<KeyValue>,
}

impl Event {
    /// The revision of the change.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }

    /// Rough in-memory size, for buffer accounting.
    pub fn approximate_size(&self) -> usize {
        let kv = |kv: &KeyValue| kv.key.len() + kv.value.len() + 48;
        kv(&self.kv) + self.prev_kv.as_ref().map_or(0, kv)
    }
}

/// Creates a watcher (etcd's `WatchCreateRequest`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchRequest {
    /// The key, or the start of the range. Empty means the smallest key (`\0`).
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// Empty: just `key`; `[0]`: every key `>= key`; otherwise `[key, range_end)`.
    #[serde(with = "serde_bytes")]
    pub range_end: Vec<u8>,
    /// The first revision to deliver (inclusive); 0 (or less than 1) means the next one.
    pub start_revision: Revision,
    /// Send periodic progress notifications while no events arrive.
    pub progress_notify: bool,
    /// Leave puts out.
    pub no_put: bool,
    /// Leave deletes out.
    pub no_delete: bool,
    /// Attach each key's previous value to its events.
    pub prev_kv: bool,
    /// A client-chosen id (non-zero), or 0 for one the server picks.
    pub watch_id: WatchId,
    /// Split a response larger than the server's message limit over several (gRPC only).
    pub fragment: bool,
}

impl WatchRequest {
    /// Watch one key.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            ..Self::default()
        }
    }

    /// Watch every key that starts with `prefix` (an empty prefix: every key).
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let key = prefix.into();
        let range_end = prefix_end(&key);
        Self {
            key,
            range_end,
            ..Self::default()
        }
    }

    /// Watch `[start, end)`.
    pub fn interval(start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Self {
        Self {
            key: start.into(),
            range_end: end.into(),
            ..Self::default()
        }
    }

    /// Start at `revision` (replaying history from there).
    pub fn with_start_revision(mut self, revision: Revision) -> Self {
        self.start_revision = revision;
        self
    }

    /// Attach previous key-values.
    pub fn with_prev_kv(mut self, prev_kv: bool) -> Self {
        self.prev_kv = prev_kv;
        self
    }

    /// Leave puts out.
    pub fn with_no_put(mut self, no_put: bool) -> Self {
        self.no_put = no_put;
        self
    }

    /// Leave deletes out.
    pub fn with_no_delete(mut self, no_delete: bool) -> Self {
        self.no_delete = no_delete;
        self
    }

    /// Ask for periodic progress notifications.
    pub fn with_progress_notify(mut self, progress_notify: bool) -> Self {
        self.progress_notify = progress_notify;
        self
    }

    /// Choose the watch id (non-zero).
    pub fn with_watch_id(mut self, watch_id: WatchId) -> Self {
        self.watch_id = watch_id;
        self
    }

    /// Whether the watcher's filters let `kind` through.
    pub fn admits(&self, kind: EventType) -> bool {
        match kind {
            EventType::Put => !self.no_put,
            EventType::Delete => !self.no_delete,
        }
    }
}

/// One message of a watch stream (etcd's `WatchResponse`). `header.revision` is the
/// revision the watcher is complete up to: every event of the watcher at or below it has
/// been sent (for a "created" response: the store revision when it was created).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchResponse {
    /// The header (the storage fills `revision`; the server the rest).
    pub header: ResponseHeader,
    /// The watcher this is about, or [`INVALID_WATCH_ID`].
    pub watch_id: WatchId,
    /// The answer to a create request.
    pub created: bool,
    /// The watcher is gone: canceled by request, refused, or compacted.
    pub canceled: bool,
    /// Set (with `canceled`) when the watcher's next revision is no longer in the history:
    /// the oldest revision a new watch can start at.
    pub compact_revision: Revision,
    /// Why the watcher was canceled, if the server says.
    pub cancel_reason: String,
    /// More responses of the same revision follow (only for watchers that asked for
    /// fragments).
    pub fragment: bool,
    /// The events, in revision order, each revision whole.
    pub events: Vec<Event>,
}

impl WatchResponse {
    /// etcd's `IsProgressNotify`: no events, no state change, just a revision.
    pub fn is_progress_notify(&self) -> bool {
        self.events.is_empty()
            && !self.canceled
            && !self.created
            && self.compact_revision == 0
            && self.header.revision != 0
    }
}

/// An [`Event`] shared by every watcher that receives it, with room for a server's wire
/// encodings of it (see the module doc). Dereferences to the event.
#[derive(Debug)]
pub struct SharedEvent {
    event: Event,
    /// The encodings without and with `prev_kv`, made by the first watcher served that
    /// wants each; whoever encodes must always encode the same way.
    encoded: [OnceLock<Box<[u8]>>; 2],
}

impl SharedEvent {
    /// Share `event`.
    pub fn new(event: Event) -> Self {
        Self {
            event,
            encoded: [OnceLock::new(), OnceLock::new()],
        }
    }

    /// The event as a watcher that did (`prev_kv`) or did not ask for previous
    /// key-values gets it.
    pub fn to_event(&self, prev_kv: bool) -> Event {
        Event {
            kind: self.event.kind,
            kv: self.event.kv.clone(),
            prev_kv: if prev_kv { self.event.prev_kv.clone() } else { None },
        }
    }

    /// The event's encoding for watchers that did (`prev_kv`) or did not ask for previous
    /// key-values: made by `encode` the first time, then shared.
    pub fn encoded(&self, prev_kv: bool, encode: impl FnOnce(&Event, bool) -> Vec<u8>) -> &[u8] {
        self.encoded[usize::from(prev_kv)].get_or_init(|| encode(&self.event, prev_kv).into_boxed_slice())
    }
}

impl Deref for SharedEvent {
    type Target = Event;
    fn deref(&self) -> &Event {
        &self.event
    }
}

/// A [`WatchResponse`] as a session yields it: the events shared, not owned (see the
/// module doc).
#[derive(Debug, Clone, Default)]
pub struct SharedWatchResponse {
    /// Everything but the events (its `events` is empty).
    pub response: WatchResponse,
    /// The events, in revision order, each revision whole.
    pub events: Vec<Arc<SharedEvent>>,
    /// The watcher asked for previous key-values: only then do its events carry them.
    pub prev_kv: bool,
}

impl SharedWatchResponse {
    /// The owned response (the events copied).
    pub fn into_response(self) -> WatchResponse {
        let mut response = self.response;
        response
            .events
            .extend(self.events.iter().map(|e| e.to_event(self.prev_kv)));
        response
    }
}

impl From<WatchResponse> for SharedWatchResponse {
    fn from(mut response: WatchResponse) -> Self {
        let events = std::mem::take(&mut response.events);
        Self {
            response,
            events: events
                .into_iter()
                .map(|e| Arc::new(SharedEvent::new(e)))
                .collect(),
            prev_kv: true,
        }
    }
}

/// A stream of watchers, served from one node's applied history: what etcd calls a watch
/// stream. The gRPC service runs one per `Watch` call; the embedded API one per watcher.
///
/// Responses come out of [`WatchSession::poll_next`] in the order etcd guarantees: a
/// watcher's "created" response (returned by [`WatchSession::create`]) before any of its
/// events, its events in revision order with no gaps, and nothing after its "canceled".
pub trait WatchSession: Send {
    /// Create a watcher. Returns the "created" response, to be sent before anything
    /// [`WatchSession::poll_next`] yields afterwards; a refused watcher comes back created
    /// and canceled with a reason, as etcd answers.
    fn create(&mut self, request: WatchRequest) -> WatchResponse;
    /// Cancel a watcher; returns its "canceled" response, or `None` if the id is unknown.
    fn cancel(&mut self, watch_id: WatchId) -> Option<WatchResponse>;
    /// Ask for a progress notification of the whole stream: a response with
    /// [`INVALID_WATCH_ID`] and a revision every watcher has sent everything up to, yielded
    /// once every watcher is caught up.
    fn request_progress(&mut self);
    /// The next response, its events shared; `Ready(None)` once the node stopped serving
    /// watches.
    fn poll_next_shared(&mut self, cx: &mut Context<'_>) -> Poll<Option<SharedWatchResponse>>;
    /// [`WatchSession::poll_next_shared`], the events copied out.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<WatchResponse>> {
        self.poll_next_shared(cx)
            .map(|next| next.map(SharedWatchResponse::into_response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_progress_notifications() {
        let req = WatchRequest::prefix("a").with_no_put(true);
        assert_eq!(req.range_end, b"b");
        assert!(!req.admits(EventType::Put) && req.admits(EventType::Delete));
        assert_eq!(WatchRequest::prefix("").range_end, vec![0]);
        let progress = WatchResponse {
            header: ResponseHeader {
                revision: 7,
                ..ResponseHeader::default()
            },
            ..WatchResponse::default()
        };
        assert!(progress.is_progress_notify());
        let created = WatchResponse {
            created: true,
            ..progress.clone()
        };
        assert!(!created.is_progress_notify());
    }

    #[test]
    fn shared_responses_give_each_watcher_its_events_and_encode_once() {
        let event = Event {
            kind: EventType::Put,
            kv: KeyValue {
                key: b"k".to_vec(),
                mod_revision: 4,
                ..KeyValue::default()
            },
            prev_kv: Some(KeyValue {
                key: b"k".to_vec(),
                ..KeyValue::default()
            }),
        };
        let shared = Arc::new(SharedEvent::new(event.clone()));
        let without = WatchResponse {
            watch_id: 2,
            events: vec![Event {
                prev_kv: None,
                ..event.clone()
            }],
            ..WatchResponse::default()
        };
        for (prev_kv, expected) in [
            (false, without.clone()),
            (
                true,
                WatchResponse {
                    events: vec![event.clone()],
                    ..without.clone()
                },
            ),
        ] {
            let response = SharedWatchResponse {
                response: WatchResponse {
                    watch_id: 2,
                    ..WatchResponse::default()
                },
                events: vec![shared.clone()],
                prev_kv,
            };
            assert_eq!(response.into_response(), expected);
        }
        let mut calls = 0;
        for _ in 0..3 {
            let bytes = shared.encoded(true, |e, prev_kv| {
                calls += 1;
                assert!(prev_kv && e.prev_kv.is_some());
                vec![1, 2]
            });
            assert_eq!(bytes, [1, 2]);
        }
        assert_eq!(calls, 1);
        assert_eq!(
            SharedWatchResponse::from(without.clone()).into_response(),
            without
        );
    }
}
