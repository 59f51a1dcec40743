//! Exporting one of our snapshots as an etcd 3.4 snapshot (a bbolt file with etcd's
//! buckets), so that `etcdctl snapshot status` reads it and `etcdctl snapshot restore`
//! seeds an etcd cluster that serves the same data: the migration path back to etcd.
//!
//! Written, from the snapshot's records:
//! - `key`: every version (inline in its history event since layout 5, a `v` record
//!   before) and every delete (a history event since layout 4, a tombstone version
//!   before) as etcd stores it: key = revision (main u64 BE, `_`, sub
//!   u64 BE, plus `t` for a deletion), value = `mvccpb.KeyValue` (for a deletion, the key
//!   alone), sorted by revision.
//! - `meta`: `consistent_index` (the snapshot's log index) and, after a compaction,
//!   `scheduledCompactRev` (the compact revision) without `finishedCompactRev`: etcd then
//!   runs the compaction when it opens the file, dropping any version our compactor had
//!   not deleted yet, exactly as a compaction interrupted on etcd would resume.
//! - `lease`: key = id (u64 BE), value = `leasepb.Lease` (id, TTL, remaining TTL).
//! - `alarm`: key = `etcdserverpb.AlarmMember`, value empty.
//! - `auth`, `authUsers`, `authRoles`: the auth store (`auth.rs`): users with their
//!   bcrypt hashes (Go's format), roles, whether auth is enabled, the auth revision.
//! - `members`: the snapshot's membership, with the names and client URLs the members
//!   published (`members.rs`); `cluster`: `clusterVersion`; `members_removed`: empty
//!   (raftkv keeps no record of removed ids). etcd's restore replaces the members.
//!
//! The versions are sorted in memory, so an export needs memory in the order of the
//! snapshot's size.

use std::fs::File;
use std::io::BufReader;

use raftkv_core::auth::AuthState;
use raftkv_core::codec;
use raftkv_core::kv::Revision;

use super::bbolt_write::BoltWriter;
use super::wire::{EtcdAlarmMember, EtcdKeyValue, EtcdLease, corrupt, revision_key};
use crate::apply::lease_table::LeaseRecord;
use crate::error::Result;
use crate::keys;
use crate::mvcc::VersionRecord;
use crate::mvcc::history_records::{EventKind, HistoryEvent, HistoryRecord};
use crate::raft::snapshot_file::{Frame, FrameReader};
use crate::state::StateShared;

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportReport {
    /// The store's revision.
    pub revision: Revision,
    /// Entries of the `key` bucket.
    pub versions: u64,
}

/// Write the snapshot `ours` (one of our snapshot files, read from its start) into
/// `out` as an etcd bbolt file; `out` is returned synced and positioned at its end.
pub fn export(ours: File, out: File) -> Result<(File, ExportReport)> {
    let mut reader = FrameReader::open(BufReader::new(ours))?;
    let Frame::Header(header) = reader.next()?.0 else {
        return Err(corrupt("our snapshot does not start with a header"));
    };
    let mut versions: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut leases: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut alarms: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut auth = AuthState::new();
    let mut published = std::collections::BTreeMap::new();
    loop {
        match reader.next()?.0 {
            Frame::Pairs(pairs) => {
                for (k, v) in pairs {
                    match k.first() {
                        Some(&keys::VERSION) => versions.push(version_entry(&k, &v)?),
                        Some(&keys::HISTORY) => {
                            // Every delete, also below the compact revision: the puts it
                            // superseded may still be here (physical compaction not done),
                            // and etcd's compaction at open needs it to drop them. One whose
                            // puts are gone is an orphan tombstone etcd's compaction drops.
                            let record = HistoryRecord::decode(k.into(), &v)?;
                            for event in record.events {
                                versions.extend(event_entry(event)?);
                            }
                        }
                        Some(&keys::LEASE) => leases.push(lease_entry(&k, &v)?),
                        Some(&keys::ALARM) => {
                            let (alarm, member_id) =
                                keys::alarm_of(&k).ok_or_else(|| corrupt("alarm record key"))?;
                            let member = EtcdAlarmMember { member_id, alarm };
                            alarms.push((prost::Message::encode_to_vec(&member), Vec::new()));
                        }
                        Some(&keys::AUTH) => auth = codec::decode(&v)?,
                        Some(&keys::MEMBER) => {
                            let id: [u8; 8] = k
                                .get(1..9)
                                .and_then(|b| b.try_into().ok())
                                .ok_or_else(|| corrupt("member record key"))?;
                            published.insert(u64::from_be_bytes(id), codec::decode(&v)?);
                        }
                        _ => {}
                    }
                }
            }
            Frame::End { .. } | Frame::EndCrc32 { .. } => break,
            Frame::Header(_) => return Err(corrupt("our snapshot has a second header")),
        }
    }
    versions.sort();
    leases.sort();
    alarms.sort();
    let mut meta = vec![(
        b"consistent_index".to_vec(),
        header
            .meta
            .last_log_id
            .map_or(0, |id| id.index)
            .to_be_bytes()
            .to_vec(),
    )];
    if header.compact_revision > 0 {
        meta.push((
            b"scheduledCompactRev".to_vec(),
            revision_key(header.compact_revision, 0, false),
        ));
    }
    let report = ExportReport {
        revision: header.revision,
        versions: versions.len() as u64,
    };
    let mut writer = BoltWriter::new(out)?;
    writer.bucket(b"key", versions)?;
    writer.bucket(b"meta", meta)?;
    writer.bucket(b"lease", leases)?;
    writer.bucket(b"alarm", alarms)?;
    let (auth_meta, users, roles) = super::auth::to_buckets(&auth);
    writer.bucket(b"auth", auth_meta)?;
    writer.bucket(b"authUsers", users)?;
    writer.bucket(b"authRoles", roles)?;
    writer.bucket(
        b"members",
        super::members::to_bucket(&header.meta.last_membership, &published)?,
    )?;
    writer.bucket(b"members_removed", Vec::new())?;
    writer.bucket(
        b"cluster",
        vec![(
            b"clusterVersion".to_vec(),
            super::members::CLUSTER_VERSION.to_vec(),
        )],
    )?;
    Ok((writer.finish()?, report))
}

/// A version record as etcd's `key` bucket holds it.
fn version_entry(tree_key: &[u8], value: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    let (prefix, revision) = keys::split_version_key(tree_key).ok_or_else(|| corrupt("version key"))?;
    let key = keys::decode_user_key(prefix).ok_or_else(|| corrupt("version key"))?;
    Ok(etcd_entry(key, revision, codec::decode(value)?))
}

/// The version `record` of `key` written at `revision`, as etcd's `key` bucket holds it.
fn etcd_entry(key: Vec<u8>, revision: Revision, record: VersionRecord) -> (Vec<u8>, Vec<u8>) {
    match record {
        VersionRecord::Put {
            create_revision,
            version,
            lease,
            value,
            sub,
        } => {
            let kv = EtcdKeyValue {
                key,
                create_revision,
                mod_revision: revision,
                version,
                value,
                lease,
            };
            (
                revision_key(revision, sub, false),
                prost::Message::encode_to_vec(&kv),
            )
        }
        VersionRecord::Delete { sub } => {
            let kv = EtcdKeyValue {
                key,
                ..Default::default()
            };
            (
                revision_key(revision, sub, true),
                prost::Message::encode_to_vec(&kv),
            )
        }
    }
}

/// What etcd's `key` bucket holds for a history event that is the write itself: a delete
/// (layout 4 on, the tombstone) or a put whose version is inline (layout 5); `None` for
/// any other event (its write is a version record).
fn event_entry(event: HistoryEvent) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
    Ok(match (event.kind, event.record) {
        (_, Some(bytes)) => Some(etcd_entry(event.key, event.revision, codec::decode(&bytes)?)),
        (EventKind::Delete, None) => {
            let kv = EtcdKeyValue {
                key: event.key,
                ..Default::default()
            };
            Some((
                revision_key(event.revision, event.sub, true),
                prost::Message::encode_to_vec(&kv),
            ))
        }
        _ => None,
    })
}

/// A lease record as etcd's `lease` bucket holds it.
fn lease_entry(tree_key: &[u8], value: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    let id = keys::lease_id_of(tree_key).ok_or_else(|| corrupt("lease key"))?;
    let record: LeaseRecord = codec::decode(value)?;
    let lease = EtcdLease {
        id,
        ttl: record.ttl,
        remaining_ttl: record.remaining,
    };
    Ok((
        (id as u64).to_be_bytes().to_vec(),
        prost::Message::encode_to_vec(&lease),
    ))
}

impl StateShared {
    /// Our snapshot `ours` written as an etcd 3.4 snapshot ([`export`]), in
    /// an unlinked temporary file of the snapshot directory, positioned at its start.
    /// Blocking.
    pub fn export_etcd_snapshot(
        &self,
        ours: std::fs::File,
    ) -> crate::error::Result<(std::fs::File, ExportReport)> {
        use std::io::{Seek, SeekFrom};
        let path = self
            .snapshot_dir
            .join(format!("export-{}.tmp", crate::raft::snapshot::unique_suffix()));
        let out = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        // Unlinked at once: nothing is left behind however the export ends.
        std::fs::remove_file(&path)?;
        let mut ours = ours;
        ours.seek(SeekFrom::Start(0))?;
        let (mut file, report) = export(ours, out)?;
        file.seek(SeekFrom::Start(0))?;
        Ok((file, report))
    }
}
