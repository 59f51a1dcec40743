//! What a Raft entry carries ([`Command`]) and what applying it answers ([`Response`]).
//!
//! The encoding is bincode through serde, stable for a given variant order: new variants
//! go at the end, never in between, because these values live in the log on disk.

use serde::{Deserialize, Serialize};

use crate::alarm::{AlarmMember, AlarmRequest};
use crate::auth::{AuthCommand, Caller};
use crate::error::RequestError;
use crate::ids::NodeId;
use crate::kv::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RequestOp, Revision, TxnRequest, TxnResponse,
};

/// A state-machine command: the application payload of one Raft entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// etcd Put.
    Put(PutRequest),
    /// etcd DeleteRange.
    DeleteRange(DeleteRangeRequest),
    /// etcd Txn.
    Txn(TxnRequest),
    /// Group commit: many client requests in one entry. Each is applied in order and gets
    /// its own revision (if it writes) and its own entry in [`Response::Batch`].
    Batch(#[serde(deserialize_with = "crate::codec::nesting::batch")] Vec<Command>),
    /// etcd Compact.
    Compact(CompactionRequest),
    /// Grant a lease. The id is chosen before proposing, so every replica agrees.
    LeaseGrant {
        /// Lease id (non-zero).
        id: i64,
        /// Time to live, seconds.
        ttl: i64,
    },
    /// Revoke a lease, deleting its keys in one revision.
    LeaseRevoke {
        /// Lease id.
        id: i64,
    },
    /// Record the remaining TTL of leases, so a new leader neither expires them early nor
    /// resets them.
    LeaseCheckpoint {
        /// `(lease id, remaining ttl seconds)` pairs.
        remaining: Vec<(i64, i64)>,
    },
    /// A member publishes the URLs where it serves clients (as etcd publishes member
    /// attributes), so every node learns where to forward.
    PublishMember {
        /// The member.
        id: NodeId,
        /// Human-readable member name.
        name: String,
        /// Its client URLs.
        client_urls: Vec<String>,
    },
    /// etcd Alarm: list, raise or disarm an alarm (`alarm.rs`).
    Alarm(AlarmRequest),
    /// etcd's auth requests: users, roles, permissions, enable/disable, authenticate
    /// (`auth/`).
    Auth(AuthCommand),
    /// A client request made while auth was enabled, with who made it: applying it first
    /// checks the caller's permissions against the auth state applied so far (etcd's
    /// request header username and auth revision). Never nested in itself.
    AsUser {
        /// Who made the request.
        caller: Caller,
        /// The request.
        #[serde(deserialize_with = "crate::codec::nesting::batch")]
        command: Box<Command>,
    },
}

impl Command {
    /// Whether applying it may add data (etcd's quota "cost" above 0): a put, a txn with
    /// a put in either branch at any depth, a lease grant, or a batch holding one. Refused
    /// while a NOSPACE alarm is active.
    pub fn adds_data(&self) -> bool {
        match self {
            Command::Put(_) | Command::LeaseGrant { .. } => true,
            Command::Txn(t) => txn_has(t, &|op| matches!(op, RequestOp::Put(_))),
            Command::Batch(commands) => commands.iter().any(Command::adds_data),
            Command::AsUser { command, .. } => command.adds_data(),
            _ => false,
        }
    }

    /// Whether applying it may change the store or the lease table: refused while a
    /// CORRUPT alarm is active. A read-only txn does not (etcd serves those outside the
    /// log, so its CORRUPT alarm never reaches them either).
    pub fn changes_data(&self) -> bool {
        match self {
            Command::Put(_)
            | Command::DeleteRange(_)
            | Command::Compact(_)
            | Command::LeaseGrant { .. }
            | Command::LeaseRevoke { .. } => true,
            Command::Txn(t) => txn_has(t, &|op| {
                matches!(op, RequestOp::Put(_) | RequestOp::DeleteRange(_))
            }),
            Command::Batch(commands) => commands.iter().any(Command::changes_data),
            Command::AsUser { command, .. } => command.changes_data(),
            _ => false,
        }
    }
}

impl Command {
    /// Whether applying it may touch a number of keys its size does not bound: a delete
    /// over a key range, a txn that reads, deletes or compares a key range at any depth,
    /// a lease revoke (it deletes every key attached to the lease), or a batch or a
    /// user's request holding one. The state machine applies such entries off the async
    /// workers, so that deleting a million keys does not hold up heartbeats.
    pub fn may_touch_many_keys(&self) -> bool {
        match self {
            Command::DeleteRange(d) => !d.range_end.is_empty(),
            Command::LeaseRevoke { .. } => true,
            Command::Txn(t) => txn_spans_keys(t),
            Command::Batch(commands) => commands.iter().any(Command::may_touch_many_keys),
            Command::AsUser { command, .. } => command.may_touch_many_keys(),
            _ => false,
        }
    }
}

/// Whether a compare or an operation of `txn`, at any depth, covers a key range.
fn txn_spans_keys(txn: &TxnRequest) -> bool {
    txn.compare.iter().any(|c| !c.range_end.is_empty())
        || txn.success.iter().chain(&txn.failure).any(|op| match op {
            RequestOp::Range(r) => !r.range_end.is_empty(),
            RequestOp::DeleteRange(d) => !d.range_end.is_empty(),
            RequestOp::Put(_) => false,
            RequestOp::Txn(inner) => txn_spans_keys(inner),
        })
}

/// Whether an operation of either branch of `txn`, at any depth, matches `leaf`.
fn txn_has(txn: &TxnRequest, leaf: &dyn Fn(&RequestOp) -> bool) -> bool {
    txn.success.iter().chain(&txn.failure).any(|op| match op {
        RequestOp::Txn(inner) => txn_has(inner, leaf),
        other => leaf(other),
    })
}

/// A short summary for logs (openraft prints entries with it): the kind and, for a
/// batch, how many requests; never keys or values, which may be large or private.
impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Put(_) => f.write_str("put"),
            Command::DeleteRange(_) => f.write_str("delete-range"),
            Command::Txn(_) => f.write_str("txn"),
            Command::Batch(commands) => write!(f, "batch of {}", commands.len()),
            Command::Compact(c) => write!(f, "compact to {}", c.revision),
            Command::LeaseGrant { id, ttl } => write!(f, "lease-grant {id:x} ttl {ttl}"),
            Command::LeaseRevoke { id } => write!(f, "lease-revoke {id:x}"),
            Command::LeaseCheckpoint { remaining } => write!(f, "lease-checkpoint of {}", remaining.len()),
            Command::PublishMember { id, .. } => write!(f, "publish-member {id:x}"),
            Command::Alarm(a) => write!(f, "alarm {:?} {:x} type {}", a.action, a.member_id, a.alarm),
            Command::Auth(a) => f.write_str(a.name()),
            Command::AsUser { command, .. } => write!(f, "{command} as a user"),
        }
    }
}

/// The answer of the state machine to one entry (or, inside a batch, one request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Entries that carry no command (blank, membership) answer this.
    Empty,
    /// Answer to [`Command::Put`].
    Put(PutResponse),
    /// Answer to [`Command::DeleteRange`].
    DeleteRange(DeleteRangeResponse),
    /// Answer to [`Command::Txn`].
    Txn(TxnResponse),
    /// Answer to [`Command::Batch`], one per request, in order.
    Batch(#[serde(deserialize_with = "crate::codec::nesting::batch")] Vec<Response>),
    /// Answer to [`Command::Compact`].
    Compact(CompactionResponse),
    /// Answer to the lease and membership-attribute commands: the revision after apply.
    Done {
        /// Store revision after the command.
        revision: Revision,
    },
    /// The request was refused deterministically at apply time (every replica refuses it
    /// the same way); nothing was changed.
    Rejected(RequestError),
    /// Answer to [`Command::Alarm`]: the alarms listed, raised or disarmed.
    Alarms(Vec<AlarmMember>),
    /// Answer to an `Authenticate` auth command: the token assigned.
    Authenticated {
        /// The simple token.
        token: String,
        /// Store revision after the command.
        revision: Revision,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{Compare, CompareResult, CompareTarget, RangeRequest};

    fn txn(compare: Vec<Compare>, success: Vec<RequestOp>) -> Command {
        Command::Txn(TxnRequest {
            compare,
            success,
            failure: Vec::new(),
        })
    }

    #[test]
    fn only_requests_over_key_ranges_may_touch_many_keys() {
        let one_key = [
            Command::Put(PutRequest::new("k", "v")),
            Command::DeleteRange(DeleteRangeRequest::key("k")),
            txn(
                vec![Compare::key("k", CompareResult::Equal, CompareTarget::Version(1))],
                vec![
                    RequestOp::Range(RangeRequest::key("k")),
                    RequestOp::Put(PutRequest::new("k", "v")),
                ],
            ),
            Command::LeaseGrant { id: 1, ttl: 5 },
            Command::Batch(vec![Command::Put(PutRequest::new("k", "v"))]),
        ];
        for command in &one_key {
            assert!(!command.may_touch_many_keys(), "{command}");
        }
        let mut range_compare = Compare::key("k", CompareResult::Equal, CompareTarget::Version(1));
        range_compare.range_end = b"l".to_vec();
        let nested = txn(
            Vec::new(),
            vec![RequestOp::Txn(TxnRequest {
                success: vec![RequestOp::DeleteRange(DeleteRangeRequest::prefix("k"))],
                ..TxnRequest::default()
            })],
        );
        let many = [
            Command::DeleteRange(DeleteRangeRequest::prefix("k")),
            Command::LeaseRevoke { id: 1 },
            txn(vec![range_compare], Vec::new()),
            txn(Vec::new(), vec![RequestOp::Range(RangeRequest::prefix("k"))]),
            nested,
            Command::Batch(vec![
                Command::Put(PutRequest::new("k", "v")),
                Command::DeleteRange(DeleteRangeRequest::prefix("k")),
            ]),
        ];
        for command in &many {
            assert!(command.may_touch_many_keys(), "{command}");
        }
    }
}
