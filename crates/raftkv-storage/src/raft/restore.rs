//! Seeding a new member's data directory from a snapshot file, for a new cluster: what
//! `etcdutl snapshot restore` does for etcd. Every member of the new cluster is seeded
//! from the same file with the same member list; started with the same flags, they form
//! a cluster that holds the snapshot's keys, revisions and leases.
//!
//! The result is a data directory as a member that had installed the snapshot would
//! have it, except for the cluster: the state machine holds the snapshot's data applied
//! up to the snapshot's log id `L`, with the *new* membership recorded at `L` (and a new
//! cluster id derived from it); the log is empty and purged up to `L`, so the next entry
//! is `L + 1`; the vote is this member's own in `L`'s term, so the first election is for a
//! later term than any entry (openraft requires terms never to go back). The old
//! cluster's published member records are dropped: the new members publish their own.
//! A fresh snapshot is built from the result, so the one a member serves to a lagging
//! peer carries the new membership.
//!
//! The file may also be an etcd 3.4 snapshot (`etcdctl snapshot save`): it is first
//! converted into one of ours (`etcd_snapshot`), beside the data directory, and removed
//! after.
//!
//! The directory is built as `<data_dir>.restoring` and renamed into place only once
//! complete and synced: a restore that dies halfway leaves no data directory a server
//! would start on (the next restore removes the leftover and starts over).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use openraft::storage::{RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
use raftkv_core::codec;
use raftkv_core::kv::Revision;
use raftkv_core::types::{MemberNode, NodeId, SnapshotMeta, StoredMembership, Vote};

use crate::error::{Error, Result};
use crate::keys::{self, meta};
use crate::raft::snapshot_file::{Frame, FrameReader};
use crate::{Store, StoreOptions};

/// What a restore produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    /// The log index the data is at (the new cluster's entries start after it).
    pub applied_index: u64,
    /// The store's revision, as in the snapshot.
    pub revision: Revision,
    /// The new cluster's id.
    pub cluster_id: u64,
    /// What was read from the file, when it was an etcd snapshot.
    pub etcd_import: Option<crate::etcd_snapshot::ImportReport>,
}

/// Seed `data_dir` (absent or empty) from the snapshot file at `snapshot`, for member
/// `id` of a new cluster of `members` (id -> peer URL), all voters.
pub async fn restore(
    snapshot: &Path,
    data_dir: &Path,
    id: NodeId,
    members: &BTreeMap<NodeId, String>,
) -> Result<RestoreReport> {
    if !members.contains_key(&id) {
        return Err(Error::Corrupt {
            what: "restore",
            detail: format!("member {id} is not in the new member list"),
        });
    }
    if std::fs::read_dir(data_dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!(
                "data dir {} exists and is not empty: a restore makes a new member",
                data_dir.display()
            ),
        )));
    }
    // An etcd snapshot is converted into one of ours beside the data directory first.
    let source = Source::open(snapshot, data_dir)?;
    let snapshot = source.path.as_path();
    let (old_meta, revision) = read_header(snapshot)?;
    let Some(last) = old_meta.last_log_id else {
        return Err(Error::Corrupt {
            what: "snapshot",
            detail: "it holds no applied entry".into(),
        });
    };
    let nodes: BTreeMap<NodeId, MemberNode> = members
        .iter()
        .map(|(id, url)| (*id, MemberNode::new(url.clone())))
        .collect();
    let voters: BTreeSet<NodeId> = nodes.keys().copied().collect();
    let membership = openraft::Membership::new(vec![voters], nodes).map_err(|e| Error::Corrupt {
        what: "restore",
        detail: format!("member list: {e}"),
    })?;
    let cluster_id = crate::raft::state_machine::cluster_id_of(&membership);
    let meta = SnapshotMeta {
        last_log_id: Some(last),
        last_membership: StoredMembership::new(Some(last), membership),
    };

    let staging = staging_dir(data_dir)?;
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    seed(snapshot, &staging, id, &meta, cluster_id).await?;
    // The store's background threads hold the directory until they stop: wait for that
    // (by taking the lock ourselves), then move the finished directory into place.
    drop(crate::DataDirLock::acquire(&staging, STORE_CLOSE_WAIT)?);
    std::fs::rename(&staging, data_dir)?;
    if let Some(parent) = data_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        File::open(parent)?.sync_all()?;
    }
    Ok(RestoreReport {
        applied_index: last.index,
        revision,
        cluster_id,
        etcd_import: source.etcd_import.clone(),
    })
}

/// The snapshot file a restore reads: the one given, or, for an etcd snapshot, its
/// conversion (removed when the restore ends, however it ends).
struct Source {
    path: std::path::PathBuf,
    /// Whether `path` is our conversion, to remove.
    converted: bool,
    etcd_import: Option<crate::etcd_snapshot::ImportReport>,
}

impl Source {
    fn open(snapshot: &Path, data_dir: &Path) -> Result<Self> {
        if !crate::etcd_snapshot::is_etcd_snapshot(snapshot)? {
            return Ok(Self {
                path: snapshot.to_path_buf(),
                converted: false,
                etcd_import: None,
            });
        }
        let mut name = staging_dir(data_dir)?.into_os_string();
        name.push(".etcd-import");
        let path = std::path::PathBuf::from(name);
        let mut source = Self {
            path,
            converted: true,
            etcd_import: None,
        };
        source.etcd_import = Some(crate::etcd_snapshot::import(snapshot, &source.path)?);
        Ok(source)
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        if self.converted {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// How long the restore waits for its store's background threads to stop.
const STORE_CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// `<data_dir>.restoring`, beside it.
fn staging_dir(data_dir: &Path) -> Result<std::path::PathBuf> {
    let name = data_dir.file_name().ok_or_else(|| Error::Corrupt {
        what: "restore",
        detail: format!("{} has no directory name", data_dir.display()),
    })?;
    let mut staging = name.to_os_string();
    staging.push(".restoring");
    Ok(data_dir.with_file_name(staging))
}

/// Build the member's data directory at `dir` (see the module doc).
async fn seed(snapshot: &Path, dir: &Path, id: NodeId, meta: &SnapshotMeta, cluster_id: u64) -> Result<()> {
    let Some(last) = meta.last_log_id else {
        return Err(Error::Corrupt {
            what: "snapshot",
            detail: "it holds no applied entry".into(),
        });
    };
    let mut store = Store::open(dir, StoreOptions::default())?;
    let file = tokio::fs::File::open(snapshot).await?;
    store
        .state_machine
        .install_snapshot(meta, file)
        .await
        .map_err(Error::Io)?;
    // The new cluster's identity: its id, and no published members of the old one.
    let tree = store.shared.tree();
    tree.insert(meta::CLUSTER_ID, codec::encode(&cluster_id)?)?;
    for entry in tree.scan_prefix([keys::MEMBER]) {
        let (key, _) = entry?;
        tree.remove(key)?;
    }
    tree.sync()?;
    // Served to lagging members from now on: the new membership in its header.
    let mut builder = store.state_machine.get_snapshot_builder().await;
    builder.build_snapshot().await.map_err(Error::Io)?;
    // The log: purged up to the snapshot; the vote last, as it syncs the log database.
    store.log.purge(last).await.map_err(Error::Io)?;
    store
        .log
        .save_vote(&Vote::new(last.leader_id.term, id))
        .await
        .map_err(Error::Io)?;
    Ok(())
}

/// The snapshot file's metadata and revision, checking its format on the way.
fn read_header(path: &Path) -> Result<(SnapshotMeta, Revision)> {
    let file = File::open(path)?;
    let mut reader = FrameReader::open(BufReader::new(file))?;
    match reader.next()?.0 {
        Frame::Header(header) => Ok((header.meta, header.revision)),
        _ => Err(Error::Corrupt {
            what: "snapshot",
            detail: format!("{} does not start with a header", path.display()),
        }),
    }
}
