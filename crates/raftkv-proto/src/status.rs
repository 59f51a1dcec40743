//! raftkv errors on the wire: the one place where [`raftkv_core::Error`] becomes a
//! `tonic::Status` with etcd's gRPC code and error text (etcd's `rpctypes`; clients match
//! on both), and where a status coming back is read as an error again.
//!
//! A "not leader" status carries the leader's id and client URLs in the metadata
//! (`raftkv-leader-id`, `raftkv-leader-urls`), so a client can follow the hint.

use raftkv_core::auth::AuthError;
use raftkv_core::{Error, RequestError};
use tonic::{Code, Status};

/// Metadata key with the leader's member id (decimal).
pub const LEADER_ID_KEY: &str = "raftkv-leader-id";
/// Metadata key with the leader's client URLs (comma separated).
pub const LEADER_URLS_KEY: &str = "raftkv-leader-urls";

/// etcd's texts, as its `rpctypes` package spells them.
pub mod text {
    pub const EMPTY_KEY: &str = "etcdserver: key is not provided";
    pub const KEY_NOT_FOUND: &str = "etcdserver: key not found";
    pub const INVALID_SORT_OPTION: &str = "etcdserver: invalid sort option";
    pub const VALUE_PROVIDED: &str = "etcdserver: value is provided";
    pub const LEASE_PROVIDED: &str = "etcdserver: lease is provided";
    pub const TOO_MANY_OPS: &str = "etcdserver: too many operations in txn request";
    pub const DUPLICATE_KEY: &str = "etcdserver: duplicate key given in txn request";
    pub const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
    pub const FUTURE_REV: &str = "etcdserver: mvcc: required revision is a future revision";
    pub const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";
    pub const LEASE_EXISTS: &str = "etcdserver: lease already exists";
    pub const LEASE_TTL_TOO_LARGE: &str = "etcdserver: too large lease TTL";
    pub const REQUEST_TOO_LARGE: &str = "etcdserver: request is too large";
    pub const NO_LEADER: &str = "etcdserver: no leader";
    pub const NOT_LEADER: &str = "etcdserver: not leader";
    pub const TIMEOUT: &str = "etcdserver: request timed out";
    pub const STOPPED: &str = "etcdserver: server stopped";
    pub const TOO_MANY_REQUESTS: &str = "etcdserver: too many requests";
    pub const MEMBER_NOT_FOUND: &str = "etcdserver: member not found";
    pub const MEMBER_NOT_LEARNER: &str = "etcdserver: can only promote a learner member";
    pub const LEARNER_NOT_READY: &str =
        "etcdserver: can only promote a learner member which is in sync with leader";
    pub const PEER_URL_EXISTS: &str = "etcdserver: Peer URLs already exists";
    pub const NO_SPACE: &str = "etcdserver: mvcc: database space exceeded";
    pub const CORRUPT: &str = "etcdserver: corrupt cluster";
    pub const BAD_MEMBER_URLS: &str = "etcdserver: given member URLs are invalid";
    pub const BAD_LEADER_TRANSFEREE: &str = "etcdserver: bad leader transferee";
    pub const LEADER_TRANSFER_TIMEOUT: &str = "etcdserver: request timed out, leader transfer took too long";
    /// raftkv's own (etcd serves such a range as empty instead).
    pub const INVALID_RANGE_END: &str = "raftkv: range end must be greater than the key";
}

/// The gRPC status for `e`.
pub fn to_status(e: &Error) -> Status {
    match e {
        Error::Request(r) => request_status(r),
        Error::NotLeader {
            leader_id,
            leader_client_urls,
        } => {
            let mut status = match leader_id {
                Some(_) => Status::new(Code::FailedPrecondition, text::NOT_LEADER),
                None => Status::new(Code::Unavailable, text::NO_LEADER),
            };
            if let Some(id) = leader_id
                && let Ok(v) = id.to_string().parse()
            {
                status.metadata_mut().insert(LEADER_ID_KEY, v);
            }
            if let Ok(v) = leader_client_urls.join(",").parse() {
                status.metadata_mut().insert(LEADER_URLS_KEY, v);
            }
            status
        }
        Error::Timeout(_) => Status::new(Code::Unavailable, text::TIMEOUT),
        Error::Unknown(detail) => Status::new(Code::Unknown, format!("raftkv: outcome unknown: {detail}")),
        Error::Shutdown(_) => Status::new(Code::Unavailable, text::STOPPED),
        Error::Storage(detail) => Status::new(Code::Internal, format!("raftkv: storage: {detail}")),
        Error::Internal(detail) => Status::new(Code::Internal, format!("raftkv: internal: {detail}")),
        Error::TooManyRequests { .. } => Status::new(Code::ResourceExhausted, text::TOO_MANY_REQUESTS),
        Error::NoSpace => Status::new(Code::ResourceExhausted, text::NO_SPACE),
        Error::Corrupt => Status::new(Code::DataLoss, text::CORRUPT),
        Error::LeaderTransferTimeout => Status::new(Code::Unavailable, text::LEADER_TRANSFER_TIMEOUT),
        // `Error` is non_exhaustive within the workspace too.
        #[allow(unreachable_patterns)]
        other => Status::new(Code::Internal, other.to_string()),
    }
}

fn request_status(e: &RequestError) -> Status {
    let (code, msg) = match e {
        RequestError::EmptyKey => (Code::InvalidArgument, text::EMPTY_KEY),
        RequestError::RequestTooLarge { .. } => (Code::InvalidArgument, text::REQUEST_TOO_LARGE),
        RequestError::InvalidRangeEnd => (Code::InvalidArgument, text::INVALID_RANGE_END),
        RequestError::TooManyTxnOps { .. } => (Code::InvalidArgument, text::TOO_MANY_OPS),
        RequestError::DuplicateKey => (Code::InvalidArgument, text::DUPLICATE_KEY),
        RequestError::Compacted { .. } => (Code::OutOfRange, text::COMPACTED),
        RequestError::FutureRevision { .. } => (Code::OutOfRange, text::FUTURE_REV),
        RequestError::LeaseNotFound(_) => (Code::NotFound, text::LEASE_NOT_FOUND),
        RequestError::LeaseExists(_) => (Code::FailedPrecondition, text::LEASE_EXISTS),
        RequestError::LeaseTtlTooLarge(_) => (Code::OutOfRange, text::LEASE_TTL_TOO_LARGE),
        RequestError::ValueProvided => (Code::InvalidArgument, text::VALUE_PROVIDED),
        RequestError::LeaseProvided => (Code::InvalidArgument, text::LEASE_PROVIDED),
        RequestError::KeyNotFound => (Code::InvalidArgument, text::KEY_NOT_FOUND),
        RequestError::MemberNotFound(_) => (Code::NotFound, text::MEMBER_NOT_FOUND),
        RequestError::MemberNotLearner => (Code::FailedPrecondition, text::MEMBER_NOT_LEARNER),
        RequestError::LearnerNotReady => (Code::FailedPrecondition, text::LEARNER_NOT_READY),
        RequestError::PeerUrlExists => (Code::FailedPrecondition, text::PEER_URL_EXISTS),
        RequestError::InvalidPeerUrl(_) => (Code::InvalidArgument, text::BAD_MEMBER_URLS),
        RequestError::BadLeaderTransferee(_) => (Code::FailedPrecondition, text::BAD_LEADER_TRANSFEREE),
        RequestError::NoSpace => (Code::ResourceExhausted, text::NO_SPACE),
        RequestError::Corrupt => (Code::DataLoss, text::CORRUPT),
        RequestError::Auth(e) => return auth_status(*e),
        RequestError::Unsupported(what) => {
            return Status::new(Code::Unimplemented, format!("raftkv: not supported: {what}"));
        }
        #[allow(unreachable_patterns)]
        other => return Status::new(Code::Internal, other.to_string()),
    };
    Status::new(code, msg)
}

/// etcd's code for an auth error (`rpctypes`); its text is "etcdserver: " and ours.
fn auth_code(e: AuthError) -> Code {
    match e {
        AuthError::RootUserNotExist
        | AuthError::RootRoleNotExist
        | AuthError::UserAlreadyExist
        | AuthError::UserNotFound
        | AuthError::RoleAlreadyExist
        | AuthError::RoleNotFound
        | AuthError::RoleNotGranted
        | AuthError::PermissionNotGranted
        | AuthError::AuthNotEnabled => Code::FailedPrecondition,
        AuthError::UserEmpty
        | AuthError::RoleEmpty
        | AuthError::AuthFailed
        | AuthError::InvalidAuthMgmt
        | AuthError::AuthOldRevision => Code::InvalidArgument,
        AuthError::PermissionDenied => Code::PermissionDenied,
        AuthError::InvalidAuthToken => Code::Unauthenticated,
        AuthError::NoPasswordUser => Code::Unknown,
    }
}

/// Every auth error, to read one back from its text.
const AUTH_ERRORS: [AuthError; 17] = [
    AuthError::RootUserNotExist,
    AuthError::RootRoleNotExist,
    AuthError::UserAlreadyExist,
    AuthError::UserEmpty,
    AuthError::UserNotFound,
    AuthError::RoleAlreadyExist,
    AuthError::RoleNotFound,
    AuthError::RoleEmpty,
    AuthError::AuthFailed,
    AuthError::NoPasswordUser,
    AuthError::PermissionDenied,
    AuthError::RoleNotGranted,
    AuthError::PermissionNotGranted,
    AuthError::AuthNotEnabled,
    AuthError::InvalidAuthToken,
    AuthError::InvalidAuthMgmt,
    AuthError::AuthOldRevision,
];

/// The status of an auth error as etcd sends it. etcd has no gRPC mapping for its
/// "password was given for no password user": it goes out as Unknown with Go's text.
pub fn auth_status(e: AuthError) -> Status {
    let text = match e {
        AuthError::NoPasswordUser => format!("auth: {e}"),
        _ => format!("etcdserver: {e}"),
    };
    Status::new(auth_code(e), text)
}

fn auth_error_of(msg: &str) -> Option<AuthError> {
    let body = msg
        .strip_prefix("etcdserver: ")
        .or_else(|| msg.strip_prefix("auth: "))?;
    AUTH_ERRORS.into_iter().find(|e| e.to_string() == body)
}

/// Read a status from a raftkv (or etcd) server as an error. Request errors come back as
/// their `RequestError` (with unknown sizes/revisions as 0); a status that does not say
/// whether the request was applied becomes [`Error::Unknown`].
pub fn from_status(status: &Status) -> Error {
    let msg = status.message();
    let request = |r: RequestError| Error::Request(r);
    match msg {
        text::EMPTY_KEY => return request(RequestError::EmptyKey),
        text::KEY_NOT_FOUND => return request(RequestError::KeyNotFound),
        text::VALUE_PROVIDED => return request(RequestError::ValueProvided),
        text::LEASE_PROVIDED => return request(RequestError::LeaseProvided),
        text::TOO_MANY_OPS => return request(RequestError::TooManyTxnOps { ops: 0, limit: 0 }),
        text::DUPLICATE_KEY => return request(RequestError::DuplicateKey),
        text::COMPACTED => {
            return request(RequestError::Compacted {
                requested: 0,
                compacted: 0,
            });
        }
        text::FUTURE_REV => {
            return request(RequestError::FutureRevision {
                requested: 0,
                current: 0,
            });
        }
        text::LEASE_NOT_FOUND => return request(RequestError::LeaseNotFound(0)),
        text::LEASE_EXISTS => return request(RequestError::LeaseExists(0)),
        text::LEASE_TTL_TOO_LARGE => return request(RequestError::LeaseTtlTooLarge(0)),
        text::REQUEST_TOO_LARGE => return request(RequestError::RequestTooLarge { size: 0, limit: 0 }),
        text::INVALID_RANGE_END => return request(RequestError::InvalidRangeEnd),
        text::NOT_LEADER | text::NO_LEADER => {
            let leader_id = status
                .metadata()
                .get(LEADER_ID_KEY)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            let leader_client_urls = status
                .metadata()
                .get(LEADER_URLS_KEY)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(',').filter(|s| !s.is_empty()).map(String::from).collect())
                .unwrap_or_default();
            return Error::NotLeader {
                leader_id,
                leader_client_urls,
            };
        }
        text::TIMEOUT => return Error::Timeout(msg.to_string()),
        text::TOO_MANY_REQUESTS => return Error::TooManyRequests { lag: 0 },
        text::NO_SPACE => return Error::NoSpace,
        text::CORRUPT => return Error::Corrupt,
        text::MEMBER_NOT_FOUND => return request(RequestError::MemberNotFound(0)),
        text::MEMBER_NOT_LEARNER => return request(RequestError::MemberNotLearner),
        text::LEARNER_NOT_READY => return request(RequestError::LearnerNotReady),
        text::PEER_URL_EXISTS => return request(RequestError::PeerUrlExists),
        text::BAD_MEMBER_URLS => return request(RequestError::InvalidPeerUrl(String::new())),
        text::BAD_LEADER_TRANSFEREE => return request(RequestError::BadLeaderTransferee(0)),
        text::LEADER_TRANSFER_TIMEOUT => return Error::LeaderTransferTimeout,
        text::STOPPED => return Error::Shutdown(msg.to_string()),
        _ => {}
    }
    if let Some(e) = auth_error_of(msg) {
        return request(RequestError::Auth(e));
    }
    match status.code() {
        Code::Unimplemented => Error::Request(RequestError::Unsupported(msg.to_string())),
        Code::Internal => Error::Internal(msg.to_string()),
        _ => Error::Unknown(format!("{:?}: {msg}", status.code())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_round_trip_through_status() {
        let cases = [
            Error::Request(RequestError::EmptyKey),
            Error::Request(RequestError::DuplicateKey),
            Error::Request(RequestError::InvalidRangeEnd),
            Error::Request(RequestError::InvalidPeerUrl(String::new())),
            Error::Request(RequestError::MemberNotFound(0)),
            Error::Request(RequestError::Auth(AuthError::RootRoleNotExist)),
            Error::Request(RequestError::Auth(AuthError::NoPasswordUser)),
            Error::Request(RequestError::Auth(AuthError::InvalidAuthToken)),
            Error::TooManyRequests { lag: 0 },
            Error::NoSpace,
            Error::Corrupt,
            Error::NotLeader {
                leader_id: Some(3),
                leader_client_urls: vec!["http://127.0.0.1:2379".into()],
            },
            Error::NotLeader {
                leader_id: None,
                leader_client_urls: vec![],
            },
        ];
        for e in cases {
            assert_eq!(from_status(&to_status(&e)), e);
        }
        let compacted = to_status(&Error::Request(RequestError::Compacted {
            requested: 1,
            compacted: 5,
        }));
        assert_eq!(compacted.code(), Code::OutOfRange);
        assert_eq!(
            compacted.message(),
            "etcdserver: mvcc: required revision has been compacted"
        );
    }
}
