//! Which records of the live tree a snapshot at revision `R` holds, and in which order it
//! reads them while physical compaction runs.
//!
//! The scan is not point-in-time (sled has no such iterator), and the compactor edits the
//! tree meanwhile (up to the pinned compact revision: `raft/snapshot.rs`). What must hold
//! is the compactor's invariant: a version in the snapshot whose key a later write `b`
//! superseded comes with `b`'s history event, or the receiver's key index would take the
//! key as live (a delete is its history event alone). Since layout 5 both are in the `h`
//! family, and the compactor edits chunks in ascending order, a put's chunk before the
//! chunk of the delete that superseded it (`maintenance/chunk_rewrite.rs`). So the scan
//! reads the `h` family in DESCENDING order: if it finds the delete's chunk gone, the
//! put's chunk, which it reads later, was rewritten before. Then the `v` family of older
//! layouts, whose records compaction removes before any history (the `h`-before-`v`
//! order kept from before).

use raftkv_core::kv::Revision;

use crate::error::Result;
use crate::keys;
use crate::mvcc::history_records;

/// Call `keep` with every record a snapshot at `revision` holds (a history record cut to
/// its events at or below it, a version record at or below it), history first, newest
/// first. Metadata and members are the capture's, not read here.
pub(crate) fn scan(
    tree: &sled::Tree,
    revision: Revision,
    mut keep: impl FnMut(Vec<u8>, Vec<u8>) -> Result<()>,
) -> Result<()> {
    for item in tree.scan_prefix([keys::HISTORY]).rev() {
        let (k, v) = item?;
        if let Some((k, v)) = history_records::clip(k, &v, revision)? {
            keep(k, v)?;
        }
    }
    for item in tree.scan_prefix([keys::VERSION]) {
        let (k, v) = item?;
        if keys::split_version_key(&k).is_some_and(|(_, rev)| rev <= revision) {
            keep(k.to_vec(), v.to_vec())?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use raftkv_core::Command;
    use raftkv_core::kv::{CompactionRequest, DeleteRangeRequest, PutRequest};

    use super::*;
    use crate::apply::tree_writes::WriteGate;
    use crate::maintenance::compaction_chunk::{compacted_to, plan_chunk};
    use crate::mvcc::key_index::KeyIndex;
    use crate::test_store::TestStore;

    /// A compaction that commits between any two records of the scan: the records the
    /// scan kept never hold a put without the delete that superseded it (the receiver's
    /// index, built from them, sees the same live keys as the sender). A sled iterator
    /// reads a leaf at a time (a copy), so the put and the delete are many leaves apart.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_compaction_during_the_scan_never_leaves_a_put_without_its_delete() {
        const FILLERS: usize = 60;
        for commit_after in 0..FILLERS + 4 {
            let mut t = TestStore::new();
            t.store.shared.limit_compaction(Some(0));
            // Each call its own chunk: k's put, other keys, k's delete, later writes.
            t.apply(vec![Command::Put(PutRequest::new("k", "v"))]).await;
            for i in 0..FILLERS {
                t.apply(vec![Command::Put(PutRequest::new(format!("f{i:02}"), "v"))])
                    .await;
            }
            t.apply(vec![Command::DeleteRange(DeleteRangeRequest::key("k"))])
                .await;
            t.apply(vec![Command::Put(PutRequest::new("z", "1"))]).await;
            t.apply(vec![Command::Put(PutRequest::new("z", "2"))]).await;
            let target = t.store.shared.revision();
            t.apply(vec![Command::Compact(CompactionRequest {
                revision: target,
                physical: false,
            })])
            .await;
            let tree = t.store.shared.tree();
            let index = &t.store.shared.key_index;
            let mut chunk =
                Some(plan_chunk(&tree, index, compacted_to(&tree).unwrap(), target, usize::MAX).unwrap());
            let mut kept = Vec::new();
            scan(&tree, target, |k, v| {
                if kept.len() == commit_after
                    && let Some(chunk) = chunk.take()
                {
                    let gate = &mut WriteGate::default();
                    chunk.commit_versions(&tree, gate)?.commit_history(&tree, gate)?;
                }
                kept.push((k, v));
                Ok(())
            })
            .unwrap();
            let copy = crate::test_store::temporary_tree();
            for (k, v) in kept {
                copy.insert(k, v).unwrap();
            }
            let received = KeyIndex::build(&copy, target, 0).unwrap();
            assert_eq!(
                received.range(b"", &[0]),
                index.range(b"", &[0]),
                "compaction committed after {commit_after} records"
            );
        }
    }
}
