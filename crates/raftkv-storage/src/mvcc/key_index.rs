//! [`KeyIndex`]: the revision of every live key's newest version, in memory (etcd keeps
//! its key index in memory for the same reason).
//!
//! Without it, finding a key's newest version is a reverse range scan over its versions
//! in sled (`mvcc::get_at`), which costs more the more versions a key has and was the
//! largest single cost of apply (perf at 64 clients: 9% of a member's CPU, most of it in
//! sled's `Iter::next_back`). With it, apply's read of a key it writes is one map lookup
//! and one point `get` of the version record, whatever the history behind it.
//!
//! What it holds: for each key whose newest version is a put, everything of that version
//! but its value ([`KeyMeta`]: revisions, version, lease); deleted keys are absent. So apply
//! overwrites or deletes a key without reading its record at all unless someone needs
//! the old value (a `prev_kv`, a watcher's previous value, a value compare): a prefix
//! delete of 200,000 keys read each record once, with its value, for nothing but its lease. It is derived state, never written to disk: `Store::open`
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
use raftkv_core::kv::{KeyValue, Revision};

use crate::error::{Error, Result};
use crate::keys;
use crate::mvcc::version_record::VersionRecord;

/// A live key's newest version without its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyMeta {
    /// Revision of the newest version (where its record is).
    pub mod_revision: Revision,
    /// Revision of the key's creation.
    pub create_revision: Revision,
    /// Puts since the key's creation.
    pub version: i64,
    /// Attached lease (0: none).
    pub lease: i64,
}

impl KeyMeta {
    /// The metadata of `kv`.
    pub fn of(kv: &KeyValue) -> Self {
        Self {
            mod_revision: kv.mod_revision,
            create_revision: kv.create_revision,
            version: kv.version,
            lease: kv.lease,
        }
    }

    /// `kv` as a key-value with an empty value (what compares other than on the value see).
    pub fn without_value(self, key: Vec<u8>) -> KeyValue {
        KeyValue {
            key,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            value: Vec::new(),
            lease: self.lease,
        }
    }
}

/// Key → its newest version's metadata, for live keys.
#[derive(Default)]
pub struct KeyIndex {
    newest: RwLock<BTreeMap<Box<[u8]>, KeyMeta>>,
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
        self.meta(key).map(|meta| meta.mod_revision)
    }

    /// `key`'s newest version without its value, if the key is live.
    pub fn meta(&self, key: &[u8]) -> Option<KeyMeta> {
        self.newest.read().get(key).copied()
    }

    /// Live keys in `[key, range_end)` (etcd's forms: empty `range_end` is `key` alone,
    /// `"\0"` is every key from `key` on), with their newest versions' metadata, in key order.
    pub fn range(&self, key: &[u8], range_end: &[u8]) -> Vec<(Vec<u8>, KeyMeta)> {
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
            .map(|(k, meta)| (k.to_vec(), *meta))
            .collect()
    }

    /// Record the outcome of an applied batch: each key's newest version, or `None` if
    /// its newest version is a delete.
    pub(crate) fn update<'k>(&self, changes: impl IntoIterator<Item = (&'k [u8], Option<KeyMeta>)>) {
        let mut newest = self.newest.write();
        for (key, meta) in changes {
            match meta {
                Some(meta) => {
                    if let Some(slot) = newest.get_mut(key) {
                        *slot = meta;
                    } else {
                        newest.insert(key.into(), meta);
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
    newest: &mut BTreeMap<Box<[u8]>, KeyMeta>,
    last: Option<(sled::IVec, Revision, sled::IVec)>,
) -> Result<()> {
    let Some((tree_key, rev, bytes)) = last else {
        return Ok(());
    };
    let VersionRecord::Put {
        create_revision,
        version,
        lease,
        ..
    } = codec::decode::<VersionRecord>(&bytes)?
    else {
        return Ok(());
    };
    let user_key = keys::split_version_key(&tree_key)
        .and_then(|(prefix, _)| keys::decode_user_key(prefix))
        .ok_or_else(|| Error::Corrupt {
            what: "version key",
            detail: format!("{tree_key:?}"),
        })?;
    let meta = KeyMeta {
        mod_revision: rev,
        create_revision,
        version,
        lease,
    };
    newest.insert(user_key.into_boxed_slice(), meta);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn put() -> Vec<u8> {
        put_of(1, 1, 0)
    }

    fn put_of(create_revision: Revision, version: i64, lease: i64) -> Vec<u8> {
        codec::encode(&VersionRecord::Put {
            create_revision,
            version,
            lease,
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
        let tree = crate::test_store::temporary_tree();
        for (key, rev, record) in [
            (&b"a"[..], 2, put()),
            (b"a", 5, put()),
            (b"a\x00", 3, put()), // escaping: "a" and "a\0" are different keys
            (b"b", 4, put()),
            (b"b", 6, delete()),
            (b"c", 7, delete()),
            (b"c", 8, put_of(8, 1, 77)),
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
        let c = KeyMeta {
            mod_revision: 8,
            create_revision: 8,
            version: 1,
            lease: 77,
        };
        assert_eq!(index.meta(b"c"), Some(c));
    }

    fn at(rev: Revision) -> Option<KeyMeta> {
        Some(KeyMeta {
            mod_revision: rev,
            create_revision: rev,
            version: 1,
            lease: 0,
        })
    }

    #[test]
    fn range_follows_etcds_forms_and_update_applies_puts_and_deletes() {
        let index = KeyIndex::default();
        index.update([(&b"a"[..], at(1)), (b"b", at(2)), (b"c", at(3))]);
        let keys_of = |r: Vec<(Vec<u8>, KeyMeta)>| r.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
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
        index.update([(&b"b"[..], None), (b"c", at(9))]);
        assert_eq!(
            index.range(b"a", &[0]),
            vec![(b"a".to_vec(), at(1).unwrap()), (b"c".to_vec(), at(9).unwrap())]
        );
    }
}
