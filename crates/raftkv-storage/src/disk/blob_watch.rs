//! [`BlobWatch`]: which of sled's blob files changed since the last sync, without
//! listing the directory.
//!
//! sled writes an item larger than a quarter of a segment to its own file under
//! `<db>/blobs/` and never syncs it, so [`crate::disk::durable::DurableDb::sync`] must. Listing
//! the directory on every sync cost two `getdents64` per log append. An inotify watch on
//! the directory reports each file created, written or closed after writing, by name; a
//! sync reads the queued events (one non-blocking `read`, which finds none when no blob
//! was written) and syncs just those files.
//!
//! Why this is exact: the kernel queues an inotify event before the `write` or `open`
//! that caused it returns, and sled writes a blob before it flushes the log record that
//! points to it. So once `Db::flush()` has returned, the events of every blob a flushed
//! record refers to are in the queue. A blob still being written is synced again at the
//! next sync (its later writes queue events of their own).
//!
//! When the queue overflowed, or inotify is not available, every blob file is synced
//! (the listing this replaced).

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

/// What changed in the blobs directory since the last [`BlobWatch::changes`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BlobChanges {
    /// These files were created or written (each once, in no particular order), and
    /// whether any was created (then the directory needs a sync too).
    Files { names: Vec<OsString>, created: bool },
    /// Events were lost (or never watched): treat every file as changed.
    Unknown,
}

/// An inotify watch on one directory.
#[derive(Debug)]
pub(crate) struct BlobWatch {
    /// The inotify instance (non-blocking, close-on-exec).
    fd: OwnedFd,
}

const EVENTS: u32 = libc::IN_CREATE | libc::IN_MODIFY | libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO;

/// The fixed part of `struct inotify_event`: wd, mask, cookie, len.
const HEADER: usize = 16;

impl BlobWatch {
    /// Watch `dir` (which must exist).
    pub(crate) fn new(dir: &Path) -> io::Result<Self> {
        // SAFETY: no pointers; the result is checked before use.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor just returned to us, owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let path = CString::new(dir.as_os_str().as_bytes()).map_err(io::Error::other)?;
        // SAFETY: `path` is a valid NUL-terminated string for the duration of the call.
        if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), EVENTS) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { fd })
    }

    /// The files changed since the last call (module doc).
    pub(crate) fn changes(&self) -> io::Result<BlobChanges> {
        let mut names: Vec<OsString> = Vec::new();
        let mut created = false;
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    break;
                }
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let n = n as usize;
            if n == 0 {
                break;
            }
            let mut at = 0;
            while at + HEADER <= n {
                let field = |i: usize| {
                    let bytes = [buf[at + i], buf[at + i + 1], buf[at + i + 2], buf[at + i + 3]];
                    u32::from_ne_bytes(bytes)
                };
                let (mask, len) = (field(4), field(12) as usize);
                let name_end = (at + HEADER + len).min(n);
                if mask & libc::IN_Q_OVERFLOW != 0 {
                    return Ok(BlobChanges::Unknown);
                }
                if mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0 {
                    created = true;
                }
                // The name is NUL-padded to its slot.
                let raw_name = &buf[at + HEADER..name_end];
                let name_len = raw_name.iter().position(|b| *b == 0).unwrap_or(raw_name.len());
                if name_len > 0 {
                    let name = OsString::from_vec(raw_name[..name_len].to_vec());
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
                at += HEADER + len;
            }
            if n < buf.len() - 512 {
                // A short read drained the queue (an event is at most 16 + NAME_MAX + 1
                // bytes): skip the read that would find it empty.
                break;
            }
        }
        Ok(BlobChanges::Files { names, created })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reports_each_created_or_written_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let watch = BlobWatch::new(dir.path()).unwrap();
        assert_eq!(
            watch.changes().unwrap(),
            BlobChanges::Files {
                names: vec![],
                created: false
            }
        );
        let mut a = std::fs::File::create(dir.path().join("17")).unwrap();
        a.write_all(b"part one").unwrap();
        a.write_all(b"part two").unwrap();
        drop(a);
        std::fs::write(dir.path().join("42"), b"x").unwrap();
        let BlobChanges::Files { mut names, created } = watch.changes().unwrap() else {
            panic!("events lost");
        };
        names.sort();
        assert_eq!(names, vec![OsString::from("17"), OsString::from("42")]);
        assert!(created);
        // Written again without being created: reported, but no directory sync needed.
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("42"))
            .unwrap()
            .write_all(b"y")
            .unwrap();
        assert_eq!(
            watch.changes().unwrap(),
            BlobChanges::Files {
                names: vec![OsString::from("42")],
                created: false
            }
        );
        // Deletions need no sync.
        std::fs::remove_file(dir.path().join("17")).unwrap();
        assert_eq!(
            watch.changes().unwrap(),
            BlobChanges::Files {
                names: vec![],
                created: false
            }
        );
    }

    #[test]
    fn many_events_are_all_read() {
        let dir = tempfile::tempdir().unwrap();
        let watch = BlobWatch::new(dir.path()).unwrap();
        for i in 0..500 {
            std::fs::write(dir.path().join(format!("blob-with-a-long-name-{i:05}")), b"x").unwrap();
        }
        let BlobChanges::Files { names, created } = watch.changes().unwrap() else {
            panic!("events lost");
        };
        assert_eq!(names.len(), 500);
        assert!(created);
    }
}
