//! # The node as `raftkv-net`'s gRPC services see it
//!
//! The services know the node only through traits (`KvBackend`, `LeaseBackend`,
//! `ClusterBackend`, `ForwardTarget`, `LeaderStatus`, ...), which these files implement
//! on [`crate::Node`] over the embedded API: the KV, lease, forwarding and leader-status
//! side in `backend.rs`, the Cluster and Maintenance side in `cluster_backend.rs`.
//! They translate; the behaviour is the API's.

pub(crate) mod backend;
pub(crate) mod cluster_backend;
