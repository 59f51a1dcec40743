//! etcd's encodings in its bbolt buckets (`mvcc/revision.go`, `mvccpb`, `leasepb`), shared
//! by the import and the export of etcd snapshots.

use raftkv_core::kv::Revision;

use crate::error::{Error, Result};

/// etcd's `mvccpb.KeyValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct EtcdKeyValue {
    #[prost(bytes = "vec", tag = "1")]
    pub(crate) key: Vec<u8>,
    #[prost(int64, tag = "2")]
    pub(crate) create_revision: i64,
    #[prost(int64, tag = "3")]
    pub(crate) mod_revision: i64,
    #[prost(int64, tag = "4")]
    pub(crate) version: i64,
    #[prost(bytes = "vec", tag = "5")]
    pub(crate) value: Vec<u8>,
    #[prost(int64, tag = "6")]
    pub(crate) lease: i64,
}

/// etcd's `leasepb.Lease`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct EtcdLease {
    #[prost(int64, tag = "1")]
    pub(crate) id: i64,
    #[prost(int64, tag = "2")]
    pub(crate) ttl: i64,
    #[prost(int64, tag = "3")]
    pub(crate) remaining_ttl: i64,
}

/// etcd's `etcdserverpb.AlarmMember` (the `alarm` bucket's keys).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct EtcdAlarmMember {
    #[prost(uint64, tag = "1")]
    pub(crate) member_id: u64,
    #[prost(int32, tag = "2")]
    pub(crate) alarm: i32,
}

/// etcd's revision key: main u64 BE, `_`, sub u64 BE, and `t` for a deletion.
pub(crate) fn revision_key(main: Revision, sub: u32, deletion: bool) -> Vec<u8> {
    let mut key = Vec::with_capacity(18);
    key.extend((main as u64).to_be_bytes());
    key.push(b'_');
    key.extend(u64::from(sub).to_be_bytes());
    if deletion {
        key.push(b't');
    }
    key
}

pub(crate) fn corrupt(detail: impl Into<String>) -> Error {
    Error::Corrupt {
        what: "etcd snapshot",
        detail: detail.into(),
    }
}

/// A revision key of etcd's `key` bucket: (main, sub, is a deletion).
pub(crate) fn etcd_revision(key: &[u8]) -> Result<(Revision, u32, bool)> {
    let deletion = match key.len() {
        17 => false,
        18 if key[17] == b't' => true,
        _ => return Err(corrupt(format!("revision key of {} bytes", key.len()))),
    };
    if key[8] != b'_' {
        return Err(corrupt("revision key without its separator"));
    }
    let main = u64::from_be_bytes(key[..8].try_into().map_err(|_| corrupt("revision key"))?);
    let sub = u64::from_be_bytes(key[9..17].try_into().map_err(|_| corrupt("revision key"))?);
    let main = Revision::try_from(main).map_err(|_| corrupt(format!("revision {main}")))?;
    let sub = u32::try_from(sub).map_err(|_| corrupt(format!("sub revision {sub}")))?;
    Ok((main, sub, deletion))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn revision_key(main: u64, sub: u64, deletion: bool) -> Vec<u8> {
        let mut key = main.to_be_bytes().to_vec();
        key.push(b'_');
        key.extend(sub.to_be_bytes());
        if deletion {
            key.push(b't');
        }
        key
    }

    #[test]
    fn etcd_revision_keys_are_read_and_bad_ones_refused() {
        assert_eq!(
            etcd_revision(&revision_key(42, 3, false)).unwrap(),
            (42, 3, false)
        );
        assert_eq!(etcd_revision(&revision_key(7, 0, true)).unwrap(), (7, 0, true));
        let mut no_separator = revision_key(1, 0, false);
        no_separator[8] = b'-';
        for bad in [
            &revision_key(1, 0, false)[..16],
            &no_separator[..],
            &[revision_key(1, 0, false), b"x".to_vec()].concat()[..],
            &revision_key(u64::MAX, 0, false)[..],
            &revision_key(1, u64::from(u32::MAX) + 1, false)[..],
        ] {
            assert!(etcd_revision(bad).is_err(), "{bad:?}");
        }
    }
}

/// etcd's `authpb.UserAddOptions`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct EtcdUserAddOptions {
    #[prost(bool, tag = "1")]
    pub(crate) no_password: bool,
}

/// etcd's `authpb.User` (the `authUsers` bucket's values).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct EtcdUser {
    #[prost(bytes = "vec", tag = "1")]
    pub(crate) name: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub(crate) password: Vec<u8>,
    #[prost(string, repeated, tag = "3")]
    pub(crate) roles: Vec<String>,
    #[prost(message, optional, tag = "4")]
    pub(crate) options: Option<EtcdUserAddOptions>,
}

/// etcd's `authpb.Permission`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct EtcdPermission {
    #[prost(int32, tag = "1")]
    pub(crate) perm_type: i32,
    #[prost(bytes = "vec", tag = "2")]
    pub(crate) key: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub(crate) range_end: Vec<u8>,
}

/// etcd's `authpb.Role` (the `authRoles` bucket's values).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct EtcdRole {
    #[prost(bytes = "vec", tag = "1")]
    pub(crate) name: Vec<u8>,
    #[prost(message, repeated, tag = "2")]
    pub(crate) key_permission: Vec<EtcdPermission>,
}
