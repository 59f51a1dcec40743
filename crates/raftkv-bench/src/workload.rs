//! The client loops: connect, optionally prefill, then measure.
//!
//! A run opens `conns` long-lived gRPC channels ([`connect`], round-robin over the
//! endpoints) and spreads `clients` tasks over them. Each client loops on its own:
//! pick a key, send one request under [`REQUEST_TIMEOUT`], record the latency in
//! microseconds into its own histogram. The loop ends at the deadline (a request still
//! in flight then is dropped and counted neither way, so the measured phase ends on
//! time) or when the shared operation budget of `--total` is spent. Failed requests are
//! counted and their first distinct messages kept; they never stop the run.
//!
//! [`LiveCounters`] are the only shared state on the hot path: two relaxed atomics the
//! progress line reads.
//!
//! With `--watchers`, [`run`] opens them ([`crate::watchers`]) after the prefill and
//! before the measured phase, and closes them after it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::{
    Compare, PutRequest, RangeRequest, RequestOp, TxnRequest, compare, request_op,
};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::channel::open_channel;
use crate::cli::{Consistency, LoadConfig, Workload};
use crate::error::MAX_ERROR_SAMPLES;
use crate::error::{Error, Result};
use crate::histogram;
use crate::keys::{KeyNamer, XorShift};
use crate::watchers::{WatchResult, WatchSet};

/// The deadline of every request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed request, so a dead server does not turn the clients into a
/// busy loop. Not part of any latency.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// Counts of the measured phase so far, shared with the progress line.
#[derive(Debug, Default)]
pub struct LiveCounters {
    /// Successful operations.
    pub ops: AtomicU64,
    /// Failed operations.
    pub errors: AtomicU64,
}

impl LiveCounters {
    /// `(ops, errors)` now.
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.ops.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        )
    }
}

/// What a load run measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Workload name, as [`Workload::name`].
    pub workload: &'static str,
    /// Concurrent clients.
    pub clients: usize,
    /// gRPC connections.
    pub conns: usize,
    /// Length of the measured phase.
    pub elapsed: Duration,
    /// Successful operations.
    pub ops: u64,
    /// Failed operations.
    pub errors: u64,
    /// Latency of the successful operations, microseconds.
    pub latency_us: Histogram<u64>,
    /// The first distinct error messages, at most [`MAX_ERROR_SAMPLES`].
    pub error_samples: Vec<String>,
    /// The prefill phase, if the run had one.
    pub prefill: Option<PrefillResult>,
    /// What the `--watchers` saw, if the run had any.
    pub watch: Option<WatchResult>,
}

/// What writing every key once took.
#[derive(Debug, Clone, PartialEq)]
pub struct PrefillResult {
    /// Keys written successfully.
    pub keys: u64,
    /// Failed writes.
    pub errors: u64,
    /// How long it took.
    pub elapsed: Duration,
    /// The first distinct error messages.
    pub error_samples: Vec<String>,
}

/// Connects, prefills if asked, opens the watchers if asked, and measures, without a
/// progress line.
pub async fn run(config: &LoadConfig) -> Result<LoadResult> {
    let conns = connect(config).await?;
    let prefill = match config.workload {
        Workload::Get { prefill: true, .. } => Some(prefill(config, &conns).await?),
        _ => None,
    };
    let mut watchers = WatchSet::open(config).await?;
    if let Some(watchers) = &mut watchers {
        watchers.start_measuring();
    }
    let measured = measure(config, &conns, &Arc::new(LiveCounters::default())).await;
    let watch = match watchers {
        Some(watchers) => Some(watchers.close().await),
        None => None,
    };
    let mut result = measured?;
    result.prefill = prefill;
    result.watch = watch;
    Ok(result)
}

/// Opens `config.conns` channels (at most one per client), round-robin over the
/// endpoints.
pub async fn connect(config: &LoadConfig) -> Result<Vec<KvClient<Channel>>> {
    if config.endpoints.is_empty() {
        return Err(Error::Config("no endpoints".to_string()));
    }
    let count = config.conns.clamp(1, config.clients.max(1));
    let mut conns = Vec::with_capacity(count);
    for i in 0..count {
        let url = &config.endpoints[i % config.endpoints.len()];
        let channel = open_channel(url).await?;
        tracing::debug!(conn = i, endpoint = %url, "connected");
        conns.push(KvClient::new(channel));
    }
    Ok(conns)
}

/// Writes every key of the key space once, the keys dealt out over the clients.
pub async fn prefill(config: &LoadConfig, conns: &[KvClient<Channel>]) -> Result<PrefillResult> {
    let clients = config.clients.max(1) as u64;
    let started = Instant::now();
    let put = Operation::Put {
        value: vec![b'x'; config.value_size],
    };
    let namer = KeyNamer::new(&config.key_prefix, config.key_space);
    let mut tasks = JoinSet::new();
    for id in 0..clients {
        let mut client = pick(conns, id as usize)?;
        let (put, namer, key_space) = (put.clone(), namer.clone(), config.key_space);
        tasks.spawn(async move {
            let mut tally = Tally::default();
            for index in (id..key_space).step_by(clients as usize) {
                match tokio::time::timeout(REQUEST_TIMEOUT, put.send(&mut client, namer.key(index))).await {
                    Ok(Ok(())) => tally.ops += 1,
                    Ok(Err(message)) => tally.failed(message).await,
                    Err(_) => tally.failed(timeout_message()).await,
                }
            }
            tally
        });
    }
    let mut total = Tally::default();
    while let Some(tally) = tasks.join_next().await {
        total.absorb(tally?);
    }
    Ok(PrefillResult {
        keys: total.ops,
        errors: total.errors,
        elapsed: started.elapsed(),
        error_samples: total.samples,
    })
}

/// Runs the measured phase on `conns`, counting into `live` as it goes.
pub async fn measure(
    config: &LoadConfig,
    conns: &[KvClient<Channel>],
    live: &Arc<LiveCounters>,
) -> Result<LoadResult> {
    let clients = config.clients.max(1);
    let operation = Operation::new(config);
    let namer = KeyNamer::new(&config.key_prefix, config.key_space);
    // `--total` as a budget the clients draw from; unbounded without it.
    let budget = Arc::new(AtomicU64::new(config.total.unwrap_or(u64::MAX)));
    let started = Instant::now();
    let deadline = started + config.duration;
    let mut tasks = JoinSet::new();
    for id in 0..clients {
        let client = ClientLoop {
            client: pick(conns, id)?,
            operation: operation.clone(),
            namer: namer.clone(),
            key_space: config.key_space,
            rng: XorShift::new(id as u64),
            deadline,
            budget: budget.clone(),
            live: live.clone(),
        };
        tasks.spawn(client.run());
    }
    let mut histograms = Vec::with_capacity(clients);
    let mut total = Tally::default();
    while let Some(outcome) = tasks.join_next().await {
        let (histogram, tally) = outcome??;
        histograms.push(histogram);
        total.absorb(tally);
    }
    let elapsed = started.elapsed();
    Ok(LoadResult {
        workload: config.workload.name(),
        clients,
        conns: conns.len(),
        elapsed,
        ops: total.ops,
        errors: total.errors,
        latency_us: histogram::merge(&histograms)?,
        error_samples: total.samples,
        prefill: None,
        watch: None,
    })
}

/// The connection of client `id`.
fn pick(conns: &[KvClient<Channel>], id: usize) -> Result<KvClient<Channel>> {
    if conns.is_empty() {
        return Err(Error::Config("no connections".to_string()));
    }
    Ok(conns[id % conns.len()].clone())
}

/// One client's state in the measured phase.
struct ClientLoop {
    client: KvClient<Channel>,
    operation: Operation,
    namer: KeyNamer,
    key_space: u64,
    rng: XorShift,
    deadline: Instant,
    budget: Arc<AtomicU64>,
    live: Arc<LiveCounters>,
}

impl ClientLoop {
    async fn run(mut self) -> Result<(Histogram<u64>, Tally)> {
        let mut histogram = histogram::new_histogram()?;
        let mut tally = Tally::default();
        while Instant::now() < self.deadline && self.take_one() {
            let key = self.namer.key(self.rng.below(self.key_space));
            let sent = Instant::now();
            let request = tokio::time::timeout(REQUEST_TIMEOUT, self.operation.send(&mut self.client, key));
            let outcome = tokio::select! {
                outcome = request => outcome,
                () = tokio::time::sleep_until(self.deadline) => break,
            };
            match outcome {
                Ok(Ok(())) => {
                    let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                    histogram.saturating_record(micros);
                    tally.ops += 1;
                    self.live.ops.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(message)) => self.failed(&mut tally, message).await,
                Err(_) => self.failed(&mut tally, timeout_message()).await,
            }
        }
        Ok((histogram, tally))
    }

    /// Takes one operation from the budget; false when it is spent.
    fn take_one(&self) -> bool {
        self.budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(1))
            .is_ok()
    }

    async fn failed(&self, tally: &mut Tally, message: String) {
        self.live.errors.fetch_add(1, Ordering::Relaxed);
        tally.note_error(message);
        tokio::time::sleep_until(self.deadline.min(Instant::now() + ERROR_PAUSE)).await;
    }
}

/// Successes, failures and the first distinct failure messages.
#[derive(Debug, Default)]
struct Tally {
    ops: u64,
    errors: u64,
    samples: Vec<String>,
}

impl Tally {
    fn note_error(&mut self, message: String) {
        self.errors += 1;
        if self.samples.len() < MAX_ERROR_SAMPLES && !self.samples.contains(&message) {
            self.samples.push(message);
        }
    }

    /// [`Tally::note_error`], then the pause after an error (prefill has no deadline).
    async fn failed(&mut self, message: String) {
        self.note_error(message);
        tokio::time::sleep(ERROR_PAUSE).await;
    }

    fn absorb(&mut self, other: Tally) {
        self.ops += other.ops;
        self.errors += other.errors;
        for sample in other.samples {
            if self.samples.len() < MAX_ERROR_SAMPLES && !self.samples.contains(&sample) {
                self.samples.push(sample);
            }
        }
    }
}

fn timeout_message() -> String {
    format!("timeout: no answer within {} s", REQUEST_TIMEOUT.as_secs())
}

/// The request each operation sends.
#[derive(Debug, Clone)]
enum Operation {
    Put {
        value: Vec<u8>,
    },
    Get {
        serializable: bool,
    },
    Txn {
        value: Vec<u8>,
    },
    /// Every key in `[key, range_end)`; the key drawn for the operation is not used.
    Range {
        serializable: bool,
        key: Vec<u8>,
        range_end: Vec<u8>,
        limit: i64,
        count_only: bool,
    },
}

impl Operation {
    fn new(config: &LoadConfig) -> Self {
        let value = vec![b'x'; config.value_size];
        match config.workload {
            Workload::Put => Operation::Put { value },
            Workload::Get { consistency, .. } => Operation::Get {
                serializable: consistency == Consistency::Serializable,
            },
            Workload::Txn => Operation::Txn { value },
            Workload::Range {
                consistency,
                limit,
                count_only,
            } => {
                let (key, range_end) = crate::watchers::prefix_range(config.key_prefix.as_bytes());
                Operation::Range {
                    serializable: consistency == Consistency::Serializable,
                    key,
                    range_end,
                    limit,
                    count_only,
                }
            }
        }
    }

    /// Sends one request for `key`; the error is a message for the report.
    async fn send(&self, client: &mut KvClient<Channel>, key: Vec<u8>) -> Result<(), String> {
        match self {
            Operation::Put { value } => {
                let request = PutRequest {
                    key,
                    value: value.clone(),
                    ..Default::default()
                };
                client.put(request).await.map_err(status_message)?;
            }
            Operation::Get { serializable } => {
                let request = RangeRequest {
                    key,
                    serializable: *serializable,
                    ..Default::default()
                };
                client.range(request).await.map_err(status_message)?;
            }
            Operation::Range {
                serializable,
                key,
                range_end,
                limit,
                count_only,
            } => {
                let request = RangeRequest {
                    key: key.clone(),
                    range_end: range_end.clone(),
                    serializable: *serializable,
                    limit: *limit,
                    count_only: *count_only,
                    ..Default::default()
                };
                client.range(request).await.map_err(status_message)?;
            }
            Operation::Txn { value } => {
                let response = client.txn(always_true_txn(key, value.clone())).await;
                if !response.map_err(status_message)?.into_inner().succeeded {
                    return Err("txn: the always-true compare (version > -1) failed".to_string());
                }
            }
        }
        Ok(())
    }
}

/// `if version(key) > -1 then put(key, value)`: a compare every key passes, so the
/// transaction always takes its success branch.
fn always_true_txn(key: Vec<u8>, value: Vec<u8>) -> TxnRequest {
    let compare = Compare {
        result: compare::CompareResult::Greater as i32,
        target: compare::CompareTarget::Version as i32,
        key: key.clone(),
        target_union: Some(compare::TargetUnion::Version(-1)),
        ..Default::default()
    };
    let put = RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key,
            value,
            ..Default::default()
        })),
    };
    TxnRequest {
        compare: vec![compare],
        success: vec![put],
        failure: vec![],
    }
}

fn status_message(status: tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}
