//! `--watchers`: etcd Watch streams held open during a load run, to measure what
//! watchers cost the server.
//!
//! [`WatchSet::open`] opens `--watchers` watchers on one server (`--watch-endpoint`,
//! else the first endpoint) before the measured phase. They are multiplexed over Watch
//! streams of at most [`WATCHERS_PER_STREAM`] watchers each, and the streams are spread
//! round-robin over at most [`MAX_WATCH_CONNS`] gRPC connections of their own (not the
//! load's). Watcher `i` (from 0) is created with the client-chosen watch id `i + 1`:
//! - `idle`: it watches the single key `<key-prefix>idle/<i>`, which the load never
//!   writes (the load's keys are `<key-prefix><digits>`), so it receives nothing;
//! - `written`: it watches the whole `<key-prefix>` range (`range_end` is the prefix
//!   with its last byte incremented, as etcd's `WithPrefix`), so every watcher
//!   receives every event the load causes.
//!
//! `open` returns once every watcher got its `created` reply, or at
//! [`CREATE_DEADLINE`]. One task per stream reads it until [`WatchSet::close`],
//! counting the events received in [`WatchCounters`] (one relaxed atomic add per
//! response). The responses are decoded count-only ([`crate::watch_counting`]): the
//! events are counted while being skipped, never decoded into key-values, and only the
//! fields the accounting needs (watch id, created, canceled, compact revision, cancel
//! reason) are kept, so the load tool's CPU does not compete with the servers' for the
//! same cores more than reading the bytes costs. A watcher the server refuses or cancels, one without a `created` reply by
//! the deadline, and every watcher of a stream that fails or ends counts as one watch
//! error, at most once, and the first distinct messages are kept; none of them stops
//! the run. Only an unusable watch endpoint (a bad URL, a refused connection) does.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use raftkv_proto::etcdserverpb::watch_request::RequestUnion;
use raftkv_proto::etcdserverpb::{WatchCreateRequest, WatchRequest};
use raftkv_proto::watch_wire::EncodedWatchResponse;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
// tonic re-exports tokio-stream; the raftkv client crate uses the same wrapper.
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::channel::open_channel;
use crate::cli::{LoadConfig, WatchMode};
use crate::error::{Error, MAX_ERROR_SAMPLES, Result};
use crate::watch_counting;

/// The most watchers one Watch stream carries.
pub const WATCHERS_PER_STREAM: usize = 100;
/// The most gRPC connections the Watch streams are spread over.
pub const MAX_WATCH_CONNS: usize = 4;
/// How long [`WatchSet::open`] waits for the `created` replies.
pub const CREATE_DEADLINE: Duration = Duration::from_secs(30);
/// The largest watch response decoded: a response batches events (of one watcher), so
/// tonic's 4 MiB default could refuse a large batch under a heavy write load.
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// Counts shared by the stream tasks.
#[derive(Debug, Default)]
pub struct WatchCounters {
    /// Events received, over all watchers.
    pub events: AtomicU64,
    /// Watchers that failed (refused, canceled, no `created` reply, stream broken).
    pub errors: AtomicU64,
    /// Watchers whose `created` reply arrived.
    pub created: AtomicU64,
}

/// What the watchers of a run saw.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchResult {
    /// Watchers asked for.
    pub watchers: usize,
    /// What they watched.
    pub mode: WatchMode,
    /// The server they were opened on.
    pub endpoint: String,
    /// Watch streams.
    pub streams: usize,
    /// Watchers whose `created` reply arrived.
    pub created: u64,
    /// Events received during the measured phase.
    pub events: u64,
    /// Watchers that failed, each counted once.
    pub errors: u64,
    /// The first distinct watch error messages, at most [`MAX_ERROR_SAMPLES`].
    pub error_samples: Vec<String>,
}

/// Open watchers and the tasks that drain them.
#[derive(Debug)]
pub struct WatchSet {
    watchers: usize,
    mode: WatchMode,
    endpoint: String,
    streams: usize,
    counters: Arc<WatchCounters>,
    samples: Arc<Mutex<Vec<String>>>,
    tasks: JoinSet<()>,
    /// Events received before the measured phase (see [`WatchSet::start_measuring`]).
    events_before: u64,
    /// How long opening took, until every watcher was created or failed.
    setup: Duration,
}

impl WatchSet {
    /// Opens `config.watchers` watchers as the module doc says and waits for their
    /// `created` replies; `None` when `config.watchers` is 0.
    pub async fn open(config: &LoadConfig) -> Result<Option<WatchSet>> {
        if config.watchers == 0 {
            return Ok(None);
        }
        let endpoint = config
            .watch_endpoint()
            .ok_or_else(|| Error::Config("no endpoint for the watchers".to_string()))?
            .to_string();
        let started = Instant::now();
        let streams = config.watchers.div_ceil(WATCHERS_PER_STREAM);
        let mut channels = Vec::new();
        for _ in 0..streams.min(MAX_WATCH_CONNS) {
            channels.push(open_channel(&endpoint).await?);
        }
        let shared = Shared {
            counters: Arc::new(WatchCounters::default()),
            samples: Arc::new(Mutex::new(Vec::new())),
            resolved: Arc::new(AtomicU64::new(0)),
            progress: Arc::new(Notify::new()),
        };
        let deadline = started + CREATE_DEADLINE;
        let mut tasks = JoinSet::new();
        for stream in 0..streams {
            let first = stream * WATCHERS_PER_STREAM;
            let creates = (first..config.watchers.min(first + WATCHERS_PER_STREAM))
                .map(|i| create_request(config, i))
                .collect();
            let channel = channels[stream % channels.len()].clone();
            tasks.spawn(drain_stream(channel, creates, deadline, shared.clone()));
        }
        // Wait until every watcher is created or failed; each task gives up on its own
        // missing replies at the deadline, so this ends by then.
        let wanted = config.watchers as u64;
        loop {
            let progressed = shared.progress.notified();
            if shared.resolved.load(Ordering::Relaxed) >= wanted {
                break;
            }
            tokio::select! {
                () = progressed => {}
                () = tokio::time::sleep_until(deadline + Duration::from_secs(1)) => break,
            }
        }
        let set = WatchSet {
            watchers: config.watchers,
            mode: config.watch_mode,
            endpoint,
            streams,
            counters: shared.counters,
            samples: shared.samples,
            tasks,
            events_before: 0,
            setup: started.elapsed(),
        };
        Ok(Some(set))
    }

    /// The live counts.
    pub fn counters(&self) -> &Arc<WatchCounters> {
        &self.counters
    }

    /// How long [`WatchSet::open`] took.
    pub fn setup_time(&self) -> Duration {
        self.setup
    }

    /// Marks the start of the measured phase: events received before it (during a
    /// prefill, say) are not reported.
    pub fn start_measuring(&mut self) {
        self.events_before = self.counters.events.load(Ordering::Relaxed);
    }

    /// The counts so far, without closing.
    pub fn result(&self) -> WatchResult {
        let samples = self
            .samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        WatchResult {
            watchers: self.watchers,
            mode: self.mode,
            endpoint: self.endpoint.clone(),
            streams: self.streams,
            created: self.counters.created.load(Ordering::Relaxed),
            events: self
                .counters
                .events
                .load(Ordering::Relaxed)
                .saturating_sub(self.events_before),
            errors: self.counters.errors.load(Ordering::Relaxed),
            error_samples: samples,
        }
    }

    /// Takes the counts, then closes every stream (events arriving while closing are
    /// not counted).
    pub async fn close(mut self) -> WatchResult {
        let result = self.result();
        self.tasks.shutdown().await;
        result
    }
}

/// What the stream tasks share with [`WatchSet`].
#[derive(Debug, Clone)]
struct Shared {
    counters: Arc<WatchCounters>,
    samples: Arc<Mutex<Vec<String>>>,
    /// Watchers created or failed so far.
    resolved: Arc<AtomicU64>,
    /// Woken when `resolved` grows.
    progress: Arc<Notify>,
}

impl Shared {
    /// `count` watchers failed, for `message`.
    fn failed(&self, count: usize, message: String) {
        if count == 0 {
            return;
        }
        self.counters.errors.fetch_add(count as u64, Ordering::Relaxed);
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        if samples.len() < MAX_ERROR_SAMPLES && !samples.contains(&message) {
            samples.push(message);
        }
    }

    /// `count` more watchers are created or failed.
    fn resolved(&self, count: usize) {
        if count > 0 {
            self.resolved.fetch_add(count as u64, Ordering::Relaxed);
            self.progress.notify_waiters();
        }
    }
}

/// The create request of watcher `index`.
fn create_request(config: &LoadConfig, index: usize) -> WatchRequest {
    let prefix = config.key_prefix.as_bytes();
    let (key, range_end) = match config.watch_mode {
        WatchMode::Idle => (
            format!("{}idle/{index}", config.key_prefix).into_bytes(),
            Vec::new(),
        ),
        WatchMode::Written => prefix_range(prefix),
    };
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key,
            range_end,
            watch_id: index as i64 + 1,
            ..Default::default()
        })),
    }
}

/// `(key, range_end)` of every key starting with `prefix`, as etcd's `WithPrefix`: the
/// prefix with its last byte below 0xff incremented (and the bytes after it dropped);
/// `\0` (no upper bound) when there is no such byte; `(\0, \0)` for the empty prefix,
/// every key.
pub fn prefix_range(prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    if prefix.is_empty() {
        return (vec![0], vec![0]);
    }
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return (prefix.to_vec(), end);
        }
    }
    (prefix.to_vec(), vec![0])
}

/// One Watch stream: sends its creates, then reads until aborted, keeping the counts.
async fn drain_stream(channel: Channel, creates: Vec<WatchRequest>, deadline: Instant, shared: Shared) {
    let count = creates.len();
    // Room for every create, so they are all queued before the call; the sender stays
    // here so the request side stays open while the stream is read.
    let (requests, outbound) = mpsc::channel(count.max(1));
    for create in creates {
        if requests.try_send(create).is_err() {
            shared.failed(count, "watch: cannot queue the create requests".to_string());
            shared.resolved(count);
            return;
        }
    }
    let requests_stream = ReceiverStream::new(outbound);
    let mut inbound = match watch_counting::watch(channel, requests_stream, MAX_RESPONSE_BYTES).await {
        Ok(inbound) => inbound,
        Err(status) => {
            shared.failed(count, format!("watch stream refused: {}", status_text(&status)));
            shared.resolved(count);
            return;
        }
    };
    let mut pending = count;
    let mut live = HashSet::with_capacity(count);
    loop {
        let message = tokio::select! {
            message = inbound.message() => message,
            () = tokio::time::sleep_until(deadline), if pending > 0 => {
                let message = format!(
                    "watch: no created reply within {} s",
                    CREATE_DEADLINE.as_secs()
                );
                shared.failed(pending, message);
                shared.resolved(pending);
                // Late replies are ignored from now on.
                pending = 0;
                continue;
            }
        };
        let response = match message {
            Ok(Some(response)) => response,
            Ok(None) => {
                let message = "watch stream ended by the server".to_string();
                shared.failed(pending + live.len(), message);
                shared.resolved(pending);
                break;
            }
            Err(status) => {
                let message = format!("watch stream failed: {}", status_text(&status));
                shared.failed(pending + live.len(), message);
                shared.resolved(pending);
                break;
            }
        };
        on_response(&response, &mut pending, &mut live, &shared);
    }
    drop(requests);
}

/// Accounts for one response of a stream with `pending` creates unanswered and the
/// `live` watch ids.
fn on_response(
    response: &EncodedWatchResponse,
    pending: &mut usize,
    live: &mut HashSet<i64>,
    shared: &Shared,
) {
    let events = response.event_count();
    if events > 0 {
        shared.counters.events.fetch_add(events as u64, Ordering::Relaxed);
    }
    if response.created {
        // A reply after the deadline gave up on it (pending 0) is ignored.
        if *pending == 0 {
            return;
        }
        *pending -= 1;
        if response.canceled {
            shared.failed(1, format!("watch create refused: {}", reason(response)));
        } else {
            live.insert(response.watch_id);
            shared.counters.created.fetch_add(1, Ordering::Relaxed);
        }
        shared.resolved(1);
    } else if response.canceled && live.remove(&response.watch_id) {
        let message = if response.compact_revision > 0 {
            format!(
                "watch canceled: {} (compact revision {})",
                reason(response),
                response.compact_revision
            )
        } else {
            format!("watch canceled: {}", reason(response))
        };
        shared.failed(1, message);
    }
}

fn reason(response: &EncodedWatchResponse) -> &str {
    if response.cancel_reason.is_empty() {
        "no reason given"
    } else {
        &response.cancel_reason
    }
}

fn status_text(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Workload;

    #[test]
    fn prefix_ranges_as_etcd() {
        assert_eq!(prefix_range(b"bench/"), (b"bench/".to_vec(), b"bench0".to_vec()));
        assert_eq!(prefix_range(b"a\xff"), (b"a\xff".to_vec(), b"b".to_vec()));
        assert_eq!(prefix_range(b"\xff\xff"), (b"\xff\xff".to_vec(), vec![0]));
        assert_eq!(prefix_range(b""), (vec![0], vec![0]));
    }

    fn create(request: WatchRequest) -> WatchCreateRequest {
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => create,
            other => panic!("not a create: {other:?}"),
        }
    }

    #[test]
    fn create_requests_per_mode() {
        let mut config = LoadConfig::new(Workload::Put, vec!["http://x:1".to_string()]);
        config.watchers = 3;
        let idle = create(create_request(&config, 2));
        assert_eq!(idle.key, b"bench/idle/2");
        assert!(idle.range_end.is_empty());
        assert_eq!(idle.watch_id, 3);
        config.watch_mode = WatchMode::Written;
        let written = create(create_request(&config, 0));
        assert_eq!(
            (written.key, written.range_end),
            (b"bench/".to_vec(), b"bench0".to_vec())
        );
        assert_eq!(written.watch_id, 1);
        assert!(!written.prev_kv && !written.progress_notify && written.start_revision == 0);
    }
}
