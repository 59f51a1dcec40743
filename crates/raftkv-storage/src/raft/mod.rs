//! # What openraft stores: the log, the state machine, snapshots
//!
//! **What it owns.** openraft's two storage traits. [`log_store::LogStore`]
//! (`RaftLogStorage`): entries, the vote, the committed and purged log ids in the `log/`
//! database; an append is acknowledged only after a real sync, by one thread that covers
//! every append queued meanwhile (group fsync). [`state_machine::StateMachine`]
//! (`RaftStateMachine`): applies entries through `apply/`, publishes their events to
//! `watch/`, builds and installs snapshots. The snapshot files: built at a captured
//! revision while apply goes on and installed into a fresh generation (`snapshot.rs`),
//! their format (`snapshot_file.rs`) and when to take one (`snapshot_cadence.rs`). The
//! background sync of the state machine (`state_sync.rs`), and seeding a new cluster's
//! members from a snapshot file (`restore.rs`, etcdutl's `snapshot restore`).
//!
//! **Invariants.**
//! - The log is purged only up to an index the state machine has made durable, so after a
//!   crash openraft replays from the durable applied state.
//! - A snapshot serves every revision from its compact revision up: its build pins that
//!   revision against physical compaction (`maintenance/compaction_pins.rs`).
//! - An install switches generations atomically; readers keep the tree they hold, and
//!   watchers replay from the new tree's history.
//!
//! **Left out.** Consensus (openraft), moving entries and snapshots between members
//! (`raftkv-net`), and etcd's snapshot format (`etcd_snapshot/`, which `restore.rs` and the
//! export read and write).

pub mod log_store;
pub(crate) mod log_threads;
pub mod restore;
pub mod snapshot;
pub mod snapshot_cadence;
pub(crate) mod snapshot_file;
pub(crate) mod snapshot_scan;
pub mod state_machine;
pub(crate) mod state_sync;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod restore_tests;
