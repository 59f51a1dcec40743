//! Physical compaction of versions that live in their history chunks (layout 5,
//! `mvcc/history_records.rs`): a chunk is rewritten without the events no read at or
//! above the target can need, or removed once none is left.
//!
//! Two kinds of edit are planned for a chunk, and merged when both hit one chunk:
//! - **drop a version**: a key's put older than its newest change at or below the target
//!   (found through the key index, wherever its chunk is: a chunk kept by an earlier round
//!   holds versions that only a later write supersedes);
//! - **keep the survivors**: a chunk wholly below the target, once every event of it is
//!   processed, keeps only the puts still visible at the target (each its key's newest
//!   change at or below it); its deletes and superseded puts go, as a whole record of an
//!   older layout went.
//!
//! **Crash order.** The edits are staged in ascending chunk order, each as "write the new
//! record, then remove the old one" where the rewrite changes the chunk's key (its first
//! event went). So at every instant a still-visible version is in at least one chunk, and
//! a version superseded by a delete is gone before the delete's event (a delete comes
//! after the puts it supersedes, so its chunk sorts after theirs, or is theirs): the
//! compactor's invariant (`maintenance/compactor.rs`) holds for inline versions too. A
//! crash between the write and the remove leaves an event in two chunks: reads find the
//! same version in either, the index build ignores the second, and the round that runs
//! again rewrites the old chunk to the same new record and removes it.

use std::collections::{BTreeMap, HashSet};

use raftkv_core::kv::Revision;
use sled::IVec;

use crate::apply::tree_writes::TreeBatch;
use crate::error::Result;
use crate::mvcc::history_records::{ChunkFormat, HistoryEvent, HistoryRecord, encode_events};
use crate::mvcc::key_index::KeyIndex;

/// The chunk edits of one compaction chunk, by chunk key.
#[derive(Default)]
pub(crate) struct ChunkEdits {
    edits: BTreeMap<IVec, Edit>,
}

#[derive(Default)]
struct Edit {
    /// Events to drop: (revision, key).
    drop: HashSet<(Revision, Vec<u8>)>,
    /// Keep only the puts visible at the target.
    survivors_only: bool,
}

/// What staging the edits will do to the tree.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Rewritten {
    /// Chunks rewritten (some events kept).
    pub(crate) rewritten: usize,
    /// Chunks removed (no event kept).
    pub(crate) removed: usize,
    /// Events dropped.
    pub(crate) events_dropped: usize,
}

impl ChunkEdits {
    /// Drop the put of `key` at `revision` from `chunk`.
    pub(crate) fn drop_version(&mut self, chunk: IVec, revision: Revision, key: &[u8]) {
        self.edits
            .entry(chunk)
            .or_default()
            .drop
            .insert((revision, key.to_vec()));
    }

    /// Keep in `chunk` only the puts visible at the target.
    pub(crate) fn keep_survivors(&mut self, chunk: IVec) {
        self.edits.entry(chunk).or_default().survivors_only = true;
    }

    /// Stage the edits into `batch` for compacting `tree` up to `target` (see the module
    /// doc for the order). Reads the chunks as they are now: the compactor is the only
    /// writer of chunks below the applied revision.
    pub(crate) fn stage(
        self,
        tree: &sled::Tree,
        index: &KeyIndex,
        target: Revision,
        batch: &mut TreeBatch,
    ) -> Result<Rewritten> {
        let mut done = Rewritten::default();
        for (chunk_key, edit) in self.edits {
            let Some(value) = tree.get(&chunk_key)? else {
                continue;
            };
            let record = HistoryRecord::decode(chunk_key.clone(), &value)?;
            let kept: Vec<&HistoryEvent> = record
                .events
                .iter()
                .filter(|e| !edit.drop.contains(&(e.revision, e.key.clone())))
                .filter(|e| !edit.survivors_only || survives(index, target, e))
                .collect();
            if kept.len() == record.events.len() {
                continue;
            }
            done.events_dropped += record.events.len() - kept.len();
            match encode_events(ChunkFormat::Inline, kept) {
                None => {
                    batch.remove(chunk_key);
                    done.removed += 1;
                }
                Some((new_key, new_value)) if new_key[..] == chunk_key[..] => {
                    batch.overwrite(chunk_key, new_value);
                    done.rewritten += 1;
                }
                Some((new_key, new_value)) => {
                    batch.insert(&new_key[..], new_value);
                    batch.remove(chunk_key);
                    done.rewritten += 1;
                }
            }
        }
        Ok(done)
    }
}

/// Whether `event` is a put a read at `target` (or later, until the key changes again)
/// still sees: its key's newest change at or below `target`.
fn survives(index: &KeyIndex, target: Revision, event: &HistoryEvent) -> bool {
    event.record.is_some()
        && index
            .change_at(&event.key, target)
            .is_some_and(|c| c.is_put() && c.revision() == event.revision)
}
