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
//! - `h` history and `v` version records are keyed by revision and inserted only by apply
//!   (physical compaction rewrites or removes history records, but only below the synced
//!   revision), a batch's history records (chunks of its events, `mvcc/history_records.rs`)
//!   before everything else it writes: the keys touched above the durable revision are
//!   found by scanning `h` above it, and their versions above it are removed with them
//!   (since layout 5 a put's version is inline in its chunk and goes with the chunk).
//! - `a` attachments follow the newest version of a key, and are written after it: for
//!   every key rolled back, the attachments its removed versions made are removed and the
//!   one its version live at the durable revision names is put back (the key index, built
//!   at open from what lies at or below that revision, says which version that is: a
//!   delete has no version record, so the newest record left need not be live).
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
use crate::mvcc::key_index::KeyIndex;
use crate::mvcc::{VersionRecord, history_records};

/// What a rollback removed or restored.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RolledBack {
    /// Version records above the durable revision.
    pub versions: u64,
    /// History events above it.
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
/// `index` is the key index of `state` (built ignoring what lies above its revision).
pub(crate) fn roll_back(tree: &sled::Tree, state: &AppliedState, index: &KeyIndex) -> Result<RolledBack> {
    let mut report = roll_back_overwrites(tree, state.applied_index())?;
    let versions = roll_back_above(tree, state.revision, index)?;
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
fn roll_back_above(tree: &sled::Tree, revision: Revision, index: &KeyIndex) -> Result<RolledBack> {
    let mut report = RolledBack::default();
    let mut history = Vec::new();
    let mut touched = BTreeSet::new();
    for record in history_records::records_from(tree, revision.saturating_add(1)) {
        let record = record?;
        for event in record.events.iter().filter(|e| e.revision > revision) {
            // An inline version goes with its chunk; its attachment is removed here.
            if let Some(bytes) = &event.record {
                if let VersionRecord::Put { lease, .. } = codec::decode::<VersionRecord>(bytes)?
                    && lease != 0
                {
                    tree.remove(keys::attachment_key(lease, &event.key))?;
                }
                report.versions += 1;
            }
            touched.insert(event.key.clone());
        }
        history.push(record);
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
        if let Some(meta) = index.meta(key)
            && meta.lease != 0
        {
            tree.insert(keys::attachment_key(meta.lease, key), &[][..])?;
        }
        report.keys += 1;
    }
    for record in history {
        let above = record.events.iter().filter(|e| e.revision > revision).count();
        report.history += above as u64;
        if above == record.events.len() {
            tree.remove(record.tree_key)?;
            continue;
        }
        // A record never spans two applies (`mvcc/history_records.rs`), so none should
        // start at or below the revision and reach above it; if one does, its events at or
        // below stay: the same first event, so the same chunk key, rewritten in place.
        if let Some((key, value)) = record.up_to(revision) {
            tree.insert(&key[..], value)?;
        }
    }
    Ok(report)
}

/// Fails when a history record sits above `revision`.
#[cfg(test)]
pub(crate) fn check_nothing_above(tree: &sled::Tree, revision: Revision) -> Result<()> {
    if let Some(record) = history_records::records_from(tree, revision.saturating_add(1)).next() {
        let record = record?;
        return Err(crate::error::Error::Corrupt {
            what: "history above the applied revision",
            detail: format!("{:?}", record.events.first()),
        });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::apply::lease_table;
    use crate::mvcc;
    use crate::mvcc::history_records::EventKind;

    /// The rollback as `Store::open` runs it: with the index of the durable revision.
    fn roll_back_above(tree: &sled::Tree, revision: Revision) -> Result<RolledBack> {
        let index = KeyIndex::build(tree, revision, 0)?;
        super::roll_back_above(tree, revision, &index)
    }

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

    use crate::test_store::temporary_tree as tree;

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

    /// Writes a version record only (its history is written apart, as a chunk).
    fn version_only(tree: &sled::Tree, key: &[u8], rev: Revision, sub: u32) {
        let record = VersionRecord::Put {
            create_revision: rev,
            version: 1,
            lease: 0,
            value: b"v".to_vec(),
            sub,
        };
        tree.insert(keys::version_key(key, rev), codec::encode(&record).unwrap())
            .unwrap();
    }

    /// A chunk of layout 3 (no kinds: deletes are tombstone records).
    fn chunk(tree: &sled::Tree, events: &[(Revision, u32, &[u8])]) {
        let events = events.iter().map(|&(r, s, k)| (r, s, EventKind::Unrecorded, k));
        let (key, value) = history_records::encode_chunk(events).unwrap();
        tree.insert(&key[..], value).unwrap();
    }

    #[test]
    fn an_unfinished_apply_with_its_history_in_a_chunk_is_removed() {
        let tree = tree();
        // Durable at 3: one-event records of layout 2 (a, b), then a chunk (c, d).
        put(&tree, b"a", 2, 0, 0);
        put(&tree, b"b", 3, 0, 0);
        chunk(&tree, &[(3, 1, b"c"), (3, 2, b"d")]);
        version_only(&tree, b"c", 3, 1);
        version_only(&tree, b"d", 3, 2);
        // The unfinished apply: its chunk first, then some of its versions.
        chunk(&tree, &[(4, 0, b"a"), (5, 0, b"e"), (6, 0, b"c")]);
        version_only(&tree, b"a", 4, 0);
        version_only(&tree, b"e", 5, 0);
        let report = roll_back_above(&tree, 3).unwrap();
        assert_eq!((report.versions, report.history, report.keys), (2, 3, 3));
        check_nothing_above(&tree, 3).unwrap();
        let newest = |k: &[u8]| {
            mvcc::get_at(&tree, k, Revision::MAX)
                .unwrap()
                .map(|kv| kv.mod_revision)
        };
        assert_eq!(
            [b"a", b"b", b"c", b"d", b"e"].map(|k| newest(k)),
            [Some(2), Some(3), Some(3), Some(3), None]
        );
        let events: Vec<_> = history_records::events_between(&tree, 0, Revision::MAX)
            .map(|e| e.unwrap().revision)
            .collect();
        assert_eq!(events, [2, 3, 3, 3]);
    }

    #[test]
    fn a_chunk_reaching_above_the_durable_revision_keeps_its_events_below() {
        let tree = tree();
        put(&tree, b"a", 2, 0, 0);
        version_only(&tree, b"b", 3, 0);
        version_only(&tree, b"c", 4, 0);
        chunk(&tree, &[(3, 0, b"b"), (4, 0, b"c")]);
        let report = roll_back_above(&tree, 3).unwrap();
        assert_eq!((report.versions, report.history), (1, 1));
        let events: Vec<_> = history_records::events_between(&tree, 0, Revision::MAX)
            .map(|e| e.unwrap())
            .map(|e| (e.revision, e.key))
            .collect();
        assert_eq!(events, [(2, b"a".to_vec()), (3, b"b".to_vec())]);
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

    /// Layout 4: a delete is a history event alone. A key deleted at or below the durable
    /// revision gets no attachment back from its older put; one deleted above it does.
    #[test]
    fn a_key_deleted_by_its_history_event_alone_stays_deleted_or_comes_back() {
        let tree = tree();
        let kinded = |events: &[(Revision, u32, EventKind, &[u8])]| {
            let (key, value) = history_records::encode_chunk(events.iter().copied()).unwrap();
            tree.insert(&key[..], value).unwrap();
        };
        // Durable at 4: a@2 and b@3 on lease 7, a deleted at 4 (its attachment removed).
        for (key, rev) in [(&b"a"[..], 2), (b"b", 3)] {
            let record = VersionRecord::Put {
                create_revision: rev,
                version: 1,
                lease: 7,
                value: b"v".to_vec(),
                sub: 0,
            };
            tree.insert(keys::version_key(key, rev), codec::encode(&record).unwrap())
                .unwrap();
        }
        tree.insert(keys::attachment_key(7, b"b"), &[][..]).unwrap();
        kinded(&[
            (2, 0, EventKind::Put, b"a"),
            (3, 0, EventKind::Put, b"b"),
            (4, 0, EventKind::Delete, b"a"),
        ]);
        // The unfinished apply: a put again at 5 (on lease 9), b deleted at 5.
        kinded(&[(5, 0, EventKind::Put, b"a"), (5, 1, EventKind::Delete, b"b")]);
        tree.insert(keys::attachment_key(9, b"a"), &[][..]).unwrap();
        tree.remove(keys::attachment_key(7, b"b")).unwrap();
        let record = VersionRecord::Put {
            create_revision: 5,
            version: 1,
            lease: 9,
            value: b"new".to_vec(),
            sub: 0,
        };
        tree.insert(keys::version_key(b"a", 5), codec::encode(&record).unwrap())
            .unwrap();

        let report = roll_back_above(&tree, 4).unwrap();
        assert_eq!((report.versions, report.history, report.keys), (1, 2, 2));
        check_nothing_above(&tree, 4).unwrap();
        assert!(lease_table::attached(&tree, 9).unwrap().is_empty());
        assert_eq!(
            lease_table::attached(&tree, 7).unwrap(),
            vec![b"b".to_vec()],
            "b back on its lease, a (deleted at 4) not"
        );
        let index = KeyIndex::build(&tree, Revision::MAX, 0).unwrap();
        assert_eq!(index.visible_at(b"a", 4), None);
        assert_eq!(index.visible_at(b"b", 4), Some(3));
        assert_eq!(roll_back_above(&tree, 4).unwrap(), RolledBack::default());
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
