//! The informer's task: list, watch from the list's revision, resume or re-list when
//! the watch ends, and hand every change to the handler.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::cache::Change;
use super::{InformerHandler, LIST_PAGE, ListWatch, Shared, SourceError, WatchEvents};
use crate::kv::{KeyValue, RangeRequest, Revision, prefix_end};
use crate::watch::{WatchRequest, WatchResponse};

/// First and longest wait before retrying a failed list or watch.
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

pub(super) struct Reflector<S, H> {
    pub(super) source: S,
    pub(super) prefix: Vec<u8>,
    pub(super) handler: H,
    pub(super) shared: Arc<Shared>,
}

/// Why a watch stopped.
enum WatchEnd {
    /// Its next revision is no longer in the history: list again.
    Compacted,
    /// The stream ended or failed: watch again from the next revision.
    Broken(String),
    /// The source closed for good: stop.
    Closed(String),
}

impl From<SourceError> for WatchEnd {
    fn from(e: SourceError) -> Self {
        match e {
            SourceError::Compacted => WatchEnd::Compacted,
            SourceError::Failed(e) => WatchEnd::Broken(e),
            SourceError::Closed(e) => WatchEnd::Closed(e),
        }
    }
}

impl<S: ListWatch, H: InformerHandler> Reflector<S, H> {
    /// List and watch until the source closes for good; then record why and return,
    /// dropping the source.
    pub(super) async fn run(self) {
        let reason = self.list_and_watch().await;
        tracing::info!(reason = %reason, "informer's source closed; the informer stops");
        *self.shared.stopped.lock() = Some(reason);
        // Wake every waiter so it sees the stop.
        self.shared.revision.send_modify(|_| {});
    }

    /// Returns why the source closed.
    async fn list_and_watch(&self) -> String {
        let mut backoff = BACKOFF_START;
        loop {
            match self.list().await {
                Ok((kvs, revision)) => {
                    let changes = self.shared.cache.write().replace(kvs, revision);
                    self.publish(changes, revision);
                    self.shared.lists.fetch_add(1, Ordering::Relaxed);
                    backoff = BACKOFF_START;
                }
                Err(SourceError::Closed(reason)) => return reason,
                Err(e) => {
                    tracing::warn!(error = %e, "informer list failed; retrying");
                    backoff = pause(backoff).await;
                    continue;
                }
            }
            // Watch (and resume) until the history no longer has the next revision.
            loop {
                let opened_before = self.shared.watches.load(Ordering::Relaxed);
                let end = self.watch_once().await;
                if self.shared.watches.load(Ordering::Relaxed) != opened_before {
                    // The watch was open: its break starts the backoff over, so a
                    // long-lived informer resumes at once, not after 5 s.
                    backoff = BACKOFF_START;
                }
                match end {
                    WatchEnd::Compacted => {
                        self.shared
                            .relists_after_compaction
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::info!("informer's next revision was compacted; listing again");
                        break;
                    }
                    WatchEnd::Broken(e) => {
                        tracing::debug!(error = %e, "informer watch ended; resuming");
                        backoff = pause(backoff).await;
                    }
                    WatchEnd::Closed(reason) => return reason,
                }
            }
        }
    }

    /// The whole prefix at one revision, page by page.
    async fn list(&self) -> Result<(Vec<KeyValue>, Revision), SourceError> {
        let end = prefix_end(&self.prefix);
        let mut kvs = Vec::new();
        let mut start = self.prefix.clone();
        let mut revision = 0;
        loop {
            let page = self
                .source
                .range(
                    RangeRequest::interval(start.clone(), end.clone())
                        .with_limit(LIST_PAGE)
                        .with_revision(revision),
                )
                .await?;
            if revision == 0 {
                revision = page.header.revision;
            }
            let more = page.more;
            if let Some(last) = page.kvs.last() {
                // The next page starts just after the last key.
                start = last.key.clone();
                start.push(0);
            }
            kvs.extend(page.kvs);
            if !more {
                return Ok((kvs, revision));
            }
        }
    }

    /// One watch from the cache's next revision, until it ends.
    async fn watch_once(&self) -> WatchEnd {
        let from = self.shared.cache.read().revision + 1;
        let mut request = WatchRequest::prefix(self.prefix.clone());
        request.start_revision = from;
        let mut watch = match self.source.watch(request).await {
            Ok(watch) => watch,
            Err(e) => return WatchEnd::from(e),
        };
        self.shared.watches.fetch_add(1, Ordering::Relaxed);
        loop {
            let next = tokio::select! {
                next = watch.next() => next,
                () = self.shared.progress_wanted.notified() => {
                    watch.request_progress();
                    continue;
                }
            };
            match next {
                None => return WatchEnd::Broken("the watch stream ended".into()),
                Some(Err(e)) => return WatchEnd::from(e),
                Some(Ok(response)) => {
                    if let Some(end) = self.on_response(response) {
                        return end;
                    }
                }
            }
        }
    }

    fn on_response(&self, response: WatchResponse) -> Option<WatchEnd> {
        if response.canceled {
            return Some(if response.compact_revision > 0 {
                WatchEnd::Compacted
            } else {
                WatchEnd::Broken(format!("watch canceled: {}", response.cancel_reason))
            });
        }
        if !response.events.is_empty() {
            let (changes, revision) = {
                let mut cache = self.shared.cache.write();
                let changes = cache.apply(&response.events);
                (changes, cache.revision)
            };
            self.publish(changes, revision);
        } else if response.is_progress_notify() {
            // Nothing under the prefix up to its revision.
            let revision = {
                let mut cache = self.shared.cache.write();
                cache.progress(response.header.revision);
                cache.revision
            };
            self.publish(Vec::new(), revision);
        }
        None
    }

    /// Tell the handler, then the waiters.
    fn publish(&self, changes: Vec<Change>, revision: Revision) {
        for change in &changes {
            match change {
                Change::Added(kv) => self.handler.on_add(kv),
                Change::Updated { old, new } => self.handler.on_update(old, new),
                Change::Deleted(kv) => self.handler.on_delete(kv),
            }
        }
        self.shared.revision.send_if_modified(|current| {
            let moved = revision > *current;
            *current = (*current).max(revision);
            moved
        });
    }
}

/// Wait `backoff` (with up to 20% less, so informers that failed together do not retry
/// in step), and return the next one.
async fn pause(backoff: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // A fresh `RandomState` is randomly keyed: random enough to spread retries.
    let jitter = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        % 20;
    tokio::time::sleep(backoff.mul_f64(1.0 - jitter as f64 / 100.0)).await;
    (backoff * 2).min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::time::Duration;

    use parking_lot::Mutex;

    use super::*;
    use crate::informer::{Informer, InformerError};
    use crate::kv::{RangeResponse, ResponseHeader};
    use crate::watch::{Event, EventType};

    fn kv(key: &str, revision: Revision) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: format!("v{revision}").into(),
            create_revision: revision,
            mod_revision: revision,
            version: 1,
            lease: 0,
        }
    }

    /// A scripted source: lists answer the current `listing` page by page; each watch
    /// takes the next script of responses (then ends).
    #[derive(Default)]
    struct Script {
        listing: Vec<KeyValue>,
        list_revision: Revision,
        pages: u64,
        watches: VecDeque<Vec<Result<WatchResponse, SourceError>>>,
        watch_starts: Vec<Revision>,
        /// What the store holds once the history was compacted (listed after it).
        after_compaction: Option<(Vec<KeyValue>, Revision)>,
    }

    struct Source(Arc<Mutex<Script>>);

    struct Responses(VecDeque<Result<WatchResponse, SourceError>>);

    impl WatchEvents for Responses {
        async fn next(&mut self) -> Option<Result<WatchResponse, SourceError>> {
            self.0.pop_front()
        }
        fn request_progress(&mut self) {}
    }

    impl ListWatch for Source {
        type Watch = Responses;

        async fn range(&self, request: RangeRequest) -> Result<RangeResponse, SourceError> {
            let mut script = self.0.lock();
            script.pages += 1;
            assert!(request.revision == 0 || request.revision == script.list_revision);
            let page: Vec<KeyValue> = script
                .listing
                .iter()
                .filter(|kv| kv.key >= request.key && kv.key < request.range_end)
                .take(request.limit as usize)
                .cloned()
                .collect();
            let more = script.listing.iter().filter(|kv| kv.key >= request.key).count() > page.len();
            Ok(RangeResponse {
                header: ResponseHeader {
                    revision: script.list_revision,
                    ..ResponseHeader::default()
                },
                count: page.len() as i64,
                kvs: page,
                more,
            })
        }

        async fn watch(&self, request: WatchRequest) -> Result<Responses, SourceError> {
            let mut script = self.0.lock();
            script.watch_starts.push(request.start_revision);
            match script.watches.pop_front() {
                Some(responses) => {
                    if responses.first() == Some(&Err(SourceError::Compacted))
                        && let Some((listing, revision)) = script.after_compaction.take()
                    {
                        script.listing = listing;
                        script.list_revision = revision;
                    }
                    Ok(Responses(responses.into()))
                }
                // Out of script: a watch that never answers.
                None => Err(SourceError::Failed("no more scripted watches".into())),
            }
        }
    }

    fn events(events: Vec<Event>) -> Result<WatchResponse, SourceError> {
        Ok(WatchResponse {
            events,
            ..WatchResponse::default()
        })
    }

    #[derive(Default)]
    struct Mirror(Mutex<std::collections::BTreeMap<Vec<u8>, KeyValue>>);

    impl InformerHandler for Mirror {
        fn on_add(&self, kv: &KeyValue) {
            assert!(self.0.lock().insert(kv.key.clone(), kv.clone()).is_none());
        }
        fn on_update(&self, old: &KeyValue, new: &KeyValue) {
            assert_eq!(
                self.0.lock().insert(new.key.clone(), new.clone()).as_ref(),
                Some(old)
            );
        }
        fn on_delete(&self, last: &KeyValue) {
            assert_eq!(self.0.lock().remove(&last.key).as_ref(), Some(last));
        }
    }

    #[tokio::test]
    async fn pages_the_list_resumes_a_broken_watch_and_relists_after_compaction() {
        // 1,200 keys: three pages at one revision.
        let first: Vec<KeyValue> = (0..1200).map(|i| kv(&format!("p/{i:04}"), 10)).collect();
        let script = Arc::new(Mutex::new(Script {
            listing: first,
            list_revision: 10,
            ..Script::default()
        }));
        {
            let mut s = script.lock();
            // Watch 1: a put and a delete, then the stream breaks.
            s.watches.push_back(vec![
                events(vec![Event {
                    kind: EventType::Put,
                    kv: kv("p/new", 11),
                    prev_kv: None,
                }]),
                events(vec![Event {
                    kind: EventType::Delete,
                    kv: KeyValue {
                        key: "p/0000".into(),
                        mod_revision: 12,
                        ..KeyValue::default()
                    },
                    prev_kv: None,
                }]),
            ]);
            // Watch 2 (resumed from 13): compacted away.
            s.watches.push_back(vec![Err(SourceError::Compacted)]);
        }
        // Meanwhile the store moved on and compacted: the relist sees revision 20.
        let second: Vec<KeyValue> = (500..1300)
            .map(|i| kv(&format!("p/{i:04}"), if i < 700 { 10 } else { 20 }))
            .collect();
        script.lock().after_compaction = Some((second.clone(), 20));
        let mirror = Arc::new(Mirror::default());
        let informer = Informer::spawn(Source(script.clone()), "p/", mirror.clone());
        informer
            .wait_for_revision(20, Duration::from_secs(5))
            .await
            .unwrap();
        let expected: std::collections::BTreeMap<Vec<u8>, KeyValue> =
            second.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
        assert_eq!(informer.snapshot(), expected);
        assert_eq!(
            *mirror.0.lock(),
            expected,
            "the handlers' view differs from the cache"
        );
        let s = script.lock();
        assert_eq!(
            &s.watch_starts[..2],
            &[11, 13],
            "watch from the list, resume after the last event"
        );
        assert_eq!(s.pages, 3 + 2, "three pages, then two");
        let stats = informer.stats();
        assert_eq!((stats.lists, stats.relists_after_compaction), (2, 1));
    }

    #[tokio::test]
    async fn a_closed_source_stops_the_informer_which_keeps_its_cache_and_lets_go() {
        let script = Arc::new(Mutex::new(Script {
            listing: vec![kv("p/a", 10)],
            list_revision: 10,
            ..Script::default()
        }));
        script.lock().watches.push_back(vec![
            events(vec![Event {
                kind: EventType::Put,
                kv: kv("p/b", 11),
                prev_kv: None,
            }]),
            Err(SourceError::Closed("node is shut down".into())),
        ]);
        let informer = Informer::spawn(Source(script.clone()), "p/", ());
        informer
            .wait_for_revision(11, Duration::from_secs(5))
            .await
            .unwrap();
        // A wait beyond where it stopped fails at once with the reason, not at its deadline.
        let started = tokio::time::Instant::now();
        let refused = informer
            .wait_for_revision(50, Duration::from_secs(30))
            .await
            .unwrap_err();
        assert_eq!(
            refused,
            InformerError::Stopped {
                wanted: 50,
                reached: 11,
                reason: "node is shut down".into(),
            }
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(informer.stopped().as_deref(), Some("node is shut down"));
        assert_eq!(informer.len(), 2, "the cache stays");
        // The source is dropped (the node's clone let go) while the informer lives on.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&script) > 1 {
            assert!(tokio::time::Instant::now() < deadline, "the source is still held");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(script.lock().watch_starts, [11], "no watch after the close");
    }
}
