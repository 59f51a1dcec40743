//! The log store's durability, observed at the syscall level: a child process (this test
//! binary in child mode) appends one small entry and then one entry over 128 KiB through
//! `LogStore::append`, waiting for openraft's flush callback each time, under
//! `strace -f -y`. Marker files opened before and after each append delimit the trace.
//!
//! Checked between the markers of each append:
//! - small entry: `fdatasync` of sled's data file `log/db` (sled's own flush only calls
//!   `sync_file_range`, which is not durable);
//! - large entry: sled wrote it to a file under `log/blobs/`; that file is `fdatasync`ed
//!   and the `blobs` directory is `fsync`ed, besides `log/db`.
//!
//! Needs `strace` (the CI script installs it). Outside CI a missing strace skips the test
//! with a message; under `CI=true` it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use openraft::storage::RaftLogStorageExt;
use openraft::{EntryPayload, LogId};
use raftkv_core::kv::PutRequest;
use raftkv_core::types::Entry;
use raftkv_storage::{Store, StoreOptions};

const CHILD_ENV: &str = "RAFTKV_STRACE_CHILD_DIR";

fn entry(i: u64, len: usize) -> Entry {
    Entry {
        log_id: LogId::new(raftkv_core::types::leader_id(1, 1), i),
        payload: EntryPayload::Normal(raftkv_core::Command::Put(PutRequest::new(
            format!("k{i}"),
            vec![9u8; len],
        ))),
    }
}

fn mark(dir: &Path, name: &str) {
    std::fs::File::create(dir.join(name)).unwrap();
}

#[test]
#[ignore = "run by fsync_is_called_for_small_and_blob_entries under strace"]
fn strace_child_appender() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let dir = Path::new(&dir).to_path_buf();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut store = Store::open(&dir.join("data"), StoreOptions::default()).unwrap();
        mark(&dir, "MARK-small-begin");
        store.log.blocking_append([entry(1, 100)]).await.unwrap();
        mark(&dir, "MARK-small-end");
        mark(&dir, "MARK-large-begin");
        store.log.blocking_append([entry(2, 300 * 1024)]).await.unwrap();
        mark(&dir, "MARK-large-end");
    });
}

fn strace_available() -> bool {
    Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The trace lines between the openat of two marker files.
fn between<'a>(trace: &'a str, begin: &str, end: &str) -> Vec<&'a str> {
    let lines: Vec<&str> = trace.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.contains("openat") && l.contains(begin))
        .expect(begin);
    let stop = lines
        .iter()
        .position(|l| l.contains("openat") && l.contains(end))
        .expect(end);
    lines[start..stop].to_vec()
}

#[test]
fn fsync_is_called_for_small_and_blob_entries() {
    if !strace_available() {
        assert!(
            std::env::var("CI").is_err(),
            "strace is required under CI=true (apt-get install strace)"
        );
        eprintln!("SKIPPED: strace not installed; this test proves fsync calls and needs it");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let trace_path = dir.path().join("trace.txt");
    let status = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-y",
            "-e",
            "signal=none",
            "-e",
            "trace=openat,fdatasync,fsync,sync_file_range",
            "-o",
        ])
        .arg(&trace_path)
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "strace_child_appender",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "child failed under strace");
    let trace = std::fs::read_to_string(&trace_path).unwrap();
    let data_file = format!("{}/data/log/db>", dir.path().display());
    let blobs_dir = format!("{}/data/log/blobs>", dir.path().display());
    let blob_file = format!("{}/data/log/blobs/", dir.path().display());

    let small = between(&trace, "MARK-small-begin", "MARK-small-end");
    let synced_db = small
        .iter()
        .filter(|l| l.contains("fdatasync(") && l.contains(&data_file))
        .count();
    assert!(
        synced_db >= 1,
        "small append: no fdatasync of log/db:\n{}",
        small.join("\n")
    );
    assert!(
        !small
            .iter()
            .any(|l| l.contains("fdatasync(") && l.contains(&blob_file)),
        "small append wrote no blob"
    );

    let large = between(&trace, "MARK-large-begin", "MARK-large-end");
    let synced_db = large
        .iter()
        .filter(|l| l.contains("fdatasync(") && l.contains(&data_file))
        .count();
    let synced_blob = large
        .iter()
        .filter(|l| l.contains("fdatasync(") && l.contains(&blob_file))
        .count();
    let synced_blob_dir = large
        .iter()
        .filter(|l| l.contains("fsync(") && l.contains(&blobs_dir))
        .count();
    assert!(
        synced_db >= 1,
        "large append: no fdatasync of log/db:\n{}",
        large.join("\n")
    );
    assert!(
        synced_blob >= 1,
        "large append: the blob file was not fdatasync'ed:\n{}",
        large.join("\n")
    );
    assert!(
        synced_blob_dir >= 1,
        "large append: the blobs directory was not fsync'ed:\n{}",
        large.join("\n")
    );
    println!(
        "small append: {} syscalls traced; large append: {synced_db} db fdatasync, {synced_blob} blob fdatasync, {synced_blob_dir} blobs dir fsync",
        small.len()
    );
}
