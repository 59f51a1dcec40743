//! [`DataDirLock`]: one open [`crate::Store`] per data directory, across processes and
//! within one.
//!
//! **Why our own lock.** sled locks each database file, but a store is several databases
//! (the log, the active state generation, a retired one still read) and background
//! threads (compactor, state sync, log purger) that keep them open for a moment after the
//! store's owner dropped it. A store reopened in the same process right then (a node
//! restarted in place, a test) found the old one still working: the compactor's automatic
//! defragmentation could switch generations after the new open had read `state.current`,
//! and the new open's clean-up removed a generation the old one still had open (seen as
//! `Sled(Io(NotFound))` at open, or different data, about 1 run in 10 under load). So every
//! holder of a sled handle of the store also holds this lock (declared after its handle,
//! so it is released only once sled has closed), and [`DataDirLock::acquire`] waits until
//! the previous store of the directory is wholly gone.
//!
//! **Within a process vs. another process.** An `flock` on `<data>/LOCK` keeps other
//! processes out; one that is closing (a test's checker, a server being replaced) is
//! waited for, polled up to the deadline, and a second server on a directory in use
//! fails with [`Error::DataDirInUse`]. In this process, a registry of the directories
//! held lets a reopen wait on a condition variable for the old store's threads to finish
//! their current step.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::error::{Error, Result};

const LOCK_FILE: &str = "LOCK";
/// How often a lock held by another process is tried again.
const OTHER_PROCESS_POLL: Duration = Duration::from_millis(10);
/// At most this long for another process: one that is closing lets go within it, and a
/// second server started on a directory in use should hear so soon.
const OTHER_PROCESS_WAIT: Duration = Duration::from_secs(10);

/// Directories this process holds a [`DataDirLock`] on (canonical paths).
static HELD: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
/// Signalled when a directory leaves [`HELD`].
static RELEASED: Condvar = Condvar::new();

/// The exclusive hold on a data directory; released when the last clone of its `Arc`
/// is dropped.
#[derive(Debug)]
pub struct DataDirLock {
    dir: PathBuf,
    file: File,
}

impl DataDirLock {
    /// Lock `dir` (which must exist), waiting up to `wait` for a store of this process
    /// that still holds it to close, and up to `wait` or 10 s, whichever is shorter, for
    /// another process that holds it to let go.
    pub fn acquire(dir: &Path, wait: Duration) -> Result<Arc<Self>> {
        let dir = dir.canonicalize()?;
        let deadline = Instant::now() + wait;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))?;
        let other_process_deadline = Instant::now() + wait.min(OTHER_PROCESS_WAIT);
        let mut waiting_for_another_process = false;
        let mut held = HELD.lock();
        loop {
            if held.contains(&dir) {
                if RELEASED.wait_until(&mut held, deadline).timed_out() && held.contains(&dir) {
                    return Err(Error::DataDirInUse {
                        dir,
                        by: format!("a store of this process that did not close within {wait:?}"),
                    });
                }
                continue;
            }
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if Instant::now() < other_process_deadline => {
                    if !waiting_for_another_process {
                        tracing::warn!(dir = %dir.display(), "the data directory is locked by another process; waiting for it to let go");
                        waiting_for_another_process = true;
                    }
                    // No wake-up crosses processes: poll, without blocking this
                    // process's other stores.
                    MutexGuard::unlocked(&mut held, || std::thread::sleep(OTHER_PROCESS_POLL));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(Error::DataDirInUse {
                        dir,
                        by: format!(
                            "another process, still after {:?} (stop it, or give this one another data directory)",
                            wait.min(OTHER_PROCESS_WAIT)
                        ),
                    });
                }
                Err(TryLockError::Error(e)) => return Err(e.into()),
            }
        }
        held.push(dir.clone());
        Ok(Arc::new(Self { dir, file }))
    }
}

impl Drop for DataDirLock {
    fn drop(&mut self) {
        // Unlock before leaving the registry, so a waiter's own `try_lock` succeeds.
        if let Err(e) = self.file.unlock() {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not unlock the data directory");
        }
        HELD.lock().retain(|d| d != &self.dir);
        RELEASED.notify_all();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_second_acquire_waits_for_the_first_to_be_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path(), Duration::ZERO).unwrap();
        let refused = DataDirLock::acquire(dir.path(), Duration::from_millis(50)).unwrap_err();
        assert!(matches!(refused, Error::DataDirInUse { .. }), "{refused}");
        assert!(refused.to_string().contains("this process"), "{refused}");

        let holder = first.clone();
        drop(first);
        let started = Instant::now();
        let released = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(holder);
        });
        let second = DataDirLock::acquire(dir.path(), Duration::from_secs(10)).unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(100),
            "waited for the last clone"
        );
        released.join().unwrap();
        drop(second);
        DataDirLock::acquire(dir.path(), Duration::ZERO).unwrap();
    }

    #[test]
    fn a_lock_of_another_process_is_waited_for_up_to_the_deadline() {
        // Another open file description is what another process holds.
        let dir = tempfile::tempdir().unwrap();
        let other = File::create(dir.path().join(LOCK_FILE)).unwrap();
        other.try_lock().unwrap();
        let refused = DataDirLock::acquire(dir.path(), Duration::from_millis(50)).unwrap_err();
        assert!(refused.to_string().contains("another process"), "{refused}");

        let started = Instant::now();
        let released = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(other);
        });
        let held = DataDirLock::acquire(dir.path(), Duration::from_secs(10)).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(100));
        released.join().unwrap();
        let third = File::open(dir.path().join(LOCK_FILE)).unwrap();
        assert!(matches!(third.try_lock(), Err(TryLockError::WouldBlock)));
        drop(held);
        third.try_lock().unwrap();
    }
}
