//! The server's Tokio runtime: how many async worker threads it runs, and why one fewer
//! than the cores.
//!
//! A member does its disk work on threads of its own, outside the runtime: the log's
//! group sync (`raftkv-log-sync`: sled's flush, then `fdatasync`), sled's I/O pool, the
//! state machine's background sync, the purger and the compactor. With one async worker
//! per core, the workers and those threads compete for every core, and Tokio wakes an
//! idle worker to look for work whenever another one queues a task, which on a small
//! machine is most of the time for nothing. Leaving one core to the disk threads
//! (`cores - 1` workers, at least one) measured better on the 2-core development machine
//! (README, "Performance": three members on 2 cores, 8 alternating rounds against one
//! worker per core: one-client put p50 0.90x and CPU per write 0.88x, 64-client puts the
//! same throughput at 0.95x the CPU per write; one member alone on 2 cores: the same
//! throughput, lower one-client latency).
//!
//! `TOKIO_WORKER_THREADS` (Tokio's own variable) overrides the count; a value that is not
//! a positive integer is refused at start-up, not guessed around.

/// The environment variable that sets the worker count (Tokio's name for it).
pub const WORKER_THREADS_VAR: &str = "TOKIO_WORKER_THREADS";

/// Why the runtime did not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// [`WORKER_THREADS_VAR`] is not a positive integer (a configuration error).
    #[error("{0}")]
    WorkerCount(String),
    /// The operating system refused the threads or the I/O driver.
    #[error("starting the runtime: {0}")]
    Start(#[from] std::io::Error),
}

/// Async worker threads for a machine of `cores` cores, given the value of
/// [`WORKER_THREADS_VAR`] if set.
pub fn worker_threads(from_env: Option<&str>, cores: usize) -> Result<usize, String> {
    match from_env {
        Some(text) => match text.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!(
                "{WORKER_THREADS_VAR} must be a positive integer, not {text:?}"
            )),
        },
        None => Ok(cores.saturating_sub(1).max(1)),
    }
}

/// The runtime `raftkv-server` serves on: multi-threaded with [`worker_threads`] workers
/// for this machine.
pub fn build() -> Result<tokio::runtime::Runtime, RuntimeError> {
    let from_env = std::env::var_os(WORKER_THREADS_VAR).map(|v| v.to_string_lossy().into_owned());
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let workers = worker_threads(from_env.as_deref(), cores).map_err(RuntimeError::WorkerCount)?;
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::worker_threads;

    #[test]
    fn one_core_is_left_to_the_disk_threads() {
        assert_eq!(worker_threads(None, 1), Ok(1));
        assert_eq!(worker_threads(None, 2), Ok(1));
        assert_eq!(worker_threads(None, 8), Ok(7));
        assert_eq!(worker_threads(None, 0), Ok(1));
    }

    #[test]
    fn the_environment_overrides_and_nonsense_is_refused() {
        assert_eq!(worker_threads(Some("4"), 2), Ok(4));
        assert_eq!(worker_threads(Some(" 2 "), 8), Ok(2));
        for bad in ["0", "-1", "two", ""] {
            let refused = worker_threads(Some(bad), 2);
            assert!(
                refused
                    .as_ref()
                    .is_err_and(|e| e.contains("TOKIO_WORKER_THREADS")),
                "{bad:?}: {refused:?}"
            );
        }
    }
}
