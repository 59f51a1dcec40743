//! [`AppliedState`]: how far the state machine has applied, as ONE record written last.
//!
//! Apply writes its records one by one (no sled batch: see `apply/tree_writes.rs`), so the
//! applied log id, the membership, the revision and the compact revision must not be
//! separate keys that a crash could leave from different applies. They are one record,
//! `m`+`state`, overwritten as the last write of every apply: whatever survives a crash,
//! the record names one applied index and the revision that index produced, and
//! `apply/rollback.rs` removes what the next apply had begun to write above it.
//!
//! Layout version 1 kept them as four keys written in one atomic batch; a tree of that
//! layout is migrated once at open ([`migrate_from_layout_1`]).

use serde::{Deserialize, Serialize};

use raftkv_core::codec;
use raftkv_core::kv::Revision;
use raftkv_core::types::{LogId, StoredMembership};

use crate::error::Result;
use crate::keys::meta;

/// The state the tree holds: everything applied up to `applied`, nothing after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AppliedState {
    /// The last applied log id (`None`: nothing applied yet).
    pub(crate) applied: Option<LogId>,
    /// The last applied membership.
    pub(crate) membership: StoredMembership,
    /// The revision after the last applied write (1 for an empty store, as in etcd).
    pub(crate) revision: Revision,
    /// The logical compact revision.
    pub(crate) compact_revision: Revision,
}

impl Default for AppliedState {
    fn default() -> Self {
        Self {
            applied: None,
            membership: StoredMembership::default(),
            revision: 1,
            compact_revision: 0,
        }
    }
}

impl AppliedState {
    /// The state recorded in `tree` (the empty store's if none is).
    pub(crate) fn read(tree: &sled::Tree) -> Result<Self> {
        match tree.get(meta::STATE)? {
            Some(bytes) => Ok(codec::decode(&bytes)?),
            None => Ok(Self::default()),
        }
    }

    /// The applied log index (0 before anything is applied).
    pub(crate) fn applied_index(&self) -> u64 {
        self.applied.map_or(0, |id| id.index)
    }

    /// The record's bytes.
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        Ok(codec::encode(self)?)
    }

    /// The state as layout version 1 kept it (four keys).
    fn read_layout_1(tree: &sled::Tree) -> Result<Self> {
        let mut state = Self::default();
        if let Some(b) = tree.get(meta::APPLIED)? {
            state.applied = codec::decode(&b)?;
        }
        if let Some(b) = tree.get(meta::MEMBERSHIP)? {
            state.membership = codec::decode(&b)?;
        }
        if let Some(b) = tree.get(meta::REVISION)? {
            state.revision = codec::decode(&b)?;
        }
        if let Some(b) = tree.get(meta::COMPACT)? {
            state.compact_revision = codec::decode(&b)?;
        }
        Ok(state)
    }
}

/// Rewrite a layout-1 tree's four metadata keys as the one [`meta::STATE`] record. Safe
/// to repeat after a crash: the record is written first (from the old keys, which are
/// still there until it is) and the old keys are removed after; the caller records the
/// new layout version and syncs only once this returned.
pub(crate) fn migrate_from_layout_1(tree: &sled::Tree) -> Result<()> {
    if tree.get(meta::STATE)?.is_none() {
        let state = AppliedState::read_layout_1(tree)?;
        tree.insert(meta::STATE, state.encode()?)?;
    }
    for key in [meta::APPLIED, meta::MEMBERSHIP, meta::REVISION, meta::COMPACT] {
        tree.remove(key)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    use crate::test_store::temporary_tree as tree;

    #[test]
    fn an_empty_tree_is_at_revision_1_with_nothing_applied() {
        let state = AppliedState::read(&tree()).unwrap();
        assert_eq!(state, AppliedState::default());
        assert_eq!((state.revision, state.applied_index()), (1, 0));
    }

    #[test]
    fn layout_1_keys_become_one_record_and_a_second_run_changes_nothing() {
        let tree = tree();
        let applied = Some(LogId::new(raftkv_core::types::leader_id(3, 1), 42));
        tree.insert(meta::APPLIED, codec::encode(&applied).unwrap())
            .unwrap();
        tree.insert(meta::REVISION, codec::encode(&17i64).unwrap())
            .unwrap();
        tree.insert(meta::COMPACT, codec::encode(&5i64).unwrap()).unwrap();
        migrate_from_layout_1(&tree).unwrap();
        let state = AppliedState::read(&tree).unwrap();
        assert_eq!(state.applied, applied);
        assert_eq!((state.revision, state.compact_revision), (17, 5));
        assert!(tree.get(meta::APPLIED).unwrap().is_none());
        assert!(tree.get(meta::REVISION).unwrap().is_none());
        migrate_from_layout_1(&tree).unwrap();
        assert_eq!(AppliedState::read(&tree).unwrap(), state);
    }
}
