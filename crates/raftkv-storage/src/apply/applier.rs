//! Applying commands to the MVCC keyspace, with etcd's semantics.
//!
//! An [`Applier`] covers one `apply()` call of the state machine: every write of every
//! entry is staged in ONE [`TreeBatch`], written to the tree in order when the call ends,
//! before the record naming the last-applied log id (`raft/state_machine.rs`). Until then the
//! tree is untouched, so the applier keeps an overlay of the keys written so far: later
//! requests (and later operations of the same transaction) see earlier ones.
//!
//! Each client request runs in a [`RequestScope`]: its writes are staged there and only
//! merged into the batch if the whole request succeeds, so a request refused halfway (a
//! missing key for `ignore_value`, say) changes nothing. A request that writes takes the
//! next revision; all its writes share it, told apart by a sub-revision. A request that
//! changes nothing (a delete that matched no key, a read-only txn) leaves the revision.
//!
//! Writes of keys a watcher covers also become watch events ([`EventCollector`]), staged
//! with the request's writes and kept only if it succeeds; the state machine publishes
//! them once the batch is applied.
//!
//! Leases: a put names an existing lease or is refused with "lease not found"; every
//! write of a key moves its attachment (the `a` family) with it, staged like the write
//! itself. Grants, revokes and checkpoints are applied in `apply/lease_apply.rs`.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use raftkv_core::RequestError;
use raftkv_core::alarm::AlarmMember;
use raftkv_core::codec;
use raftkv_core::kv::*;
use raftkv_core::watch::Event;

use crate::apply::lease_table::LeaseRecord;
use crate::apply::tree_writes::TreeBatch;
use crate::error::Error;
use crate::keys;
use crate::mvcc::key_index::{Change, KeyIndex, KeyMeta};
use crate::mvcc::{self, version_record::BorrowedPut};
use crate::watch::events::EventCollector;

/// Why applying one request stopped: its own fault (answered to the client, nothing
/// written) or the storage's (fatal for the node).
#[derive(Debug)]
pub(crate) enum ApplyError {
    Request(RequestError),
    Storage(Error),
}

impl From<RequestError> for ApplyError {
    fn from(e: RequestError) -> Self {
        ApplyError::Request(e)
    }
}

impl From<Error> for ApplyError {
    fn from(e: Error) -> Self {
        ApplyError::Storage(e)
    }
}

impl From<sled::Error> for ApplyError {
    fn from(e: sled::Error) -> Self {
        ApplyError::Storage(e.into())
    }
}

type KeyState = BTreeMap<Vec<u8>, Written>;

/// A key written by the call so far: its state after the last write (`None`: deleted)
/// and each write as a [`Change`], in order (what the key index records).
#[derive(Debug, Clone)]
pub(crate) struct Written {
    state: Option<KeyValue>,
    changes: Vec<Change>,
}

/// Writes of one `apply()` call.
pub(crate) struct Applier<'a> {
    pub(crate) tree: &'a sled::Tree,
    /// Where each live key's newest version is, as of the tree (`mvcc/key_index.rs`).
    index: &'a KeyIndex,
    pub(crate) batch: TreeBatch,
    /// Latest state of every key written by this call so far (`None`: deleted).
    overlay: KeyState,
    /// Revision after the requests applied so far.
    pub(crate) revision: Revision,
    compact_revision: Revision,
    /// Watch events of the requests applied so far.
    pub(crate) watch: EventCollector,
    /// Leases granted, changed (`Some`) or revoked (`None`) by this call so far.
    pub(crate) leases: BTreeMap<i64, Option<LeaseRecord>>,
    /// Attachments made (`true`) or removed (`false`) by this call so far.
    pub(crate) attachments: BTreeMap<(i64, Vec<u8>), bool>,
    /// Alarms raised (`true`) or disarmed (`false`) by this call so far.
    pub(crate) alarms: BTreeMap<AlarmMember, bool>,
    /// Which alarm types are active as of the requests applied so far
    /// (`apply/alarm_table.rs`): the state machine sets it from the published mask.
    pub(crate) alarm_mask: u8,
    /// The auth store as of the requests applied so far (`apply/auth_table.rs`): the state
    /// machine sets its published part.
    pub(crate) auth: crate::apply::auth_overlay::AuthOverlay,
}

/// The staged writes of one client request.
struct RequestScope {
    revision: Revision,
    next_sub: u32,
    /// Tree writes in order.
    writes: TreeBatch,
    overlay: KeyState,
    events: Vec<Event>,
    attachments: BTreeMap<(i64, Vec<u8>), bool>,
}

impl<'a> Applier<'a> {
    pub(crate) fn new(
        tree: &'a sled::Tree,
        index: &'a KeyIndex,
        revision: Revision,
        compact_revision: Revision,
    ) -> Self {
        Self {
            tree,
            index,
            batch: TreeBatch::default(),
            overlay: KeyState::new(),
            revision,
            compact_revision,
            watch: EventCollector::default(),
            leases: BTreeMap::new(),
            attachments: BTreeMap::new(),
            alarms: BTreeMap::new(),
            alarm_mask: 0,
            auth: Default::default(),
        }
    }

    /// Whether this call changed the lease table.
    pub(crate) fn leases_changed(&self) -> bool {
        !self.leases.is_empty()
    }

    /// Apply one client request (put, delete-range or txn) atomically.
    pub(crate) fn client_request<T>(
        &mut self,
        exec: impl FnOnce(&mut Self, &mut RequestScopeHandle) -> Result<T, ApplyError>,
    ) -> Result<Result<(T, Revision), RequestError>, Error> {
        let mut scope = RequestScopeHandle(RequestScope {
            revision: self.revision + 1,
            next_sub: 0,
            writes: TreeBatch::default(),
            overlay: KeyState::new(),
            events: Vec::new(),
            attachments: BTreeMap::new(),
        });
        match exec(self, &mut scope) {
            Ok(value) => {
                let scope = scope.0;
                if scope.next_sub > 0 {
                    self.revision = scope.revision;
                    self.batch.append(scope.writes);
                    if self.overlay.is_empty() {
                        // The first writing request of the call (often the only one, as
                        // with a large delete): take its overlay whole.
                        self.overlay = scope.overlay;
                    } else {
                        for (key, mut written) in scope.overlay {
                            if let Some(earlier) = self.overlay.get_mut(&key) {
                                earlier.changes.append(&mut written.changes);
                                earlier.state = written.state;
                            } else {
                                self.overlay.insert(key, written);
                            }
                        }
                    }
                    self.watch.events.extend(scope.events);
                    self.attachments.extend(scope.attachments);
                }
                Ok(Ok((value, self.revision)))
            }
            Err(ApplyError::Request(e)) => Ok(Err(e)),
            Err(ApplyError::Storage(e)) => Err(e),
        }
    }

    /// Record a compaction (the revisions below become unreadable).
    pub(crate) fn compact(&mut self, revision: Revision) -> Result<Revision, RequestError> {
        if revision <= self.compact_revision {
            return Err(RequestError::Compacted {
                requested: revision,
                compacted: self.compact_revision,
            });
        }
        if revision > self.revision {
            return Err(RequestError::FutureRevision {
                requested: revision,
                current: self.revision,
            });
        }
        self.compact_revision = revision;
        Ok(revision)
    }

    pub(crate) fn compact_revision(&self) -> Revision {
        self.compact_revision
    }

    pub(crate) fn latest(
        &self,
        scope: &RequestScopeHandle,
        key: &[u8],
    ) -> Result<Option<KeyValue>, ApplyError> {
        if let Some(written) = scope.0.overlay.get(key).or_else(|| self.overlay.get(key)) {
            return Ok(written.state.clone());
        }
        match self.index.newest(key) {
            Some(rev) => self.version(key, rev),
            None => Ok(None),
        }
    }

    /// `key`'s newest version without its value, as of the requests applied so far: no
    /// read of the tree (the key index has it).
    pub(crate) fn latest_meta(&self, scope: &RequestScopeHandle, key: &[u8]) -> Option<KeyMeta> {
        match scope.0.overlay.get(key).or_else(|| self.overlay.get(key)) {
            Some(written) => written.state.as_ref().map(KeyMeta::of),
            None => self.index.meta(key),
        }
    }

    /// The version of `key` the index names as its newest. The index is exact for the tree
    /// apply writes; should it ever disagree, the scan answers and the mismatch is logged.
    fn version(&self, key: &[u8], rev: Revision) -> Result<Option<KeyValue>, ApplyError> {
        if let Some(kv) = mvcc::get_version(self.tree, key, rev)? {
            return Ok(Some(kv));
        }
        self.index.count_miss();
        tracing::error!(key = ?String::from_utf8_lossy(key), rev, "key index names a version the tree lacks");
        Ok(mvcc::get_at(self.tree, key, Revision::MAX)?)
    }

    /// Every key this call wrote, with its writes and final state (`None`: deleted), for
    /// the key index.
    pub(crate) fn written_keys(&self) -> impl Iterator<Item = (&[u8], &[Change], Option<KeyMeta>)> {
        self.overlay.iter().map(|(k, written)| {
            (
                k.as_slice(),
                written.changes.as_slice(),
                written.state.as_ref().map(KeyMeta::of),
            )
        })
    }

    /// The live keys in `[key, range_end)` with their newest versions' metadata, as of the
    /// requests applied so far, in key order: the key index, corrected by what this call
    /// and this request wrote. Reads nothing from the tree.
    fn latest_range_meta(
        &self,
        scope: &RequestScopeHandle,
        key: &[u8],
        range_end: &[u8],
    ) -> Vec<(Vec<u8>, KeyMeta)> {
        if range_end.is_empty() {
            return self
                .latest_meta(scope, key)
                .map(|meta| (key.to_vec(), meta))
                .into_iter()
                .collect();
        }
        let from_index = self.index.range(key, range_end);
        let written: Vec<(&Vec<u8>, &Option<KeyValue>)> = [&self.overlay, &scope.0.overlay]
            .into_iter()
            .flat_map(|overlay| overlay_range(overlay, key, range_end))
            .collect();
        if written.is_empty() {
            return from_index;
        }
        let mut merged: BTreeMap<Vec<u8>, KeyMeta> = from_index.into_iter().collect();
        for (k, state) in written {
            match state {
                Some(kv) => merged.insert(k.clone(), KeyMeta::of(kv)),
                None => merged.remove(k),
            };
        }
        merged.into_iter().collect()
    }

    /// The full key-value before a write of `key` whose metadata is `meta`, when someone
    /// needs its value (`wanted`, or a watcher that asked for previous values); `None`
    /// otherwise, or if the key is not live.
    pub(crate) fn prev_if_needed(
        &self,
        scope: &RequestScopeHandle,
        key: &[u8],
        meta: Option<KeyMeta>,
        wanted: bool,
    ) -> Result<Option<KeyValue>, ApplyError> {
        if meta.is_none() || !(wanted || self.watch.wants_prev_of(key)) {
            return Ok(None);
        }
        self.latest(scope, key)
    }

    /// The live keys in `[key, range_end)` with their newest versions, as of the requests
    /// applied so far, in key order: [`Applier::latest_range_meta`], then each version.
    fn latest_range(
        &self,
        scope: &RequestScopeHandle,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<Vec<KeyValue>, ApplyError> {
        let mut kvs = Vec::new();
        for (k, _) in self.latest_range_meta(scope, key, range_end) {
            if let Some(kv) = self.latest(scope, &k)? {
                kvs.push(kv);
            }
        }
        Ok(kvs)
    }

    pub(crate) fn put(
        &mut self,
        scope: &mut RequestScopeHandle,
        req: &PutRequest,
    ) -> Result<PutResponse, ApplyError> {
        let meta = self.latest_meta(scope, &req.key);
        if (req.ignore_value || req.ignore_lease) && meta.is_none() {
            return Err(RequestError::KeyNotFound.into());
        }
        if req.lease != 0 && !req.ignore_lease && self.lease(req.lease)?.is_none() {
            return Err(RequestError::LeaseNotFound(req.lease).into());
        }
        let prev = self.prev_if_needed(scope, &req.key, meta, req.prev_kv || req.ignore_value)?;
        let value = match (&prev, req.ignore_value) {
            (Some(p), true) => p.value.clone(),
            _ => req.value.clone(),
        };
        let lease = match (&meta, req.ignore_lease) {
            (Some(p), true) => p.lease,
            _ => req.lease,
        };
        let rev = scope.0.revision;
        let kv = KeyValue {
            key: req.key.clone(),
            create_revision: meta.map_or(rev, |p| p.create_revision),
            mod_revision: rev,
            version: meta.map_or(1, |p| p.version + 1),
            value,
            lease,
        };
        let prev_lease = meta.map_or(0, |p| p.lease);
        scope.write(&self.watch, &kv.key, Some(kv.clone()), prev_lease, prev.as_ref())?;
        Ok(PutResponse {
            header: ResponseHeader::default(),
            prev_kv: if req.prev_kv { prev } else { None },
        })
    }

    pub(crate) fn delete(
        &mut self,
        scope: &mut RequestScopeHandle,
        req: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, ApplyError> {
        let doomed = self.latest_range_meta(scope, &req.key, &req.range_end);
        let mut prev_kvs = Vec::new();
        scope.0.writes.reserve(2 * doomed.len());
        for (key, meta) in &doomed {
            let prev = self.prev_if_needed(scope, key, Some(*meta), req.prev_kv)?;
            scope.write(&self.watch, key, None, meta.lease, prev.as_ref())?;
            if req.prev_kv {
                prev_kvs.extend(prev);
            }
        }
        Ok(DeleteRangeResponse {
            header: ResponseHeader::default(),
            deleted: doomed.len() as i64,
            prev_kvs,
        })
    }

    pub(crate) fn range(
        &mut self,
        scope: &RequestScopeHandle,
        req: &RangeRequest,
    ) -> Result<RangeResponse, ApplyError> {
        let kvs = if req.revision <= 0 || req.revision >= scope.0.revision {
            self.latest_range(scope, &req.key, &req.range_end)?
        } else {
            if req.revision < self.compact_revision {
                return Err(RequestError::Compacted {
                    requested: req.revision,
                    compacted: self.compact_revision,
                }
                .into());
            }
            // Apply holds the write gate: physical compaction deletes nothing meanwhile,
            // so every fallback is the index out of step with the tree.
            let (kvs, fallbacks) =
                mvcc::range_indexed_at(self.tree, self.index, &req.key, &req.range_end, req.revision)?;
            for _ in 0..fallbacks {
                self.index.count_miss();
            }
            kvs
        };
        let (kvs, more, count) = mvcc::shape_range(kvs, req);
        Ok(RangeResponse {
            header: ResponseHeader::default(),
            kvs,
            more,
            count,
        })
    }

    pub(crate) fn txn(
        &mut self,
        scope: &mut RequestScopeHandle,
        req: &TxnRequest,
    ) -> Result<TxnResponse, ApplyError> {
        let mut succeeded = true;
        for cmp in &req.compare {
            if !self.compare_holds(scope, cmp)? {
                succeeded = false;
                break;
            }
        }
        let ops = if succeeded { &req.success } else { &req.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(match op {
                RequestOp::Range(r) => ResponseOp::Range(self.range(scope, r)?),
                RequestOp::Put(p) => ResponseOp::Put(self.put(scope, p)?),
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.delete(scope, d)?),
                RequestOp::Txn(t) => ResponseOp::Txn(self.txn(scope, t)?),
            });
        }
        Ok(TxnResponse {
            header: ResponseHeader::default(),
            succeeded,
            responses,
        })
    }

    /// etcd's `applyCompare`: every key in the range must satisfy the compare; an empty
    /// range compares a zero key-value, except that a value compare then fails.
    fn compare_holds(&self, scope: &RequestScopeHandle, cmp: &Compare) -> Result<bool, ApplyError> {
        let kvs = if matches!(cmp.target, CompareTarget::Value(_)) {
            self.latest_range(scope, &cmp.key, &cmp.range_end)?
        } else {
            // Revisions, version and lease are all in the key index: no value read.
            self.latest_range_meta(scope, &cmp.key, &cmp.range_end)
                .into_iter()
                .map(|(key, meta)| meta.without_value(key))
                .collect()
        };
        if kvs.is_empty() {
            if matches!(cmp.target, CompareTarget::Value(_)) {
                return Ok(false);
            }
            return Ok(compare_kv(cmp, &KeyValue::default()));
        }
        Ok(kvs.iter().all(|kv| compare_kv(cmp, kv)))
    }
}

/// The staged writes of one request (opaque outside this module).
pub(crate) struct RequestScopeHandle(RequestScope);

impl RequestScopeHandle {
    /// Stage a put (`Some`) or a delete (`None`) of `key` at the request's revision, with
    /// its watch event if a watcher covers `key`. `prev_lease` is the lease of the key
    /// before it (0: none, or not live); `prev` the key before it if a watcher wants
    /// previous values (`EventCollector::wants_prev_of`), else may be `None`.
    pub(crate) fn write(
        &mut self,
        watch: &EventCollector,
        key: &[u8],
        state: Option<KeyValue>,
        prev_lease: i64,
        prev: Option<&KeyValue>,
    ) -> Result<(), Error> {
        let scope = &mut self.0;
        if let Some(event) = watch.event(key, scope.revision, state.as_ref(), prev) {
            scope.events.push(event);
        }
        let sub = scope.next_sub;
        scope.next_sub += 1;
        // History first (with the version: a put's record is inline in its chunk), then
        // the attachments: a crash keeps a prefix of these, and the history record is how
        // `apply/rollback.rs` finds the rest. A delete is its history event alone
        // (`mvcc/history_records.rs`).
        let record = match &state {
            Some(kv) => Some(codec::encode(&BorrowedPut::Put {
                create_revision: kv.create_revision,
                version: kv.version,
                lease: kv.lease,
                value: &kv.value,
                sub,
            })?),
            None => None,
        };
        scope.writes.history(scope.revision, sub, key, record.as_deref());
        let new_lease = state.as_ref().map_or(0, |s| s.lease);
        let old_lease = prev_lease;
        if old_lease != new_lease {
            if old_lease != 0 {
                scope.writes.remove(keys::attachment_key(old_lease, key));
                scope.attachments.insert((old_lease, key.to_vec()), false);
            }
            if new_lease != 0 {
                scope
                    .writes
                    .insert(keys::attachment_key(new_lease, key), Vec::new());
                scope.attachments.insert((new_lease, key.to_vec()), true);
            }
        }
        let change = if state.is_some() {
            Change::put(scope.revision)
        } else {
            Change::delete(scope.revision)
        };
        match scope.overlay.entry(key.to_vec()) {
            Entry::Occupied(mut written) => {
                let written = written.get_mut();
                // One change per (key, revision): a second write of the key in the same
                // request (rejected at the edges; both events stay in the history) is what
                // the revision did, as readers of the history take its last event.
                match written.changes.last_mut() {
                    Some(last) if last.revision() == change.revision() => *last = change,
                    _ => written.changes.push(change),
                }
                written.state = state;
            }
            Entry::Vacant(slot) => {
                slot.insert(Written {
                    state,
                    changes: vec![change],
                });
            }
        }
        Ok(())
    }
}

/// The entries of `overlay` whose keys are in `[key, range_end)` (etcd's forms: an empty
/// `range_end` is `key` alone, `[0]` everything from `key` on).
fn overlay_range<'o>(
    overlay: &'o KeyState,
    key: &[u8],
    range_end: &[u8],
) -> impl Iterator<Item = (&'o Vec<u8>, &'o Option<KeyValue>)> {
    use std::ops::Bound;
    let upper = if range_end.is_empty() {
        Bound::Included(key.to_vec())
    } else if range_end == [0] {
        Bound::Unbounded
    } else {
        Bound::Excluded(range_end.to_vec())
    };
    let empty = matches!(&upper, Bound::Excluded(end) if end.as_slice() <= key);
    let range = (!empty).then(|| overlay.range((Bound::Included(key.to_vec()), upper)));
    range
        .into_iter()
        .flatten()
        .map(|(key, written)| (key, &written.state))
}

fn compare_kv(cmp: &Compare, kv: &KeyValue) -> bool {
    use std::cmp::Ordering;
    let ordering = match &cmp.target {
        CompareTarget::Version(v) => kv.version.cmp(v),
        CompareTarget::Create(r) => kv.create_revision.cmp(r),
        CompareTarget::Mod(r) => kv.mod_revision.cmp(r),
        CompareTarget::Value(v) => kv.value.as_slice().cmp(v.as_slice()),
        CompareTarget::Lease(l) => kv.lease.cmp(l),
    };
    match cmp.result {
        CompareResult::Equal => ordering == Ordering::Equal,
        CompareResult::Greater => ordering == Ordering::Greater,
        CompareResult::Less => ordering == Ordering::Less,
        CompareResult::NotEqual => ordering != Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_range_takes_etcd_range_forms() {
        let overlay: KeyState = ["a", "b", "ba", "c"]
            .iter()
            .map(|k| {
                let written = Written {
                    state: None,
                    changes: vec![Change::delete(1)],
                };
                (k.as_bytes().to_vec(), written)
            })
            .collect();
        let keys = |key: &str, end: &[u8]| -> Vec<String> {
            overlay_range(&overlay, key.as_bytes(), end)
                .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
                .collect()
        };
        assert_eq!(keys("b", b""), ["b"]);
        assert_eq!(keys("bb", b""), Vec::<String>::new());
        assert_eq!(keys("b", b"c"), ["b", "ba"]);
        assert_eq!(keys("b", &[0]), ["b", "ba", "c"]);
        assert_eq!(keys("c", b"b"), Vec::<String>::new(), "end below the start");
        assert_eq!(keys("b", b"b"), Vec::<String>::new(), "end at the start");
    }
}
