//! Crash loop on the storage layer: SIGKILL at random points, many times, one directory.
//!
//! A child process (this test binary, re-run in child mode) opens the store (recovery),
//! prints `OPENED last=<i> applied=<i>`, then appends entries through the real
//! `LogStore::append` (waiting for openraft's flush callback), prints `ACK <i>` after each
//! callback fired, applies to the state machine in batches of 7 and purges the log behind
//! it at every multiple of 301. Every 97th value is 200 KiB, so sled writes blob files.
//! At every multiple of 89 it starts a defragmentation in the background (a copy of the
//! state machine into a new sled database and a switch to it, `src/maintenance/defrag.rs`), concurrent
//! with the appends and applies, so kills land mid-copy and mid-switch too.
//!
//! The parent runs `RAFTKV_CRASH_ROUNDS` rounds (24 by default; any larger number works)
//! in ONE directory, so each round recovers from what the previous round's crash and the
//! previous recovery left. Each round SIGKILLs the child at a kill point drawn from a
//! seeded splitmix64 (`RAFTKV_FAULT_SEED`, or one derived from the clock; printed first):
//! after 1-5 acks (right after start-up and recovery), after 6-500 acks (mid-stream:
//! mid-append, mid-sync, mid-apply, now and then mid-purge), or 0-300 ms after spawn
//! (skewed towards short delays, so often during process start-up or recovery itself).
//! Each block of three rounds uses each kind once, in a random order. After every kill
//! the parent drains every `ACK` the child wrote before it died, reopens the store and
//! checks:
//! - the child was killed, not exited by itself (a panic in the child fails with its
//!   stderr), and every wait has a deadline (no ack within 20 s fails the same way);
//! - the child's recovery saw exactly what the parent's previous recovery saw, and its
//!   acks continue contiguously from that log end;
//! - nothing acknowledged in ANY round so far is lost: the highest ack ever is at most
//!   the log's last index, and the log holds at most one unacknowledged entry beyond;
//! - the log is a clean, contiguous prefix of decodable entries from the first kept one
//!   to the last;
//! - one state-machine generation directory is left after the reopen;
//! - the state machine matches exactly the entries up to its last-applied id (one
//!   revision per put, the last put visible with its value, nothing past it, the key
//!   count), was never ahead of an acknowledgement, and is never behind the purged log;
//! - over all rounds the child made progress (some acks at all).
//!
//! It ends with `RELIABILITY crash_loop seed=.. rounds=.. kills=.. acked=.. violations=0
//! secs=..`. Replaying a seed reproduces the kill schedule, not the exact instruction
//! each kill lands on: that depends on timing, which is the point of sampling many.
//! Cost: 24 rounds take about 6-10 s in a debug build; a round's checks scan the whole
//! keyspace, which grows with every ack, so 60 rounds take about 25 s.
//!
//! What this cannot prove: SIGKILL loses only what the process had not yet handed to the
//! kernel, so this catches acknowledging before writing, torn batches, wrong or
//! non-idempotent recovery and crashes during recovery, but NOT a missing fsync (the page
//! cache survives the process) nor a power loss or torn sector. The fsync discipline is
//! proven by `fsync_strace.rs`, which watches the syscalls. Kill points are random in
//! time, not aimed at particular lines: a window of a few instructions (e.g. between
//! `purge`'s record and its deletion) is hit only by chance, and purges are a small share
//! of the run. Only the storage layer runs here: openraft's replay of the log into the
//! state machine after a restart is not part of the loop.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::storage::{RaftLogReaderExt, RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{EntryPayload, LogId, RaftLogReader};
use raftkv_core::kv::{PutRequest, RangeRequest};
use raftkv_core::types::Entry;
use raftkv_storage::{Store, StoreOptions};

const CHILD_ENV: &str = "RAFTKV_CRASH_CHILD_DIR";
const ROUNDS_ENV: &str = "RAFTKV_CRASH_ROUNDS";
const SEED_ENV: &str = "RAFTKV_FAULT_SEED";
const DEFAULT_ROUNDS: usize = 24;
/// A child that prints no ack (the first one counted from spawn) for this long fails the test.
const ACK_DEADLINE: Duration = Duration::from_secs(20);
/// Deadline for a killed child to be reaped and for its pipes to reach end-of-file.
const EXIT_DEADLINE: Duration = Duration::from_secs(10);
/// Longest delay of a wall-clock kill point, in milliseconds.
const MAX_KILL_DELAY_MS: u64 = 300;

fn options() -> StoreOptions {
    StoreOptions {
        log_cache_bytes: 8 << 20,
        state_cache_bytes: 8 << 20,
        ..StoreOptions::default()
    }
}

fn key(i: u64) -> String {
    format!("k{i:08}")
}

fn value(i: u64) -> Vec<u8> {
    // Every 97th value is 200 KiB, so sled writes some entries as blob files.
    let len = if i.is_multiple_of(97) { 200 * 1024 } else { 64 };
    vec![(i % 251) as u8; len]
}

fn entry(i: u64) -> Entry {
    Entry {
        log_id: LogId::new(raftkv_core::types::leader_id(1, 1), i),
        payload: EntryPayload::Normal(raftkv_core::Command::Put(PutRequest::new(key(i), value(i)))),
    }
}

/// Child mode: recover, then write until killed (bounded: 20,000 entries or 30 s).
#[test]
#[ignore = "run by crash tests as a child process"]
fn crash_child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut store = Store::open(Path::new(&dir), options()).unwrap();
        let state = store.log.get_log_state().await.unwrap();
        let last = state.last_log_id.map_or(0, |id| id.index);
        let mut next = last + 1;
        let (applied, _) = store.state_machine.applied_state().await.unwrap();
        let mut applied = applied.map_or(0, |id| id.index);
        // The test harness may have printed "test crash_child_writer ... " without a newline.
        println!("\nOPENED last={last} applied={applied}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut defrag: Option<tokio::task::JoinHandle<()>> = None;
        for _ in 0..20_000 {
            if Instant::now() > deadline {
                break;
            }
            store.log.blocking_append([entry(next)]).await.unwrap();
            println!("ACK {next}");
            if next.is_multiple_of(7) {
                let entries = store.log.try_get_log_entries(applied + 1..=next).await.unwrap();
                store.state_machine.apply_committed(entries).await.unwrap();
                applied = next;
            }
            if next.is_multiple_of(301) && applied > 50 {
                let upto = store.log.get_log_id(applied - 50).await.unwrap();
                store.log.purge(upto).await.unwrap();
            }
            if next.is_multiple_of(89) {
                if let Some(previous) = defrag.take() {
                    previous.await.unwrap();
                }
                let shared = store.shared.clone();
                defrag = Some(tokio::task::spawn_blocking(move || {
                    shared.defragment().unwrap();
                }));
            }
            next += 1;
        }
    });
}

/// splitmix64: a tiny, good-enough seeded generator (no `rand` dependency).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform enough in `lo..=hi` for picking kill points (modulo bias is negligible).
    fn in_range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

fn seed() -> u64 {
    match std::env::var(SEED_ENV) {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{SEED_ENV}={s:?} is not a u64: {e}")),
        Err(_) => {
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
            SplitMix64(nanos ^ u64::from(std::process::id()).rotate_left(32)).next_u64()
        }
    }
}

fn rounds() -> usize {
    match std::env::var(ROUNDS_ENV) {
        Ok(s) => {
            let n: usize = s
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("{ROUNDS_ENV}={s:?} is not a number: {e}"));
            assert!(n >= 1, "{ROUNDS_ENV} must be at least 1");
            n
        }
        Err(_) => DEFAULT_ROUNDS,
    }
}

#[derive(Debug, Clone, Copy)]
enum KillPoint {
    /// SIGKILL as soon as the parent has read this many acks of the round.
    AfterAcks(u64),
    /// SIGKILL this long after the child was spawned, whatever it is doing.
    AfterDelay(Duration),
}

impl std::fmt::Display for KillPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KillPoint::AfterAcks(n) => write!(f, "after {n} acks"),
            KillPoint::AfterDelay(d) => write!(f, "{} ms after spawn", d.as_millis()),
        }
    }
}

/// The kill points of all rounds: each block of three rounds has one of each kind
/// (few acks, many acks, wall-clock delay) in a random order.
fn kill_schedule(rng: &mut SplitMix64, rounds: usize) -> Vec<KillPoint> {
    let mut kinds = [0u8, 1, 2];
    let mut schedule = Vec::with_capacity(rounds);
    for round in 0..rounds {
        if round % 3 == 0 {
            // Fisher-Yates.
            for i in (1..kinds.len()).rev() {
                kinds.swap(i, rng.in_range(0, i as u64) as usize);
            }
        }
        schedule.push(match kinds[round % 3] {
            0 => KillPoint::AfterAcks(rng.in_range(1, 5)),
            1 => KillPoint::AfterAcks(rng.in_range(6, 500)),
            // The shorter of two draws: about a third land in the first 50 ms (start-up and
            // recovery on a fast machine), the rest spread over the whole window.
            _ => {
                let ms = rng
                    .in_range(0, MAX_KILL_DELAY_MS)
                    .min(rng.in_range(0, MAX_KILL_DELAY_MS));
                KillPoint::AfterDelay(Duration::from_millis(ms))
            }
        });
    }
    schedule
}

enum Event {
    Opened { last: u64, applied: u64 },
    Ack(u64),
    Garbled(String),
}

fn parse_line(line: &str) -> Option<Event> {
    let parse = |s: &str| s.trim().parse::<u64>().ok();
    if let Some(pos) = line.find("ACK ") {
        return Some(parse(&line[pos + 4..]).map_or_else(|| Event::Garbled(line.into()), Event::Ack));
    }
    if let Some(pos) = line.find("OPENED ") {
        let rest = &line[pos + 7..];
        let opened = rest.split_once(' ').and_then(|(l, a)| {
            Some(Event::Opened {
                last: parse(l.strip_prefix("last=")?)?,
                applied: parse(a.strip_prefix("applied=")?)?,
            })
        });
        return Some(opened.unwrap_or_else(|| Event::Garbled(line.into())));
    }
    None
}

/// What one child printed before it died.
#[derive(Default)]
struct ChildRun {
    opened: Option<(u64, u64)>,
    acks: Vec<u64>,
    killed_after: Duration,
    stderr: String,
}

fn tail(s: &str) -> &str {
    let mut start = s.len().saturating_sub(8_000);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// A running child with its stdout parsed into events and its stderr collected.
struct Running {
    child: Child,
    events: Receiver<Event>,
    stderr: Receiver<Vec<u8>>,
    spawned: Instant,
    ctx: String,
}

impl Running {
    fn spawn(dir: &Path, ctx: String) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child_writer",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let spawned = Instant::now();
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (event_tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(event) = parse_line(&line)
                    && event_tx.send(event).is_err()
                {
                    break;
                }
            }
        });
        let (stderr_tx, stderr_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf);
            let _ = stderr_tx.send(buf);
        });
        Self {
            child,
            events,
            stderr: stderr_rx,
            spawned,
            ctx,
        }
    }

    fn sigkill(&mut self) {
        // SIGKILL (what `Child::kill` sends on Unix): no destructors, no flush. Harmless if
        // the child already exited, and never signals a reused pid after it was reaped.
        let _ = self.child.kill();
    }

    fn reap(&mut self) -> ExitStatus {
        let deadline = Instant::now() + EXIT_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{}: the killed child was not reaped within {EXIT_DEADLINE:?}",
                self.ctx
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn collect_stderr(&mut self) -> String {
        match self.stderr.recv_timeout(EXIT_DEADLINE) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(_) => format!("(child stderr did not reach end-of-file within {EXIT_DEADLINE:?})"),
        }
    }

    /// Kill the child and fail the test with `msg` and the child's stderr.
    fn fail(&mut self, msg: &str) -> ! {
        self.sigkill();
        let status = self.reap();
        let stderr = self.collect_stderr();
        panic!(
            "{}: {msg}\nchild status: {status}\nchild stderr (tail):\n{}",
            self.ctx,
            tail(&stderr)
        );
    }

    fn record(&mut self, event: Event, run: &mut ChildRun) {
        match event {
            Event::Opened { last, applied } => run.opened = Some((last, applied)),
            Event::Ack(i) => run.acks.push(i),
            Event::Garbled(line) => self.fail(&format!("garbled child output {line:?}")),
        }
    }

    /// Run until the kill point, SIGKILL, and collect every ack printed before death.
    fn run_until_killed(mut self, kill: KillPoint) -> ChildRun {
        let mut run = ChildRun::default();
        match kill {
            KillPoint::AfterAcks(n) => {
                let mut ack_deadline = self.spawned + ACK_DEADLINE;
                while (run.acks.len() as u64) < n {
                    let wait = ack_deadline.saturating_duration_since(Instant::now());
                    match self.events.recv_timeout(wait) {
                        Ok(event) => {
                            let acks = run.acks.len();
                            self.record(event, &mut run);
                            if run.acks.len() > acks {
                                ack_deadline = Instant::now() + ACK_DEADLINE;
                            }
                        }
                        Err(RecvTimeoutError::Timeout) => self.fail(&format!(
                            "no ack within {ACK_DEADLINE:?} ({} of {n} acks so far, opened: {:?})",
                            run.acks.len(),
                            run.opened
                        )),
                        Err(RecvTimeoutError::Disconnected) => self.fail(&format!(
                            "the child closed stdout (exited?) before being killed, after {} acks",
                            run.acks.len()
                        )),
                    }
                }
            }
            KillPoint::AfterDelay(delay) => {
                let at = self.spawned + delay;
                loop {
                    match self
                        .events
                        .recv_timeout(at.saturating_duration_since(Instant::now()))
                    {
                        Ok(event) => self.record(event, &mut run),
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => self.fail(&format!(
                            "the child closed stdout (exited?) before being killed, after {} acks",
                            run.acks.len()
                        )),
                    }
                }
            }
        }
        self.sigkill();
        run.killed_after = self.spawned.elapsed();
        // Everything the child wrote before it died is an acknowledgement too.
        let drain_deadline = Instant::now() + EXIT_DEADLINE;
        loop {
            match self
                .events
                .recv_timeout(drain_deadline.saturating_duration_since(Instant::now()))
            {
                Ok(event) => self.record(event, &mut run),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => self.fail(&format!(
                    "child stdout did not close within {EXIT_DEADLINE:?} of SIGKILL"
                )),
            }
        }
        let status = self.reap();
        run.stderr = self.collect_stderr();
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "{}: the child must die of our SIGKILL, not exit by itself ({status})\nchild stderr (tail):\n{}",
            self.ctx,
            tail(&run.stderr)
        );
        run
    }
}

impl Drop for Running {
    /// A parent that panics never leaves a writer running on the directory.
    fn drop(&mut self) {
        self.sigkill();
        let _ = self.child.try_wait();
    }
}

/// What the parent's recovery saw after a round.
#[derive(Debug, Clone, Copy, Default)]
struct Recovered {
    last: u64,
    applied: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_crash_loop_loses_no_acknowledged_append() {
    let started = Instant::now();
    let seed = seed();
    println!("crash loop seed={seed} (replay with {SEED_ENV}={seed})");
    let rounds = rounds();
    let mut rng = SplitMix64(seed);
    let schedule = kill_schedule(&mut rng, rounds);

    let dir = tempfile::tempdir().unwrap();
    let mut prev = Recovered::default();
    let mut max_acked_ever = 0u64;
    let mut total_acks = 0u64;
    let mut kills = 0u64;
    for (round, kill) in (1..=rounds).zip(schedule) {
        let ctx = format!("seed={seed} round {round}/{rounds} (kill {kill})");
        let round_started = Instant::now();
        let run = Running::spawn(dir.path(), ctx.clone()).run_until_killed(kill);
        kills += 1;
        total_acks += run.acks.len() as u64;
        let stderr = if run.stderr.trim().is_empty() {
            String::new()
        } else {
            format!("\nchild stderr (tail):\n{}", tail(&run.stderr))
        };

        // The child recovered exactly what the parent's last recovery saw, and acked
        // contiguously from there.
        if let Some(opened) = run.opened {
            assert_eq!(
                opened,
                (prev.last, prev.applied),
                "{ctx}: the child's recovery (last, applied) differs from the parent's{stderr}"
            );
        }
        assert!(
            run.acks.is_empty() || run.opened.is_some(),
            "{ctx}: acks before the store was opened{stderr}"
        );
        let expected: Vec<u64> = (prev.last + 1..).take(run.acks.len()).collect();
        assert_eq!(
            run.acks, expected,
            "{ctx}: acks do not continue contiguously from the recovered log end{stderr}"
        );
        let round_max = run.acks.last().copied();
        max_acked_ever = max_acked_ever.max(round_max.unwrap_or(0));

        let mut store = Store::open(dir.path(), options()).unwrap();
        let generations: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n == "state" || n.starts_with("state.") && n != "state.current")
            .collect();
        assert_eq!(
            generations.len(),
            1,
            "{ctx}: state generations left: {generations:?}{stderr}"
        );
        let state = store.log.get_log_state().await.unwrap();
        let last = state.last_log_id.map_or(0, |id| id.index);
        // Nothing acknowledged in this or any earlier round is lost.
        assert!(
            last >= max_acked_ever,
            "{ctx}: acknowledged up to {max_acked_ever} (over all rounds), log ends at {last}{stderr}"
        );
        // At most the one append in flight when the kill landed is there unacknowledged.
        let bound = prev.last.max(round_max.unwrap_or(0)) + 1;
        assert!(
            last <= bound,
            "{ctx}: log ends at {last}, beyond the last ack/recovered end + 1 = {bound}{stderr}"
        );
        // A clean prefix: every index from the first kept one to the last, each decodable.
        let first = state.last_purged_log_id.map_or(1, |id| id.index + 1);
        let entries = store.log.try_get_log_entries(first..=last).await.unwrap();
        let indexes: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
        assert_eq!(
            indexes,
            (first..=last).collect::<Vec<_>>(),
            "{ctx}: log has a hole{stderr}"
        );
        // The state machine is consistent with its last-applied id, and never behind the purge.
        let (applied, _) = store.state_machine.applied_state().await.unwrap();
        let applied = applied.map_or(0, |id| id.index);
        let purged = state.last_purged_log_id.map_or(0, |id| id.index);
        assert!(
            applied >= purged,
            "{ctx}: state machine at {applied} behind purged log {purged}{stderr}"
        );
        assert!(
            applied <= max_acked_ever,
            "{ctx}: state machine at {applied}, ahead of the last ack {max_acked_ever}{stderr}"
        );
        assert_eq!(
            store.reader.revision(),
            1 + applied as i64,
            "{ctx}: one revision per applied put{stderr}"
        );
        if applied > 0 {
            let kv = store.reader.range(&RangeRequest::key(key(applied))).unwrap();
            assert_eq!(kv.kvs.len(), 1, "{ctx}: last applied put is visible{stderr}");
            assert!(
                kv.kvs[0].value == value(applied),
                "{ctx}: last applied put has its value{stderr}"
            );
        }
        let beyond = store.reader.range(&RangeRequest::key(key(applied + 1))).unwrap();
        assert!(
            beyond.kvs.is_empty(),
            "{ctx}: nothing past last-applied is visible{stderr}"
        );
        let all = store.reader.range(&RangeRequest::prefix("k")).unwrap();
        assert_eq!(
            all.count, applied as i64,
            "{ctx}: one key per applied put{stderr}"
        );
        drop(store);

        let acked = match (run.acks.first(), run.acks.last()) {
            (Some(a), Some(b)) => format!("{} acks ({a}..={b})", run.acks.len()),
            _ if run.opened.is_some() => "0 acks (killed after recovery)".into(),
            _ => "0 acks (killed before or during recovery)".into(),
        };
        println!(
            "round {round}/{rounds}: kill {kill}, killed at {} ms, {acked}, max acked ever {max_acked_ever}, \
             log {first}..={last}, applied {applied}, purged {purged}, round {} ms",
            run.killed_after.as_millis(),
            round_started.elapsed().as_millis()
        );
        prev = Recovered { last, applied };
    }
    assert!(
        total_acks > 0,
        "seed={seed}: the child made no progress in {rounds} rounds (no ack at all)"
    );
    // The defragmentations ran: the state machine moved to later generations.
    let generation: u64 =
        std::fs::read_to_string(dir.path().join("state.current")).map_or(0, |t| t.trim().parse().unwrap());
    if total_acks >= 10 * 89 {
        assert!(
            generation > 0,
            "seed={seed}: no defragmentation completed in {total_acks} acks"
        );
    }
    let line = format!(
        "RELIABILITY crash_loop seed={seed} rounds={rounds} kills={kills} acked={total_acks} \
         state_generation={generation} violations=0 secs={:.1}",
        started.elapsed().as_secs_f64()
    );
    println!("{line}");
    // scripts/test.sh prints this file at the end of a run (RELIABILITY.md's counts).
    let log = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("reliability.log");
    if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(log) {
        use std::io::Write;
        let _ = writeln!(file, "{line}");
    }
}
