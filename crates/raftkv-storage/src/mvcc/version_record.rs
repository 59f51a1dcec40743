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

/// A put's record that borrows its value, encoded exactly as [`VersionRecord::Put`]: the
/// applier encodes one per put without copying the value first. Its one variant has
/// `Put`'s index and fields in `Put`'s order (the codec writes no names).
#[derive(Debug, Serialize)]
pub(crate) enum BorrowedPut<'a> {
    /// [`VersionRecord::Put`].
    Put {
        create_revision: Revision,
        version: i64,
        lease: i64,
        #[serde(with = "serde_bytes")]
        value: &'a [u8],
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
    fn a_borrowed_put_encodes_as_the_put() {
        let owned = VersionRecord::Put {
            create_revision: 3,
            version: 200,
            lease: 0x7fff_0000_0001,
            value: vec![9u8; 300],
            sub: 70_000,
        };
        let borrowed = BorrowedPut::Put {
            create_revision: 3,
            version: 200,
            lease: 0x7fff_0000_0001,
            value: &[9u8; 300],
            sub: 70_000,
        };
        let bytes = codec::encode(&borrowed).unwrap();
        assert_eq!(bytes, codec::encode(&owned).unwrap());
        assert_eq!(codec::decode::<VersionRecord>(&bytes).unwrap(), owned);
    }

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
