//! History replay for a session's watchers that are behind: one chunk per step, on the
//! consumer's task (see the session's module doc), round robin over the watchers in
//! `LocalWatchSession::replaying`. A watcher leaves replay when the hub promotes it at
//! the published revision, or ends when its start was compacted away or history could
//! not be read.

use std::future::Future;
use std::task::Context;
use std::time::Duration;

use raftkv_core::watch::{WatchResponse, cancel_reason};

use super::LocalWatchSession;
use crate::watch::history::{HistoryQuery, ReadOutcome, read_chunk};

/// Wait before re-reading history that a snapshot install overlapped.
const RETRY_AFTER_INSTALL: Duration = Duration::from_millis(20);

impl LocalWatchSession {
    /// Replay one chunk of history for the next watcher that is behind.
    pub(super) fn replay_step(&mut self) {
        let Some(id) = self.replaying.pop_front() else {
            return;
        };
        let Some(w) = self.watchers.get(&id) else {
            return;
        };
        let Some(from) = w.replay_from else {
            return;
        };
        let to = self.published();
        let query = HistoryQuery {
            range: &w.range,
            request: &w.request,
        };
        match read_chunk(&self.shared, &query, from, to, self.limits) {
            Ok(ReadOutcome::Chunk { events, next }) => {
                let mut response = self.response(id, next - 1);
                let Some(w) = self.watchers.get_mut(&id) else {
                    return;
                };
                w.sent_up_to = w.sent_up_to.max(next - 1);
                w.replay_from = Some(next);
                if !events.is_empty() {
                    w.sent_since_tick = true;
                    response.events = events;
                    self.ready.push(response.into());
                }
                if next > to && self.shared.watch_hub.promote(w.hub_id, next) {
                    w.replay_from = None;
                } else {
                    self.replaying.push_back(id);
                }
                self.answer_stream_progress();
            }
            Ok(ReadOutcome::Compacted(compacted)) => {
                // The oldest revision a watch can start at now (see `watch/history.rs`).
                let response = WatchResponse {
                    canceled: true,
                    compact_revision: compacted,
                    cancel_reason: cancel_reason::COMPACTED.to_string(),
                    ..self.response(id, self.published())
                };
                self.end_watcher(id, Some(response));
            }
            Ok(ReadOutcome::Retry) => {
                self.replaying.push_front(id);
                if tokio::runtime::Handle::try_current().is_ok() {
                    self.retry = Some(Box::pin(tokio::time::sleep(RETRY_AFTER_INSTALL)));
                }
            }
            Err(e) => {
                tracing::warn!(watch_id = id, error = %e, "replaying watch history failed; canceling the watcher");
                let response = WatchResponse {
                    canceled: true,
                    cancel_reason: format!("{}: {e}", cancel_reason::STORAGE),
                    ..self.response(id, self.published())
                };
                self.end_watcher(id, Some(response));
            }
        }
    }

    /// Whether replay may run now (not waiting out an install).
    pub(super) fn replay_allowed(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(sleep) = self.retry.as_mut()
            && sleep.as_mut().poll(cx).is_pending()
        {
            return false;
        }
        self.retry = None;
        true
    }
}
