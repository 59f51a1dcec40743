//! The writes etcd 3.4's `HashKV` hashes, in its order, read from our MVCC records
//! ([`KvReader::hash_history`]); the hashing itself (etcd's byte encoding) is the
//! caller's.
//!
//! etcd hashes the `key` bucket of its backend, which holds one record per write keyed by
//! (revision, sub-revision), in that order. For `HashKV(rev)` with compact revision `C`
//! (`mvcc/kvstore.go`, `HashByRev`) it takes:
//! - every write with `C < revision <= rev` (puts and tombstones alike);
//! - of the writes at or below `C` (after compaction only each key's newest put at `C`
//!   is left), those that are still their key's newest version at `rev` and a put; if
//!   no key is live at `rev`, all of them.
//!
//! A request at or below `C` is refused as compacted (`rev <= C`, where reads refuse
//! only `rev < C`). The compact revision is pinned for the walk, so physical compaction
//! cannot remove what it reads.

use raftkv_core::kv::{KeyValue, Revision};
use raftkv_core::{Error, RequestError, codec};

use crate::maintenance::compaction_pins::CompactionPin;
use crate::mvcc::history_records::EventKind;
use crate::mvcc::key_index::KeyIndex;
use crate::mvcc::reader::KvReader;
use crate::mvcc::{VersionRecord, history_records, versions};

/// One write, as `HashKV` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashedWrite {
    /// Its revision.
    pub revision: Revision,
    /// Its position within the revision (etcd's sub-revision).
    pub sub: u32,
    /// The key written.
    pub key: Vec<u8>,
    /// What a put wrote; `None` for a delete (etcd's tombstone).
    pub put: Option<KeyValue>,
}

/// The revisions a hash covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashScope {
    /// The revision hashed up to.
    pub revision: Revision,
    /// The member's revision when the walk began.
    pub current: Revision,
    /// The compact revision (0: never compacted).
    pub compact: Revision,
}

impl KvReader {
    /// Calls `visit` for each write etcd's `HashKV(revision)` hashes, in its order (see
    /// the module). `revision <= 0` means the current one.
    pub fn hash_history(
        &self,
        revision: Revision,
        mut visit: impl FnMut(HashedWrite),
    ) -> Result<HashScope, Error> {
        // Pin before reading the revision and loading the tree (see `range_once`). The walk
        // reads the tree and the key index: a snapshot install that switches both during
        // it makes the answer unusable (see the end).
        let switch_epoch = self.shared.settled_switch_epoch();
        let (_pin, compact) = CompactionPin::take(&self.shared.pins, || self.shared.compact_revision());
        let current = self.shared.revision();
        let tree = self.shared.tree();
        let rev = if revision <= 0 { current } else { revision };
        if rev > current {
            return Err(RequestError::FutureRevision {
                requested: rev,
                current,
            }
            .into());
        }
        if revision > 0 && rev <= compact {
            return Err(RequestError::Compacted {
                requested: rev,
                compacted: compact,
            }
            .into());
        }

        let walked = walk(&tree, &self.shared.key_index, rev, compact, &mut visit);
        if self
            .shared
            .switch_epoch
            .load(std::sync::atomic::Ordering::Acquire)
            != switch_epoch
        {
            // The tree walked and the index asked may be of different generations (a
            // version the index names may then be missing from the tree: no error either).
            return Err(Error::Timeout(
                "a snapshot install switched the state during HashKV; ask again".into(),
            ));
        }
        walked?;
        Ok(HashScope {
            revision: rev,
            current,
            compact,
        })
    }
}

/// Call `visit` with the writes `HashKV(rev)` hashes, in order (see the module).
fn walk(
    tree: &sled::Tree,
    index: &KeyIndex,
    rev: Revision,
    compact: Revision,
    visit: &mut impl FnMut(HashedWrite),
) -> Result<(), Error> {
    // Writes at or below the compact revision that etcd would still hold and hash: the
    // key index names each key's newest version at both revisions.
    let (live_at_rev, _) = index.range_at(b"", &[0], rev);
    let below: Vec<(Vec<u8>, Revision)> = if live_at_rev.is_empty() {
        index.range_at(b"", &[0], compact).0
    } else {
        live_at_rev.into_iter().filter(|(_, r)| *r <= compact).collect()
    };
    let records = versions::records_at(tree, &below).map_err(storage)?;
    let mut writes = Vec::with_capacity(below.len());
    for ((key, r), record) in below.into_iter().zip(records) {
        let record = record.ok_or_else(|| corrupt(format!("{key:?} at {r} without its version")))?;
        writes.push(write_of(key, r, None, record));
    }
    writes.sort_unstable_by_key(|w| (w.revision, w.sub));
    writes.into_iter().for_each(&mut *visit);

    // Every write above the compact revision, from the history family.
    for event in history_records::events_between(tree, compact.saturating_add(1).max(0), rev) {
        let event = event.map_err(storage)?;
        let record = match (event.kind, event.record) {
            (_, Some(bytes)) => Some(codec::decode(&bytes).map_err(storage)?),
            (EventKind::Delete, None) => None,
            (_, None) => Some(
                versions::record_at(tree, &event.key, event.revision)
                    .map_err(storage)?
                    .ok_or_else(|| {
                        corrupt(format!(
                            "history of {:?} at {} without its version",
                            event.key, event.revision
                        ))
                    })?,
            ),
        };
        visit(match record {
            Some(record) => write_of(event.key, event.revision, Some(event.sub), record),
            None => HashedWrite {
                revision: event.revision,
                sub: event.sub,
                key: event.key,
                put: None,
            },
        });
    }
    Ok(())
}

/// The write of `key` at `r` as its version record has it (a tombstone record of an
/// older layout: a delete); its sub-revision is `sub` where the history said, else the
/// record's.
fn write_of(key: Vec<u8>, r: Revision, sub: Option<u32>, record: VersionRecord) -> HashedWrite {
    let sub = sub.unwrap_or(match record {
        VersionRecord::Put { sub, .. } | VersionRecord::Delete { sub } => sub,
    });
    HashedWrite {
        revision: r,
        sub,
        put: record.into_key_value(key.clone(), r),
        key,
    }
}

fn storage(e: impl std::fmt::Display) -> Error {
    Error::Storage(e.to_string())
}

fn corrupt(what: String) -> Error {
    Error::Storage(format!("corrupt state: {what}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use raftkv_core::Command;
    use raftkv_core::kv::PutRequest;

    use super::*;
    use crate::test_store::TestStore;

    /// A snapshot install's switch during the walk (the tree walked and the index asked
    /// may then be of different generations) makes HashKV answer a retryable error
    /// instead of a hash of neither; without one it answers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hash_that_overlaps_a_state_switch_is_refused() {
        let mut t = TestStore::new();
        let puts = (1..=3)
            .map(|i| Command::Put(PutRequest::new(format!("k{i}"), "v")))
            .collect();
        t.apply(puts).await;
        let mut seen = 0;
        let scope = t.store.reader.hash_history(0, |_| seen += 1).unwrap();
        assert_eq!((seen, scope.revision), (3, 4));
        let shared = t.store.shared.clone();
        let err = t
            .store
            .reader
            .hash_history(0, |_| drop(shared.begin_switch()))
            .unwrap_err();
        assert!(matches!(err, Error::Timeout(_)), "{err:?}");
    }
}
