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
//! **Crash order.** A rewritten chunk keeps its key (a key only has to sort at or before
//! its events: `HistoryRecord::keeping`), so each edit is one overwrite or one removal,
//! which a crash or a concurrent scan (a snapshot build) sees whole or not at all. The
//! edits are staged in ascending chunk order, so a version superseded by a delete is gone
//! before the delete's event (a delete comes after the puts it supersedes, so its chunk
//! sorts after theirs, or is theirs): the compactor's invariant
//! (`maintenance/compactor.rs`) holds for inline versions too.

use std::collections::{BTreeMap, HashSet};

use raftkv_core::kv::Revision;
use sled::IVec;

use crate::apply::tree_writes::TreeBatch;
use crate::error::Result;
use crate::mvcc::history_records::{HistoryEvent, HistoryRecord};
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
    ) -> Result<()> {
        for (chunk_key, edit) in self.edits {
            let Some(value) = tree.get(&chunk_key)? else {
                continue;
            };
            let record = HistoryRecord::decode(chunk_key.clone(), &value)?;
            let keep = |e: &HistoryEvent| {
                !edit.drop.contains(&(e.revision, e.key.clone()))
                    && (!edit.survivors_only || survives(index, target, e))
            };
            let kept = record.events.iter().filter(|e| keep(e)).count();
            if kept == record.events.len() {
                continue;
            }
            match record.keeping(keep) {
                None => batch.remove(chunk_key),
                Some((new_key, new_value)) if new_key[..] == chunk_key[..] => {
                    batch.rewrite(chunk_key, new_value)
                }
                // Not for a chunk (only layout-2 one-event records change key, and only
                // layout-5 chunks are edited): written before the old one goes.
                Some((new_key, new_value)) => {
                    batch.insert(&new_key[..], new_value);
                    batch.remove(chunk_key);
                }
            }
        }
        Ok(())
    }
}

/// Whether `event` is a put a read at `target` (or later, until the key changes again)
/// still sees: its key's newest change at or below `target`.
pub(crate) fn survives(index: &KeyIndex, target: Revision, event: &HistoryEvent) -> bool {
    event.record.is_some()
        && index
            .change_at(&event.key, target)
            .is_some_and(|c| c.is_put() && c.revision() == event.revision)
}
