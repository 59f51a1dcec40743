//! Importing an etcd 3.4 snapshot (`etcdctl snapshot save`, a bbolt file): the
//! migration path from an etcd cluster to raftkv. [`restore`](crate::raft::restore::restore)
//! calls [`convert`] when its input is a bbolt file, and goes on with the result as with
//! one of our own snapshots, so a new raftkv cluster starts with etcd's keys, their whole
//! retained history at etcd's revisions, the compact revision, and the leases.
//!
//! What is read, from etcd's buckets (`mvcc/kvstore.go`, `lease/lessor.go`):
//! - `key`: key = revision (main u64 BE, `_`, sub u64 BE), plus `t` for a deletion;
//!   value = `mvccpb.KeyValue`. Above the compact revision each becomes a history event
//!   (`h`, with its kind, a put's version inline), as apply writes them; at or below it a
//!   put becomes a version record (`v`) and a deletion a tombstone record (the forms of
//!   layouts before 5 and 4, still read everywhere).
//! - `meta`: `scheduledCompactRev` (etcd's compact revision, a revision key). The store's
//!   revision is the newest in `key` (or the compact revision, if higher).
//! - `lease`: key = id (u64 BE), value = `leasepb.Lease` (id, TTL, remaining TTL).
//! - `alarm`: key = `etcdserverpb.AlarmMember`: the alarms stay raised, as they do
//!   through etcd's own restore.
//!
//! - `auth`, `authUsers`, `authRoles`: the auth store (`auth.rs`); Go's bcrypt hashes
//!   are ours too, so users keep their passwords.
//!
//! Left out: members (a restore makes a new cluster) and the cluster version. The version records are sorted in memory before they are
//! written (the snapshot stream is in tree order), so an import needs memory in the
//! order of the snapshot's size.

use std::collections::BTreeMap;
use std::path::Path;

use raftkv_core::codec;
use raftkv_core::kv::Revision;
use raftkv_core::types::{LogId, SnapshotMeta, StoredMembership};

use super::auth::AuthReader;
use super::bbolt::{self, BoltFile, Bucket};
use super::wire::{EtcdAlarmMember, EtcdKeyValue, EtcdLease, corrupt, etcd_revision};
use crate::apply::lease_table::LeaseRecord;
use crate::error::Result;
use crate::keys;
use crate::mvcc::VersionRecord;
use crate::mvcc::history_records::HistoryChunks;
use crate::raft::snapshot_file::{Frame, FrameWriter, MAX_FRAME_PAIR_BYTES, SnapshotHeader};

/// What an import read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// The store's revision.
    pub revision: Revision,
    /// The compact revision.
    pub compact_revision: Revision,
    /// Writes (puts and deletions) of etcd's `key` bucket imported.
    pub versions: u64,
    /// Leases imported.
    pub leases: u64,
    /// Users imported (with auth enabled or not).
    pub users: u64,
    /// Whether auth is enabled in the snapshot (and so in the restored cluster).
    pub auth_enabled: bool,
}

/// Whether the file at `path` is a bbolt file (an etcd snapshot).
pub fn is_etcd_snapshot(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut head = [0u8; 32];
    let mut file = std::fs::File::open(path)?;
    let n = file.read(&mut head)?;
    Ok(bbolt::is_bbolt(&head[..n]))
}

/// Write a raftkv snapshot file at `out` holding what the etcd snapshot at `etcd_db`
/// holds (see the module doc), as if applied up to log index 1.
pub fn convert(etcd_db: &Path, out: &Path) -> Result<ImportReport> {
    let db = BoltFile::open(etcd_db)?;
    let root = db.root();
    let bucket = |name: &str| db.bucket(&root, name.as_bytes());
    let key_bucket = bucket("key")?.ok_or_else(|| corrupt("no `key` bucket"))?;

    let compact_revision = match bucket("meta")? {
        Some(meta) => scheduled_compaction(&db, &meta)?,
        None => 0,
    };
    // Version records sorted by tree key (key, then revision); history in revision order.
    let mut versions: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut history = HistoryChunks::default();
    let mut revision = compact_revision;
    let mut imported = 0u64;
    db.for_each(&key_bucket, &mut |key, value, _| {
        imported += 1;
        let (main, sub, deletion) = etcd_revision(key)?;
        let kv = <EtcdKeyValue as prost::Message>::decode(value)
            .map_err(|e| corrupt(format!("KeyValue at revision {main}: {e}")))?;
        if kv.key.is_empty() {
            return Err(corrupt(format!("empty key at revision {main}")));
        }
        let record = if deletion {
            VersionRecord::Delete { sub }
        } else {
            VersionRecord::Put {
                create_revision: kv.create_revision,
                version: kv.version,
                lease: kv.lease,
                value: kv.value,
                sub,
            }
        };
        let encoded = codec::encode(&record)?;
        // Above the compact revision a write is its history event, a put's version inline,
        // as apply writes them. At or below it no history is left: a put is a `v` record,
        // a delete a tombstone record (the forms of older layouts, which every reader
        // accepts) until our compactor removes it.
        if main > compact_revision {
            history.push(main, sub, &kv.key, (!deletion).then_some(encoded.as_slice()));
        } else {
            versions.insert(keys::version_key(&kv.key, main), encoded);
        }
        revision = revision.max(main);
        Ok(())
    })?;

    let mut leases = Vec::new();
    if let Some(lease_bucket) = bucket("lease")? {
        db.for_each(&lease_bucket, &mut |_, value, _| {
            let lease =
                <EtcdLease as prost::Message>::decode(value).map_err(|e| corrupt(format!("Lease: {e}")))?;
            let record = LeaseRecord {
                ttl: lease.ttl,
                remaining: lease.remaining_ttl,
            };
            leases.push((keys::lease_key(lease.id).to_vec(), codec::encode(&record)?));
            Ok(())
        })?;
    }
    // Alarms stay raised across etcd's own restore; so they do here.
    let mut alarms = Vec::new();
    if let Some(alarm_bucket) = bucket("alarm")? {
        db.for_each(&alarm_bucket, &mut |key, _, _| {
            let member = <EtcdAlarmMember as prost::Message>::decode(key)
                .map_err(|e| corrupt(format!("AlarmMember: {e}")))?;
            alarms.push((
                keys::alarm_key(member.alarm, member.member_id).to_vec(),
                Vec::new(),
            ));
            Ok(())
        })?;
    }
    let mut auth = AuthReader::new();
    if let Some(meta) = bucket("auth")? {
        db.for_each(&meta, &mut |key, value, _| auth.meta(key, value))?;
    }
    if let Some(users) = bucket("authUsers")? {
        db.for_each(&users, &mut |_, value, _| auth.user(value))?;
    }
    if let Some(roles) = bucket("authRoles")? {
        db.for_each(&roles, &mut |_, value, _| auth.role(value))?;
    }
    let auth = auth.finish();

    let report = ImportReport {
        revision,
        compact_revision,
        versions: imported,
        leases: leases.len() as u64,
        users: auth.as_ref().map_or(0, |a| a.users.len() as u64),
        auth_enabled: auth.as_ref().is_some_and(|a| a.enabled),
    };
    let auth = match auth {
        Some(state) => vec![(keys::AUTH_STATE.to_vec(), codec::encode(&state)?)],
        None => Vec::new(),
    };
    let applied = LogId::new(raftkv_core::types::leader_id(1, 0), 1);
    let mut writer = FrameWriter::create(out)?;
    writer.frame(&Frame::Header(SnapshotHeader {
        meta: SnapshotMeta {
            last_log_id: Some(applied),
            last_membership: StoredMembership::default(),
        },
        revision,
        compact_revision,
    }))?;
    let mut pairs = Vec::new();
    let mut bytes = 0;
    alarms.sort();
    for pair in versions
        .into_iter()
        .chain(
            history
                .into_records()
                .into_iter()
                .map(|(k, v)| (k.to_vec(), v.to_vec())),
        )
        .chain(leases)
        .chain(alarms)
        .chain(auth)
    {
        bytes += pair.0.len() + pair.1.len();
        pairs.push(pair);
        if bytes >= MAX_FRAME_PAIR_BYTES {
            writer.pairs(std::mem::take(&mut pairs))?;
            bytes = 0;
        }
    }
    writer.pairs(pairs)?;
    writer.finish()?;
    Ok(report)
}

/// etcd's compact revision: the main revision of `scheduledCompactRev` in `meta`.
fn scheduled_compaction(db: &BoltFile, meta: &Bucket) -> Result<Revision> {
    let mut compact = 0;
    db.for_each(meta, &mut |key, value, _| {
        if key == b"scheduledCompactRev" {
            compact = etcd_revision(value)?.0;
        }
        Ok(())
    })?;
    Ok(compact)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn files_that_are_not_bbolt_are_not_taken_for_etcd_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join("ours.snap");
        std::fs::write(&ours, b"RAFTKVSN\0\0\0\x01").unwrap();
        assert!(!is_etcd_snapshot(&ours).unwrap());
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert!(!is_etcd_snapshot(&empty).unwrap());
        // The magic alone is taken for bbolt; the reader then refuses what follows.
        let mut fake = vec![0u8; 4096];
        fake[16..20].copy_from_slice(&0xED0C_DAEDu32.to_le_bytes());
        let fake_path = dir.path().join("fake.db");
        std::fs::write(&fake_path, &fake).unwrap();
        assert!(is_etcd_snapshot(&fake_path).unwrap());
        assert!(convert(&fake_path, &dir.path().join("out")).is_err());
    }
}
