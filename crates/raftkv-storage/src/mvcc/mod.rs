//! # The multi-version keyspace: its records and reading them at a pinned revision
//!
//! **What it owns.** The unit of the keyspace, [`VersionRecord`] (`version_record.rs`),
//! the functions below that read versions at a revision, the in-memory index of every
//! key's retained revisions ([`key_index::KeyIndex`]), the reader that serves ranges and
//! lease lookups without a lock ([`reader::KvReader`]), and the writes etcd's `HashKV`
//! hashes, read back in its order (`hash_history.rs`). Writing versions is `apply/`'s;
//! deleting old ones is `maintenance/`'s.
//!
//! Every put writes a new [`VersionRecord`] for (key, revision), inline in its history
//! chunk since layout 5 (`history_records.rs`, read back through `versions.rs`; `v`
//! records of older layouts are still read); nothing is overwritten in place, except
//! that physical compaction rewrites a chunk to the versions still visible. A delete
//! writes only its history event, so which keys are live at a revision is the key
//! index's to say. A read picks a revision `R` first (the newest applied revision, or the
//! one asked for) and then, for each key, the newest version at or below `R`. Versions
//! above `R` are ignored, so a read never mixes two revisions even while apply keeps
//! writing, and no lock is needed. sled's iterators are not point-in-time; pinning the
//! revision is what makes them consistent. Which version of a key a read at `R` sees
//! comes from the key index; a range reads those versions one by one
//! ([`range_indexed_at`]).
//!
//! **Invariants.** A version is never changed (only deleted: by physical compaction once
//! no read can see it, or by the rollback of an unfinished apply); a read at `R` refuses `R`
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
pub mod versions;

#[cfg(test)]
mod key_index_tests;

use raftkv_core::kv::{KeyValue, RangeRequest, Revision, SortOrder, SortTarget};

use crate::error::Result;
use crate::mvcc::key_index::KeyIndex;
pub use version_record::VersionRecord;

/// The newest put of `key` at or below `rev` the tree holds, found without the key index
/// (see [`versions::newest_put_at`]: the fallback of a read whose index named a version
/// the tree lacks, and a look at the tree for tests).
pub fn get_at(tree: &sled::Tree, key: &[u8], rev: Revision) -> Result<Option<KeyValue>> {
    Ok(versions::newest_put_at(tree, key, rev)?
        .and_then(|(mod_revision, record)| record.into_key_value(key.to_vec(), mod_revision)))
}

/// The version of `key` written at exactly `rev`, if `tree` has it (a point read).
pub fn get_version(tree: &sled::Tree, key: &[u8], rev: Revision) -> Result<Option<KeyValue>> {
    Ok(versions::record_at(tree, key, rev)?.and_then(|record| record.into_key_value(key.to_vec(), rev)))
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
        None => fallback_at(tree, index, key, rev),
    }
}

/// The newest put of `key` at or below `rev` among the older versions the index retains
/// (newest first, a point read each; `None` once a delete is newer): the answer of a read
/// whose version the tree lacked (a compaction racing it: the reader's re-check of the
/// compact revision then refuses the answer; or a bug, which the caller counts). Costs
/// per retained version of the key, where the tree alone ([`get_at`]) would walk the
/// whole history.
fn fallback_at(tree: &sled::Tree, index: &KeyIndex, key: &[u8], rev: Revision) -> Result<Option<KeyValue>> {
    let changes = index.changes(key);
    for change in changes.iter().rev().filter(|c| c.revision() <= rev) {
        if !change.is_put() {
            return Ok(None);
        }
        if let Some(kv) = get_version(tree, key, change.revision())? {
            return Ok(Some(kv));
        }
    }
    Ok(None)
}

/// Every key in `[key, range_end)` (etcd's forms) as it was at `rev`, in key order: the
/// index names each live key's version, read then one by one (`range_by_index`), so the
/// cost is per key whatever the history behind it. `rev` must be at or above the compact
/// revision. Returns the answer and how many versions the index named that the tree
/// lacked, for the caller to judge (see `range_by_index`).
pub fn range_indexed_at(
    tree: &sled::Tree,
    index: &KeyIndex,
    key: &[u8],
    range_end: &[u8],
    rev: Revision,
) -> Result<(Vec<KeyValue>, usize)> {
    let (visible, _) = index.range_at(key, range_end, rev);
    range_by_index(tree, index, visible, rev)
}

/// The versions `visible` names (keys and the revision a read at `rev` sees, from
/// [`KeyIndex::range_at`]), read by [`versions::records_at`]. A version the tree lacks
/// (physical compaction raced past `rev`, or a bug) is looked for among the key's older
/// versions instead; how many were is returned beside the answer.
pub(crate) fn range_by_index(
    tree: &sled::Tree,
    index: &KeyIndex,
    visible: Vec<(Vec<u8>, Revision)>,
    rev: Revision,
) -> Result<(Vec<KeyValue>, usize)> {
    let records = versions::records_at(tree, &visible)?;
    let mut out = Vec::with_capacity(visible.len());
    let mut fallbacks = 0;
    for ((k, version_rev), record) in visible.into_iter().zip(records) {
        let found = match record {
            Some(record) => record.into_key_value(k, version_rev),
            None => {
                fallbacks += 1;
                fallback_at(tree, index, &k, rev)?
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
    let (mut kvs, fallbacks) = range_by_index(tree, index, found.visible, rev)?;
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
