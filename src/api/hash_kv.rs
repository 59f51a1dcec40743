//! etcd 3.4's `HashKV`, bit for bit: a CRC-32C (Castagnoli) over the name of etcd's
//! `key` bucket, then over each hashed write's bucket key and value, in revision order
//! (which writes: `raftkv_storage::mvcc::hash_history`). A write's bucket key is its revision,
//! 8 bytes big-endian, `_`, its sub-revision, 8 bytes big-endian, and `t` after a
//! delete; its value is the protobuf `mvccpb.KeyValue` etcd stores (only the key for a
//! delete). So the same history gives the same hash on raftkv and on etcd, and members
//! of either that agree give the same hash.

use prost::Message as _;
use raftkv_core::Result;
use raftkv_core::kv::Revision;
use raftkv_proto::mvccpb;
use raftkv_storage::{HashScope, HashedWrite, KvReader};

/// etcd's backend bucket of keys, whose name starts the hash.
const KEY_BUCKET: &[u8] = b"key";

/// The hash of `reader`'s history up to `revision` (0: the current one) and the scope
/// it covers.
pub(crate) fn hash_kv(reader: &KvReader, revision: Revision) -> Result<(u32, HashScope)> {
    let mut crc = crc32c::crc32c(KEY_BUCKET);
    let scope = reader.hash_history(revision, |write| {
        let (key, value) = bucket_record(write);
        crc = crc32c::crc32c_append(crc, &key);
        crc = crc32c::crc32c_append(crc, &value);
    })?;
    Ok((crc, scope))
}

/// etcd's `Hash`, "the whole backend keyspace", on raftkv's terms: the `HashKV` of the
/// whole retained history, then every lease (id, granted TTL) and every member (id,
/// name, peer and client URLs, learner or not), all replicated through the log. Equal
/// on members at rest that applied the same entries; like etcd's, not meant for a
/// cluster taking writes, and not comparable with etcd's (its input is its file).
pub(crate) fn hash_all(reader: &KvReader, members: &[raftkv_net::MemberInfo]) -> Result<u32> {
    let (kv, _) = hash_kv(reader, 0)?;
    let mut crc = crc32c::crc32c(&kv.to_be_bytes());
    let mut leases = reader.leases()?;
    leases.sort_by_key(|(id, _)| *id);
    for (id, lease) in leases {
        crc = crc32c::crc32c_append(crc, &id.to_be_bytes());
        crc = crc32c::crc32c_append(crc, &lease.ttl.to_be_bytes());
    }
    let mut members: Vec<_> = members.iter().collect();
    members.sort_by_key(|m| m.id);
    for m in members {
        crc = crc32c::crc32c_append(crc, &m.id.to_be_bytes());
        for text in std::iter::once(&m.name).chain(&m.peer_urls).chain(&m.client_urls) {
            crc = crc32c::crc32c_append(crc, &(text.len() as u64).to_be_bytes());
            crc = crc32c::crc32c_append(crc, text.as_bytes());
        }
        crc = crc32c::crc32c_append(crc, &[u8::from(m.is_learner)]);
    }
    Ok(crc)
}

/// The record etcd keeps in its `key` bucket for `write`.
fn bucket_record(write: HashedWrite) -> (Vec<u8>, Vec<u8>) {
    let mut key = Vec::with_capacity(18);
    key.extend_from_slice(&write.revision.to_be_bytes());
    key.push(b'_');
    key.extend_from_slice(&i64::from(write.sub).to_be_bytes());
    let value = match write.put {
        Some(kv) => mvccpb::KeyValue::from(kv).encode_to_vec(),
        None => {
            key.push(b't');
            mvccpb::KeyValue {
                key: write.key,
                ..Default::default()
            }
            .encode_to_vec()
        }
    };
    (key, value)
}

/// etcd answers "never compacted" as -1 (its initial compact revision).
pub(crate) fn etcd_compact_revision(compact: Revision) -> Revision {
    if compact > 0 { compact } else { -1 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftkv_core::kv::KeyValue;

    #[test]
    fn castagnoli_and_etcds_record_layout() {
        // The CRC-32C check value (RFC 3720 B.4 test vector "123456789").
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        let (key, value) = bucket_record(HashedWrite {
            revision: 2,
            sub: 1,
            key: b"k".to_vec(),
            put: Some(KeyValue {
                key: b"k".to_vec(),
                create_revision: 2,
                mod_revision: 2,
                version: 1,
                value: b"v".to_vec(),
                lease: 0,
            }),
        });
        assert_eq!(key, [0, 0, 0, 0, 0, 0, 0, 2, b'_', 0, 0, 0, 0, 0, 0, 0, 1]);
        // Fields 1..5 in order, the zero lease left out (proto3), as Go's marshal does.
        assert_eq!(value, [0x0a, 1, b'k', 0x10, 2, 0x18, 2, 0x20, 1, 0x2a, 1, b'v']);
        let (key, value) = bucket_record(HashedWrite {
            revision: 3,
            sub: 0,
            key: b"k".to_vec(),
            put: None,
        });
        assert_eq!(key.last(), Some(&b't'));
        assert_eq!(value, [0x0a, 1, b'k']);
    }
}
