//! Server processes that die with the test that started them, and the listening sockets
//! they inherit.
//!
//! - [`OwnedChild`] owns a child from the moment it is spawned and kills it when dropped,
//!   so a test that fails half-way through starting a cluster (a panic unwinds through
//!   the members already started) leaves none running.
//! - Every child gets `PR_SET_PDEATHSIG(SIGKILL)`: a test binary killed outright (no
//!   unwinding, no drop) takes its servers along. Linux sends the signal when the
//!   *thread* that spawned the child exits; tests spawn from the test thread or a tokio
//!   worker, both of which outlive the cluster.
//! - [`command`] passes listening sockets the systemd way (`LISTEN_FDS`,
//!   `LISTEN_FDNAMES`, `LISTEN_PID`; descriptors from 3 on), which `raftkv-server`
//!   accepts (README, "Socket activation"). `LISTEN_PID` must be the server's own pid, known
//!   only after the fork: a `/bin/sh` sets it to its own pid and `exec`s the server,
//!   which keeps that pid.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// A running child process, killed (SIGCONT, then SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct OwnedChild {
    child: Child,
}

/// The first descriptor of inherited sockets (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// A command for `program args`, that dies with this process and inherits `listeners`
/// as descriptors 3, 4, ... named by `LISTEN_FDNAMES`. Set its stdio, then
/// [`OwnedChild::spawn`] it.
pub fn command(program: &str, args: &[String], listeners: &[(&str, &TcpListener)]) -> Command {
    let mut cmd;
    if listeners.is_empty() {
        cmd = Command::new(program);
        cmd.args(args);
    } else {
        cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg("LISTEN_PID=$$; export LISTEN_PID; exec \"$0\" \"$@\"")
            .arg(program)
            .args(args)
            .env("LISTEN_FDS", listeners.len().to_string())
            .env(
                "LISTEN_FDNAMES",
                listeners
                    .iter()
                    .map(|(name, _)| *name)
                    .collect::<Vec<_>>()
                    .join(":"),
            );
    }
    let sources: Vec<RawFd> = listeners.iter().map(|(_, l)| l.as_raw_fd()).collect();
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: between fork and exec only async-signal-safe calls (prctl, getppid, fcntl,
    // dup2) on descriptors this process owns; no allocation (`sources` was built before).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before the prctl: then nobody would kill us.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("the test process is gone"));
            }
            // Copy each source above the target range first, so that moving one into
            // place never overwrites another (the copies are close-on-exec).
            let mut high = [0 as RawFd; 8];
            if sources.len() > high.len() {
                return Err(std::io::Error::other("too many inherited sockets"));
            }
            for (i, fd) in sources.iter().enumerate() {
                high[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 64);
                if high[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, fd) in high[..sources.len()].iter().enumerate() {
                // dup2's copy is not close-on-exec: the server inherits it.
                if libc::dup2(*fd, LISTEN_FDS_START + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd
}

impl OwnedChild {
    pub fn spawn(mut cmd: Command) -> std::io::Result<Self> {
        cmd.spawn().map(|child| Self { child })
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid; it has not been reaped while we own it.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, signal);
        }
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Wait up to `timeout` for it to exit; its status, or `None` if it still runs.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for OwnedChild {
    fn drop(&mut self) {
        if self.try_wait().is_some() {
            return;
        }
        self.signal(libc::SIGCONT);
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }
}
