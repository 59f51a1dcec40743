//! Storage errors: our own typed [`Error`], and its conversion into the `io::Error`
//! openraft's storage traits return (with what failed: log, vote, state machine,
//! snapshot).

use raftkv_core::codec::CodecError;

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
    #[error(
        "unsupported schema version {found} in {what} (this build reads version {supported} and \
         migrates older ones): run the build that wrote it, or empty this member's data \
         directory and add it back so that it copies the data from the others"
    )]
    Schema {
        /// What carried the version.
        what: &'static str,
        /// The version found.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// Another store holds the data directory (`disk/data_dir_lock.rs`).
    #[error("data directory {} is in use by {by}", dir.display())]
    DataDirInUse {
        /// The directory.
        dir: std::path::PathBuf,
        /// Who holds it, and what to do.
        by: String,
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

/// Wrap `e` as the `io::Error` openraft 0.10's storage traits return, saying what
/// failed (log, vote, state machine, snapshot) and while doing what: openraft logs the
/// text and stops the node, so the text is what an operator reads.
pub(crate) fn to_raft(what: &'static str, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("{what}: {e}"))
}

pub(crate) fn log_read(e: impl std::fmt::Display) -> std::io::Error {
    to_raft("reading the raft log", e)
}

pub(crate) fn log_write(e: impl std::fmt::Display) -> std::io::Error {
    to_raft("writing the raft log", e)
}

pub(crate) fn vote_read(e: impl std::fmt::Display) -> std::io::Error {
    to_raft("reading the vote", e)
}

pub(crate) fn vote_write(e: impl std::fmt::Display) -> std::io::Error {
    to_raft("saving the vote", e)
}

pub(crate) fn sm_write(e: impl std::fmt::Display) -> std::io::Error {
    to_raft("applying to the state machine", e)
}

pub(crate) fn snapshot_read(e: impl std::fmt::Display) -> std::io::Error {
    to_raft("reading a snapshot", e)
}

pub(crate) fn snapshot_write(e: impl std::fmt::Display) -> std::io::Error {
    to_raft("writing a snapshot", e)
}
