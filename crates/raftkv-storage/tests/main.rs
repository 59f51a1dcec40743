//! The storage behaviour tests, one module per file and one test binary for them all
//! (each test binary links the whole store again; see the workspace's `tests/main.rs`).
//! `decode_fuzz` stays a binary of its own: it installs a counting global allocator.
//!
//! One file: `cargo test -p raftkv-storage --test storage crash_sigkill::`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod compaction;
mod crash_sigkill;
mod defrag;
mod fsync_strace;
mod log_restart;
mod openraft_suite;
mod purge_order;
mod sm_ahead_of_log;
mod snapshot_roundtrip;
