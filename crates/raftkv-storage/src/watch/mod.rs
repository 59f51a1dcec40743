//! # Watches, served by every replica from its own applied stream
//!
//! **What it owns.** While applying, the applier collects the events of keys some watcher
//! covers (`events.rs`). After each applied batch the [`hub::WatchHub`] (etcd's
//! `watchableStore`, `hub.rs`) routes them (`route.rs`) to its synced watchers, whose
//! registry it keeps under one lock (`registry.rs`), each into its session's queue within
//! a bounded share (`queue.rs`, limits in `config.rs`). A [`session::LocalWatchSession`]
//! (one watch stream, `session/`) hands out responses, coalescing one watcher's waiting
//! batches (`ready.rs`), and replays the history (`history.rs`, the `h` family; driven
//! by `session/replay.rs`) for watchers that start in the past or fell behind.
//! `KeyRange` is the one form of a watcher's keys they all use.
//!
//! **Invariants.**
//! - Apply never waits for a watcher: a watcher whose share is full is made unsynced and
//!   replays from the history at its consumer's pace.
//! - Each watcher receives every revision's events once, in revision order, across
//!   demotion, promotion and snapshot installs (an install makes every watcher replay
//!   from the new tree).
//! - Every revision at or above the compact revision can be replayed; a watcher that
//!   compaction passed is canceled with the compact revision, as etcd cancels it.
//!
//! **Left out.** The gRPC stream and the embedded `watch` call (`raftkv-net` and the
//! facade drive a session), and who may watch what (checked by the facade).

pub(crate) mod config;
pub(crate) mod events;
pub(crate) mod history;
pub mod hub;
pub(crate) mod key_range;
pub(crate) mod queue;
pub(crate) mod ready;
pub(crate) mod registry;
pub(crate) mod route;
pub mod session;
