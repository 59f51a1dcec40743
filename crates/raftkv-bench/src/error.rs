//! The crate's error type.
//!
//! Only setup can fail a run: a bad endpoint, a server that cannot be reached when the
//! connections are opened, a file that cannot be written. Failed requests during the
//! measurement are not errors of the run; they are counted in its result.

/// How many distinct error messages a run keeps (load and watch errors alike).
pub const MAX_ERROR_SAMPLES: usize = 5;

/// Why a run could not start or finish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The command line is not usable.
    #[error(transparent)]
    Cli(#[from] crate::cli::CliError),
    /// A configuration built in code is not usable (the command line checks its own).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An endpoint is not a valid URL.
    #[error("invalid endpoint {endpoint:?}: {source}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why tonic refused it.
        source: tonic::transport::Error,
    },
    /// A connection could not be opened.
    #[error("cannot connect to {endpoint}: {}", with_causes(.source))]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// Why.
        source: tonic::transport::Error,
    },
    /// A histogram could not be created or merged (a bug in the bounds chosen here).
    #[error("latency histogram: {0}")]
    Histogram(String),
    /// A file or socket operation failed.
    #[error("{context} {target}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The file or address involved.
        target: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A worker task panicked or was cancelled.
    #[error("worker task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// `error` and the chain of its sources: tonic's transport errors say only "transport
/// error" at the top.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut parts = vec![error.to_string()];
    let mut cause = error.source();
    while let Some(inner) = cause {
        let part = inner.to_string();
        // Layers that wrap without adding words repeat their inner message.
        if parts.last() != Some(&part) {
            parts.push(part);
        }
        cause = inner.source();
    }
    parts.join(": ")
}

impl Error {
    /// Whether running again with the same arguments may succeed (the failure depends
    /// on the servers or the machine, not on the arguments).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Connect { .. } | Error::Io { .. })
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
