//! [`ClientError`]: what a call through [`crate::Client`] can fail with.
//!
//! The variants answer the one question a caller has after a failure: *what do I know
//! about my request now?*
//!
//! - [`ClientError::Server`]: a server answered with a verdict ([`raftkv_core::Error`],
//!   read back from the gRPC status by `raftkv_proto::status::from_status`). A
//!   [`raftkv_core::Error::Request`] is deterministic: the request is wrong and was not
//!   applied; retrying it unchanged cannot help.
//! - [`ClientError::OutcomeUnknown`]: a write reached (or may have reached) a server and
//!   no answer came back that says whether it was applied. It may have been, or may still
//!   be, applied. The client does not retry it, because a blind retry could apply it
//!   twice; the caller decides (read the key back, or make the write idempotent with a
//!   `Txn` that compares a revision).
//! - [`ClientError::DeadlineExceeded`]: the total deadline (`request_timeout`) passed
//!   while the client was still retrying steps that prove nothing was applied: no
//!   endpoint could be reached, or every server said it has no leader. This is what a
//!   caller sees when the cluster has lost its majority.
//! - [`ClientError::StreamInterrupted`]: a stream (a snapshot) broke after some of it had
//!   been handed to the caller's writer, so the client did not retry it; what was
//!   written is incomplete. [`ClientError::WriteFailed`]: the caller's writer failed.
//! - The rest are configuration or protocol mistakes: no endpoints, an endpoint URL the
//!   client cannot use, or a response it cannot decode.

/// Everything a [`crate::Client`] call can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A server answered with this error (for a request error: nothing was applied).
    #[error("server error: {0}")]
    Server(raftkv_core::Error),
    /// The write was sent but no answer says whether it was applied: it may or may not
    /// have been (or may still be). Not retried by the client.
    #[error("outcome unknown: the write may or may not have been applied ({0})")]
    OutcomeUnknown(String),
    /// The total deadline passed before any endpoint answered: no endpoint was reachable,
    /// or the cluster has no leader / no quorum. Nothing was applied by the attempts that
    /// led here (an attempt that might have applied a write ends in
    /// [`ClientError::OutcomeUnknown`] instead).
    #[error(
        "deadline exceeded after {attempts} attempt(s): no endpoint answered in time \
         (cluster unreachable, or no leader / no quorum); last error: {last_error}"
    )]
    DeadlineExceeded {
        /// How many attempts were made (on any endpoint) before the deadline.
        attempts: u32,
        /// What the last attempt failed with.
        last_error: String,
    },
    /// A stream broke after `received` bytes had been passed on to the caller's writer,
    /// so it was not retried: the output is incomplete. Making the call again starts
    /// over (discard what was written first).
    #[error("stream interrupted after {received} bytes: {reason}")]
    StreamInterrupted {
        /// Bytes received (and passed on, or about to be) before the stream broke.
        received: u64,
        /// What broke it: a transport error, a server error, or no message in time.
        reason: String,
    },
    /// The writer the caller gave the client failed; the call stopped there.
    #[error("writing the output failed: {kind:?}: {message}")]
    WriteFailed {
        /// The writer's error kind.
        kind: std::io::ErrorKind,
        /// The writer's error text.
        message: String,
    },
    /// The client was given no endpoints.
    #[error("no endpoints given")]
    NoEndpoints,
    /// An endpoint URL the client cannot use.
    #[error("invalid endpoint: {0}")]
    InvalidEndpoint(String),
    /// TLS settings the client cannot use (an unreadable file, say).
    #[error("invalid TLS settings: {0}")]
    InvalidTls(String),
    /// A server answered with a message that does not decode into a valid response.
    #[error("invalid response from server: {0}")]
    InvalidResponse(String),
}

impl ClientError {
    /// Whether the same call may succeed if the caller makes it again later, unchanged.
    ///
    /// `true` for [`ClientError::DeadlineExceeded`] (the cluster may recover) and for
    /// server errors that are transient ([`raftkv_core::Error::is_retryable`]). `false`
    /// for [`ClientError::OutcomeUnknown`]: retrying may apply the write twice, so the
    /// caller must first find out whether it was applied.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::DeadlineExceeded { .. } | ClientError::StreamInterrupted { .. } => true,
            ClientError::Server(e) => e.is_retryable() || matches!(e, raftkv_core::Error::Shutdown(_)),
            ClientError::OutcomeUnknown(_)
            | ClientError::NoEndpoints
            | ClientError::InvalidEndpoint(_)
            | ClientError::InvalidTls(_)
            | ClientError::InvalidResponse(_)
            | ClientError::WriteFailed { .. } => false,
        }
    }

    /// Whether this error leaves a write's outcome unknown.
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, ClientError::OutcomeUnknown(_))
    }
}

/// Result with [`ClientError`].
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use raftkv_core::{Error, RequestError};

    use super::*;

    #[test]
    fn retryable_classification() {
        let deadline = ClientError::DeadlineExceeded {
            attempts: 3,
            last_error: "connection refused".into(),
        };
        assert!(deadline.is_retryable());
        assert!(!ClientError::OutcomeUnknown("reset".into()).is_retryable());
        assert!(!ClientError::Server(Error::Request(RequestError::EmptyKey)).is_retryable());
        assert!(ClientError::Server(Error::Timeout("t".into())).is_retryable());
        assert!(!ClientError::NoEndpoints.is_retryable());
        assert!(!ClientError::Server(Error::NoSpace).is_retryable());
        let interrupted = ClientError::StreamInterrupted {
            received: 512,
            reason: "reset".into(),
        };
        assert!(interrupted.is_retryable());
        let write_failed = ClientError::WriteFailed {
            kind: std::io::ErrorKind::StorageFull,
            message: "disk full".into(),
        };
        assert!(!write_failed.is_retryable());
    }

    #[test]
    fn deadline_message_names_the_likely_cause() {
        let text = ClientError::DeadlineExceeded {
            attempts: 7,
            last_error: "etcdserver: no leader".into(),
        }
        .to_string();
        assert!(text.contains("deadline exceeded"), "{text}");
        assert!(text.contains("no quorum"), "{text}");
        assert!(text.contains("7 attempt"), "{text}");
    }
}
