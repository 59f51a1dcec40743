//! [`VersionRecord`]: what the tree stores for one (key, revision) of the `v` family,
//! the unit of the multi-version keyspace. A type of its own below the readers
//! ([`crate::mvcc`]) and the key index ([`crate::mvcc::key_index`]), which both decode it.

use serde::{Deserialize, Serialize};

use raftkv_core::kv::{KeyValue, Revision};

/// What the tree stores for one (key, revision).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VersionRecord {
    /// The key was written.
    Put {
        /// Revision of the key's creation.
        create_revision: Revision,
        /// Version after this put.
        version: i64,
        /// Attached lease.
        lease: i64,
        /// The value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// Position within the revision (etcd's sub revision).
        sub: u32,
    },
    /// The key was deleted.
    Delete {
        /// Position within the revision.
        sub: u32,
    },
}

impl VersionRecord {
    pub(crate) fn into_key_value(self, key: Vec<u8>, mod_revision: Revision) -> Option<KeyValue> {
        match self {
            VersionRecord::Put {
                create_revision,
                version,
                lease,
                value,
                ..
            } => Some(KeyValue {
                key,
                create_revision,
                mod_revision,
                version,
                value,
                lease,
            }),
            VersionRecord::Delete { .. } => None,
        }
    }
}
