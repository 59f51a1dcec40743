//! # A member's background tasks
//!
//! Started with the node and ended by its shutdown: the leader's lease timers, which
//! expire and checkpoint leases (`lease_timers.rs`); etcd's automatic compaction
//! (`auto_compaction.rs`); asking openraft for a snapshot when the storage's cadence says
//! one is due (`snapshot_trigger.rs`); publishing this member's client URLs through
//! the log (`publish.rs`); and logging when the member stalled, and how
//! (`stall_watch.rs`).
//!
//! **Invariants.** A task holds the node only while it works (a `Weak` between rounds), so
//! dropping every handle on the node ends it too; a task that proposes does so only while
//! its member leads, and never forwards (its decisions are this leader's).
//!
//! **Left out.** Request handling (`api/`) and the storage's own threads (log sync and
//! purge, state sync, compaction: `raftkv-storage`).

pub(crate) mod auto_compaction;
pub(crate) mod lease_timers;
pub(crate) mod publish;
pub(crate) mod snapshot_trigger;
pub(crate) mod stall_watch;
