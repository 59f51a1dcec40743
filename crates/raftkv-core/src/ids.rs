//! The id of a member, below every other module: commands, errors and openraft's type
//! configuration all name members.

/// A member id. `u64`, as etcd's member ids are.
pub type NodeId = u64;
