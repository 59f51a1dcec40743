//! # raftkv-core: the vocabulary every other raftkv crate speaks
//!
//! This crate owns the types that cross crate boundaries and the two small concurrency
//! primitives the write and read paths are built on:
//!
//! - [`TypeConfig`]: openraft's type configuration. Node ids are `u64` as in etcd; the
//!   node type [`MemberNode`] carries both the peer address and the client URLs, so a
//!   follower always knows where to forward and a node that joins later is reachable.
//! - [`Command`] / [`Response`]: what a Raft entry carries and what applying it answers.
//!   They follow etcd v3's data model from the start (put, delete-range, txn with
//!   compares, revisions, prev kv, leases) so the etcd-compatible server is a thin
//!   mapping, not a second model. `Command::Batch` is how group commit packs many client
//!   requests into one Raft entry while each request keeps its own revision and answer.
//! - [`Watermark`]: a monotonically advancing `AtomicU64` (compare-and-swap, never a
//!   lock) with `wait_for(index)`. The commit index and the applied index are both
//!   watermarks; readers wait on them without touching the Raft actor.
//! - [`Proposer`]: group commit above openraft. openraft 0.9 appends (and syncs) one
//!   entry per `client_write`; the proposer packs the requests that arrive while earlier
//!   proposals are in flight into one entry, bounded in count and bytes.
//! - [`lease`]: etcd's lease vocabulary ([`LeaseInfo`]) and the lease calls a follower
//!   forwards to the leader ([`LeaseCall`]), which alone holds lease deadlines.
//! - [`validate`]: checks a request before it is proposed, so a bad request is refused
//!   with a typed error and never reaches the log.
//! - [`alarm`]: etcd's alarms (NOSPACE, CORRUPT), replicated through the log.
//! - [`auth`]: etcd's users, roles and permissions, replicated through the log, and its
//!   simple tokens.
//! - [`informer`]: List-Watch, a local cache of a prefix kept current by a watch, over
//!   any source (the embedded node, the gRPC client).
//! - [`watch`]: etcd's Watch vocabulary (requests, events, responses) and
//!   [`WatchSession`], the interface between the servers of watch streams and the storage
//!   that feeds them.
//!
//! ## Caveats
//! - The lease commands carry granted and remaining TTLs, never deadlines: time is the
//!   leader's business (see the root crate's `lease.rs`).

#![warn(missing_docs)]

pub mod alarm;
pub mod auth;
pub mod codec;
pub mod command;
pub mod error;
pub mod histogram;
mod ids;
pub mod informer;
pub mod kv;
pub mod lease;
pub mod membership;
pub mod proposer;
pub(crate) mod proposer_gather;
pub mod types;
pub mod validate;
pub mod watch;
pub mod watermark;

pub use alarm::{AlarmAction, AlarmMember, AlarmRequest};
pub use command::{Command, Response};
pub use error::{Error, RequestError, Result};
pub use histogram::{Histogram, HistogramSnapshot};
pub use kv::*;
pub use lease::{LeaseAnswer, LeaseCall, LeaseInfo};
pub use membership::MembershipChange;
pub use proposer::{ProposalMode, Proposer, ProposerConfig, ProposerStats};
pub use types::{MemberNode, NodeId, TypeConfig};
pub use watch::{Event, EventType, INVALID_WATCH_ID, WatchId, WatchRequest, WatchResponse, WatchSession};
pub use watermark::{IndexCell, Watermark};
