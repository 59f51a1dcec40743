//! Crash safety of the log store and state machine under SIGKILL.
//!
//! A child process (this test binary, re-run in child mode) appends entries through the
//! real `LogStore::append` (waiting for openraft's flush callback), applies them to the
//! state machine in batches, purges the log behind it now and then, and prints `ACK <i>`
//! after each append's callback fired. The parent SIGKILLs it mid-stream, reopens the
//! store and checks: every acknowledged entry is there; the log is a clean, contiguous
//! prefix; the state machine matches exactly the entries up to its last-applied id; the
//! state machine is never behind the purged log. Several rounds reuse one directory.
//!
//! What this proves and what it cannot: SIGKILL loses only what the process had not yet
//! handed to the kernel, so this test catches acknowledging before writing, torn
//! batches and wrong recovery, but NOT a missing fsync (the page cache survives the
//! process). The fsync discipline is proven by `fsync_strace.rs`, which watches the
//! syscalls.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use openraft::storage::{RaftLogReaderExt, RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, LogId, RaftLogReader};
use raftkv_core::kv::{PutRequest, RangeRequest};
use raftkv_core::types::Entry;
use raftkv_storage::{Store, StoreOptions};

const CHILD_ENV: &str = "RAFTKV_CRASH_CHILD_DIR";

fn options() -> StoreOptions {
    StoreOptions {
        log_cache_bytes: 8 << 20,
        state_cache_bytes: 8 << 20,
    }
}

fn key(i: u64) -> String {
    format!("k{i:08}")
}

fn entry(i: u64) -> Entry {
    // Every 97th value is 200 KiB, so sled writes some entries as blob files.
    let len = if i.is_multiple_of(97) { 200 * 1024 } else { 64 };
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), i),
        payload: EntryPayload::Normal(raftkv_core::Command::Put(PutRequest::new(
            key(i),
            vec![(i % 251) as u8; len],
        ))),
    }
}

/// Child mode: write until killed (bounded: 20,000 entries or 30 s).
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
        let mut store = Store::open(std::path::Path::new(&dir), options()).unwrap();
        let state = store.log.get_log_state().await.unwrap();
        let mut next = state.last_log_id.map_or(1, |id| id.index + 1);
        let (applied, _) = store.state_machine.applied_state().await.unwrap();
        let mut applied = applied.map_or(0, |id| id.index);
        let deadline = Instant::now() + Duration::from_secs(30);
        for _ in 0..20_000 {
            if Instant::now() > deadline {
                break;
            }
            store.log.blocking_append([entry(next)]).await.unwrap();
            println!("ACK {next}");
            if next.is_multiple_of(7) {
                let entries = store.log.try_get_log_entries(applied + 1..=next).await.unwrap();
                store.state_machine.apply(entries).await.unwrap();
                applied = next;
            }
            if next.is_multiple_of(301) && applied > 50 {
                let upto = store.log.get_log_id(applied - 50).await.unwrap();
                store.log.purge(upto).await.unwrap();
            }
            next += 1;
        }
    });
}

fn run_child_until_killed(dir: &std::path::Path, kill_after_acks: u64) -> u64 {
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
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut max_ack = 0;
    let mut acks = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(i) = line.strip_prefix("ACK ") {
            max_ack = i.trim().parse().unwrap();
            acks += 1;
            if acks >= kill_after_acks || Instant::now() > deadline {
                break;
            }
        }
    }
    // SIGKILL: no destructors, no flush.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child was killed, not finished");
    max_ack
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_no_acknowledged_append() {
    let dir = tempfile::tempdir().unwrap();
    for (round, kill_after) in [(1, 150u64), (2, 700), (3, 1300)] {
        let max_ack = run_child_until_killed(dir.path(), kill_after);
        let mut store = Store::open(dir.path(), options()).unwrap();
        let state = store.log.get_log_state().await.unwrap();
        let last = state.last_log_id.expect("entries survived").index;
        assert!(
            last >= max_ack,
            "round {round}: acknowledged {max_ack}, log ends at {last}"
        );
        // A clean prefix: every index from the first kept one to the last, each decodable.
        let first = state.last_purged_log_id.map_or(1, |id| id.index + 1);
        let entries = store.log.try_get_log_entries(first..=last).await.unwrap();
        let indexes: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
        assert_eq!(
            indexes,
            (first..=last).collect::<Vec<_>>(),
            "round {round}: log has a hole"
        );
        // The state machine is consistent with its last-applied id, and never behind the purge.
        let (applied, _) = store.state_machine.applied_state().await.unwrap();
        let applied = applied.map_or(0, |id| id.index);
        let purged = state.last_purged_log_id.map_or(0, |id| id.index);
        assert!(
            applied >= purged,
            "round {round}: state machine at {applied} behind purged log {purged}"
        );
        assert_eq!(
            store.reader.revision(),
            1 + applied as i64,
            "round {round}: one revision per applied put"
        );
        if applied > 0 {
            let kv = store.reader.range(&RangeRequest::key(key(applied))).unwrap();
            assert_eq!(kv.kvs.len(), 1, "round {round}: last applied put is visible");
        }
        let beyond = store.reader.range(&RangeRequest::key(key(applied + 1))).unwrap();
        assert!(
            beyond.kvs.is_empty(),
            "round {round}: nothing past last-applied is visible"
        );
        let all = store.reader.range(&RangeRequest::prefix("k")).unwrap();
        assert_eq!(all.count, applied as i64, "round {round}");
        println!("round {round}: acked {max_ack}, log {first}..={last}, applied {applied}, purged {purged}");
        drop(store);
    }
}
