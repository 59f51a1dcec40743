//! [`KeyIndex`]: every key's retained revisions, and every live key's newest version
//! without its value, in memory (etcd's `treeIndex` plays this part).
//!
//! Why: finding a key's newest version, or which version a read at revision `R` sees,
//! must not cost more the more versions the key has. In the tree a key's versions sit
//! side by side (`v` key revision), so a range read used to walk every version of every
//! key in its range to pick the one each read sees: a prefix of 1,000 keys with 100
//! versions each took 55 ms to read where etcd took 3 ms. With the index, a range read
//! takes the keys and their revisions from memory and reads one version per key; apply's
//! read of a key it writes is one map lookup and, only if the old value is needed, one
//! point `get`.
//!
//! What it holds, per key: each retained write as a [`Change`] (revision, put or delete),
//! oldest first, and for a live key (newest write a put) everything of that version but
//! its value ([`KeyMeta`]: revisions, version, lease). So apply overwrites or deletes a
//! key without reading its record unless someone needs the old value (a `prev_kv`, a
//! watcher's previous value, a value compare). "Retained": physical compaction removes
//! a key's changes as it deletes their versions (`KeyIndex::prune`); until then a read
//! at or above the compact revision never looks at them.
//!
//! It is derived state, never written to disk: `Store::open` builds it from the `v`
//! records and the deletes of the history (a delete has no version record since layout
//! 4) as of the durable revision, before the rollback, which asks it which keys were live
//! (`apply/rollback.rs`); a snapshot install rebuilds it from the installed tree, and
//! apply updates it after its batch is in the tree and before the batch's revision is
//! published. Since deletes are known only here and in the history, every read of
//! versions goes through it (`mvcc/mod.rs`). So a reader that pinned revision `R` finds every change
//! at or below `R`; changes above `R` it ignores. Across a snapshot install a reader may
//! pair one tree with the other tree's index: both describe the same history, so they
//! agree at every revision both still hold, and a read below the new compact revision is
//! refused by the reader's re-check (`mvcc/reader.rs`), and a read that overlaps the
//! install's switch of tree, index and revisions reads again (its seqlock,
//! `StateShared::switch_epoch`). A version the index names that the tree lacks (a bug
//! if ever) is read by a scan instead; a range counts it ([`KeyIndex::misses`]).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;
use raftkv_core::codec;
use raftkv_core::kv::{KeyValue, Revision};

use crate::error::{Error, Result};
use crate::keys;
use crate::mvcc::history_records::{self, EventKind};
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

/// One write of a key: its revision and whether it was a put or a delete, in one word
/// (the index holds one per retained version).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Change(u64);

impl Change {
    /// A put at `revision` (revisions are never negative).
    pub fn put(revision: Revision) -> Self {
        Self((revision.max(0) as u64) << 1 | 1)
    }

    /// A delete at `revision`.
    pub fn delete(revision: Revision) -> Self {
        Self((revision.max(0) as u64) << 1)
    }

    /// Its revision.
    pub fn revision(self) -> Revision {
        (self.0 >> 1) as Revision
    }

    /// Whether it was a put.
    pub fn is_put(self) -> bool {
        self.0 & 1 == 1
    }
}

impl std::fmt::Debug for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.is_put() { "put" } else { "delete" };
        write!(f, "{kind}@{}", self.revision())
    }
}

/// What [`KeyIndex::range_at_most`] found in a range at a revision.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RangeAt {
    /// The first keys live at the revision, each with the revision of the version a read
    /// at it sees, in key order.
    pub visible: Vec<(Vec<u8>, Revision)>,
    /// Keys live at the revision, kept or not.
    pub live: usize,
    /// Changes the index retains for the keys in the range, live or not.
    pub retained: usize,
}

/// What the index knows of one key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct KeyEntry {
    /// Retained writes, oldest first.
    changes: Vec<Change>,
    /// The newest version's metadata while the key is live.
    live: Option<KeyMeta>,
}

impl KeyEntry {
    /// The revision of the version a read at `rev` sees, if the key was live then.
    fn visible_at(&self, rev: Revision) -> Option<Revision> {
        let seen = self.changes.partition_point(|c| c.revision() <= rev);
        let change = *self.changes.get(seen.checked_sub(1)?)?;
        change.is_put().then(|| change.revision())
    }
}

/// Key → its retained writes and, if live, its newest version's metadata.
#[derive(Default)]
pub struct KeyIndex {
    keys: RwLock<BTreeMap<Box<[u8]>, KeyEntry>>,
    /// Live keys (the map also holds deleted keys until compaction prunes them).
    live: AtomicU64,
    /// Times a read found the tree without the version the index named (a bug if ever
    /// non-zero: the read then falls back to a scan).
    misses: AtomicU64,
}

/// Keys a range read visits per hold of the index's lock (see [`KeyIndex::range_at_most`]).
pub const KEYS_PER_LOCK: usize = 1024;

/// Lower and upper bound of a range of keys.
type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// The bounds of etcd's range forms over the index: an empty `range_end` is `key`
/// alone, `"\0"` is every key from `key` on. `None`: the range is empty.
fn bounds<'a>(key: &'a [u8], range_end: &'a [u8]) -> Option<KeyBounds<'a>> {
    let upper = if range_end.is_empty() {
        Bound::Included(key)
    } else if range_end == [0] {
        Bound::Unbounded
    } else if range_end <= key {
        return None;
    } else {
        Bound::Excluded(range_end)
    };
    Some((Bound::Included(key), upper))
}

impl KeyIndex {
    /// The index of what `tree` holds at or below revision `up_to`: one forward scan of
    /// the `v` family (layouts before 5), then of the `h` family for the deletes, which
    /// since layout 4 have no version record, and the puts whose versions are inline
    /// since layout 5 (`mvcc/history_records.rs`). Only the newest `v` record of each key
    /// is decoded; the others' kinds are read from their first byte
    /// ([`VersionRecord::is_put`]). A delete the history still holds but physical
    /// compaction already finished with (below `compacted`, the tree's compaction
    /// progress, and nothing of its key left before it) is left out, as
    /// [`KeyIndex::prune`] left it out. (A key compaction finished early, by a delete
    /// above the progress that a crash then interrupted, may come back as that delete
    /// alone: a read sees no version either way, and the compaction's next round prunes
    /// it.)
    pub(crate) fn build(tree: &sled::Tree, up_to: Revision, compacted: Revision) -> Result<Self> {
        let mut map = BTreeMap::new();
        let mut live = 0;
        // The key group being walked: its prefix, changes so far and newest record.
        let mut group: Option<(sled::IVec, Vec<Change>, sled::IVec)> = None;
        for item in tree.scan_prefix([keys::VERSION]) {
            let (tree_key, bytes) = item?;
            let Some((_, rev)) = keys::split_version_key(&tree_key) else {
                continue;
            };
            if rev > up_to {
                continue;
            }
            let change = if VersionRecord::is_put(&bytes)? {
                Change::put(rev)
            } else {
                Change::delete(rev)
            };
            match &mut group {
                Some((prefix, changes, newest)) if same_prefix(prefix, &tree_key) => {
                    changes.push(change);
                    *newest = bytes;
                }
                _ => {
                    live += add_group(&mut map, group.take())?;
                    group = Some((tree_key, vec![change], bytes));
                }
            }
        }
        live += add_group(&mut map, group)?;
        for record in history_records::records_from(tree, 0) {
            for event in record?.events {
                if event.revision > up_to {
                    continue;
                }
                // A delete, or a put whose version is inline; a put with a `v` record was
                // found by the walk above.
                let put = match (event.kind, event.record) {
                    (EventKind::Delete, _) => None,
                    (_, Some(bytes)) => Some(bytes),
                    (_, None) => continue,
                };
                let entry = map.entry(event.key.into_boxed_slice()).or_default();
                let at = entry.changes.partition_point(|c| c.revision() < event.revision);
                // A second event of the key at one revision (a put then a delete in one
                // request): the later one is what the revision did, as in
                // `KeyIndex::update`.
                let same = entry
                    .changes
                    .get(at)
                    .is_some_and(|c| c.revision() == event.revision);
                let last = at + usize::from(same) == entry.changes.len();
                // A delete compaction finished with is left out (see above).
                let change = match put {
                    Some(_) => Some(Change::put(event.revision)),
                    None if at == 0 && event.revision < compacted => None,
                    None => Some(Change::delete(event.revision)),
                };
                match (same, change) {
                    (true, Some(change)) => entry.changes[at] = change,
                    (true, None) => {
                        entry.changes.remove(at);
                    }
                    (false, Some(change)) => entry.changes.insert(at, change),
                    (false, None) => continue,
                }
                if !last {
                    continue;
                }
                let meta = put.map(|bytes| meta_of(event.revision, &bytes)).transpose()?;
                match (entry.live.is_some(), meta.is_some()) {
                    (false, true) => live += 1,
                    (true, false) => live -= 1,
                    _ => {}
                }
                entry.live = meta;
            }
        }
        map.retain(|_, entry| !entry.changes.is_empty());
        Ok(Self {
            keys: RwLock::new(map),
            live: AtomicU64::new(live),
            misses: AtomicU64::new(0),
        })
    }

    /// Take over the contents of `other` (a snapshot install switches to a new tree).
    /// Returns the old contents, for the caller to drop once the switch is done: freeing
    /// millions of entries under the lock would hold up every read of the index.
    pub(crate) fn replace(&self, other: KeyIndex) -> KeyIndex {
        let keys = std::mem::replace(&mut *self.keys.write(), other.keys.into_inner());
        let live = self.live.swap(other.live.into_inner(), Ordering::Relaxed);
        KeyIndex {
            keys: RwLock::new(keys),
            live: AtomicU64::new(live),
            misses: AtomicU64::new(0),
        }
    }

    /// The revision of `key`'s newest version, if the key is live.
    pub fn newest(&self, key: &[u8]) -> Option<Revision> {
        self.meta(key).map(|meta| meta.mod_revision)
    }

    /// `key`'s newest version without its value, if the key is live.
    pub fn meta(&self, key: &[u8]) -> Option<KeyMeta> {
        self.keys.read().get(key).and_then(|entry| entry.live)
    }

    /// Live keys in `[key, range_end)` (etcd's forms), with their newest versions'
    /// metadata, in key order.
    pub fn range(&self, key: &[u8], range_end: &[u8]) -> Vec<(Vec<u8>, KeyMeta)> {
        let Some(bounds) = bounds(key, range_end) else {
            return Vec::new();
        };
        let keys = self.keys.read();
        keys.range::<[u8], _>(bounds)
            .filter_map(|(k, entry)| Some((k.to_vec(), entry.live?)))
            .collect()
    }

    /// The revision of the version of `key` a read at `rev` sees, if the key was live
    /// then (as far as the retained changes tell: `rev` at or above the compact revision).
    pub fn visible_at(&self, key: &[u8], rev: Revision) -> Option<Revision> {
        self.keys.read().get(key)?.visible_at(rev)
    }

    /// `key`'s newest retained change at or below `rev` (a put or a delete), if any.
    pub fn change_at(&self, key: &[u8], rev: Revision) -> Option<Change> {
        let keys = self.keys.read();
        let changes = &keys.get(key)?.changes;
        let seen = changes.partition_point(|c| c.revision() <= rev);
        changes.get(seen.checked_sub(1)?).copied()
    }

    /// Every live key attached to a lease, with its lease, in key order (a snapshot
    /// install rebuilds the `a` family from it).
    pub(crate) fn leased_keys(&self) -> Vec<(i64, Vec<u8>)> {
        let keys = self.keys.read();
        keys.iter()
            .filter_map(|(k, entry)| {
                let lease = entry.live?.lease;
                (lease != 0).then(|| (lease, k.to_vec()))
            })
            .collect()
    }

    /// The keys in `[key, range_end)` (etcd's forms) live at `rev`, each with the revision
    /// of the version a read at `rev` sees, in key order, at most `keep` of them (the
    /// rest are counted, not copied); how many there are in all; and how many changes the
    /// index retains for the keys in the range, live or not (the records a walk of the
    /// tree over the range would step through).
    ///
    /// The map is read [`KEYS_PER_LOCK`] keys at a time, so a list of many keys holds up
    /// apply's update for a moment at a time, not for the whole list. Between two holds
    /// only changes above `rev` are added, and pruning removes only changes no read at or
    /// above the compact revision sees, so `visible` and `live` are what one hold would
    /// give (`retained`, a cost estimate, may count a key added meanwhile). An install's
    /// `replace` between holds, or a compaction past `rev`, are the reader's to catch
    /// (its switch epoch and compact re-check, `mvcc/reader.rs`).
    pub fn range_at_most(&self, key: &[u8], range_end: &[u8], rev: Revision, keep: usize) -> RangeAt {
        let mut answer = RangeAt::default();
        let Some((lower, upper)) = bounds(key, range_end) else {
            return answer;
        };
        let mut from: Bound<Vec<u8>> = lower.map(<[u8]>::to_vec);
        loop {
            let keys = self.keys.read();
            let mut held = 0;
            let mut last: Option<&[u8]> = None;
            for (k, entry) in keys.range::<[u8], _>((from.as_ref().map(Vec::as_slice), upper)) {
                if held == KEYS_PER_LOCK {
                    break;
                }
                held += 1;
                last = Some(k);
                answer.retained += entry.changes.len();
                if let Some(r) = entry.visible_at(rev) {
                    answer.live += 1;
                    if answer.visible.len() < keep {
                        answer.visible.push((k.to_vec(), r));
                    }
                }
            }
            match last {
                Some(k) if held == KEYS_PER_LOCK => from = Bound::Excluded(k.to_vec()),
                _ => return answer,
            }
        }
    }

    /// [`KeyIndex::range_at_most`] keeping every key: (keys and revisions, retained changes).
    pub fn range_at(&self, key: &[u8], range_end: &[u8], rev: Revision) -> (Vec<(Vec<u8>, Revision)>, usize) {
        let answer = self.range_at_most(key, range_end, rev, usize::MAX);
        (answer.visible, answer.retained)
    }

    /// The retained changes of `key`, oldest first (tests and diagnostics).
    pub fn changes(&self, key: &[u8]) -> Vec<Change> {
        self.keys
            .read()
            .get(key)
            .map(|e| e.changes.clone())
            .unwrap_or_default()
    }

    /// The retained changes of `key` with `from <= revision <= to`, oldest first.
    pub fn changes_between(&self, key: &[u8], from: Revision, to: Revision) -> Vec<Change> {
        let keys = self.keys.read();
        let Some(entry) = keys.get(key) else {
            return Vec::new();
        };
        let start = entry.changes.partition_point(|c| c.revision() < from);
        let end = entry.changes.partition_point(|c| c.revision() <= to);
        entry.changes.get(start..end).unwrap_or_default().to_vec()
    }

    /// Record an applied batch: for each key written, its changes in revision order and
    /// its newest version's metadata (`None`: its newest change is a delete). Changes at
    /// or above the first one given replace what the index had there, so applying the
    /// same writes again (a replay after a rollback) leaves it as it was.
    pub(crate) fn update<'k>(
        &self,
        written: impl IntoIterator<Item = (&'k [u8], &'k [Change], Option<KeyMeta>)>,
    ) {
        let mut keys = self.keys.write();
        let mut live_delta: i64 = 0;
        for (key, changes, meta) in written {
            if !keys.contains_key(key) {
                keys.insert(key.into(), KeyEntry::default());
            }
            let Some(entry) = keys.get_mut(key) else {
                continue;
            };
            if let Some(first) = changes.first() {
                let keep = entry.changes.partition_point(|c| c.revision() < first.revision());
                entry.changes.truncate(keep);
                entry.changes.extend_from_slice(changes);
            }
            live_delta += i64::from(meta.is_some()) - i64::from(entry.live.is_some());
            entry.live = meta;
        }
        drop(keys);
        if live_delta >= 0 {
            self.live.fetch_add(live_delta as u64, Ordering::Relaxed);
        } else {
            self.live.fetch_sub(live_delta.unsigned_abs(), Ordering::Relaxed);
        }
    }

    /// Forget what physical compaction to `target` deleted of `keys`' versions: every
    /// change below the newest at or below `target`, and that one too if it is a delete
    /// below `target` (`maintenance/compaction_chunk.rs` keeps the same ones in the tree).
    pub(crate) fn prune<'k>(&self, keys_done: impl IntoIterator<Item = &'k [u8]>, target: Revision) {
        let mut keys = self.keys.write();
        for key in keys_done {
            let Some(entry) = keys.get_mut(key) else {
                continue;
            };
            let seen = entry.changes.partition_point(|c| c.revision() <= target);
            let Some(newest) = seen.checked_sub(1) else {
                continue;
            };
            let change = entry.changes[newest];
            let drop_newest = !change.is_put() && change.revision() < target;
            entry.changes.drain(..newest + usize::from(drop_newest));
            if entry.changes.is_empty() && entry.live.is_none() {
                keys.remove(key);
            }
        }
    }

    pub(crate) fn count_miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// Times a read found the index out of step with the tree (0 unless there is a bug).
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// Number of live keys.
    pub fn len(&self) -> usize {
        self.live.load(Ordering::Relaxed) as usize
    }

    /// Whether no key is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys the index holds, live or deleted but not yet pruned.
    pub fn keys_held(&self) -> usize {
        self.keys.read().len()
    }
}

/// Whether two version tree keys belong to the same user key.
fn same_prefix(a: &[u8], b: &[u8]) -> bool {
    match (keys::split_version_key(a), keys::split_version_key(b)) {
        (Some((pa, _)), Some((pb, _))) => pa == pb,
        _ => false,
    }
}

/// Add the key group `group` (its first tree key, its changes, its newest record) to
/// `map`; returns 1 if the key is live.
fn add_group(
    map: &mut BTreeMap<Box<[u8]>, KeyEntry>,
    group: Option<(sled::IVec, Vec<Change>, sled::IVec)>,
) -> Result<u64> {
    let Some((tree_key, changes, newest)) = group else {
        return Ok(0);
    };
    let user_key = keys::split_version_key(&tree_key)
        .and_then(|(prefix, _)| keys::decode_user_key(prefix))
        .ok_or_else(|| Error::Corrupt {
            what: "version key",
            detail: format!("{tree_key:?}"),
        })?;
    let live = match changes.last() {
        Some(change) if VersionRecord::is_put(&newest)? => Some(meta_of(change.revision(), &newest)?),
        _ => None,
    };
    let is_live = u64::from(live.is_some());
    map.insert(user_key.into_boxed_slice(), KeyEntry { changes, live });
    Ok(is_live)
}

/// The metadata of the put written at `revision` whose encoded record is `bytes`
/// (`Corrupt` if it is not a put).
fn meta_of(revision: Revision, bytes: &[u8]) -> Result<KeyMeta> {
    match codec::decode::<VersionRecord>(bytes)? {
        VersionRecord::Put {
            create_revision,
            version,
            lease,
            ..
        } => Ok(KeyMeta {
            mod_revision: revision,
            create_revision,
            version,
            lease,
        }),
        VersionRecord::Delete { .. } => Err(Error::Corrupt {
            what: "version record",
            detail: format!("a tombstone where a put was expected at {revision}"),
        }),
    }
}

#[cfg(test)]
mod tests;
