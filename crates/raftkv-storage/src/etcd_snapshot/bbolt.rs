//! A reader of bbolt database files (etcd's backend), for importing an etcd snapshot.
//!
//! Written from bbolt 1.3's documented page layout (`page.go`, `db.go`, `bucket.go`),
//! little-endian as bbolt writes it on every platform etcd supports:
//!
//! - The file is a sequence of pages of `page_size` bytes; page `n` starts at
//!   `n * page_size` and a page with `overflow` more pages runs over them.
//! - A page header is 16 bytes: id (u64), flags (u16: 0x01 branch, 0x02 leaf, 0x04 meta,
//!   0x10 freelist), count (u16), overflow (u32).
//! - Pages 0 and 1 are meta pages; after the header: magic 0xED0CDAED (u32), version 2
//!   (u32), page size (u32), flags (u32), the root bucket (root page id u64, sequence
//!   u64), freelist page (u64), high water page id (u64), transaction id (u64), and an
//!   FNV-1a 64 checksum of the 56 bytes before it. The valid one with the higher
//!   transaction id is current.
//! - A branch page holds `count` elements of 16 bytes (key position u32, key size u32,
//!   child page u64), a leaf page `count` elements of 16 bytes (flags u32, position u32,
//!   key size u32, value size u32); positions count from the element itself. A leaf
//!   element with flag 0x01 is a nested bucket: its value is a bucket header (root page
//!   u64, sequence u64), followed, when the root is 0, by the bucket's one leaf page
//!   inline.
//!
//! Pages are read as needed with positioned reads, so memory stays small whatever the
//! file's size. Every offset is checked: a truncated or damaged file is an error.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::error::{Error, Result};

const MAGIC: u32 = 0xED0C_DAED;
const VERSION: u32 = 2;
const PAGE_HEADER: usize = 16;
const ELEMENT: usize = 16;
const BRANCH_PAGE: u16 = 0x01;
const LEAF_PAGE: u16 = 0x02;
const BUCKET_LEAF: u32 = 0x01;
/// B+tree depth bound: bbolt's trees are a few levels deep; a cycle in a damaged file
/// must not recurse forever.
const MAX_DEPTH: usize = 64;

fn corrupt(detail: impl Into<String>) -> Error {
    Error::Corrupt {
        what: "etcd snapshot (bbolt file)",
        detail: detail.into(),
    }
}

fn u16_at(b: &[u8], at: usize) -> Result<u16> {
    let bytes = b.get(at..at + 2).ok_or_else(|| corrupt("short page"))?;
    Ok(u16::from_le_bytes([bytes[0], bytes[1]]))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32> {
    let bytes: [u8; 4] = b
        .get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| corrupt("short page"))?;
    Ok(u32::from_le_bytes(bytes))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64> {
    let bytes: [u8; 8] = b
        .get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| corrupt("short page"))?;
    Ok(u64::from_le_bytes(bytes))
}

/// What [`BoltFile::for_each`] calls with each entry: (key, value, is a nested bucket).
pub type Visit<'a> = dyn FnMut(&[u8], &[u8], bool) -> Result<()> + 'a;

/// Whether `head` (the file's first bytes) looks like a bbolt file.
pub fn is_bbolt(head: &[u8]) -> bool {
    u32_at(head, PAGE_HEADER).is_ok_and(|m| m == MAGIC)
}

/// An open bbolt file.
pub struct BoltFile {
    file: File,
    len: u64,
    page_size: usize,
    /// The root bucket's page.
    root: u64,
}

/// A bucket: a B+tree rooted at a page, or one inline leaf page.
#[derive(Debug, Clone)]
pub enum Bucket {
    /// Rooted at a page of the file.
    Paged(u64),
    /// Its single leaf page, stored in the parent's value.
    Inline(Vec<u8>),
}

impl BoltFile {
    /// Open the file at `path` and read its current meta page.
    pub fn open(path: &std::path::Path) -> Result<Self> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        let mut head = vec![0u8; PAGE_HEADER + 64];
        file.read_exact_at(&mut head, 0)
            .map_err(|e| corrupt(format!("reading the first meta page: {e}")))?;
        if !is_bbolt(&head) {
            return Err(corrupt("no bbolt magic number"));
        }
        let page_size = u32_at(&head, PAGE_HEADER + 8)? as usize;
        if !(512..=1 << 20).contains(&page_size) {
            return Err(corrupt(format!("page size {page_size}")));
        }
        let mut best: Option<(u64, u64)> = None; // (txid, root)
        for page in 0..2u64 {
            let mut bytes = vec![0u8; PAGE_HEADER + 64];
            if file.read_exact_at(&mut bytes, page * page_size as u64).is_err() {
                continue;
            }
            if let Some((txid, root)) = valid_meta(&bytes[PAGE_HEADER..])?
                && best.is_none_or(|(t, _)| txid > t)
            {
                best = Some((txid, root));
            }
        }
        let (_, root) = best.ok_or_else(|| corrupt("neither meta page is valid"))?;
        Ok(Self {
            file,
            len,
            page_size,
            root,
        })
    }

    /// The root bucket (whose entries are the top-level buckets).
    pub fn root(&self) -> Bucket {
        Bucket::Paged(self.root)
    }

    /// The nested bucket `name` of `parent`, if there is one.
    pub fn bucket(&self, parent: &Bucket, name: &[u8]) -> Result<Option<Bucket>> {
        let mut found = None;
        self.for_each(parent, &mut |key, value, is_bucket| {
            if is_bucket && key == name {
                found = Some(bucket_of(value)?);
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// Every entry of `bucket` in key order: (key, value, is a nested bucket).
    pub fn for_each(&self, bucket: &Bucket, f: &mut Visit<'_>) -> Result<()> {
        match bucket {
            Bucket::Inline(page) => leaf_entries(page, f),
            Bucket::Paged(root) => self.walk(*root, 0, f),
        }
    }

    fn walk(&self, id: u64, depth: usize, f: &mut Visit<'_>) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(corrupt("tree deeper than any bbolt file"));
        }
        let page = self.page(id)?;
        let flags = u16_at(&page, 8)?;
        if flags & LEAF_PAGE != 0 {
            return leaf_entries(&page, f);
        }
        if flags & BRANCH_PAGE == 0 {
            return Err(corrupt(format!(
                "page {id} is neither a branch nor a leaf (flags {flags:#x})"
            )));
        }
        let count = u16_at(&page, 10)? as usize;
        for i in 0..count {
            let child = u64_at(&page, PAGE_HEADER + i * ELEMENT + 8)?;
            self.walk(child, depth + 1, f)?;
        }
        Ok(())
    }

    /// Page `id` with its overflow pages.
    fn page(&self, id: u64) -> Result<Vec<u8>> {
        let at = id
            .checked_mul(self.page_size as u64)
            .filter(|at| at + self.page_size as u64 <= self.len)
            .ok_or_else(|| corrupt(format!("page {id} is beyond the end of the file")))?;
        let mut page = vec![0u8; self.page_size];
        self.file.read_exact_at(&mut page, at)?;
        let overflow = u32_at(&page, 12)? as u64;
        if overflow > 0 {
            let total = (overflow + 1) * self.page_size as u64;
            if at + total > self.len {
                return Err(corrupt(format!("page {id} overflows the file")));
            }
            page.resize(total as usize, 0);
            self.file
                .read_exact_at(&mut page[self.page_size..], at + self.page_size as u64)?;
        }
        Ok(page)
    }
}

/// The (transaction id, root page) of a meta page's body, if it is valid.
fn valid_meta(meta: &[u8]) -> Result<Option<(u64, u64)>> {
    if u32_at(meta, 0)? != MAGIC || u32_at(meta, 4)? != VERSION {
        return Ok(None);
    }
    let checksum = u64_at(meta, 56)?;
    let hash = fnv64a(meta.get(..56).ok_or_else(|| corrupt("short meta page"))?);
    if checksum != 0 && checksum != hash {
        return Ok(None);
    }
    Ok(Some((u64_at(meta, 48)?, u64_at(meta, 16)?)))
}

/// FNV-1a, 64 bits: the checksum of a meta page.
pub(crate) fn fnv64a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A nested bucket from its value in the parent.
fn bucket_of(value: &[u8]) -> Result<Bucket> {
    let root = u64_at(value, 0)?;
    if root != 0 {
        return Ok(Bucket::Paged(root));
    }
    value
        .get(16..)
        .map(|page| Bucket::Inline(page.to_vec()))
        .ok_or_else(|| corrupt("inline bucket without its page"))
}

/// The entries of one leaf page.
fn leaf_entries(page: &[u8], f: &mut Visit<'_>) -> Result<()> {
    let flags = u16_at(page, 8)?;
    let count = u16_at(page, 10)? as usize;
    if count > 0 && flags & LEAF_PAGE == 0 {
        return Err(corrupt(format!("expected a leaf page (flags {flags:#x})")));
    }
    for i in 0..count {
        let element = PAGE_HEADER + i * ELEMENT;
        let kind = u32_at(page, element)?;
        let pos = u32_at(page, element + 4)? as usize;
        let key_len = u32_at(page, element + 8)? as usize;
        let value_len = u32_at(page, element + 12)? as usize;
        let key_at = element + pos;
        let key = page
            .get(key_at..key_at + key_len)
            .ok_or_else(|| corrupt("key beyond its page"))?;
        let value = page
            .get(key_at + key_len..key_at + key_len + value_len)
            .ok_or_else(|| corrupt("value beyond its page"))?;
        f(key, value, kind & BUCKET_LEAF != 0)?;
    }
    Ok(())
}
