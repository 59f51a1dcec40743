//! Concurrent clients for the fault scenarios: each client is bound to one member (as a
//! real client with one endpoint would be), issues put / get / delete over etcd's KV API
//! on a small key space, and records every operation in a [`Recorder`] for the
//! linearizability check.
//!
//! Outcomes are classified conservatively: an answer is `Ok`; every error on a write is
//! `Unknown` (a write refused by one member may still have been proposed by another); a
//! get that errs says nothing and is left unknown. Puts carry unique values, so a read
//! names the write it saw. A request the server does not answer within the client
//! deadline (the server's own request timeout plus slack) counts as a hang: the server
//! must answer with an error instead, unless the member was paused or killed.
//!
//! The load is bounded twice: by `max_ops` and by the caller stopping it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest};
use tonic::transport::{Channel, Endpoint};

use super::history::{OpKind, Outcome, Recorder};

/// A tiny seeded generator (splitmix64): scenarios print their seed to replay choices.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn between(&mut self, low: Duration, high: Duration) -> Duration {
        let span = high.saturating_sub(low).as_millis() as u64;
        low + Duration::from_millis(self.below(span + 1))
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

#[derive(Clone, Debug)]
pub struct WorkloadOptions {
    pub clients: usize,
    pub keys: usize,
    /// The client's own deadline per request; past it the request counts as a hang.
    pub client_deadline: Duration,
    /// Upper bound on operations, whatever the time.
    pub max_ops: u64,
    pub seed: u64,
}

impl Default for WorkloadOptions {
    fn default() -> Self {
        WorkloadOptions {
            clients: 6,
            keys: 24,
            client_deadline: Duration::from_secs(6),
            max_ops: 200_000,
            seed: 1,
        }
    }
}

/// What one client saw.
#[derive(Clone, Debug, Default)]
pub struct ClientTally {
    pub client: u64,
    /// Index into the endpoint list it was bound to.
    pub endpoint: usize,
    pub ok: u64,
    pub errors: u64,
    pub hangs: u64,
    pub max_answer: Duration,
}

pub struct Workload {
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    acked_writes: Arc<AtomicU64>,
    /// When the latest-sent acknowledged write was sent (µs since `epoch`).
    last_acked_write_sent: Arc<AtomicU64>,
    epoch: Instant,
    tasks: Vec<tokio::task::JoinHandle<ClientTally>>,
    endpoints: Vec<String>,
    options: WorkloadOptions,
}

pub fn key(i: usize) -> Vec<u8> {
    format!("k{i:03}").into_bytes()
}

fn channel(url: &str) -> Channel {
    Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .connect_lazy()
}

impl Workload {
    /// Start `options.clients` clients, client `i` bound to `endpoints[i % len]`.
    pub fn start(endpoints: Vec<String>, options: WorkloadOptions) -> Self {
        let recorder = Arc::new(Recorder::new());
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let acked_writes = Arc::new(AtomicU64::new(0));
        let last_acked_write_sent = Arc::new(AtomicU64::new(0));
        let epoch = Instant::now();
        let tasks = (0..options.clients)
            .map(|i| {
                let endpoint = i % endpoints.len();
                tokio::spawn(run_client(
                    i as u64,
                    endpoint,
                    channel(&endpoints[endpoint]),
                    recorder.clone(),
                    stop.clone(),
                    ops.clone(),
                    Acks {
                        count: acked_writes.clone(),
                        last_sent: last_acked_write_sent.clone(),
                        epoch,
                    },
                    options.clone(),
                ))
            })
            .collect();
        Workload {
            recorder,
            stop,
            ops,
            acked_writes,
            last_acked_write_sent,
            epoch,
            tasks,
            endpoints,
            options,
        }
    }

    /// The recorder the clients write to (a test may record its own operations too).
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    pub fn acked_writes(&self) -> u64 {
        self.acked_writes.load(Ordering::Relaxed)
    }

    /// Wait until `more` further writes are acknowledged (the cluster makes progress).
    pub async fn wait_for_writes(&self, more: u64, timeout: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        let target = self.acked_writes() + more;
        while self.acked_writes() < target {
            if start.elapsed() > timeout {
                return Err(format!(
                    "only {} of {more} writes acknowledged in {timeout:?}",
                    more - (target - self.acked_writes())
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(start.elapsed())
    }

    /// Wait until a write *sent after* `since` is acknowledged, and return how long after
    /// `since` that was. After the leader is killed at `since`, this is when writes resume:
    /// an answer the old leader sent just before it died cannot count, since its request
    /// was sent before `since`.
    pub async fn wait_for_write_sent_after(
        &self,
        since: Instant,
        timeout: Duration,
    ) -> Result<Duration, String> {
        let since_us = since.saturating_duration_since(self.epoch).as_micros() as u64;
        while self.last_acked_write_sent.load(Ordering::Relaxed) <= since_us {
            if since.elapsed() > timeout {
                return Err(format!(
                    "no write sent after the fault was acknowledged within {timeout:?} \
                     ({} operations of at most {} issued)",
                    self.ops.load(Ordering::Relaxed),
                    self.options.max_ops
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(since.elapsed())
    }

    /// Stop the clients (each finishes or abandons its request in flight) and return the
    /// recorder and what each client saw.
    pub async fn stop(self) -> (Arc<Recorder>, Vec<ClientTally>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut tallies = Vec::new();
        for task in self.tasks {
            tallies.push(task.await.unwrap());
        }
        (self.recorder, tallies)
    }
}

/// Where a client counts its acknowledged writes.
struct Acks {
    count: Arc<AtomicU64>,
    last_sent: Arc<AtomicU64>,
    epoch: Instant,
}

impl Acks {
    fn record(&self, sent: Instant) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let sent_us = sent.saturating_duration_since(self.epoch).as_micros() as u64;
        self.last_sent.fetch_max(sent_us, Ordering::Relaxed);
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_client(
    client: u64,
    endpoint: usize,
    channel: Channel,
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    acks: Acks,
    options: WorkloadOptions,
) -> ClientTally {
    let mut kv = KvClient::new(channel);
    let mut rng = Rng::new(options.seed ^ (client + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut tally = ClientTally {
        client,
        endpoint,
        ..ClientTally::default()
    };
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) && ops.fetch_add(1, Ordering::Relaxed) < options.max_ops {
        let k = key(rng.below(options.keys as u64) as usize);
        let roll = rng.below(100);
        let kind = if roll < 50 {
            seq += 1;
            OpKind::put(k, format!("c{client}-{seq}"))
        } else if roll < 90 {
            OpKind::get(k)
        } else {
            OpKind::delete(k)
        };
        let pending = recorder.invoke(client, kind.clone());
        let started = Instant::now();
        let answer = tokio::time::timeout(options.client_deadline, send(&mut kv, &kind)).await;
        tally.max_answer = tally.max_answer.max(started.elapsed());
        match answer {
            Ok(Ok(outcome)) => {
                if !matches!(kind, OpKind::Get { .. }) {
                    acks.record(started);
                }
                recorder.complete(pending, outcome);
                tally.ok += 1;
            }
            Ok(Err(_status)) => {
                recorder.complete(pending, Outcome::Unknown);
                tally.errors += 1;
                // Do not spin on a member that refuses at once (killed, no leader).
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(_deadline) => {
                recorder.complete(pending, Outcome::Unknown);
                // The request future is dropped; the channel stays (it reconnects, and a
                // paused member's connection resumes when the member does).
                tally.hangs += 1;
            }
        }
    }
    tally
}

async fn send(kv: &mut KvClient<Channel>, kind: &OpKind) -> Result<Outcome, tonic::Status> {
    match kind {
        OpKind::Put { key, value } => {
            kv.put(PutRequest {
                key: key.clone(),
                value: value.clone(),
                ..PutRequest::default()
            })
            .await?;
            Ok(Outcome::Ok(None))
        }
        OpKind::Delete { key } => {
            kv.delete_range(DeleteRangeRequest {
                key: key.clone(),
                ..DeleteRangeRequest::default()
            })
            .await?;
            Ok(Outcome::Ok(None))
        }
        OpKind::Get { key } => {
            let answer = kv
                .range(RangeRequest {
                    key: key.clone(),
                    ..RangeRequest::default()
                })
                .await?
                .into_inner();
            Ok(Outcome::Ok(answer.kvs.into_iter().next().map(|kv| kv.value)))
        }
    }
}
