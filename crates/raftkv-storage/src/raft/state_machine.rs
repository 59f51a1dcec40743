//! [`StateMachine`]: openraft's `RaftStateMachine` over the MVCC keyspace.
//!
//! `apply` turns a run of committed entries into ONE batch of tree writes, written in
//! order: undo records of the lease records it changes, its records, then the one record
//! naming the last-applied log id, membership, revision and compact revision
//! (`apply/applied_state.rs`), then the removal of the undo records. Only after the batch is
//! written are the revision and the applied watermark advanced; readers read at the
//! published revision and so never see a half-written batch. The state machine is not
//! synced on apply (the log is the source of truth and openraft replays it after a
//! crash, from the applied state that survived; `apply/rollback.rs` first removes what a crash
//! left of the next batch), except before the log is purged (see `LogStore::purge`),
//! around snapshots and before physical compaction passes the synced revision.
//! Publishing a new compact revision wakes the compactor ([`crate::maintenance::compactor`]), which
//! deletes the old versions in the background; apply itself only records the revision.
//! Once a batch is in the tree and its revision stored, its watch events go to the watch
//! hub ([`crate::watch::hub`]) in revision order, before the applied watermark advances.
//! Lease commands are applied like any other (`apply/lease_table.rs`); a batch that changed the
//! lease table bumps [`LeaseChanges`] once it is visible, and so does a snapshot install.
//! A batch that raised or disarmed an alarm publishes the new alarm mask the same way.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::StreamExt;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use raftkv_core::codec;
use raftkv_core::kv::{CompactionResponse, ResponseHeader};
use raftkv_core::types::{
    Entry, LogId, MemberNode, NodeId, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig,
};
use raftkv_core::{Command, RequestError, Response};

use crate::apply::alarm_table;
use crate::apply::applied_state::AppliedState;
use crate::apply::applier::Applier;
use crate::apply::lease_table::LeaseChanges;
use crate::apply::tree_writes::{TreeBatch, WriteGate};
use crate::error::{Result, sm_write, snapshot_read, snapshot_write};
use crate::keys::{self, meta};
use crate::raft::snapshot;
use crate::state::StateShared;
use crate::watch::events::EventCollector;

/// The state machine. openraft owns it; readers go through [`crate::KvReader`].
pub struct StateMachine {
    shared: Arc<StateShared>,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    lease_changes: Arc<LeaseChanges>,
}

impl StateMachine {
    /// The state machine at `state`, the applied state `Store::open` read (and rolled the
    /// tree back to).
    pub(crate) fn load(
        shared: Arc<StateShared>,
        lease_changes: Arc<LeaseChanges>,
        state: AppliedState,
    ) -> Self {
        Self {
            shared,
            last_applied: state.applied,
            last_membership: state.membership,
            lease_changes,
        }
    }

    /// A fresh file to receive a snapshot from the leader into, to hand to
    /// `install_snapshot` once complete (openraft 0.10 leaves receiving to the network).
    pub async fn begin_receiving_snapshot(&self) -> std::io::Result<SnapshotData> {
        let shared = self.shared.clone();
        let file = tokio::task::spawn_blocking(move || shared.receiving_snapshot_file())
            .await
            .map_err(|e| snapshot_write(std::io::Error::other(e.to_string())))??;
        Ok(tokio::fs::File::from_std(file))
    }

    /// Apply committed entries as one batch and return their answers, in order (what
    /// openraft's `apply` does, without its responders: tests and tools call it directly).
    pub async fn apply_committed(
        &mut self,
        entries: impl IntoIterator<Item = Entry>,
    ) -> Result<Vec<Response>> {
        // Uncontended but for a compaction chunk's commit or a generation switch.
        let writers = self.shared.writers.clone();
        let mut gate = writers.lock().await;
        self.apply_entries(entries, &mut gate)
    }

    /// [`Self::apply_committed`] on Tokio's blocking pool, for a run holding an entry that
    /// may touch many keys (a range delete, a lease revoke): applying it can take seconds,
    /// and on the async workers it would hold up heartbeats and elections with it (with
    /// one worker, the whole member). Small entries stay inline: the hand-off costs two
    /// thread wake-ups, which a put cannot afford.
    async fn apply_off_workers(&mut self, entries: Vec<Entry>) -> Result<Vec<Response>> {
        let gate = self.shared.writers.clone().lock_owned().await;
        let mut detached = StateMachine {
            shared: self.shared.clone(),
            last_applied: self.last_applied,
            last_membership: self.last_membership.clone(),
            lease_changes: self.lease_changes.clone(),
        };
        let (detached, applied) = tokio::task::spawn_blocking(move || {
            let mut gate = gate;
            let applied = crate::failpoints::check("sm-apply-long")
                .map_err(Into::into)
                .and_then(|()| detached.apply_entries(entries, &mut gate));
            (detached, applied)
        })
        .await
        .map_err(|e| std::io::Error::other(format!("the apply task failed: {e}")))?;
        self.last_applied = detached.last_applied;
        self.last_membership = detached.last_membership;
        applied
    }

    fn apply_entries(
        &mut self,
        entries: impl IntoIterator<Item = Entry>,
        gate: &mut WriteGate,
    ) -> Result<Vec<Response>> {
        crate::failpoints::check("sm-apply")?;
        let tree = self.shared.tree();
        let compacted_before = self.shared.compact_revision();
        let revision_before = self.shared.revision();
        let mut applier = Applier::new(&tree, &self.shared.key_index, revision_before, compacted_before);
        applier.watch = EventCollector::new(self.shared.watch_hub.interest());
        applier.alarm_mask = self.shared.alarm_mask();
        applier.auth.published = self.shared.auth_state();
        let mut responses = Vec::new();
        let mut new_cluster_id = None;
        for entry in entries {
            let log_id = entry.log_id;
            self.last_applied = Some(log_id);
            let response = match entry.payload {
                EntryPayload::Blank => Response::Empty,
                EntryPayload::Membership(m) => {
                    if self.shared.cluster_id() == 0 && new_cluster_id.is_none() {
                        new_cluster_id = Some(cluster_id_of(&m));
                    }
                    self.last_membership = StoredMembership::new(Some(log_id), m);
                    Response::Empty
                }
                EntryPayload::Normal(command) => {
                    // etcd's "apply request took too long" (its warning-apply-duration).
                    let started = std::time::Instant::now();
                    let response = apply_command(&mut applier, command, log_id.leader_id.term, log_id.index)?;
                    let took = started.elapsed();
                    if took > crate::SLOW_APPLY {
                        tracing::warn!(?took, index = log_id.index, "apply request took too long");
                        self.shared.slow_applies.fetch_add(1, Ordering::Relaxed);
                    }
                    response
                }
            };
            responses.push(response);
        }
        let Some(last_applied) = self.last_applied else {
            return Ok(responses);
        };
        let revision = applier.revision;
        let compact_revision = applier.compact_revision();
        let state = AppliedState {
            applied: self.last_applied,
            membership: self.last_membership.clone(),
            revision,
            compact_revision,
        };
        let mut records = std::mem::take(&mut applier.batch);
        if let Some(id) = new_cluster_id {
            records.overwrite(meta::CLUSTER_ID, codec::encode(&id)?);
        }
        // Records overwritten in place (leases, members, metadata): keep what they were, so
        // that a crash before the applied state below can be undone (`apply/rollback.rs`).
        let mut batch = TreeBatch::default();
        let mut undo = Vec::new();
        for key in records.keys_overwritten_in_place() {
            let undo_key = keys::undo_key(last_applied.index, &key);
            let before: Option<Vec<u8>> = tree.get(&key)?.map(|v| v.to_vec());
            batch.overwrite(undo_key.clone(), codec::encode(&before)?);
            undo.push(undo_key);
        }
        batch.append(records);
        batch.overwrite(meta::STATE, state.encode()?);
        for undo_key in undo {
            batch.discard(undo_key);
        }
        let written_bytes = batch.inserted_bytes();
        batch.commit(&tree, gate)?;
        // Before the revision is published: a reader at it finds the index as new.
        self.shared.key_index.update(applier.written_keys());
        if let Some(id) = new_cluster_id {
            self.shared.cluster_id.store(id, Ordering::Release);
        }
        // Visible to readers from here on: publish.
        self.shared.revision.store(revision, Ordering::Release);
        self.shared
            .compact_revision
            .store(compact_revision, Ordering::Release);
        if compact_revision != compacted_before {
            // Published above: only now may physical deletion up to it begin.
            self.shared.compactor.wake();
        }
        if revision != revision_before {
            let events = std::mem::take(&mut applier.watch.events);
            self.shared
                .watch_hub
                .publish(revision_before + 1, revision, events, applier.watch.generation);
        }
        if applier.leases_changed() {
            self.lease_changes.bump();
        }
        if !applier.alarms.is_empty() {
            self.shared
                .alarm_mask
                .store(applier.alarm_mask, Ordering::Release);
        }
        self.shared.publish_auth(std::mem::take(&mut applier.auth));
        self.shared.applied.advance(last_applied.index);
        self.shared
            .snapshot_cadence
            .applied(last_applied.index, written_bytes);
        Ok(responses)
    }
}

/// The cluster id: a hash of the first membership (voter ids and peer URLs), the same on
/// every member because every member applies the same first membership entry (or gets it
/// in a snapshot). Never 0.
pub(crate) fn cluster_id_of(m: &openraft::Membership<NodeId, MemberNode>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut mix = |bytes: &[u8]| {
        for &b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (id, node) in m.nodes() {
        mix(&id.to_be_bytes());
        mix(node.peer_url.as_bytes());
    }
    hash.max(1)
}

/// Whether applying `entry` may touch many keys ([`Command::may_touch_many_keys`]).
fn may_touch_many_keys(entry: &Entry) -> bool {
    matches!(&entry.payload, EntryPayload::Normal(command) if command.may_touch_many_keys())
}

fn header(revision: i64, raft_term: u64) -> ResponseHeader {
    ResponseHeader {
        revision,
        raft_term,
        ..ResponseHeader::default()
    }
}

/// Apply one command; a request's own fault becomes `Response::Rejected`, and so do a
/// write an active alarm refuses (`apply/alarm_table.rs`) and a request its caller may not make
/// (`apply/auth_table.rs`). `index` is the entry's log index.
fn apply_command(applier: &mut Applier<'_>, command: Command, term: u64, index: u64) -> Result<Response> {
    // A batch's requests are checked one by one below.
    if !matches!(command, Command::Batch(_))
        && let Some(refused) = alarm_table::refusal(applier.alarm_mask, &command)
    {
        return Ok(Response::Rejected(refused));
    }
    let outcome = match command {
        Command::Put(req) => applier
            .client_request(|a, scope| a.put(scope, &req))?
            .map(|(mut r, rev)| {
                r.header = header(rev, term);
                Response::Put(r)
            }),
        Command::DeleteRange(req) => {
            applier
                .client_request(|a, scope| a.delete(scope, &req))?
                .map(|(mut r, rev)| {
                    r.header = header(rev, term);
                    Response::DeleteRange(r)
                })
        }
        Command::Txn(req) => applier
            .client_request(|a, scope| a.txn(scope, &req))?
            .map(|(mut r, rev)| {
                r.set_header(&header(rev, term));
                Response::Txn(r)
            }),
        Command::Batch(commands) => {
            let mut answers = Vec::with_capacity(commands.len());
            for command in commands {
                answers.push(apply_command(applier, command, term, index)?);
            }
            Ok(Response::Batch(answers))
        }
        Command::Compact(req) => applier.compact(req.revision).map(|_| {
            Response::Compact(CompactionResponse {
                header: header(applier.revision, term),
            })
        }),
        Command::PublishMember {
            id,
            name,
            client_urls,
        } => {
            applier
                .batch
                .insert(keys::member_key(id), codec::encode(&(name, client_urls))?);
            Ok(Response::Done {
                revision: applier.revision,
            })
        }
        Command::LeaseGrant { id, ttl } => applier.lease_grant(id, ttl)?.map(|()| Response::Done {
            revision: applier.revision,
        }),
        Command::LeaseRevoke { id } => applier
            .lease_revoke(id)?
            .map(|revision| Response::Done { revision }),
        Command::LeaseCheckpoint { remaining } => {
            applier.lease_checkpoint(&remaining)?;
            Ok(Response::Done {
                revision: applier.revision,
            })
        }
        Command::Alarm(req) => Ok(Response::Alarms(applier.alarm(&req)?)),
        Command::Auth(req) => applier.auth(&req, index)?.map(|token| match token {
            Some(token) => Response::Authenticated {
                token,
                revision: applier.revision,
            },
            None => Response::Done {
                revision: applier.revision,
            },
        }),
        Command::AsUser { caller, command } => match applier.authorize(&caller, &command)? {
            Ok(()) => return apply_command(applier, *command, term, index),
            Err(e) => Err(RequestError::Auth(e)),
        },
    };
    Ok(outcome.unwrap_or_else(Response::Rejected))
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = snapshot::SnapshotBuilder;

    async fn applied_state(&mut self) -> std::io::Result<(Option<LogId>, StoredMembership)> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn apply<Strm>(&mut self, mut entries: Strm) -> std::io::Result<()>
    where
        Strm: futures_util::Stream<Item = std::io::Result<EntryResponder<TypeConfig>>> + Unpin + OptionalSend,
    {
        // openraft hands one committed run as a stream read from the log: apply it as
        // one batch, then answer the waiting clients.
        let mut batch = Vec::new();
        let mut responders = Vec::new();
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            batch.push(entry);
            responders.push(responder);
        }
        let responses = if batch.iter().any(may_touch_many_keys) {
            self.apply_off_workers(batch).await
        } else {
            self.apply_committed(batch).await
        }
        .map_err(sm_write)?;
        for (responder, response) in responders.into_iter().zip(responses) {
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // Called between applies: what is captured here is one consistent point.
        snapshot::SnapshotBuilder::capture(
            self.shared.clone(),
            self.last_applied,
            self.last_membership.clone(),
        )
    }

    #[tracing::instrument(level = "info", skip_all, fields(last_log_id = ?meta.last_log_id))]
    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: SnapshotData) -> std::io::Result<()> {
        let file = snapshot.into_std().await;
        let shared = self.shared.clone();
        let installed_meta = meta.clone();
        // Watch readers throw away what they read while the tree switches; watchers then
        // replay the gap from the new tree's history (see `watch/hub.rs`).
        self.shared.watch_hub.begin_install();
        let gate = self.shared.writers.clone().lock_owned().await;
        let installed = tokio::task::spawn_blocking(move || {
            let _gate = gate;
            snapshot::install(&shared, &installed_meta, file)
        })
        .await
        .map_err(|e| snapshot_write(std::io::Error::other(e.to_string())));
        self.shared.watch_hub.end_install(self.shared.revision());
        self.lease_changes.bump();
        installed?.map_err(snapshot_write)?;
        self.last_applied = meta.last_log_id;
        self.last_membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> std::io::Result<Option<Snapshot>> {
        let dir = self.shared.snapshot_dir.clone();
        let current = tokio::task::spawn_blocking(move || snapshot::current(&dir))
            .await
            .map_err(|e| snapshot_read(std::io::Error::other(e.to_string())))?
            .map_err(snapshot_read)?;
        Ok(current.map(|(meta, file)| Snapshot {
            meta,
            snapshot: tokio::fs::File::from_std(file),
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for snapshot::SnapshotBuilder {
    type SnapshotData = SnapshotData;

    #[tracing::instrument(level = "info", skip_all)]
    async fn build_snapshot(&mut self) -> std::io::Result<Snapshot> {
        let builder = self.clone();
        let (meta, file) = tokio::task::spawn_blocking(move || builder.build())
            .await
            .map_err(|e| snapshot_write(std::io::Error::other(e.to_string())))?
            .map_err(snapshot_write)?;
        Ok(Snapshot {
            meta,
            snapshot: tokio::fs::File::from_std(file),
        })
    }
}
