//! The label values of the gRPC server metrics (`grpc_metrics.rs`): every method the
//! client port serves, with the service, name and gRPC type go-grpc-prometheus labels it
//! with, and gRPC's status codes by the names it uses. A table of its own because it is
//! data, and long: one entry per served method.

/// A served method: its path, service, name and gRPC type, as go-grpc-prometheus labels
/// them.
pub(crate) struct Method {
    pub(crate) path: &'static str,
    pub(crate) service: &'static str,
    pub(crate) name: &'static str,
    pub(crate) kind: &'static str,
}

const fn method(path: &'static str, service: &'static str, name: &'static str, kind: &'static str) -> Method {
    Method {
        path,
        service,
        name,
        kind,
    }
}

/// Every method the client port serves, the hot ones first.
pub(crate) const METHODS: &[Method] = &[
    method("/etcdserverpb.KV/Put", "etcdserverpb.KV", "Put", "unary"),
    method("/etcdserverpb.KV/Range", "etcdserverpb.KV", "Range", "unary"),
    method("/etcdserverpb.KV/Txn", "etcdserverpb.KV", "Txn", "unary"),
    method(
        "/etcdserverpb.KV/DeleteRange",
        "etcdserverpb.KV",
        "DeleteRange",
        "unary",
    ),
    method("/etcdserverpb.KV/Compact", "etcdserverpb.KV", "Compact", "unary"),
    method(
        "/etcdserverpb.Watch/Watch",
        "etcdserverpb.Watch",
        "Watch",
        "bidi_stream",
    ),
    method(
        "/etcdserverpb.Lease/LeaseGrant",
        "etcdserverpb.Lease",
        "LeaseGrant",
        "unary",
    ),
    method(
        "/etcdserverpb.Lease/LeaseRevoke",
        "etcdserverpb.Lease",
        "LeaseRevoke",
        "unary",
    ),
    method(
        "/etcdserverpb.Lease/LeaseKeepAlive",
        "etcdserverpb.Lease",
        "LeaseKeepAlive",
        "bidi_stream",
    ),
    method(
        "/etcdserverpb.Lease/LeaseTimeToLive",
        "etcdserverpb.Lease",
        "LeaseTimeToLive",
        "unary",
    ),
    method(
        "/etcdserverpb.Lease/LeaseLeases",
        "etcdserverpb.Lease",
        "LeaseLeases",
        "unary",
    ),
    method(
        "/etcdserverpb.Cluster/MemberAdd",
        "etcdserverpb.Cluster",
        "MemberAdd",
        "unary",
    ),
    method(
        "/etcdserverpb.Cluster/MemberRemove",
        "etcdserverpb.Cluster",
        "MemberRemove",
        "unary",
    ),
    method(
        "/etcdserverpb.Cluster/MemberUpdate",
        "etcdserverpb.Cluster",
        "MemberUpdate",
        "unary",
    ),
    method(
        "/etcdserverpb.Cluster/MemberList",
        "etcdserverpb.Cluster",
        "MemberList",
        "unary",
    ),
    method(
        "/etcdserverpb.Cluster/MemberPromote",
        "etcdserverpb.Cluster",
        "MemberPromote",
        "unary",
    ),
    method(
        "/etcdserverpb.Maintenance/Alarm",
        "etcdserverpb.Maintenance",
        "Alarm",
        "unary",
    ),
    method(
        "/etcdserverpb.Maintenance/Status",
        "etcdserverpb.Maintenance",
        "Status",
        "unary",
    ),
    method(
        "/etcdserverpb.Maintenance/Defragment",
        "etcdserverpb.Maintenance",
        "Defragment",
        "unary",
    ),
    method(
        "/etcdserverpb.Maintenance/Hash",
        "etcdserverpb.Maintenance",
        "Hash",
        "unary",
    ),
    method(
        "/etcdserverpb.Maintenance/HashKV",
        "etcdserverpb.Maintenance",
        "HashKV",
        "unary",
    ),
    method(
        "/etcdserverpb.Maintenance/Snapshot",
        "etcdserverpb.Maintenance",
        "Snapshot",
        "server_stream",
    ),
    method(
        "/etcdserverpb.Maintenance/MoveLeader",
        "etcdserverpb.Maintenance",
        "MoveLeader",
        "unary",
    ),
    method("/v3lockpb.Lock/Lock", "v3lockpb.Lock", "Lock", "unary"),
    method("/v3lockpb.Lock/Unlock", "v3lockpb.Lock", "Unlock", "unary"),
    method(
        "/v3electionpb.Election/Campaign",
        "v3electionpb.Election",
        "Campaign",
        "unary",
    ),
    method(
        "/v3electionpb.Election/Proclaim",
        "v3electionpb.Election",
        "Proclaim",
        "unary",
    ),
    method(
        "/v3electionpb.Election/Leader",
        "v3electionpb.Election",
        "Leader",
        "unary",
    ),
    method(
        "/v3electionpb.Election/Observe",
        "v3electionpb.Election",
        "Observe",
        "server_stream",
    ),
    method(
        "/v3electionpb.Election/Resign",
        "v3electionpb.Election",
        "Resign",
        "unary",
    ),
];

/// gRPC's status codes by number, as go-grpc-prometheus names them.
pub(crate) const CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];
pub(crate) const CANCELED: usize = 1;
pub(crate) const UNKNOWN: usize = 2;
