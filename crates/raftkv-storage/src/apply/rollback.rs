//! Rolling back what an unfinished apply left in the state-machine tree, at open.
//!
//! An apply writes its records one by one, in order, and the record naming its applied
//! index and revision (`AppliedState`) last (`raft/state_machine.rs`). sled recovers a
//! prefix of the writes, so after a crash the tree holds a whole number of applies (up to
//! the durable applied state) plus, possibly, the first records of the next one. Those
//! records are what this module removes, so that openraft's replay of the log from the
//! durable applied index starts from exactly the state that index names. Replay is then
//! idempotent: `Applier::latest` reads the newest version of a key and must not see half
//! of the batch it is re-applying.
//!
//! What an apply writes, and how each is undone:
//! - `h` history and `v` version records are keyed by revision and only ever inserted by
//!   apply, the history record first: the keys touched above the durable revision are
//!   found by scanning `h` above it, and their versions above it are removed with them.
//! - `a` attachments follow the newest version of a key, and are written after it: for
//!   every key rolled back, the attachments its removed versions made are removed and the
//!   one its now-newest version names is put back.
//! - `l` lease records, `p` published members and `m` metadata (the cluster id) are
//!   overwritten in place: before an apply changes one, it writes an undo record (`u` +
//!   its last index + the record's key) with the record as it was; undo records above
//!   the durable applied index are restored, and every undo record is then removed
//!   (those at or below it belong to an apply that finished but had not removed them
//!   yet). The applied state itself is written after every record it covers, so it is
//!   never one to undo.
//! - Physical compaction never passes the synced revision (`maintenance/compactor.rs`), so the
//!   history records this needs are still there.
//!
//! The rollback itself writes in an order that makes it safe to crash and run again:
//! records are restored before their undo records go, history records go last.

use std::collections::BTreeSet;

use raftkv_core::codec;
use raftkv_core::kv::Revision;

use crate::apply::applied_state::AppliedState;
use crate::error::Result;
use crate::keys;
use crate::mvcc::{self, VersionRecord};

/// What a rollback removed or restored.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RolledBack {
    /// Version records above the durable revision.
    pub versions: u64,
    /// History records above it.
    pub history: u64,
    /// Keys whose newest version changed back.
    pub keys: u64,
    /// Records (leases, members, metadata) restored from undo records.
    pub restored: u64,
    /// Undo records removed (restored or left by a finished apply).
    pub undo_records: u64,
}

/// Bring `tree` back to exactly `state`: undo in-place overwrites and remove every
/// record an apply wrote above it.
pub(crate) fn roll_back(tree: &sled::Tree, state: &AppliedState) -> Result<RolledBack> {
    let mut report = roll_back_overwrites(tree, state.applied_index())?;
    let versions = roll_back_above(tree, state.revision)?;
    report.versions = versions.versions;
    report.history = versions.history;
    report.keys = versions.keys;
    Ok(report)
}

/// Restore the records the apply after `applied` overwrote in place, from its undo
/// records, then remove every undo record.
fn roll_back_overwrites(tree: &sled::Tree, applied: u64) -> Result<RolledBack> {
    let mut report = RolledBack::default();
    let mut undo_keys = Vec::new();
    for item in tree.scan_prefix([keys::UNDO]) {
        let (undo_key, bytes) = item?;
        if let Some((index, tree_key)) = keys::split_undo_key(&undo_key)
            && index > applied
        {
            match codec::decode::<Option<Vec<u8>>>(&bytes)? {
                Some(before) => tree.insert(tree_key, before)?,
                None => tree.remove(tree_key)?,
            };
            report.restored += 1;
        }
        undo_keys.push(undo_key);
    }
    for undo_key in undo_keys {
        tree.remove(undo_key)?;
        report.undo_records += 1;
    }
    Ok(report)
}

/// Remove every version and history record above `revision` and restore the attachment
/// index of the keys they touched.
fn roll_back_above(tree: &sled::Tree, revision: Revision) -> Result<RolledBack> {
    let mut report = RolledBack::default();
    let first = keys::history_key(revision.saturating_add(1), 0);
    let mut history = Vec::new();
    let mut touched = BTreeSet::new();
    for item in tree.range(first.to_vec()..vec![keys::HISTORY + 1]) {
        let (tree_key, user_key) = item?;
        history.push(tree_key);
        touched.insert(user_key.to_vec());
    }
    for key in &touched {
        let lower = keys::version_key(key, revision.saturating_add(1));
        let upper = keys::version_key(key, Revision::MAX);
        for item in tree.range(lower..=upper) {
            let (tree_key, bytes) = item?;
            if let VersionRecord::Put { lease, .. } = codec::decode::<VersionRecord>(&bytes)?
                && lease != 0
            {
                tree.remove(keys::attachment_key(lease, key))?;
            }
            tree.remove(tree_key)?;
            report.versions += 1;
        }
        if let Some(kv) = mvcc::get_at(tree, key, Revision::MAX)?
            && kv.lease != 0
        {
            tree.insert(keys::attachment_key(kv.lease, key), &[][..])?;
        }
        report.keys += 1;
    }
    for tree_key in history {
        tree.remove(tree_key)?;
        report.history += 1;
    }
    Ok(report)
}

/// Fails when a history record sits above `revision`.
#[cfg(test)]
pub(crate) fn check_nothing_above(tree: &sled::Tree, revision: Revision) -> Result<()> {
    let first = keys::history_key(revision.saturating_add(1), 0);
    if let Some(item) = tree.range(first.to_vec()..vec![keys::HISTORY + 1]).next() {
        let (tree_key, _) = item?;
        return Err(crate::error::Error::Corrupt {
            what: "history above the applied revision",
            detail: format!("{:?}", keys::history_revision(&tree_key)),
        });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::apply::lease_table;

    fn put(tree: &sled::Tree, key: &[u8], rev: Revision, sub: u32, lease: i64) {
        let record = VersionRecord::Put {
            create_revision: 2,
            version: rev,
            lease,
            value: format!("v{rev}").into_bytes(),
            sub,
        };
        tree.insert(keys::version_key(key, rev), codec::encode(&record).unwrap())
            .unwrap();
        tree.insert(keys::history_key(rev, sub), key).unwrap();
        if lease != 0 {
            tree.insert(keys::attachment_key(lease, key), &[][..]).unwrap();
        }
    }

    fn delete(tree: &sled::Tree, key: &[u8], rev: Revision, sub: u32) {
        let record = VersionRecord::Delete { sub };
        tree.insert(keys::version_key(key, rev), codec::encode(&record).unwrap())
            .unwrap();
        tree.insert(keys::history_key(rev, sub), key).unwrap();
    }

    fn tree() -> sled::Tree {
        let db = sled::Config::new().temporary(true).open().unwrap();
        db.open_tree("t").unwrap()
    }

    #[test]
    fn nothing_above_the_durable_revision_changes_nothing() {
        let tree = tree();
        put(&tree, b"a", 2, 0, 0);
        put(&tree, b"b", 3, 0, 7);
        let before: Vec<_> = tree.iter().map(|i| i.unwrap()).collect();
        assert_eq!(roll_back_above(&tree, 3).unwrap(), RolledBack::default());
        let after: Vec<_> = tree.iter().map(|i| i.unwrap()).collect();
        assert_eq!(before, after);
    }

    #[test]
    fn a_half_written_apply_is_removed_and_attachments_restored() {
        let tree = tree();
        // Durable: a@2 on lease 7, b@3 without a lease.
        put(&tree, b"a", 2, 0, 7);
        put(&tree, b"b", 3, 0, 0);
        // The unfinished apply: a moves to lease 9 at 4 (the old attachment removed, as
        // apply does), b is deleted at 5, c is new at 5.
        tree.remove(keys::attachment_key(7, b"a")).unwrap();
        put(&tree, b"a", 4, 0, 9);
        delete(&tree, b"b", 5, 0);
        put(&tree, b"c", 5, 1, 9);

        let report = roll_back_above(&tree, 3).unwrap();
        assert_eq!(
            report,
            RolledBack {
                versions: 3,
                history: 3,
                keys: 3,
                ..RolledBack::default()
            }
        );
        assert_eq!(
            mvcc::get_at(&tree, b"a", Revision::MAX)
                .unwrap()
                .unwrap()
                .mod_revision,
            2
        );
        assert_eq!(
            mvcc::get_at(&tree, b"b", Revision::MAX)
                .unwrap()
                .unwrap()
                .mod_revision,
            3
        );
        assert!(mvcc::get_at(&tree, b"c", Revision::MAX).unwrap().is_none());
        assert_eq!(lease_table::attached(&tree, 7).unwrap(), vec![b"a".to_vec()]);
        assert!(lease_table::attached(&tree, 9).unwrap().is_empty());
        check_nothing_above(&tree, 3).unwrap();
        // Running it again (a crash during the rollback) finds nothing more.
        assert_eq!(roll_back_above(&tree, 3).unwrap(), RolledBack::default());
    }

    #[test]
    fn the_check_names_a_record_above() {
        let tree = tree();
        put(&tree, b"a", 2, 0, 0);
        put(&tree, b"a", 4, 0, 0);
        assert!(check_nothing_above(&tree, 2).is_err());
        check_nothing_above(&tree, 4).unwrap();
    }
}
