//! # Maintenance in the background: physical compaction and defragmentation
//!
//! **What it owns.** The compactor thread of each replica (`compactor.rs`): after a
//! `Compact` is applied, it deletes what no read at or above the compact revision can see,
//! in chunks of at most [`compactor::MAX_DELETIONS_PER_BATCH`] records
//! (`compaction_chunk.rs`; history chunks that hold their versions are rewritten to the
//! ones still visible, `chunk_rewrite.rs`), resuming after a restart from its persisted
//! progress. The pins
//! snapshot builds hold it back with (`compaction_pins.rs`), and the counters and wake
//! handle the state shares with the thread (`compactor_link.rs`). Defragmentation
//! (`defrag.rs`): the live keyspace copied into a new generation and switched to, on
//! demand or by the compactor once the file outgrew [`defrag_policy::AutoDefrag`]'s ratio.
//!
//! **Invariants.**
//! - The compaction target never passes the compact revision, the oldest pin, or the
//!   revision the durable applied state has reached (a crash rolls back to that state by
//!   the history records above it), and it never decreases.
//! - While a superseded version exists, so does the history record of the write that
//!   superseded it: a chunk deletes versions first, then history and progress. A restarted
//!   compactor, or one on a tree installed from a snapshot, finds all remaining work from
//!   the history that is left.
//! - A defragmentation misses no write (writes and the switch share the tree-writers gate,
//!   `apply/tree_writes.rs`); writes wait only for its final catch-up round, reads never.
//!
//! **Left out.** When to compact (an etcd `Compact` request, or the facade's
//! auto-compaction), a rate limit beyond the chunk size and a yield between chunks, and
//! giving space back without a copy (sled 0.34 cannot).

pub(crate) mod chunk_rewrite;
pub mod compaction_chunk;
#[cfg(test)]
mod compaction_crash_tests;
pub(crate) mod compaction_pins;
pub mod compactor;
pub(crate) mod compactor_link;
pub mod defrag;
pub mod defrag_policy;
