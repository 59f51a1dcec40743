//! [`DiskUsage`]: the bytes a data directory takes, measured without listing directories
//! that did not change.
//!
//! The space quota is checked on the write path (at most once a second, `node.rs`), and a
//! walk of the data directory lists every directory in it (`getdents64`): sled's
//! databases, their blob directories, the snapshots. Those change rarely (a generation
//! switch, a snapshot, a value large enough to become a blob file), while the files in
//! them grow with every write. So each directory's listing is kept with the directory's
//! modification time, and listed again only when that time changed (a file created,
//! removed or renamed in it); the files themselves are `stat`ed every time. Two changes
//! within one tick of the file system's coarse clock could hide the second, so every
//! listing is also renewed after [`RELIST_AFTER`]: the quota is approximate for at most
//! that long.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// A directory's listing is renewed after this long even if its time did not change.
pub const RELIST_AFTER: Duration = Duration::from_secs(60);

/// One directory's cached listing.
struct Listing {
    modified: SystemTime,
    listed_at: Instant,
    /// (path, is a directory)
    entries: Vec<(PathBuf, bool)>,
}

/// The disk usage of one directory tree, with its listings cached.
pub struct DiskUsage {
    root: PathBuf,
    listings: parking_lot::Mutex<HashMap<PathBuf, Listing>>,
}

impl DiskUsage {
    /// Measure the tree under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            listings: Default::default(),
        }
    }

    /// Bytes the files under the root take (their lengths). Unreadable entries count 0.
    pub fn bytes(&self) -> u64 {
        let mut listings = self.listings.lock();
        let total = measure(&self.root, &mut listings);
        // Directories that went away (a retired generation) are forgotten.
        listings.retain(|dir, _| dir.exists());
        total
    }
}

fn measure(dir: &Path, listings: &mut HashMap<PathBuf, Listing>) -> u64 {
    let Ok(modified) = std::fs::metadata(dir).and_then(|m| m.modified()) else {
        return 0;
    };
    let fresh = listings
        .get(dir)
        .is_some_and(|l| l.modified == modified && l.listed_at.elapsed() < RELIST_AFTER);
    if !fresh {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .flatten()
                .map(|e| (e.path(), e.file_type().is_ok_and(|t| t.is_dir())))
                .collect(),
            Err(_) => Vec::new(),
        };
        listings.insert(
            dir.to_path_buf(),
            Listing {
                modified,
                listed_at: Instant::now(),
                entries,
            },
        );
    }
    let entries = listings.get(dir).map(|l| l.entries.clone()).unwrap_or_default();
    entries
        .iter()
        .map(|(path, is_dir)| {
            if *is_dir {
                measure(path, listings)
            } else {
                std::fs::metadata(path).map_or(0, |m| m.len())
            }
        })
        .sum()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn growth_and_new_files_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("a"), vec![0u8; 100]).unwrap();
        std::fs::write(dir.path().join("sub/b"), vec![0u8; 10]).unwrap();
        let usage = DiskUsage::new(dir.path());
        assert_eq!(usage.bytes(), 110);
        // A file that grows is seen without a new listing.
        std::fs::write(dir.path().join("a"), vec![0u8; 300]).unwrap();
        assert_eq!(usage.bytes(), 310);
        // A new file changes its directory's time, so the directory is listed again
        // (unless within one clock tick of the last listing: wait for a new time).
        let before = std::fs::metadata(dir.path().join("sub"))
            .unwrap()
            .modified()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            std::fs::write(dir.path().join("sub/c"), vec![0u8; 5]).unwrap();
            let after = std::fs::metadata(dir.path().join("sub"))
                .unwrap()
                .modified()
                .unwrap();
            if after != before {
                break;
            }
            std::fs::remove_file(dir.path().join("sub/c")).unwrap();
            assert!(Instant::now() < deadline, "the directory's time never changed");
            std::thread::yield_now();
        }
        assert_eq!(usage.bytes(), 315);
        std::fs::remove_dir_all(dir.path().join("sub")).unwrap();
        assert_eq!(usage.bytes(), 300);
    }
}
