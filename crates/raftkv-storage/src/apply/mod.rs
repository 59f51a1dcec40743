//! # Applying committed commands to the state tree
//!
//! **What it owns.** Turning the committed entries of one `apply()` call into ordered
//! writes to the live state-machine tree, with etcd's semantics (`Applier`):
//! puts, deletes, ranges and txns (`applier.rs`), leases (`lease_apply.rs` over the `l` and
//! `a` families of `lease_table.rs`), alarms (`alarm_table.rs`) and the auth store
//! (`auth_table.rs`, the call's view of it in `auth_overlay.rs`); the one record that says
//! how far apply got (`AppliedState`); the gate and batch every tree write
//! goes through (`tree_writes.rs`); and undoing, at open, what an unfinished call left
//! (`rollback.rs`).
//!
//! **Invariants.**
//! - A call's records are written one by one, in order, and the applied-state record last;
//!   no sled batch or transaction is used (`tree_writes.rs` says why). sled recovers a
//!   prefix of those writes, so a crash leaves the state of one applied index plus the
//!   beginning of the next call, which `rollback.rs` removes at open.
//! - Replaying a call after that rollback gives the same tree, byte for byte
//!   (`crash_midway_tests.rs` stops a batch after each of its writes to show it).
//! - Within a call, each request sees the writes of the requests before it (the applier's
//!   overlays of keys, leases, alarms and the auth store), and a refused request writes
//!   nothing.
//! - Apply never waits for the disk: the state becomes durable in the background
//!   (`raft/state_sync.rs`), and the log it depends on is kept until then.
//!
//! **Left out.** What is committed (openraft decides), delivering events to watchers (the
//! applier only collects them, `watch/events.rs`), lease expiry (the leader's decision,
//! applied as a `LeaseRevoke` entry) and the edge's authorization (the facade checks
//! requests before proposing them; `AsUser` entries are checked again here against the
//! auth store as applied so far).

pub mod alarm_table;
pub(crate) mod applied_state;
pub(crate) mod applier;
pub(crate) mod auth_overlay;
pub(crate) mod auth_table;
pub(crate) mod lease_apply;
pub mod lease_table;
pub mod rollback;
pub(crate) mod tree_writes;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod alarm_tests;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod auth_tests;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod crash_midway_tests;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod lease_tests;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod prev_value_tests;
