//! # The multi-version keyspace: its records and reading them at a pinned revision
//!
//! **What it owns.** The unit of the keyspace, [`VersionRecord`] (`version_record.rs`),
//! the functions below that read versions at a revision, the in-memory index of every
//! key's retained revisions ([`key_index::KeyIndex`]), the reader that serves ranges and
//! lease lookups without a lock ([`reader::KvReader`]), and the writes etcd's `HashKV`
//! hashes, read back in its order (`hash_history.rs`). Writing versions is `apply/`'s;
//! deleting old ones is `maintenance/`'s.
//!
//! Every put writes a new [`VersionRecord`] under (key, revision); nothing is overwritten
//! in place. A delete writes only its history event (`history_records.rs`; tombstone
//! records of layouts before 4 are still read), so which keys are live at a revision is
//! the key index's to say: a read of the `v` family alone would resurrect deleted keys. A read picks a revision `R` first (the newest applied revision,
//! or the one asked for) and then, for each key, the newest version at or below `R`.
//! Versions above `R` are ignored, so a read never mixes two revisions even while apply
//! keeps writing, and no lock is needed. sled's iterators are not point-in-time; pinning
//! the revision is what makes them consistent. Which version of a key a read at `R` sees
//! comes from the key index; a range reads those versions one by one, or walks the tree
//! where the keys have hardly any history ([`range_indexed_at`]).
//!
//! **Invariants.** A version is never overwritten (only deleted: by physical compaction
//! once no read can see it, or by the rollback of an unfinished apply); a read at `R` refuses `R`
//! below the compact revision, before and after its scan (physical compaction deletes
//! only below the compact revision); the key index equals what the tree says after every
//! applied call (`key_index_tests.rs`).
//!
//! **Left out.** How fresh a read must be: the caller waits for the applied watermark to
//! reach its read index first.

pub mod hash_history;
pub mod history_records;
pub mod key_index;
pub mod reader;
pub(crate) mod version_record;

#[cfg(test)]
mod key_index_tests;

use raftkv_core::codec;
use raftkv_core::kv::{KeyValue, RangeRequest, Revision, SortOrder, SortTarget};

use crate::error::Result;
use crate::keys;
use crate::mvcc::key_index::KeyIndex;
pub use version_record::VersionRecord;

/// The newest version record of `key` at or below `rev`, if it is a put. Only the key
/// index knows whether the key was deleted since (a delete has no version record,
/// `mvcc/history_records.rs`): this is the fallback of reads whose index named a version
/// the tree lacks, and a look at the tree for tests.
pub fn get_at(tree: &sled::Tree, key: &[u8], rev: Revision) -> Result<Option<KeyValue>> {
    let lower = keys::version_key(key, 0);
    let upper = keys::version_key(key, rev);
    match tree.range(lower..=upper).next_back() {
        None => Ok(None),
        Some(item) => {
            let (tree_key, bytes) = item?;
            let Some((_, mod_revision)) = keys::split_version_key(&tree_key) else {
                return Ok(None);
            };
            let record: VersionRecord = codec::decode(&bytes)?;
            Ok(record.into_key_value(key.to_vec(), mod_revision))
        }
    }
}

/// The version of `key` written at exactly `rev`, if `tree` has it (a point read).
pub fn get_version(tree: &sled::Tree, key: &[u8], rev: Revision) -> Result<Option<KeyValue>> {
    let Some(bytes) = tree.get(keys::version_key(key, rev))? else {
        return Ok(None);
    };
    let record: VersionRecord = codec::decode(&bytes)?;
    Ok(record.into_key_value(key.to_vec(), rev))
}

/// [`get_at`] by the index, for a reader pinned at `rev` (at or above the compact
/// revision): the index tells whether the key was live at `rev` and which version a
/// read sees, read then by its exact key. Should the tree lack that version (physical
/// compaction raced past `rev`, or a bug), the scan answers.
pub fn get_indexed_at(
    tree: &sled::Tree,
    index: &KeyIndex,
    key: &[u8],
    rev: Revision,
) -> Result<Option<KeyValue>> {
    let Some(visible) = index.visible_at(key, rev) else {
        return Ok(None);
    };
    match get_version(tree, key, visible)? {
        Some(kv) => Ok(Some(kv)),
        None => get_at(tree, key, rev),
    }
}

/// Whether a range over `keys` keys holding `retained` versions in all walks the tree
/// rather than reading each key's version by the index: only up to 1.5 versions per key
/// on average. Measured with `benches/range-history.sh` (lists of 1,000 keys, 2 vCPU,
/// 2026-12-07): with one version each, 1,145 lists/s by point reads and 1,239 by the
/// walk; with three, 904 by point reads and 558 by the walk; with 100, 591 and 47.
pub fn walk_is_cheaper(retained: usize, keys: usize) -> bool {
    retained.saturating_mul(2) <= keys.max(1).saturating_mul(3)
}

/// Every key in `[key, range_end)` (etcd's forms) as it was at `rev`, in key order.
/// Where the keys have versions behind them, by the index (`range_by_index`), so the
/// cost is per key whatever the history behind it; otherwise ([`walk_is_cheaper`]) by
/// the walk of the tree ([`scan_at`]), which then steps through about as many records,
/// each cheaper than a point read. `rev` must be at or above the compact
/// revision. Returns the answer and how many versions the index named that the tree
/// lacked, for the caller to judge (see `range_by_index`).
pub fn range_indexed_at(
    tree: &sled::Tree,
    index: &KeyIndex,
    key: &[u8],
    range_end: &[u8],
    rev: Revision,
) -> Result<(Vec<KeyValue>, usize)> {
    let (visible, retained) = index.range_at(key, range_end, rev);
    if walk_is_cheaper(retained, visible.len()) {
        let walked = only_visible(scan_at(tree, key, range_end, rev)?, &visible);
        // Every version the index names was found (else: point reads, which look for a
        // missing one by a scan of its key and count it).
        if walked.len() == visible.len() {
            return Ok((walked, 0));
        }
    }
    range_by_index(tree, visible, rev)
}

/// The versions of `walked` (both in key order) that `visible` names: the walk sees the
/// newest version record of each key, but a delete has none (`mvcc/history_records.rs`),
/// so a key deleted since its last put is live only by the walk.
pub(crate) fn only_visible(walked: Vec<KeyValue>, visible: &[(Vec<u8>, Revision)]) -> Vec<KeyValue> {
    let mut named = visible.iter().peekable();
    walked
        .into_iter()
        .filter(|kv| {
            while named.next_if(|(k, _)| k.as_slice() < kv.key.as_slice()).is_some() {}
            named
                .next_if(|(k, r)| *k == kv.key && *r == kv.mod_revision)
                .is_some()
        })
        .collect()
}

/// The versions `visible` names (keys and the revision a read at `rev` sees, from
/// [`KeyIndex::range_at`]), one point read each. A version the tree lacks (physical
/// compaction raced past `rev`, or a bug) is looked for by a scan of that key instead;
/// how many were is returned beside the answer.
pub(crate) fn range_by_index(
    tree: &sled::Tree,
    visible: Vec<(Vec<u8>, Revision)>,
    rev: Revision,
) -> Result<(Vec<KeyValue>, usize)> {
    let mut out = Vec::with_capacity(visible.len());
    let mut fallbacks = 0;
    for (k, version_rev) in visible {
        let found = match tree.get(keys::version_key(&k, version_rev))? {
            Some(bytes) => codec::decode::<VersionRecord>(&bytes)?.into_key_value(k, version_rev),
            None => {
                fallbacks += 1;
                get_at(tree, &k, rev)?
            }
        };
        out.extend(found);
    }
    Ok((out, fallbacks))
}

/// A range answer read from the index where the request's shape asks for fewer versions
/// than its range holds, shaped as [`shape_range`] would.
#[derive(Debug, PartialEq, Eq)]
pub struct LimitedAnswer {
    /// The key-values returned.
    pub kvs: Vec<KeyValue>,
    /// Whether the range holds more keys than the limit let through (false for a count).
    pub more: bool,
    /// Keys in the range.
    pub count: i64,
    /// Versions the index named that the tree lacked (see `range_by_index`).
    pub fallbacks: usize,
}

/// `req` answered at `rev` reading only the versions it returns, where its shape allows:
/// a count alone reads none (etcd's `--count-only`, which Kubernetes sends for its
/// object counts), and a limit in key order (a paginated list) reads only the first
/// `limit`; the count comes from the index. `None` where every version is needed
/// anyway: no limit, revision filters (they apply before the limit), or another order.
pub fn range_by_index_limited(
    tree: &sled::Tree,
    index: &KeyIndex,
    req: &RangeRequest,
    rev: Revision,
) -> Result<Option<LimitedAnswer>> {
    let filtered = req.min_mod_revision > 0
        || req.max_mod_revision > 0
        || req.min_create_revision > 0
        || req.max_create_revision > 0;
    let key_order =
        req.sort_target == SortTarget::Key && matches!(req.sort_order, SortOrder::None | SortOrder::Ascend);
    if filtered || !(req.count_only || (req.limit > 0 && key_order)) {
        return Ok(None);
    }
    let keep = if req.count_only {
        0
    } else {
        usize::try_from(req.limit).unwrap_or(usize::MAX)
    };
    let found = index.range_at_most(&req.key, &req.range_end, rev, keep);
    let count = found.live as i64;
    if req.count_only {
        return Ok(Some(LimitedAnswer {
            kvs: Vec::new(),
            more: false,
            count,
            fallbacks: 0,
        }));
    }
    let more = count > req.limit;
    let (mut kvs, fallbacks) = range_by_index(tree, found.visible, rev)?;
    if req.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    Ok(Some(LimitedAnswer {
        kvs,
        more,
        count,
        fallbacks,
    }))
}

/// Every key in `[key, range_end)` (etcd's forms) whose newest version record at or
/// below `rev` is a put, in key order, from the `v` family alone (every version of every
/// key in the range is walked). Not the answer of a read on its own: a key deleted since
/// (a history event, no record) is among them; [`range_indexed_at`] keeps those the key
/// index names.
pub fn scan_at(tree: &sled::Tree, key: &[u8], range_end: &[u8], rev: Revision) -> Result<Vec<KeyValue>> {
    let (lower, upper) = keys::version_bounds(key, range_end);
    let mut out = Vec::new();
    // The newest version <= rev of the key group being walked: (prefix, revision, bytes).
    let mut candidate: Option<(sled::IVec, Revision, sled::IVec)> = None;
    let mut current_prefix: Option<Vec<u8>> = None;
    for item in tree.range(lower..upper) {
        let (tree_key, bytes) = item?;
        let Some((prefix, version_rev)) = keys::split_version_key(&tree_key) else {
            continue;
        };
        if current_prefix.as_deref() != Some(prefix) {
            emit(&mut out, candidate.take())?;
            current_prefix = Some(prefix.to_vec());
        }
        if version_rev <= rev {
            candidate = Some((tree_key.clone(), version_rev, bytes));
        }
    }
    emit(&mut out, candidate)?;
    Ok(out)
}

fn emit(out: &mut Vec<KeyValue>, candidate: Option<(sled::IVec, Revision, sled::IVec)>) -> Result<()> {
    let Some((tree_key, rev, bytes)) = candidate else {
        return Ok(());
    };
    let Some((prefix, _)) = keys::split_version_key(&tree_key) else {
        return Ok(());
    };
    let Some(user_key) = keys::decode_user_key(prefix) else {
        return Err(crate::error::Error::Corrupt {
            what: "version key",
            detail: format!("{tree_key:?}"),
        });
    };
    let record: VersionRecord = codec::decode(&bytes)?;
    if let Some(kv) = record.into_key_value(user_key, rev) {
        out.push(kv);
    }
    Ok(())
}

/// Shape a range answer from every key in the range (in key order): count (of all of
/// them, as etcd does), revision filters, sort, limit, keys_only / count_only. Returns
/// (kvs, more, count).
pub fn shape_range(mut kvs: Vec<KeyValue>, req: &RangeRequest) -> (Vec<KeyValue>, bool, i64) {
    let keep = |kv: &KeyValue| {
        (req.min_mod_revision <= 0 || kv.mod_revision >= req.min_mod_revision)
            && (req.max_mod_revision <= 0 || kv.mod_revision <= req.max_mod_revision)
            && (req.min_create_revision <= 0 || kv.create_revision >= req.min_create_revision)
            && (req.max_create_revision <= 0 || kv.create_revision <= req.max_create_revision)
    };
    // etcd counts every key in the range, before the revision filters (which only
    // narrow what is returned) and before the limit.
    let count = kvs.len() as i64;
    kvs.retain(keep);
    if req.count_only {
        return (Vec::new(), false, count);
    }
    sort_kvs(&mut kvs, req.sort_order, req.sort_target);
    let more = req.limit > 0 && kvs.len() as i64 > req.limit;
    if more {
        kvs.truncate(req.limit as usize);
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    (kvs, more, count)
}

fn sort_kvs(kvs: &mut [KeyValue], order: SortOrder, target: SortTarget) {
    let order = match (order, target) {
        // Key order ascending is what the scan produced.
        (SortOrder::None, SortTarget::Key) | (SortOrder::Ascend, SortTarget::Key) => return,
        // etcd: a target without an order sorts ascending.
        (SortOrder::None, _) => SortOrder::Ascend,
        (o, _) => o,
    };
    // Stable sorts keep key order among equal targets, as etcd does.
    match target {
        SortTarget::Key => kvs.sort_by(|a, b| a.key.cmp(&b.key)),
        SortTarget::Version => kvs.sort_by_key(|kv| kv.version),
        SortTarget::Create => kvs.sort_by_key(|kv| kv.create_revision),
        SortTarget::Mod => kvs.sort_by_key(|kv| kv.mod_revision),
        SortTarget::Value => kvs.sort_by(|a, b| a.value.cmp(&b.value)),
    }
    if order == SortOrder::Descend {
        kvs.reverse();
    }
}
