//! # The data directory on disk: databases that really sync, the directory lock, generations
//!
//! **What it owns.** [`durable::DurableDb`], a sled database whose `sync()` reaches the
//! disk: sled's `flush()` (which ends in `sync_file_range`, not a sync) plus `fdatasync` of
//! its data file and of the blob files written since the last sync, which `blob_watch.rs`
//! learns from inotify instead of listing the directory. The data directory's `LOCK`
//! ([`data_dir_lock::DataDirLock`]), held by every part that keeps a database of the
//! directory open. The state machine's generations (`generation.rs`): one database
//! directory per generation, named by `state.current`, replaced whole by defragmentation
//! and by snapshot installs, since a new database is the only way sled 0.34 gives space
//! back.
//!
//! **Invariants.**
//! - A sync returns only once everything written before it is on disk.
//! - A database is open only while the directory lock is held, so a reopen in the same
//!   process waits for the previous store to close wholly and a second process is refused.
//! - `state.current` is replaced by a synced temporary file renamed over it and a synced
//!   directory: after a crash it names the old generation or the new one, and the
//!   directory it does not name is removed at the next open.
//!
//! **Left out.** What the databases hold (the key families are `keys.rs`) and when to sync
//! (the log store per group of appends, `raft/log_store.rs`; the state machine in the
//! background, `raft/state_sync.rs`).

pub(crate) mod blob_watch;
pub mod data_dir_lock;
pub mod durable;
pub mod generation;
