//! etcd's Maintenance service, except Snapshot (in `snapshot`): a member's status, alarms,
//! defragmentation, the hash of the key-value state, and leadership transfer.
//!
//! Most of these are questions to, or actions on, *one member*: the one that answers,
//! which the response header's `member_id` names. [`Client::status_of`] asks a given
//! endpoint; the others start at the preferred endpoint and, when it fails, move on like
//! any call. To ask every member, use one client per endpoint
//! (`Client::connect([url])`) or [`Client::status_of`].
//!
//! Retries: Status, Alarm GET and HashKV are reads; Alarm ACTIVATE / DEACTIVATE,
//! Defragment and MoveLeader are writes (never retried after an ambiguous failure).
//!
//! Alarms are replicated through the log, as in etcd 3.4: a NOSPACE alarm refuses the
//! writes that add data with [`crate::ServerError::NoSpace`] and a CORRUPT alarm every
//! write with [`crate::ServerError::Corrupt`], on every member, until disarmed. raftkv
//! specifics: Defragment rewrites the member's database;
//! MoveLeader returns once the target leads, and a target that is not a voter reaches the
//! caller as [`crate::RequestError::BadLeaderTransferee`].

use raftkv_core::kv::ResponseHeader;
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::alarm_request::AlarmAction as WireAlarmAction;

use crate::client::{Call, Client, maintenance};
use crate::error::{ClientError, Result};
use crate::retry::Mutability;

/// One member's status (etcd's StatusResponse).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// Header of the member that answered (its `member_id` says which).
    pub header: ResponseHeader,
    /// The server's version (raftkv: the etcd API level, then raftkv's own).
    pub version: String,
    /// Bytes the member's data takes on disk.
    pub db_size: i64,
    /// Bytes of it in use (raftkv reports `db_size`).
    pub db_size_in_use: i64,
    /// The leader this member knows of, 0 for none.
    pub leader: u64,
    /// The member's Raft commit index.
    pub raft_index: u64,
    /// The member's Raft term.
    pub raft_term: u64,
    /// The last log index the member has applied.
    pub raft_applied_index: u64,
    /// Active alarms, as text.
    pub errors: Vec<String>,
    /// Whether the member is a learner.
    pub is_learner: bool,
}

/// What an [`Client::alarm`] call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmAction {
    /// List the alarms (a read).
    Get,
    /// Raise an alarm on a member (a write).
    Activate,
    /// Disarm an alarm on a member (a write).
    Deactivate,
}

/// etcd's alarm types.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AlarmType {
    /// No alarm; with [`AlarmAction::Get`], every type.
    #[default]
    None,
    /// The storage quota is exhausted: writes that add data are refused.
    NoSpace,
    /// The member's data was found corrupt.
    Corrupt,
}

/// An alarm raised on a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alarm {
    /// The member it is raised on.
    pub member_id: u64,
    /// What it is.
    pub alarm: AlarmType,
}

/// The alarms after an [`Client::alarm`] call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlarmResponse {
    /// Header of the member that answered.
    pub header: ResponseHeader,
    /// The alarms raised (for raftkv: on the answering member), after the action.
    pub alarms: Vec<Alarm>,
}

/// A hash of a member's key-value state (etcd's HashKVResponse).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HashKv {
    /// Header of the member that answered.
    pub header: ResponseHeader,
    /// etcd's hash of the history up to the revision asked for (the writes since the
    /// compaction, and the live keys below it). Equal on members that hold the same
    /// history; raftkv computes it as etcd 3.4 does, so the two compare too.
    pub hash: u32,
    /// The member's compact revision (-1: never compacted, as etcd answers).
    pub compact_revision: i64,
}

impl AlarmAction {
    /// Whether the action changes anything (and so how its failures are retried).
    pub(crate) fn mutability(self) -> Mutability {
        match self {
            AlarmAction::Get => Mutability::Read,
            AlarmAction::Activate | AlarmAction::Deactivate => Mutability::Write,
        }
    }

    fn to_wire(self) -> WireAlarmAction {
        match self {
            AlarmAction::Get => WireAlarmAction::Get,
            AlarmAction::Activate => WireAlarmAction::Activate,
            AlarmAction::Deactivate => WireAlarmAction::Deactivate,
        }
    }
}

impl AlarmType {
    fn to_wire(self) -> pb::AlarmType {
        match self {
            AlarmType::None => pb::AlarmType::None,
            AlarmType::NoSpace => pb::AlarmType::Nospace,
            AlarmType::Corrupt => pb::AlarmType::Corrupt,
        }
    }

    /// The alarm type a server sent as `value`.
    fn from_wire(value: i32) -> Result<Self> {
        match pb::AlarmType::try_from(value) {
            Ok(pb::AlarmType::None) => Ok(AlarmType::None),
            Ok(pb::AlarmType::Nospace) => Ok(AlarmType::NoSpace),
            Ok(pb::AlarmType::Corrupt) => Ok(AlarmType::Corrupt),
            Err(_) => Err(ClientError::InvalidResponse(format!(
                "unknown alarm type {value}"
            ))),
        }
    }
}

fn header(h: Option<pb::ResponseHeader>) -> ResponseHeader {
    h.map(Into::into).unwrap_or_default()
}

impl From<pb::StatusResponse> for Status {
    fn from(s: pb::StatusResponse) -> Self {
        Self {
            header: header(s.header),
            version: s.version,
            db_size: s.db_size,
            db_size_in_use: s.db_size_in_use,
            leader: s.leader,
            raft_index: s.raft_index,
            raft_term: s.raft_term,
            raft_applied_index: s.raft_applied_index,
            errors: s.errors,
            is_learner: s.is_learner,
        }
    }
}

impl TryFrom<pb::AlarmResponse> for AlarmResponse {
    type Error = ClientError;

    fn try_from(r: pb::AlarmResponse) -> Result<Self> {
        let alarms = r
            .alarms
            .into_iter()
            .map(|a| {
                Ok(Alarm {
                    member_id: a.member_id,
                    alarm: AlarmType::from_wire(a.alarm)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            header: header(r.header),
            alarms,
        })
    }
}

impl Client {
    /// The status of the member that answers: the preferred endpoint's, or, when that
    /// one fails, the next endpoint's that answers (`header.member_id` names it).
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn status(&self) -> Result<Status> {
        let resp = self
            .call(Mutability::Read, pb::StatusRequest {}, |ch, r| async move {
                maintenance(ch).status(r).await
            })
            .await?;
        Ok(resp.into())
    }

    /// The status of the member at `endpoint` (`http://host:port`; it need not be one of
    /// the client's endpoints). Retried at that endpoint only, until the deadline.
    #[tracing::instrument(level = "debug", skip_all, fields(endpoint = endpoint))]
    pub async fn status_of(&self, endpoint: &str) -> Result<Status> {
        let call = Call::new(Mutability::Read).pinned_to(self.pinned(endpoint)?);
        let resp = self
            .call(call, pb::StatusRequest {}, |ch, r| async move {
                maintenance(ch).status(r).await
            })
            .await?;
        Ok(resp.into())
    }

    /// etcd's Alarm: list the alarms ([`AlarmAction::Get`]; `member_id` and `alarm` are
    /// then ignored), or raise or disarm `alarm` on member `member_id` (0: the answering
    /// member). raftkv keeps alarms per member, so send an action to the member it is
    /// about (a client of that member's URL). Answers with the alarms after the action.
    #[tracing::instrument(level = "debug", skip_all, fields(action = ?action, member_id = member_id, alarm = ?alarm))]
    pub async fn alarm(
        &self,
        action: AlarmAction,
        member_id: u64,
        alarm: AlarmType,
    ) -> Result<AlarmResponse> {
        let req = pb::AlarmRequest {
            action: action.to_wire().into(),
            member_id,
            alarm: alarm.to_wire().into(),
        };
        let resp = self
            .call(action.mutability(), req, |ch, r| async move {
                maintenance(ch).alarm(r).await
            })
            .await?;
        resp.try_into()
    }

    /// Defragment the answering member's storage (raftkv: nothing to do; answers at once).
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn defragment(&self) -> Result<ResponseHeader> {
        let resp = self
            .call(Mutability::Write, pb::DefragmentRequest {}, |ch, r| async move {
                maintenance(ch).defragment(r).await
            })
            .await?;
        Ok(header(resp.header))
    }

    /// A hash of the answering member's key-value state at `revision` (0: its newest).
    /// Compare members at the same revision, once each has applied it; a member that has
    /// not yet fails with [`crate::RequestError::FutureRevision`].
    #[tracing::instrument(level = "debug", skip_all, fields(revision = revision))]
    pub async fn hash_kv(&self, revision: i64) -> Result<HashKv> {
        let req = pb::HashKvRequest { revision };
        let resp = self
            .call(Mutability::Read, req, |ch, r| async move {
                maintenance(ch).hash_kv(r).await
            })
            .await?;
        Ok(HashKv {
            header: header(resp.header),
            hash: resp.hash,
            compact_revision: resp.compact_revision,
        })
    }

    /// Ask the leader to hand leadership to member `target` (etcd's `MoveLeader`): returns
    /// once `target` leads. A member that does not lead answers "not leader" with the
    /// leader's address, and the call goes there; a `target` that is not a voter is
    /// refused with [`crate::RequestError::BadLeaderTransferee`].
    #[tracing::instrument(level = "debug", skip_all, fields(target = target))]
    pub async fn move_leader(&self, target: u64) -> Result<ResponseHeader> {
        let req = pb::MoveLeaderRequest { target_id: target };
        let resp = self
            .call(Mutability::Write, req, |ch, r| async move {
                maintenance(ch).move_leader(r).await
            })
            .await?;
        Ok(header(resp.header))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alarm_actions_that_change_something_are_writes() {
        assert_eq!(AlarmAction::Get.mutability(), Mutability::Read);
        assert_eq!(AlarmAction::Activate.mutability(), Mutability::Write);
        assert_eq!(AlarmAction::Deactivate.mutability(), Mutability::Write);
        assert_eq!(AlarmAction::Deactivate.to_wire() as i32, 2);
    }

    #[test]
    fn alarm_types_round_trip_and_unknown_ones_are_invalid() {
        for t in [AlarmType::None, AlarmType::NoSpace, AlarmType::Corrupt] {
            assert_eq!(AlarmType::from_wire(t.to_wire().into()), Ok(t));
        }
        assert_eq!(AlarmType::NoSpace.to_wire() as i32, 1);
        let wire = pb::AlarmResponse {
            header: None,
            alarms: vec![pb::AlarmMember {
                member_id: 3,
                alarm: 9,
            }],
        };
        assert!(matches!(
            AlarmResponse::try_from(wire),
            Err(ClientError::InvalidResponse(_))
        ));
        let wire = pb::AlarmResponse {
            header: None,
            alarms: vec![pb::AlarmMember {
                member_id: 3,
                alarm: 1,
            }],
        };
        assert_eq!(
            AlarmResponse::try_from(wire).unwrap().alarms,
            [Alarm {
                member_id: 3,
                alarm: AlarmType::NoSpace
            }]
        );
    }

    #[test]
    fn status_maps_field_by_field() {
        let wire = pb::StatusResponse {
            header: Some(pb::ResponseHeader {
                cluster_id: 1,
                member_id: 2,
                revision: 3,
                raft_term: 4,
            }),
            version: "3.4.0".into(),
            db_size: 10,
            leader: 2,
            raft_index: 20,
            raft_term: 4,
            raft_applied_index: 19,
            errors: vec!["memberID:2 alarm:NOSPACE ".into()],
            db_size_in_use: 9,
            is_learner: true,
        };
        let status = Status::from(wire);
        assert_eq!(status.header.member_id, 2);
        assert_eq!((status.db_size, status.db_size_in_use, status.leader), (10, 9, 2));
        assert_eq!(
            (status.raft_index, status.raft_term, status.raft_applied_index),
            (20, 4, 19)
        );
        assert_eq!(status.version, "3.4.0");
        assert_eq!(status.errors.len(), 1);
        assert!(status.is_learner);
    }
}
