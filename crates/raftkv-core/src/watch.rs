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
    pub key: Vec<u8>,
    /// Empty: just `key`; `[0]`: every key `>= key`; otherwise `[key, range_end)`.
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
    /// The next response; `Ready(None)` once the node stopped serving watches.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<WatchResponse>>;
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
}
