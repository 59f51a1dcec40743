//! Leases in the state machine: the `l` family (one [`LeaseRecord`] per lease) and the `a`
//! family (which keys are attached to which lease), both in the one state-machine tree, so
//! a grant, a revoke and the deletes it causes are applied like any write (and undone
//! like any write a crash interrupted: `apply/rollback.rs`).
//!
//! What the state machine knows of a lease is its granted TTL and, once the leader has
//! checkpointed it, the TTL it had left then. It knows no deadline: time is the leader's
//! (see the root crate's `lease.rs`), and expiry arrives as a `LeaseRevoke` entry. A new
//! leader starts each lease's timer from its checkpointed remaining TTL (or the granted
//! TTL if it was never checkpointed).
//!
//! [`LeaseChanges`] counts applied changes of the lease table (grants, revokes,
//! checkpoints, snapshot installs), so the leader's lease manager re-reads the table only
//! when it changed.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use raftkv_core::codec;

use crate::error::Result;
use crate::keys;
use crate::mvcc::key_index::KeyIndex;

/// What the tree stores for one lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// Granted TTL, seconds.
    pub ttl: i64,
    /// Remaining TTL at the last checkpoint, seconds (0: never checkpointed).
    pub remaining: i64,
}

impl LeaseRecord {
    /// The TTL a new leader starts this lease's timer with.
    pub fn resume_ttl(&self) -> i64 {
        if self.remaining > 0 {
            self.remaining
        } else {
            self.ttl
        }
    }
}

/// A counter of applied lease-table changes (see the module doc).
#[derive(Debug, Default)]
pub struct LeaseChanges(AtomicU64);

impl LeaseChanges {
    /// The number of changes so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    pub(crate) fn bump(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

/// The record of lease `id` in `tree`.
pub(crate) fn get(tree: &sled::Tree, id: i64) -> Result<Option<LeaseRecord>> {
    match tree.get(keys::lease_key(id))? {
        Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
        None => Ok(None),
    }
}

/// Every lease in `tree`, by id.
pub(crate) fn list(tree: &sled::Tree) -> Result<Vec<(i64, LeaseRecord)>> {
    let mut out = Vec::new();
    for item in tree.scan_prefix([keys::LEASE]) {
        let (k, v) = item?;
        if let Some(id) = keys::lease_id_of(&k) {
            out.push((id, codec::decode(&v)?));
        }
    }
    Ok(out)
}

/// The keys attached to lease `id` in `tree`, in key order.
pub(crate) fn attached(tree: &sled::Tree, id: i64) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for item in tree.scan_prefix(keys::attachment_prefix(id)) {
        let (k, _) = item?;
        if let Some(key) = keys::attached_user_key(&k) {
            out.push(key.to_vec());
        }
    }
    Ok(out)
}

/// Writes the `a` family of `tree` from `index`: each live key on a lease. A snapshot
/// install uses it, whose files carry versions but no attachments; the index (built from
/// the installed tree) knows which keys are live, which the newest version record alone
/// cannot tell since a delete has none (`mvcc/history_records.rs`).
pub(crate) fn rebuild_attachments(tree: &sled::Tree, index: &KeyIndex) -> Result<()> {
    for (lease, key) in index.leased_keys() {
        tree.insert(keys::attachment_key(lease, &key), &[][..])?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::mvcc::VersionRecord;
    use raftkv_core::kv::Revision;

    fn put(lease: i64) -> Vec<u8> {
        codec::encode(&VersionRecord::Put {
            create_revision: 1,
            version: 1,
            lease,
            value: b"v".to_vec(),
            sub: 0,
        })
        .unwrap()
    }

    #[test]
    fn rebuild_attaches_each_live_key_to_the_lease_of_its_newest_version() {
        use crate::mvcc::history_records::{EventKind, encode_chunk};
        let tree = crate::test_store::temporary_tree();
        let pairs = [
            (keys::version_key(b"a", 2), put(7)),
            (keys::version_key(b"a", 3), put(0)),
            (keys::version_key(b"b", 2), put(0)),
            (keys::version_key(b"b", 4), put(7)),
            (keys::version_key(b"c", 1), put(7)),
            (
                keys::version_key(b"c", 5),
                codec::encode(&VersionRecord::Delete { sub: 0 }).unwrap(),
            ),
            (keys::version_key(b"d", 6), put(9)),
            (keys::version_key(b"e", 6), put(9)),
        ];
        for (k, v) in pairs {
            tree.insert(k, v).unwrap();
        }
        // e is deleted by a history event alone (layout 4).
        let (k, v) = encode_chunk([(7, 0, EventKind::Delete, &b"e"[..])]).unwrap();
        tree.insert(&k[..], v).unwrap();
        let index = KeyIndex::build(&tree, Revision::MAX, 0).unwrap();
        rebuild_attachments(&tree, &index).unwrap();
        assert_eq!(attached(&tree, 7).unwrap(), vec![b"b".to_vec()]);
        assert_eq!(attached(&tree, 9).unwrap(), vec![b"d".to_vec()]);
        assert!(attached(&tree, 0).unwrap().is_empty());
    }
}
