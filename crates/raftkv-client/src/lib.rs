//! # raftkv-client: a client for raftkv, and for any etcd v3 server
//!
//! The client speaks etcd v3's gRPC KV API (Range, Put, DeleteRange, Txn, Compact), Watch and
//! its Cluster, Maintenance and Auth APIs (members, status, alarms, hashes, snapshots;
//! users, roles and permissions), so the same code talks to a raftkv cluster and to a
//! real etcd. It gives the same KV API as an embedded raftkv node and answers with
//! raftkv-core's types; the administrative calls answer with this crate's plain types
//! ([`Member`], [`Status`], ...) or raftkv-core's ([`Permission`]), never protobuf.
//!
//! ```no_run
//! # async fn example() -> Result<(), raftkv_client::ClientError> {
//! use raftkv_client::Client;
//!
//! let client = Client::connect(["http://127.0.0.1:2379", "http://127.0.0.1:22379"]).await?;
//! client.put("greeting", "hello").await?;
//! let kv = client.get("greeting").await?;
//! assert_eq!(kv.map(|kv| kv.value), Some(b"hello".to_vec()));
//! # Ok(())
//! # }
//! ```
//!
//! ## Layout
//! - [`client`]: [`Client`], [`ClientOptions`], the KV calls and the retry loop they share.
//! - [`cluster`]: membership: [`Client::member_list`], `member_add`, `member_remove`,
//!   `member_update`, `member_promote`.
//! - [`maintenance`]: one member's [`Status`] ([`Client::status`],
//!   [`Client::status_of`]), alarms, defragment, [`HashKv`], `move_leader`.
//! - [`snapshot`]: [`Client::snapshot`] streams a member's state into a writer and checks
//!   the stream's framing (data, then a 32-byte SHA-256).
//! - [`lease`]: grant, revoke, time-to-live, list, and [`Client::keep_alive`], a
//!   [`LeaseKeeper`] renewing a lease every third of its TTL until dropped.
//! - [`lock`]: [`Client::lock`] / [`Client::unlock`] over etcd's Lock service; the
//!   answer's [`LockKey::fence`] is the compare that fences writes with the lock.
//! - [`election`]: campaign, proclaim, leader, observe and resign over etcd's Election
//!   service; [`LeaderKey::fence`] fences the leader's writes.
//! - [`informer`]: [`Client::informer`], a List-Watch cache of a prefix with add /
//!   update / delete handlers, re-listing when the watch is compacted away.
//! - [`watch`]: [`Client::watch`] gives a [`Watcher`] that resumes by itself after a broken
//!   connection, on another endpoint, from the next revision it has not delivered.
//! - `auth_admin`: users, roles and permissions, and auth on and off, as `etcdctl user`,
//!   `role` and `auth` do ([`Client::user_add`], [`Client::role_grant_permission`],
//!   [`Client::auth_enable`], ...); [`auth`]: authenticating with [`Credentials`].
//! - `endpoints`: the endpoint set, one long-lived lazy gRPC channel
//!   per server, and which server the client prefers (an atomic index).
//! - `retry`: the decisions of the retry loop as pure functions: what a
//!   failed attempt proves, whether to retry, how long to wait.
//! - [`error`]: the error type, [`ClientError`], and what each variant tells the caller.
//!
//! ## What a call does
//! Every call has one total deadline, [`ClientOptions::request_timeout`] (5 s by
//! default), that covers all its attempts and waits; each attempt carries the time left
//! as its gRPC deadline. A call starts at the preferred endpoint. A server that is not
//! the leader names the leader's client URL in its answer; the client goes there at once
//! (learning the URL if it was not in its list) and keeps preferring it. Any other
//! transient failure moves the client to the next endpoint after an exponential backoff
//! with full jitter.
//!
//! Reads are retried on any transient failure. **Writes are retried only when the failure
//! proves the write was not applied**: the connection could not be made, or the server
//! refused it before proposing (not leader, no leader). A write that was sent and then
//! lost — a timeout, a reset connection, an unknown status, "request timed out" — ends
//! with [`ClientError::OutcomeUnknown`]: it may have been applied, and the client will
//! not risk applying it twice. The full policy is in the `retry` module. When no endpoint
//! can serve a call before its deadline (the cluster has no quorum, no leader, or cannot
//! be reached) the call ends with [`ClientError::DeadlineExceeded`].
//!
//! Administrative calls run through the same loop with the same policy: listing members,
//! status, alarm GET and HashKV are reads; membership changes, alarm ACTIVATE /
//! DEACTIVATE, Defragment and MoveLeader are writes; a snapshot is retried only until its
//! first message arrives. [`Client::status_of`] is pinned to the endpoint it names: it
//! retries there, follows no hint, and leaves the client's preferred endpoint alone.
//!
//! ## Caveats
//! - KV, Watch, Lease, Lock, Election, Cluster and Maintenance; with
//!   [`ClientOptions::credentials`] every call and watch is made as that user
//!   (`auth.rs`). The Auth service's administration calls are not wrapped yet.
//! - A [`Watcher`] retries a broken stream forever (with backoff, endpoint after
//!   endpoint), as etcd's client does; it ends only on a verdict (canceled, compacted, a
//!   request error) or when dropped.
//! - A snapshot's SHA-256 is checked for presence and length, not recomputed (the crate
//!   takes no hashing dependency); [`Snapshot::sha256`] lets the caller verify it.
//! - Status, alarms, Defragment and HashKV are about the member that answers; except for
//!   [`Client::status_of`], which one that is follows the usual routing (the header's
//!   `member_id` says). Use a client per endpoint to address each member.
//! - Plain `http://` only: no TLS.
//! - A write whose attempt is cut short by the client's own deadline timer is reported as
//!   [`ClientError::OutcomeUnknown`] even if it was still connecting and so was never
//!   sent: the client cannot tell those apart and errs on the side of "unknown".
//! - "server stopped" is treated as ambiguous for writes (raftkv and etcd both answer it
//!   to a request whose proposal may already be in the log), so it is retried for reads
//!   only.
//! - The endpoint set only grows (from leader hints, up to 64 endpoints); removed
//!   members are not forgotten, merely skipped when they fail.
//! - Retries go to one endpoint at a time; there is no hedging and no health checking in
//!   the background.

#![deny(missing_docs)]

pub mod auth;
mod auth_admin;
pub mod client;
pub mod cluster;
pub mod election;
mod endpoints;
pub mod error;
pub mod informer;
pub mod lease;
pub mod lock;
pub mod maintenance;
mod retry;
pub mod snapshot;
pub mod tls;
pub mod watch;

pub use auth::Credentials;
pub use client::{Client, ClientOptions};
pub use cluster::{Member, MemberListResponse};
pub use election::{LeaderKey, Observer};
pub use error::{ClientError, Result};
pub use lease::{KeepAliveState, LeaseGrant, LeaseKeeper, LeaseTimeToLive};
pub use lock::LockKey;
pub use maintenance::{Alarm, AlarmAction, AlarmResponse, AlarmType, HashKv, Status};
pub use raftkv_core::auth::{Permission, PermissionType};
/// The List-Watch cache ([`Client::informer`]).
pub use raftkv_core::informer::{
    Change, Informer, InformerError, InformerHandler, InformerStats, ListWatch, SourceError, WatchEvents,
};
pub use raftkv_core::kv::{
    CompactionResponse, Compare, CompareResult, CompareTarget, DeleteRangeRequest, DeleteRangeResponse,
    KeyValue, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader, ResponseOp,
    Revision, SortOrder, SortTarget, TxnRequest, TxnResponse,
};
pub use raftkv_core::watch::{Event, EventType, WatchRequest, WatchResponse};
/// The errors a server answers with (carried by [`ClientError::Server`]).
pub use raftkv_core::{Error as ServerError, RequestError};
pub use snapshot::Snapshot;
pub use tls::TlsOptions;
pub use watch::Watcher;
