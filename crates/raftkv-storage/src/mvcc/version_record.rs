//! [`VersionRecord`]: what the tree stores for one (key, revision) of the `v` family,
//! the unit of the multi-version keyspace. A type of its own below the readers
//! ([`crate::mvcc`]) and the key index ([`crate::mvcc::key_index`]), which both decode it.

use serde::{Deserialize, Serialize};

use raftkv_core::kv::{KeyValue, Revision};

use crate::error::{Error, Result};

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

    /// Whether the encoded record `bytes` is a put, read from its first byte alone (the
    /// codec writes the variant index first, as a varint: 0 a put, 1 a delete), so a scan
    /// that needs only the kinds does not copy every value.
    pub(crate) fn is_put(bytes: &[u8]) -> Result<bool> {
        match bytes.first() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(Error::Corrupt {
                what: "version record",
                detail: format!("variant byte {:?}", bytes.first()),
            }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use raftkv_core::codec;

    #[test]
    fn is_put_reads_the_kind_the_codec_wrote() {
        let put = VersionRecord::Put {
            create_revision: 1,
            version: 1,
            lease: 7,
            value: vec![1; 300],
            sub: 9,
        };
        assert!(VersionRecord::is_put(&codec::encode(&put).unwrap()).unwrap());
        let delete = VersionRecord::Delete { sub: 300 };
        assert!(!VersionRecord::is_put(&codec::encode(&delete).unwrap()).unwrap());
        assert!(VersionRecord::is_put(&[]).is_err());
        assert!(VersionRecord::is_put(&[2]).is_err());
    }
}
