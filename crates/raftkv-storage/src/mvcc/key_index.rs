//! [`KeyIndex`]: the revision of every live key's newest version, in memory (etcd keeps
//! its key index in memory for the same reason).
//!
//! Without it, finding a key's newest version is a reverse range scan over its versions
//! in sled (`mvcc::get_at`), which costs more the more versions a key has and was the
//! largest single cost of apply (perf at 64 clients: 9% of a member's CPU, most of it in
//! sled's `Iter::next_back`). With it, apply's read of a key it writes is one map lookup
//! and one point `get` of the version record, whatever the history behind it.
//!
//! What it holds: for each key whose newest version is a put, that version's revision;
//! deleted keys are absent. It is derived state, never written to disk: `Store::open`
//! builds it from the `v` records after the rollback (`apply/rollback.rs`), a snapshot install
//! rebuilds it from the installed tree, and apply updates it after its batch is in the
//! tree and before the batch's revision is published. So a reader that pinned revision
//! `R` finds every key's entry at least as new as `R`; an entry newer than `R`, or none,
//! sends it to the scan, which is always right. Physical compaction never deletes a key's
//! newest put, and defragmentation copies the tree as it is, so neither touches it.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;
use raftkv_core::codec;
use raftkv_core::kv::Revision;

use crate::error::{Error, Result};
use crate::keys;
use crate::mvcc::version_record::VersionRecord;

/// Key → revision of its newest version, for live keys.
#[derive(Default)]
pub struct KeyIndex {
    newest: RwLock<BTreeMap<Box<[u8]>, Revision>>,
    /// Times apply found the tree without the version the index named (a bug if ever
    /// non-zero: apply then falls back to the scan, see `Applier::version`).
    misses: AtomicU64,
}

impl KeyIndex {
    /// The index of what `tree` holds: one forward scan of the `v` family.
    pub(crate) fn build(tree: &sled::Tree) -> Result<Self> {
        let mut newest = BTreeMap::new();
        // The newest record of the key group being walked: (prefix, revision, bytes); only
        // that one is decoded, when the group ends.
        let mut last: Option<(sled::IVec, Revision, sled::IVec)> = None;
        for item in tree.scan_prefix([keys::VERSION]) {
            let (tree_key, bytes) = item?;
            let Some((_, rev)) = keys::split_version_key(&tree_key) else {
                continue;
            };
            let same_key = last.as_ref().is_some_and(|(k, _, _)| same_prefix(k, &tree_key));
            if !same_key {
                add_if_put(&mut newest, last.take())?;
            }
            last = Some((tree_key, rev, bytes));
        }
        add_if_put(&mut newest, last)?;
        Ok(Self {
            newest: RwLock::new(newest),
            misses: AtomicU64::new(0),
        })
    }

    /// Take over the contents of `other` (a snapshot install switches to a new tree).
    pub(crate) fn replace(&self, other: KeyIndex) {
        *self.newest.write() = other.newest.into_inner();
    }

    /// The revision of `key`'s newest version, if the key is live.
    pub fn newest(&self, key: &[u8]) -> Option<Revision> {
        self.newest.read().get(key).copied()
    }

    /// Live keys in `[key, range_end)` (etcd's forms: empty `range_end` is `key` alone,
    /// `"\0"` is every key from `key` on), with their newest revisions, in key order.
    pub fn range(&self, key: &[u8], range_end: &[u8]) -> Vec<(Vec<u8>, Revision)> {
        let newest = self.newest.read();
        let upper = if range_end.is_empty() {
            Bound::Included(key)
        } else if range_end == [0] {
            Bound::Unbounded
        } else if range_end <= key {
            return Vec::new();
        } else {
            Bound::Excluded(range_end)
        };
        newest
            .range::<[u8], _>((Bound::Included(key), upper))
            .map(|(k, rev)| (k.to_vec(), *rev))
            .collect()
    }

    /// Record the outcome of an applied batch: each key's newest revision, or `None` if
    /// its newest version is a delete.
    pub(crate) fn update<'k>(&self, changes: impl IntoIterator<Item = (&'k [u8], Option<Revision>)>) {
        let mut newest = self.newest.write();
        for (key, rev) in changes {
            match rev {
                Some(rev) => {
                    if let Some(slot) = newest.get_mut(key) {
                        *slot = rev;
                    } else {
                        newest.insert(key.into(), rev);
                    }
                }
                None => {
                    newest.remove(key);
                }
            }
        }
    }

    pub(crate) fn count_miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// Times apply found the index out of step with the tree (0 unless there is a bug).
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// Number of live keys.
    pub fn len(&self) -> usize {
        self.newest.read().len()
    }

    /// Whether no key is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether two version tree keys belong to the same user key.
fn same_prefix(a: &[u8], b: &[u8]) -> bool {
    match (keys::split_version_key(a), keys::split_version_key(b)) {
        (Some((pa, _)), Some((pb, _))) => pa == pb,
        _ => false,
    }
}

fn add_if_put(
    newest: &mut BTreeMap<Box<[u8]>, Revision>,
    last: Option<(sled::IVec, Revision, sled::IVec)>,
) -> Result<()> {
    let Some((tree_key, rev, bytes)) = last else {
        return Ok(());
    };
    if let VersionRecord::Delete { .. } = codec::decode::<VersionRecord>(&bytes)? {
        return Ok(());
    }
    let user_key = keys::split_version_key(&tree_key)
        .and_then(|(prefix, _)| keys::decode_user_key(prefix))
        .ok_or_else(|| Error::Corrupt {
            what: "version key",
            detail: format!("{tree_key:?}"),
        })?;
    newest.insert(user_key.into_boxed_slice(), rev);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn put() -> Vec<u8> {
        codec::encode(&VersionRecord::Put {
            create_revision: 1,
            version: 1,
            lease: 0,
            value: b"x".to_vec(),
            sub: 0,
        })
        .unwrap()
    }

    fn delete() -> Vec<u8> {
        codec::encode(&VersionRecord::Delete { sub: 0 }).unwrap()
    }

    #[test]
    fn build_keeps_the_newest_put_of_each_key_and_drops_deleted_keys() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        for (key, rev, record) in [
            (&b"a"[..], 2, put()),
            (b"a", 5, put()),
            (b"a\x00", 3, put()), // escaping: "a" and "a\0" are different keys
            (b"b", 4, put()),
            (b"b", 6, delete()),
            (b"c", 7, delete()),
            (b"c", 8, put()),
        ] {
            tree.insert(keys::version_key(key, rev), record).unwrap();
        }
        tree.insert(keys::history_key(9, 0), b"a".to_vec()).unwrap();
        let index = KeyIndex::build(&tree).unwrap();
        assert_eq!(index.len(), 3);
        assert_eq!(index.newest(b"a"), Some(5));
        assert_eq!(index.newest(b"a\x00"), Some(3));
        assert_eq!(index.newest(b"b"), None);
        assert_eq!(index.newest(b"c"), Some(8));
    }

    #[test]
    fn range_follows_etcds_forms_and_update_applies_puts_and_deletes() {
        let index = KeyIndex::default();
        index.update([(&b"a"[..], Some(1)), (b"b", Some(2)), (b"c", Some(3))]);
        let keys_of = |r: Vec<(Vec<u8>, Revision)>| r.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(keys_of(index.range(b"b", b"")), vec![b"b".to_vec()]);
        assert_eq!(
            keys_of(index.range(b"a", b"c")),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
        assert_eq!(
            keys_of(index.range(b"b", &[0])),
            vec![b"b".to_vec(), b"c".to_vec()]
        );
        assert!(index.range(b"c", b"a").is_empty());
        index.update([(&b"b"[..], None), (b"c", Some(9))]);
        assert_eq!(
            index.range(b"a", &[0]),
            vec![(b"a".to_vec(), 1), (b"c".to_vec(), 9)]
        );
    }
}
