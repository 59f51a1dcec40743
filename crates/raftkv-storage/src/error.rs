//! Storage errors: our own typed [`Error`], and its conversion into openraft's
//! `StorageError` (which tells openraft what failed: log, vote, state machine, snapshot).

use openraft::{ErrorSubject, ErrorVerb, StorageIOError};
use raftkv_core::codec::CodecError;
use raftkv_core::types::{NodeId, StorageError};

/// What can go wrong below raftkv's state machine and log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// sled reported an error.
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    /// A file operation failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Stored bytes did not decode.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The data directory or snapshot was written by an incompatible version.
    #[error("unsupported schema version {found} in {what} (this build reads version {supported})")]
    Schema {
        /// What carried the version.
        what: &'static str,
        /// The version found.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// An operation gave up because something replaced what it worked on.
    #[error("interrupted: {0}")]
    Interrupted(String),
    /// Stored data is inconsistent (a checksum or framing mismatch).
    #[error("corrupt {what}: {detail}")]
    Corrupt {
        /// What is corrupt.
        what: &'static str,
        /// How.
        detail: String,
    },
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wrap `e` as openraft's storage error about `subject`, while doing `verb`.
pub(crate) fn to_raft(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError {
    StorageError::IO {
        source: StorageIOError::new(subject, verb, &e),
    }
}

pub(crate) fn log_read(e: impl std::error::Error + 'static) -> StorageError {
    to_raft(ErrorSubject::Logs, ErrorVerb::Read, e)
}

pub(crate) fn log_write(e: impl std::error::Error + 'static) -> StorageError {
    to_raft(ErrorSubject::Logs, ErrorVerb::Write, e)
}

pub(crate) fn vote_read(e: impl std::error::Error + 'static) -> StorageError {
    to_raft(ErrorSubject::Vote, ErrorVerb::Read, e)
}

pub(crate) fn vote_write(e: impl std::error::Error + 'static) -> StorageError {
    to_raft(ErrorSubject::Vote, ErrorVerb::Write, e)
}

pub(crate) fn sm_write(e: impl std::error::Error + 'static) -> StorageError {
    to_raft(ErrorSubject::StateMachine, ErrorVerb::Write, e)
}

pub(crate) fn snapshot_read(e: impl std::error::Error + 'static) -> StorageError {
    to_raft(ErrorSubject::Snapshot(None), ErrorVerb::Read, e)
}

pub(crate) fn snapshot_write(e: impl std::error::Error + 'static) -> StorageError {
    to_raft(ErrorSubject::Snapshot(None), ErrorVerb::Write, e)
}
