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

use crate::keys;
use crate::maintenance::compaction_pins::CompactionPin;
use crate::mvcc::history_records::EventKind;
use crate::mvcc::reader::KvReader;
use crate::mvcc::{VersionRecord, history_records};

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

/// A key's newest versions at two revisions, while its versions are walked.
#[derive(Default)]
struct KeyState {
    /// The newest version at or below the hashed revision: (revision, sub, is a put).
    at_rev: Option<(Revision, u32, bool)>,
    /// The newest version at or below the compact revision.
    at_compact: Option<(Revision, u32, bool)>,
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

        // Writes at or below the compact revision that etcd would still hold and hash.
        let index = &self.shared.key_index;
        let (mut live_at_rev, mut live_at_compact) = (Vec::new(), Vec::new());
        let mut any_live = false;
        let mut group: Option<(Vec<u8>, KeyState)> = None;
        let (lower, upper) = keys::version_bounds(b"", &[0]);
        let mut close = |group: Option<(Vec<u8>, KeyState)>, any_live: &mut bool| -> Result<(), Error> {
            let Some((prefix, state)) = group else {
                return Ok(());
            };
            let user_key =
                || keys::decode_user_key(&prefix).ok_or_else(|| corrupt(format!("a version key {prefix:?}")));
            // A put the walk found newest is live only if no delete came after it: a
            // delete has no version record (`mvcc/history_records.rs`), the index knows.
            let still_put = |key: &[u8], r: Revision, at: Revision| {
                index
                    .change_at(key, at)
                    .is_none_or(|c| c.is_put() || c.revision() <= r)
            };
            if let Some((r, sub, true)) = state.at_rev {
                let key = user_key()?;
                if still_put(&key, r, rev) {
                    *any_live = true;
                    if r <= compact {
                        live_at_rev.push((r, sub, key));
                    }
                }
            }
            if let Some((r, sub, true)) = state.at_compact {
                let key = user_key()?;
                if still_put(&key, r, compact) {
                    live_at_compact.push((r, sub, key));
                }
            }
            Ok(())
        };
        for item in tree.range(lower..upper) {
            let (tree_key, bytes) = item.map_err(storage)?;
            let Some((prefix, r)) = keys::split_version_key(&tree_key) else {
                continue;
            };
            if r > rev {
                continue;
            }
            if group.as_ref().is_none_or(|(p, _)| p.as_slice() != prefix) {
                close(group.take(), &mut any_live)?;
                group = Some((prefix.to_vec(), KeyState::default()));
            }
            let record: VersionRecord = codec::decode(&bytes).map_err(storage)?;
            let (sub, put) = match record {
                VersionRecord::Put { sub, .. } => (sub, true),
                VersionRecord::Delete { sub } => (sub, false),
            };
            if let Some((_, state)) = group.as_mut() {
                state.at_rev = Some((r, sub, put));
                if r <= compact {
                    state.at_compact = Some((r, sub, put));
                }
            }
        }
        close(group.take(), &mut any_live)?;
        let mut below = if any_live { live_at_rev } else { live_at_compact };
        below.sort_unstable_by_key(|(r, sub, _)| (*r, *sub));
        for (r, sub, key) in below {
            visit(read_write(&tree, r, sub, key)?);
        }

        // Every write above the compact revision, from the history family.
        for event in history_records::events_between(&tree, compact.saturating_add(1).max(0), rev) {
            let event = event.map_err(storage)?;
            if event.kind == EventKind::Delete {
                visit(HashedWrite {
                    revision: event.revision,
                    sub: event.sub,
                    key: event.key,
                    put: None,
                });
                continue;
            }
            visit(read_write(&tree, event.revision, event.sub, event.key)?);
        }
        if self
            .shared
            .switch_epoch
            .load(std::sync::atomic::Ordering::Acquire)
            != switch_epoch
        {
            // The tree walked and the index asked may be of different generations.
            return Err(Error::Timeout(
                "a snapshot install switched the state during HashKV; ask again".into(),
            ));
        }
        Ok(HashScope {
            revision: rev,
            current,
            compact,
        })
    }
}

/// The write of `key` at `r` as its version record has it.
fn read_write(tree: &sled::Tree, r: Revision, sub: u32, key: Vec<u8>) -> Result<HashedWrite, Error> {
    let bytes = tree
        .get(keys::version_key(&key, r))
        .map_err(storage)?
        .ok_or_else(|| corrupt(format!("history of {key:?} at {r} without its version")))?;
    let record: VersionRecord = codec::decode(&bytes).map_err(storage)?;
    Ok(HashedWrite {
        revision: r,
        sub,
        put: record.into_key_value(key.clone(), r),
        key,
    })
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
