//! # raftkv-proto: the wire protocols, generated from `proto/`
//!
//! - [`etcdserverpb`] / [`mvccpb`]: etcd v3's client API (same packages, names and field
//!   numbers as etcd), so `etcdctl` and etcd clients talk to raftkv unchanged.
//! - [`v3lockpb`]: etcd's Lock service (same package, names and field numbers as etcd's
//!   `v3lock.proto`) and [`v3electionpb`]: its Election service (`v3election.proto`).
//! - [`raftkvpeer`]: the Raft peer protocol between raftkv nodes.
//! - [`raftkvfaults`]: the test-only fault-injection service (served only by builds
//!   with the `failpoints` feature).
//! - [`convert`]: the mapping between the etcd messages and raftkv-core's types, shared by
//!   the server side (`raftkv-net`) and the client crate, so both map alike.
//! - [`bounded_codec`] / [`txn_decode`]: the codec of every service, prost's except for
//!   transactions, decoded as deep as etcd accepts them (prost stops at about 50 levels).
//! - [`watch_wire`]: the server's `WatchResponse` with each event encoded once and
//!   shared by all the watchers that get it (byte-identical on the wire).
//!
//! Code generation runs in `build.rs` with protox (pure Rust): no system `protoc`.
//!
//! ## Caveats
//! - Only the services raftkv implements are declared (all of etcd 3.4's client API).

#![allow(missing_docs, clippy::all)]

/// etcd's auth records (`authpb`): users, roles, permissions.
pub mod authpb {
    tonic::include_proto!("authpb");
}

/// etcd's key-value data types (`mvccpb`).
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// etcd's client API (`etcdserverpb`).
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// etcd's Lock service (`v3lockpb`).
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}

/// etcd's Election service (`v3electionpb`).
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}

/// raftkv's peer protocol.
pub mod raftkvpeer {
    tonic::include_proto!("raftkvpeer");
}

/// Test-only fault injection (served only by `failpoints` builds).
pub mod raftkvfaults {
    tonic::include_proto!("raftkvfaults");
}

pub mod bounded_codec;
pub mod convert;
pub mod status;
pub mod txn_decode;
pub mod watch_wire;
