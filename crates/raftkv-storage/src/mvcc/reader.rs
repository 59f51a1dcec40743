//! [`KvReader`]: serves reads straight from the MVCC keyspace, without the Raft actor and
//! without a lock. The caller decides how fresh the read must be (a linearizable read
//! first waits for the applied watermark to reach the read index); the reader pins a
//! revision and answers from it.
//!
//! Physical compaction deletes versions while reads run. A read at revision `R` is safe
//! from it as long as the compact revision stays at or below `R`, so the reader checks
//! `R` against the compact revision before its scan and again after it (see
//! [`KvReader::range`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use raftkv_core::kv::{KeyValue, RangeRequest, RangeResponse, ResponseHeader, Revision};
use raftkv_core::{Error, RequestError, Watermark, codec};

use crate::apply::lease_table::{self, LeaseChanges, LeaseRecord};
use crate::keys;
use crate::mvcc;
use crate::state::StateShared;

/// Read handle on the state machine; cheap to clone.
#[derive(Clone)]
pub struct KvReader {
    pub(crate) shared: Arc<StateShared>,
    lease_changes: Arc<LeaseChanges>,
}

/// Attempts of a read of the current revision that keeps being compacted mid-scan.
const LATEST_READ_ATTEMPTS: u32 = 3;

/// Attempts of a read that keeps overlapping snapshot installs' switches.
const SWITCH_READ_ATTEMPTS: u32 = 8;

fn storage(e: impl std::fmt::Display) -> Error {
    Error::Storage(e.to_string())
}

impl KvReader {
    pub(crate) fn new(shared: Arc<StateShared>, lease_changes: Arc<LeaseChanges>) -> Self {
        Self {
            shared,
            lease_changes,
        }
    }

    /// Lease `id` as applied here (`None`: no such lease).
    pub fn lease(&self, id: i64) -> Result<Option<LeaseRecord>, Error> {
        lease_table::get(&self.shared.tree(), id).map_err(storage)
    }

    /// Every lease applied here, by id.
    pub fn leases(&self) -> Result<Vec<(i64, LeaseRecord)>, Error> {
        lease_table::list(&self.shared.tree()).map_err(storage)
    }

    /// The keys attached to lease `id`, in key order.
    pub fn lease_keys(&self, id: i64) -> Result<Vec<Vec<u8>>, Error> {
        lease_table::attached(&self.shared.tree(), id).map_err(storage)
    }

    /// How many times the lease table has changed here (grows on every grant, revoke,
    /// checkpoint and snapshot install).
    pub fn lease_changes(&self) -> u64 {
        self.lease_changes.get()
    }

    /// The newest applied revision.
    pub fn revision(&self) -> Revision {
        self.shared.revision()
    }

    /// The compact revision.
    pub fn compact_revision(&self) -> Revision {
        self.shared.compact_revision()
    }

    /// The cluster id (0 until the first membership is applied).
    pub fn cluster_id(&self) -> u64 {
        self.shared.cluster_id()
    }

    /// The applied-index watermark.
    pub fn applied(&self) -> &Arc<Watermark> {
        self.shared.applied()
    }

    /// Serve an etcd Range at a pinned revision. `header.revision` is the store revision
    /// the read was served at (etcd reports the current revision, also for reads of an
    /// older one); `cluster_id`, `member_id` and `raft_term` are left for the caller.
    ///
    /// A read of the current revision (`req.revision <= 0`) whose revision is compacted
    /// during its scan is retried at the new current revision (a couple of times); a read
    /// of an explicit revision answers `Compacted`. A read that overlaps a snapshot
    /// install's switch of the state reads again; after 8 in a row it answers
    /// `Error::Timeout` (retryable: `Unavailable` on the wire).
    #[tracing::instrument(level = "debug", skip_all)]
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, Error> {
        self.range_with_hook(req, &|_| {})
    }

    /// [`KvReader::range`] with `after_scan` run between the scan and the re-check of the
    /// compact revision (tests use it to compact at exactly that point).
    fn range_with_hook(
        &self,
        req: &RangeRequest,
        after_scan: &dyn Fn(Revision),
    ) -> Result<RangeResponse, Error> {
        raftkv_core::validate::check_range(req)?;
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.range_once(req, after_scan)? {
                Ok(response) => return Ok(response),
                Err(compacted) if req.revision <= 0 && attempts < LATEST_READ_ATTEMPTS => {
                    tracing::debug!(%compacted, "latest read compacted during its scan; retrying");
                }
                Err(compacted) => return Err(compacted.into()),
            }
        }
    }

    /// One attempt: `Ok(Err(_))` if the revision was compacted during the scan. Read
    /// again (a few times) if a snapshot install switched the state meanwhile: the read
    /// may have paired the old tree with the new index or revisions (`raft/snapshot.rs`).
    fn range_once(
        &self,
        req: &RangeRequest,
        after_scan: &dyn Fn(Revision),
    ) -> Result<Result<RangeResponse, RequestError>, Error> {
        for _ in 0..SWITCH_READ_ATTEMPTS {
            let epoch = self.shared.settled_switch_epoch();
            let outcome = self.range_pinned(req, after_scan)?;
            if self.shared.switch_epoch.load(Ordering::Acquire) == epoch {
                return Ok(outcome);
            }
            tracing::debug!("a snapshot install switched the state during the read; reading again");
        }
        Err(Error::Timeout(format!(
            "snapshot installs switched the state during {SWITCH_READ_ATTEMPTS} reads in a row"
        )))
    }

    /// The read at a pinned revision, against whatever tree and index it loads.
    fn range_pinned(
        &self,
        req: &RangeRequest,
        after_scan: &dyn Fn(Revision),
    ) -> Result<Result<RangeResponse, RequestError>, Error> {
        // Pin the revision before loading the tree (see `snapshot::install`).
        let current = self.shared.revision();
        let tree = self.shared.tree();
        let compacted = self.shared.compact_revision();
        let rev = if req.revision <= 0 {
            current
        } else if req.revision > current {
            return Err(RequestError::FutureRevision {
                requested: req.revision,
                current,
            }
            .into());
        } else if req.revision < compacted {
            return Err(RequestError::Compacted {
                requested: req.revision,
                compacted,
            }
            .into());
        } else {
            req.revision
        };
        let index = &self.shared.key_index;
        let limited = if req.range_end.is_empty() {
            None
        } else {
            mvcc::range_by_index_limited(&tree, index, req, rev).map_err(storage)?
        };
        let (kvs, fallbacks): (Vec<KeyValue>, usize) = if let Some(limited) = &limited {
            (Vec::new(), limited.fallbacks)
        } else if req.range_end.is_empty() {
            let kv = mvcc::get_indexed_at(&tree, index, &req.key, rev).map_err(storage)?;
            (kv.into_iter().collect(), 0)
        } else {
            mvcc::range_indexed_at(&tree, index, &req.key, &req.range_end, rev).map_err(storage)?
        };
        after_scan(rev);
        // The scan may have raced with physical compaction. The compactor deletes for a
        // target T only what no read at or above T can see, and only after a compact
        // revision >= T was published (`compactor::step` reads the published value before
        // it deletes anything). So if the compact revision is still <= rev now, nothing this
        // scan needed was deleted before or during it; if it moved past rev, the scan may
        // have missed versions and is refused. The deletions it observed were ordered after
        // that publication (apply's Release store, the compactor's Acquire load, sled's
        // own synchronisation), so this load cannot miss the new compact revision.
        let compacted = self.shared.compact_revision();
        if rev < compacted {
            return Ok(Err(RequestError::Compacted {
                requested: rev,
                compacted,
            }));
        }
        if fallbacks > 0 {
            // Not compacted past `rev` meanwhile, so the index named versions the tree
            // never had: a bug (a scan of each such key answered, from the version
            // records alone: right unless the key was deleted since, which only the index
            // knows).
            for _ in 0..fallbacks {
                index.count_miss();
            }
            tracing::error!(fallbacks, rev, "key index names versions the tree lacks");
        }
        let (kvs, more, count) = match limited {
            Some(limited) => (limited.kvs, limited.more, limited.count),
            None => mvcc::shape_range(kvs, req),
        };
        Ok(Ok(RangeResponse {
            header: ResponseHeader {
                revision: current,
                ..ResponseHeader::default()
            },
            kvs,
            more,
            count,
        }))
    }

    /// The name and client URLs member `id` published, if it did.
    pub fn published_member(&self, id: u64) -> Result<Option<(String, Vec<String>)>, Error> {
        match self.shared.tree().get(keys::member_key(id)).map_err(storage)? {
            Some(bytes) => Ok(Some(codec::decode(&bytes).map_err(storage)?)),
            None => Ok(None),
        }
    }

    /// The active alarms as of the applied state here (a local read, as etcd's `/health`
    /// and `Status` do; clients list alarms through the log).
    pub fn alarms(&self) -> Result<Vec<raftkv_core::AlarmMember>, Error> {
        crate::apply::alarm_table::read(&self.shared.tree(), raftkv_core::alarm::ALARM_NONE).map_err(storage)
    }

    /// Which alarm types are active as of the applied state (bits of `apply/alarm_table.rs`).
    pub fn alarm_mask(&self) -> u8 {
        self.shared.alarm_mask()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::time::Duration;

    use openraft::{EntryPayload, LogId};
    use raftkv_core::Command;
    use raftkv_core::kv::{CompactionRequest, PutRequest};
    use raftkv_core::types::Entry;

    use super::*;
    use crate::{Store, StoreOptions};

    fn entry(index: u64, command: Command) -> Entry {
        Entry {
            log_id: LogId::new(raftkv_core::types::leader_id(1, 1), index),
            payload: EntryPayload::Normal(command),
        }
    }

    fn put(index: u64, key: &str, value: &str) -> Entry {
        entry(index, Command::Put(PutRequest::new(key, value)))
    }

    fn compact(index: u64, revision: Revision) -> Entry {
        entry(
            index,
            Command::Compact(CompactionRequest {
                revision,
                physical: false,
            }),
        )
    }

    /// The re-check after the scan, driven deterministically: a hook compacts (logically
    /// and physically) past the read's revision right after its scan.
    #[test]
    fn a_read_whose_revision_is_compacted_during_its_scan_is_refused_or_retried() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let Store {
            state_machine,
            reader,
            shared,
            ..
        } = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let state_machine = RefCell::new(state_machine);
        let index = Cell::new(0);
        let apply = |make: &dyn Fn(u64) -> Entry| {
            index.set(index.get() + 1);
            let entry = make(index.get());
            runtime
                .block_on(state_machine.borrow_mut().apply_committed([entry]))
                .unwrap();
        };
        for i in 0..5 {
            apply(&|n| put(n, &format!("k{i}"), "old"));
        }
        for i in 0..5 {
            apply(&|n| put(n, &format!("k{i}"), "new"));
        }
        // Revisions: the old values at 2..=6, the new ones at 7..=11.
        assert_eq!(reader.revision(), 11);
        let compact_past = |rev: Revision| {
            apply(&|n| compact(n, rev + 1));
            runtime
                .block_on(
                    shared
                        .physically_compacted()
                        .wait_for_timeout(rev as u64 + 1, Duration::from_secs(30)),
                )
                .unwrap();
        };

        let at_6 = RangeRequest::prefix("k").with_revision(6);
        assert_eq!(reader.range(&at_6).unwrap().count, 5, "readable before");
        let err = reader
            .range_with_hook(&at_6, &|rev| compact_past(rev))
            .unwrap_err();
        assert_eq!(
            err,
            Error::Request(RequestError::Compacted {
                requested: 6,
                compacted: 7
            })
        );
        assert!(reader.range(&at_6).is_err(), "refused up front from now on");

        // A read of the current revision is retried at the new one.
        apply(&|n| put(n, "k0", "newest"));
        let calls = Cell::new(0);
        let latest = RangeRequest::key("k0");
        let response = reader
            .range_with_hook(&latest, &|rev| {
                calls.set(calls.get() + 1);
                if calls.get() == 1 {
                    apply(&|n| put(n, "k0", "after the compaction"));
                    compact_past(rev);
                }
            })
            .unwrap();
        assert_eq!(calls.get(), 2);
        assert_eq!(response.kvs[0].value, b"after the compaction");
        // ... but not forever.
        let calls = Cell::new(0);
        let err = reader
            .range_with_hook(&latest, &|rev| {
                calls.set(calls.get() + 1);
                apply(&|n| put(n, "k0", "again"));
                compact_past(rev);
            })
            .unwrap_err();
        assert!(matches!(err, Error::Request(RequestError::Compacted { .. })));
        assert_eq!(calls.get(), LATEST_READ_ATTEMPTS);
    }

    /// A snapshot install's switch (tree, key index, revisions) that overlaps a read makes
    /// it read again, at an explicit revision too; reads that keep overlapping one give up
    /// with an error instead of spinning. The hook stands in for the install.
    #[test]
    fn a_read_that_overlaps_a_state_switch_reads_again() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        for (n, value) in ["a", "b"].into_iter().enumerate() {
            runtime
                .block_on(
                    store
                        .state_machine
                        .apply_committed([put(n as u64 + 1, "k", value)]),
                )
                .unwrap();
        }
        let switch = || drop(store.shared.begin_switch());
        let calls = Cell::new(0);
        let at_2 = RangeRequest::prefix("k").with_revision(2);
        let response = store
            .reader
            .range_with_hook(&at_2, &|_| {
                calls.set(calls.get() + 1);
                if calls.get() == 1 {
                    switch();
                }
            })
            .unwrap();
        assert_eq!(calls.get(), 2, "read again after the switch");
        assert_eq!(response.kvs[0].value, b"a");
        let calls = Cell::new(0);
        let err = store
            .reader
            .range_with_hook(&RangeRequest::key("k"), &|_| {
                calls.set(calls.get() + 1);
                switch();
            })
            .unwrap_err();
        assert!(matches!(err, Error::Timeout(_)), "{err:?}");
        assert_eq!(calls.get(), SWITCH_READ_ATTEMPTS);
    }
}
