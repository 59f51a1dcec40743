//! Writing a bbolt file (the layout `bbolt.rs` describes), for exporting an etcd
//! snapshot: top-level buckets of sorted entries, each bucket a B+tree of full leaf pages
//! with branch pages above them, written once, front to back.
//!
//! The file: two meta pages (0 and 1, transaction ids 2 and 1, both valid), an empty
//! freelist page (nothing is free in a file written once), the buckets' pages, the root
//! bucket's leaf page last. Leaf pages are filled up to the page size; an entry larger
//! than a page gets a page of its own that runs over as many overflow pages as it needs,
//! as bbolt does. bbolt opens such a file read-only or read-write alike (it rebuilds its
//! page cache, and appends after the last page on its first write).

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};

use crate::error::{Error, Result};

/// bbolt's default page size on Linux (the OS page size etcd runs with).
pub const PAGE_SIZE: usize = 4096;
const PAGE_HEADER: usize = 16;
const ELEMENT: usize = 16;
const BRANCH_PAGE: u16 = 0x01;
const LEAF_PAGE: u16 = 0x02;
const META_PAGE: u16 = 0x04;
const FREELIST_PAGE: u16 = 0x10;
const BUCKET_LEAF: u32 = 0x01;
const MAGIC: u32 = 0xED0C_DAED;
const VERSION: u32 = 2;
/// The first page after the metas and the freelist.
const FIRST_DATA_PAGE: u64 = 3;
const FREELIST_PAGE_ID: u64 = 2;

/// A bbolt file being written.
pub struct BoltWriter {
    out: BufWriter<File>,
    next_page: u64,
    /// (name, root page) of the buckets written so far.
    buckets: Vec<(Vec<u8>, u64)>,
}

/// One entry of a page being filled: (key, value, flags).
type Entry = (Vec<u8>, Vec<u8>, u32);

impl BoltWriter {
    /// Start a bbolt file in `file` (written from its start).
    pub fn new(mut file: File) -> Result<Self> {
        file.seek(SeekFrom::Start(FIRST_DATA_PAGE * PAGE_SIZE as u64))?;
        Ok(Self {
            out: BufWriter::new(file),
            next_page: FIRST_DATA_PAGE,
            buckets: Vec::new(),
        })
    }

    /// Write top-level bucket `name` holding `entries`, which must come sorted by key
    /// (bytewise, as bbolt orders them) and without duplicates.
    pub fn bucket(
        &mut self,
        name: &[u8],
        entries: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
    ) -> Result<()> {
        if self.buckets.iter().any(|(n, _)| n == name) {
            return Err(invalid(format!(
                "bucket {:?} written twice",
                String::from_utf8_lossy(name)
            )));
        }
        let root = self.tree(entries.into_iter().map(|(k, v)| (k, v, 0)))?;
        self.buckets.push((name.to_vec(), root));
        Ok(())
    }

    /// Write the root bucket and the meta pages; the file is complete.
    pub fn finish(mut self) -> Result<File> {
        let mut buckets = std::mem::take(&mut self.buckets);
        buckets.sort();
        let entries: Vec<Entry> = buckets
            .into_iter()
            .map(|(name, root)| {
                // A bucket header: its root page and its sequence (0).
                let mut header = root.to_le_bytes().to_vec();
                header.extend(0u64.to_le_bytes());
                (name, header, BUCKET_LEAF)
            })
            .collect();
        let root = self.tree(entries)?;
        let high_water = self.next_page;
        let mut file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.seek(SeekFrom::Start(0))?;
        let mut out = BufWriter::new(file);
        for (page, txid) in [(0u64, 2u64), (1, 1)] {
            out.write_all(&meta_page(page, root, high_water, txid))?;
        }
        let mut freelist = vec![0u8; PAGE_SIZE];
        page_header(&mut freelist, FREELIST_PAGE_ID, FREELIST_PAGE, 0, 0);
        out.write_all(&freelist)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(file)
    }

    /// Write the B+tree of `entries` (sorted); its root page.
    fn tree(&mut self, entries: impl IntoIterator<Item = Entry>) -> Result<u64> {
        // Leaves, then each level of branches above, until one page is left.
        let mut level: Vec<(Vec<u8>, u64)> = Vec::new();
        let mut page: Vec<Entry> = Vec::new();
        let mut size = PAGE_HEADER;
        let mut last_key: Option<Vec<u8>> = None;
        for entry in entries {
            if last_key.as_ref().is_some_and(|k| *k >= entry.0) {
                return Err(invalid("entries not sorted by key".to_string()));
            }
            last_key = Some(entry.0.clone());
            let entry_size = ELEMENT + entry.0.len() + entry.1.len();
            if !page.is_empty() && (size + entry_size > PAGE_SIZE || page.len() == usize::from(u16::MAX)) {
                let first = page[0].0.clone();
                level.push((first, self.leaf_page(std::mem::take(&mut page))?));
                size = PAGE_HEADER;
            }
            size += entry_size;
            page.push(entry);
        }
        if !page.is_empty() || level.is_empty() {
            let first = page.first().map(|e| e.0.clone()).unwrap_or_default();
            level.push((first, self.leaf_page(page)?));
        }
        while level.len() > 1 {
            let mut above = Vec::new();
            let mut children: Vec<(Vec<u8>, u64)> = Vec::new();
            let mut size = PAGE_HEADER;
            for child in level {
                let child_size = ELEMENT + child.0.len();
                // At least two children a branch page (bbolt's minimum keys per page).
                if children.len() >= 2 && size + child_size > PAGE_SIZE {
                    let first = children[0].0.clone();
                    above.push((first, self.branch_page(std::mem::take(&mut children))?));
                    size = PAGE_HEADER;
                }
                size += child_size;
                children.push(child);
            }
            let first = children[0].0.clone();
            above.push((first, self.branch_page(children)?));
            level = above;
        }
        Ok(level[0].1)
    }

    fn leaf_page(&mut self, entries: Vec<Entry>) -> Result<u64> {
        let data: usize = entries.iter().map(|e| e.0.len() + e.1.len()).sum();
        let mut bytes = vec![0u8; PAGE_HEADER + entries.len() * ELEMENT + data];
        let mut at = PAGE_HEADER + entries.len() * ELEMENT;
        for (i, (key, value, flags)) in entries.iter().enumerate() {
            let element = PAGE_HEADER + i * ELEMENT;
            put_u32(&mut bytes, element, *flags);
            put_u32(&mut bytes, element + 4, len32(at - element)?);
            put_u32(&mut bytes, element + 8, len32(key.len())?);
            put_u32(&mut bytes, element + 12, len32(value.len())?);
            bytes[at..at + key.len()].copy_from_slice(key);
            at += key.len();
            bytes[at..at + value.len()].copy_from_slice(value);
            at += value.len();
        }
        self.page(bytes, LEAF_PAGE, entries.len())
    }

    fn branch_page(&mut self, children: Vec<(Vec<u8>, u64)>) -> Result<u64> {
        let data: usize = children.iter().map(|c| c.0.len()).sum();
        let mut bytes = vec![0u8; PAGE_HEADER + children.len() * ELEMENT + data];
        let mut at = PAGE_HEADER + children.len() * ELEMENT;
        for (i, (key, page)) in children.iter().enumerate() {
            let element = PAGE_HEADER + i * ELEMENT;
            put_u32(&mut bytes, element, len32(at - element)?);
            put_u32(&mut bytes, element + 4, len32(key.len())?);
            bytes[element + 8..element + 16].copy_from_slice(&page.to_le_bytes());
            bytes[at..at + key.len()].copy_from_slice(key);
            at += key.len();
        }
        self.page(bytes, BRANCH_PAGE, children.len())
    }

    /// Write a page (header filled in here) padded to whole pages; its id.
    fn page(&mut self, mut bytes: Vec<u8>, flags: u16, count: usize) -> Result<u64> {
        let pages = bytes.len().div_ceil(PAGE_SIZE).max(1);
        bytes.resize(pages * PAGE_SIZE, 0);
        let id = self.next_page;
        let count = u16::try_from(count).map_err(|_| invalid(format!("{count} elements in one page")))?;
        let overflow = u32::try_from(pages - 1).map_err(|_| invalid(format!("an entry of {pages} pages")))?;
        page_header(&mut bytes, id, flags, count, overflow);
        self.out.write_all(&bytes)?;
        self.next_page += pages as u64;
        Ok(id)
    }
}

fn invalid(detail: String) -> Error {
    Error::Corrupt {
        what: "bbolt export",
        detail,
    }
}

fn len32(n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| invalid(format!("{n} bytes in one page")))
}

fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn page_header(bytes: &mut [u8], id: u64, flags: u16, count: u16, overflow: u32) {
    bytes[0..8].copy_from_slice(&id.to_le_bytes());
    bytes[8..10].copy_from_slice(&flags.to_le_bytes());
    bytes[10..12].copy_from_slice(&count.to_le_bytes());
    bytes[12..16].copy_from_slice(&overflow.to_le_bytes());
}

/// Meta page `page` naming `root` as the root bucket's page.
fn meta_page(page: u64, root: u64, high_water: u64, txid: u64) -> Vec<u8> {
    let mut bytes = vec![0u8; PAGE_SIZE];
    page_header(&mut bytes, page, META_PAGE, 0, 0);
    let meta = &mut bytes[PAGE_HEADER..];
    meta[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    meta[4..8].copy_from_slice(&VERSION.to_le_bytes());
    meta[8..12].copy_from_slice(&(PAGE_SIZE as u32).to_le_bytes());
    // flags (12..16) 0; the root bucket: page, sequence 0.
    meta[16..24].copy_from_slice(&root.to_le_bytes());
    meta[32..40].copy_from_slice(&FREELIST_PAGE_ID.to_le_bytes());
    meta[40..48].copy_from_slice(&high_water.to_le_bytes());
    meta[48..56].copy_from_slice(&txid.to_le_bytes());
    let checksum = super::bbolt::fnv64a(&meta[..56]);
    meta[56..64].copy_from_slice(&checksum.to_le_bytes());
    bytes
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::bbolt::BoltFile;
    use super::*;

    /// Every entry of top-level bucket `name`.
    fn read(path: &std::path::Path, name: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let db = BoltFile::open(path).unwrap();
        let bucket = db.bucket(&db.root(), name).unwrap().unwrap();
        let mut out = Vec::new();
        db.for_each(&bucket, &mut |k, v, _| {
            out.push((k.to_vec(), v.to_vec()));
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn what_is_written_reads_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.db");
        // Enough entries for two branch levels, one larger than a page, an empty bucket.
        let many: Vec<(Vec<u8>, Vec<u8>)> = (0..60_000u32)
            .map(|i| (i.to_be_bytes().to_vec(), format!("value {i}").into_bytes()))
            .collect();
        let big = vec![
            (b"big".to_vec(), vec![9u8; 3 * PAGE_SIZE + 5]),
            (b"small".to_vec(), b"s".to_vec()),
        ];
        let mut writer = BoltWriter::new(File::create(&path).unwrap()).unwrap();
        writer.bucket(b"many", many.clone()).unwrap();
        writer.bucket(b"empty", Vec::new()).unwrap();
        writer.bucket(b"big", big.clone()).unwrap();
        assert!(writer.bucket(b"big", Vec::new()).is_err());
        writer.finish().unwrap();
        assert_eq!(read(&path, b"many"), many);
        assert_eq!(read(&path, b"big"), big);
        assert!(read(&path, b"empty").is_empty());
        assert_eq!(std::fs::metadata(&path).unwrap().len() % PAGE_SIZE as u64, 0);
    }

    #[test]
    fn unsorted_entries_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = BoltWriter::new(File::create(dir.path().join("x")).unwrap()).unwrap();
        let unsorted = vec![(b"b".to_vec(), vec![]), (b"a".to_vec(), vec![])];
        assert!(writer.bucket(b"x", unsorted).is_err());
    }
}
