//! The node as etcd's Cluster and Maintenance services see it ([`ClusterBackend`]):
//! members (list, add, remove, update, promote), status, alarms, defragmentation, moving
//! the leader, hashes and the snapshot download.

use openraft::async_runtime::WatchReceiver;
use std::collections::BTreeSet;
use std::time::Duration;

use raftkv_core::kv::*;
use raftkv_core::{AlarmAction, AlarmMember, AlarmRequest, Error, MembershipChange, RequestError, Result};
use raftkv_net::{AlarmInfo, ClusterBackend, MemberInfo, SnapshotStream, StatusInfo};

use crate::node::Node;

fn member_info(m: crate::Member) -> MemberInfo {
    MemberInfo {
        id: m.id,
        name: m.name,
        peer_urls: vec![m.peer_url],
        client_urls: m.client_urls,
        is_learner: m.is_learner,
    }
}

impl Node {
    fn member_infos(&self) -> Result<Vec<MemberInfo>> {
        Ok(self.members()?.into_iter().map(member_info).collect())
    }

    /// A fresh member id: derived from the peer URL and the clock, as etcd does, never 0
    /// and never one in use.
    fn new_member_id(&self, peer_url: &str) -> Result<u64> {
        let taken: BTreeSet<u64> = self.members()?.iter().map(|m| m.id).collect();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ nanos;
        for b in peer_url.bytes() {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        while hash == 0 || taken.contains(&hash) {
            hash = hash.wrapping_mul(0x0100_0000_01b3).wrapping_add(1);
        }
        Ok(hash)
    }
}

impl ClusterBackend for Node {
    fn member_list(&self) -> Result<(ResponseHeader, Vec<MemberInfo>)> {
        Ok((self.response_header(), self.member_infos()?))
    }

    async fn member_add(
        &self,
        peer_urls: Vec<String>,
        is_learner: bool,
    ) -> Result<(ResponseHeader, MemberInfo, Vec<MemberInfo>)> {
        let [peer_url] = peer_urls.as_slice() else {
            return Err(RequestError::InvalidPeerUrl(format!(
                "exactly one peer URL expected, got {peer_urls:?}"
            ))
            .into());
        };
        let id = self.new_member_id(peer_url)?;
        let change = if is_learner {
            // The new node is not running yet: do not wait for it to catch up.
            MembershipChange::AddLearner {
                id,
                peer_url: peer_url.clone(),
                wait: false,
            }
        } else {
            // etcd adds a voter at once; the quorum grows with it.
            MembershipChange::AddVoter {
                id,
                peer_url: peer_url.clone(),
            }
        };
        self.change_members(change).await?;
        let added = MemberInfo {
            id,
            name: String::new(),
            peer_urls: peer_urls.clone(),
            client_urls: Vec::new(),
            is_learner,
        };
        Ok((self.response_header(), added, self.member_infos()?))
    }

    async fn member_remove(&self, id: u64) -> Result<(ResponseHeader, Vec<MemberInfo>)> {
        self.remove(BTreeSet::from([id])).await?;
        Ok((self.response_header(), self.member_infos()?))
    }

    async fn member_update(
        &self,
        id: u64,
        peer_urls: Vec<String>,
    ) -> Result<(ResponseHeader, Vec<MemberInfo>)> {
        let [peer_url] = peer_urls.as_slice() else {
            return Err(RequestError::InvalidPeerUrl(format!(
                "exactly one peer URL expected, got {peer_urls:?}"
            ))
            .into());
        };
        self.update_peer_url(id, peer_url).await?;
        Ok((self.response_header(), self.member_infos()?))
    }

    async fn member_promote(&self, id: u64) -> Result<(ResponseHeader, Vec<MemberInfo>)> {
        self.promote(BTreeSet::from([id])).await?;
        Ok((self.response_header(), self.member_infos()?))
    }

    fn status(&self) -> StatusInfo {
        let m = self.metrics();
        StatusInfo {
            header: self.response_header(),
            leader: m.leader.unwrap_or(0),
            raft_index: m.committed,
            raft_term: m.term,
            raft_applied_index: m.applied,
            db_size: self.disk_usage() as i64,
            is_learner: m.learners.contains(&self.id()),
            // etcd lists every active alarm, as this member applied them.
            errors: self
                .alarms()
                .unwrap_or_default()
                .iter()
                .map(AlarmMember::status_text)
                .collect(),
        }
    }

    async fn alarm(
        &self,
        action: i32,
        member_id: u64,
        alarm: i32,
    ) -> Result<(ResponseHeader, Vec<AlarmInfo>)> {
        let Some(action) = AlarmAction::from_wire(action) else {
            return Err(RequestError::Unsupported(format!("alarm action {action}")).into());
        };
        let alarms = Node::alarm(
            self,
            AlarmRequest {
                action,
                member_id,
                alarm,
            },
        )
        .await?;
        let alarms = alarms
            .into_iter()
            .map(|a| AlarmInfo {
                member_id: a.member_id,
                alarm: a.alarm,
            })
            .collect();
        Ok((self.response_header(), alarms))
    }

    fn active_alarms(&self) -> Result<Vec<i32>> {
        Ok(self.alarms()?.into_iter().map(|a| a.alarm).collect())
    }

    async fn defragment(&self) -> Result<ResponseHeader> {
        Node::defragment(self).await?;
        Ok(self.response_header())
    }

    async fn move_leader(&self, target: u64) -> Result<ResponseHeader> {
        Node::transfer_leader(self, target).await?;
        Ok(self.response_header())
    }

    async fn hash(&self) -> Result<(ResponseHeader, u32)> {
        let reader = self.inner.reader.clone();
        let members = self.member_infos()?;
        let hash =
            crate::blocking::off_workers("hash", move || crate::api::hash_kv::hash_all(&reader, &members))
                .await?;
        Ok((self.response_header(), hash))
    }

    async fn hash_kv(&self, revision: i64) -> Result<(ResponseHeader, u32, i64)> {
        // A walk of the whole keyspace: off the async workers.
        let reader = self.inner.reader.clone();
        let (hash, scope) =
            crate::blocking::off_workers("hash", move || crate::api::hash_kv::hash_kv(&reader, revision))
                .await?;
        let header = ResponseHeader {
            revision: scope.current,
            ..self.response_header()
        };
        Ok((
            header,
            hash,
            crate::api::hash_kv::etcd_compact_revision(scope.compact),
        ))
    }

    async fn snapshot(&self) -> Result<SnapshotStream> {
        let header = self.response_header();
        let applied = self.applied().get();
        let raft = &self.inner.raft;
        raft.trigger()
            .snapshot()
            .await
            .map_err(|e| Error::Shutdown(e.to_string()))?;
        let mut metrics = raft.metrics();
        let built = async {
            loop {
                if metrics
                    .borrow_watched()
                    .snapshot
                    .is_some_and(|s| s.index >= applied)
                {
                    return Ok::<(), Error>(());
                }
                metrics
                    .changed()
                    .await
                    .map_err(|_| Error::Shutdown("raft stopped".into()))?;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), built)
            .await
            .map_err(|_| Error::Timeout("building the snapshot took too long".into()))??;
        let snapshot = raft
            .get_snapshot()
            .await
            .map_err(|e| Error::Storage(e.to_string()))?
            .ok_or_else(|| Error::Internal("no snapshot after building one".into()))?;
        // Streamed in etcd's format (a bbolt file), so etcd's tools read it.
        let ours = snapshot.snapshot.into_std().await;
        let shared = self.inner.shared.clone();
        let (file, report) = crate::blocking::off_workers("snapshot export", move || {
            shared
                .export_etcd_snapshot(ours)
                .map_err(|e| Error::Storage(e.to_string()))
        })
        .await?;
        let size = file.metadata().map_err(|e| Error::Storage(e.to_string()))?.len();
        tracing::info!(
            revision = report.revision,
            versions = report.versions,
            size,
            "snapshot exported in etcd's format"
        );
        Ok(SnapshotStream {
            header,
            file: tokio::fs::File::from_std(file),
            size,
        })
    }
}
