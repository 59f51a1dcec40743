//! # The embedded API: what an application calls on a [`crate::Node`]
//!
//! One file per etcd service family, each a block of `impl Node` methods: KV and txns
//! (`kv.rs`), leases (`lease.rs`), watches (`watch.rs`), locks (`lock.rs`), elections
//! (`election.rs`), the List-Watch cache (`informer.rs`), membership (`membership.rs`), leadership transfer (`leadership.rs`),
//! alarms (`alarms.rs`), auth (`auth.rs`, options in `auth_options.rs`) and etcd's `HashKV`
//! (`hash_kv.rs`). The gRPC services reach the same methods through `grpc/`.
//!
//! **Invariants.** Every write is validated before it is proposed and goes through the
//! log (proposed here when this member leads, else forwarded to the leader's peer port);
//! a linearizable read waits for the applied index to reach a confirmed read index; an
//! error is a typed [`crate::Error`] that says whether the request may have taken effect.
//!
//! **Left out.** Assembling and running the node (`node/`) and the background duties of a
//! member (`tasks/`).

pub(crate) mod alarms;
pub(crate) mod auth;
pub(crate) mod auth_options;
pub(crate) mod election;
pub(crate) mod hash_kv;
pub(crate) mod informer;
pub(crate) mod kv;
pub(crate) mod leadership;
pub(crate) mod lease;
pub(crate) mod lock;
pub(crate) mod membership;
pub(crate) mod watch;
