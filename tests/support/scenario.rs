//! The frame every fault scenario shares: seed and time budget (printed, overridable from
//! the environment), the server flags, the final read-back, and the verdict: a
//! linearizable history, no acknowledged write lost, answers instead of hangs, and one
//! `RELIABILITY ...` summary line that RELIABILITY.md quotes.
//!
//! - `RAFTKV_FAULT_SEED=<n>` replays a run's random choices (which node, when, which
//!   messages; timing still varies).
//! - `RAFTKV_FAULT_SECS=<n>` runs each scenario's fault loop for `n` seconds instead of its
//!   CI budget (the long mode: as long as you like).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use raftkv_proto::etcdserverpb::RangeRequest;
use raftkv_proto::etcdserverpb::kv_client::KvClient;

use super::faults::{Faults, Injected};
use super::history::{self, OpKind, Outcome, Recorder};
use super::process::ProcessCluster;
use super::workload::{ClientTally, Rng, Workload, WorkloadOptions, key};

/// README, "Failover": with the default timeouts (heartbeat 100 ms, election timeout
/// 350-700 ms) a new leader is elected within lease + timeout (2 x 0.7 s) + the
/// shorter-log back-off (2 x 0.7 s) + a second and a third round (2 x 0.7 s) = 4.2 s of
/// timers, + 2.8 s of slack for scheduling on a loaded machine = 7 s.
pub const FAILOVER_BOUND: Duration = Duration::from_secs(7);

/// The servers answer every request within this (with an error if need be)...
pub const SERVER_REQUEST_TIMEOUT_MS: &str = "3000";
/// ...so a client that waits this long saw a hang.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(7);

/// Flags for every server of a scenario (default Raft timing: the README's bound holds).
pub const SERVER_FLAGS: &[&str] = &["--request-timeout-ms", SERVER_REQUEST_TIMEOUT_MS];

pub struct Scenario {
    pub name: &'static str,
    pub seed: u64,
    pub budget: Duration,
    pub rng: Rng,
    started: Instant,
    failovers: Vec<Duration>,
    resumes: Vec<Duration>,
}

/// A scenario's cluster under load: three members, their fault controls, and the
/// standard workload, already writing.
pub struct Loaded {
    pub cluster: ProcessCluster,
    pub faults: Faults,
    pub workload: Workload,
    /// The workload's key space (for the final read-back).
    pub keys: usize,
}

impl Scenario {
    /// Start three members with [`SERVER_FLAGS`], wait for an agreed leader, and start
    /// the standard workload (this scenario's seed, the [`CLIENT_DEADLINE`]) until it
    /// has made its first 50 writes.
    pub async fn start_loaded(&self) -> Loaded {
        let cluster = ProcessCluster::start(3, SERVER_FLAGS);
        let faults = Faults::new(&cluster, self.seed);
        cluster.agreed_leader(Duration::from_secs(30)).await;
        let options = WorkloadOptions {
            client_deadline: CLIENT_DEADLINE,
            seed: self.seed,
            ..WorkloadOptions::default()
        };
        let keys = options.keys;
        let workload = Workload::start(cluster.client_urls(), options);
        workload
            .wait_for_writes(50, Duration::from_secs(20))
            .await
            .unwrap();
        Loaded {
            cluster,
            faults,
            workload,
            keys,
        }
    }

    pub fn begin(name: &'static str, ci_budget: Duration) -> Self {
        let seed = std::env::var("RAFTKV_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        let budget = std::env::var("RAFTKV_FAULT_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(ci_budget);
        println!(
            "scenario {name}: seed={seed} fault budget={budget:?} \
             (replay: RAFTKV_FAULT_SEED={seed}; longer: RAFTKV_FAULT_SECS=<n>)"
        );
        Scenario {
            name,
            seed,
            budget,
            rng: Rng::new(seed),
            started: Instant::now(),
            failovers: Vec::new(),
            resumes: Vec::new(),
        }
    }

    /// Whether the fault loop may start another round.
    pub fn time_left(&self) -> bool {
        self.started.elapsed() < self.budget
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Record how long the cluster went without an agreed leader; fails past the bound.
    pub fn failover(&mut self, took: Duration) {
        assert!(
            took <= FAILOVER_BOUND,
            "{}: no leader for {took:?}, past the README's bound of {FAILOVER_BOUND:?} (seed {})",
            self.name,
            self.seed
        );
        println!("{}: leader again after {took:?}", self.name);
        self.failovers.push(took);
    }

    /// Record how long after a fault that removed the leader a write sent after the fault
    /// was first acknowledged (what a client sees of the failover).
    pub fn writes_resumed(&mut self, took: Duration) {
        println!("{}: writes resume after {took:?}", self.name);
        self.resumes.push(took);
    }
}

/// The median and the maximum of `times` (zero when empty).
fn median_and_max(times: &[Duration]) -> (Duration, Duration) {
    let mut sorted = times.to_vec();
    sorted.sort();
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
    (median, sorted.last().copied().unwrap_or_default())
}

/// Read every key of the workload back through a linearizable get (retrying across
/// `endpoints` until one answers) and record the reads as gets of the history, so the
/// check orders them against everything else.
pub async fn read_back(
    recorder: &Recorder,
    endpoints: &[String],
    keys: usize,
) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut reads = BTreeMap::new();
    for i in 0..keys {
        let k = key(i);
        let mut attempt = 0;
        loop {
            let url = endpoints[attempt % endpoints.len()].clone();
            attempt += 1;
            let pending = recorder.invoke(u64::MAX, OpKind::get(k.clone()));
            let call = async {
                let mut kv = KvClient::connect(url).await.ok()?;
                kv.range(RangeRequest {
                    key: k.clone(),
                    ..RangeRequest::default()
                })
                .await
                .ok()
                .map(|r| r.into_inner().kvs.into_iter().next().map(|kv| kv.value))
            };
            match tokio::time::timeout(CLIENT_DEADLINE, call).await {
                Ok(Some(value)) => {
                    recorder.complete(pending, Outcome::Ok(value.clone()));
                    reads.insert(k.clone(), value);
                    break;
                }
                _ => {
                    drop(pending);
                    assert!(
                        Instant::now() < deadline,
                        "key {i} could not be read back within 30 s"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    reads
}

/// What a scenario checks at the end, and the summary line it prints.
pub struct Verdict<'a> {
    pub recorder: &'a Recorder,
    pub tallies: &'a [ClientTally],
    pub final_reads: &'a BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    pub injected: Injected,
    /// Endpoints (indexes) whose member was paused or killed: their clients may hang.
    pub may_hang: &'a [usize],
}

impl Scenario {
    pub fn verify(&self, verdict: Verdict<'_>) {
        let history = verdict.recorder.history();
        let acked_writes = history
            .iter()
            .filter(|op| op.client != u64::MAX)
            .filter(|op| matches!(op.outcome, Outcome::Ok(_)) && op.kind.written().is_some())
            .count();
        let unknown = history.iter().filter(|op| op.outcome == Outcome::Unknown).count();
        assert!(
            acked_writes > 0,
            "{}: no write was acknowledged at all; the scenario tested nothing",
            self.name
        );
        if let Err(violation) = history::final_state_check(&history, verdict.final_reads) {
            panic!(
                "{}: an acknowledged write is missing at the end (seed {}): {violation}",
                self.name, self.seed
            );
        }
        let stats = match history::check(&history) {
            Ok(stats) => stats,
            Err(violation) => panic!(
                "{}: history of {} operations is not linearizable (seed {}): {violation}",
                self.name,
                history.len(),
                self.seed
            ),
        };
        let hangs: Vec<&ClientTally> = verdict
            .tallies
            .iter()
            .filter(|t| t.hangs > 0 && !verdict.may_hang.contains(&t.endpoint))
            .collect();
        assert!(
            hangs.is_empty(),
            "{}: requests to a live member got no answer within {CLIENT_DEADLINE:?}: {hangs:?}",
            self.name
        );
        let max_failover = self.failovers.iter().max().copied().unwrap_or_default();
        let (resume_median, resume_max) = median_and_max(&self.resumes);
        summary(&format!(
            "RELIABILITY {} seed={} secs={} ops={} acked_writes={} unknown={} checked={} keys={} {} \
             failovers={} max_failover_ms={} resumes={} resume_median_ms={} resume_max_ms={} \
             hangs=0 violations=0",
            self.name,
            self.seed,
            self.started.elapsed().as_secs(),
            history.len(),
            acked_writes,
            unknown,
            stats.ops_checked,
            stats.keys,
            verdict.injected,
            self.failovers.len(),
            max_failover.as_millis(),
            self.resumes.len(),
            resume_median.as_millis(),
            resume_max.as_millis(),
        ));
    }
}

/// Print a scenario's summary line and append it to `<target>/tmp/reliability.log`, which
/// `scripts/test.sh` prints at the end of a run (the counts RELIABILITY.md quotes).
pub fn summary(line: &str) {
    use std::io::Write;
    println!("{line}");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("reliability.log");
    if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(file, "{line}");
    }
}
