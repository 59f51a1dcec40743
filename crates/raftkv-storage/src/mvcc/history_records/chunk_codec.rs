//! The byte format of a history chunk's value, its three versions, and the one parser
//! every reader of chunks goes through ([`RawEvents`]: no copy of keys or values, so a
//! point read can look for one event without decoding the others).
//!
//! An event is varint(revision - previous revision), then by format:
//! - [`ChunkFormat::Plain`] (layout 3, mark 01): varint(sub), varint(key length), key;
//! - [`ChunkFormat::Kinded`] (layout 4, mark 02): varint(sub << 1 | deleted), varint(key
//!   length), key; a put's version record is a `v` record;
//! - [`ChunkFormat::Inline`] (layout 5, mark 03): as `Kinded`, and a put continues with
//!   varint(record length) and its encoded version record: the chunk is where the version
//!   lives, and the `v` family is not written.
//!
//! The first event's previous revision is the one in the chunk's key, which sorts at or
//! before the first event (a chunk compaction rewrote keeps its key).

use raftkv_core::kv::Revision;

/// How a chunk's events are encoded; the last byte of its tree key says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkFormat {
    /// Layout 3: no kinds.
    Plain,
    /// Layout 4: kinds; versions in the `v` family.
    Kinded,
    /// Layout 5: kinds, and each put's version record inline.
    Inline,
}

impl ChunkFormat {
    /// The last byte of a chunk key of this format.
    pub fn mark(self) -> u8 {
        match self {
            Self::Plain => 1,
            Self::Kinded => 2,
            Self::Inline => 3,
        }
    }

    /// The format a chunk key's last byte names.
    pub fn of_mark(mark: u8) -> Option<Self> {
        match mark {
            1 => Some(Self::Plain),
            2 => Some(Self::Kinded),
            3 => Some(Self::Inline),
            _ => None,
        }
    }

    fn kinded(self) -> bool {
        self != Self::Plain
    }
}

/// What one event of a chunk says, borrowed from the chunk's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawEvent<'a> {
    /// The main revision.
    pub revision: Revision,
    /// The order within the revision.
    pub sub: u32,
    /// `Some(deleted)` where the format records the kind.
    pub deleted: Option<bool>,
    /// The user key.
    pub key: &'a [u8],
    /// An inline put's encoded version record.
    pub record: Option<&'a [u8]>,
}

/// The events of a chunk's value, in order; `Some(None)` once the bytes are damaged (and
/// then nothing more).
pub struct RawEvents<'a> {
    format: ChunkFormat,
    revision: Revision,
    bytes: &'a [u8],
    failed: bool,
}

impl<'a> RawEvents<'a> {
    /// The events of the chunk value `bytes` whose first event is at revision `first`.
    pub fn new(format: ChunkFormat, first: Revision, bytes: &'a [u8]) -> Self {
        Self {
            format,
            revision: first,
            bytes,
            failed: false,
        }
    }

    fn parse(&mut self) -> Option<RawEvent<'a>> {
        let step = Revision::try_from(take_varint(&mut self.bytes)?).ok()?;
        self.revision = self.revision.checked_add(step)?;
        let sub_and_kind = take_varint(&mut self.bytes)?;
        let (sub, deleted) = if self.format.kinded() {
            (sub_and_kind >> 1, Some(sub_and_kind & 1 == 1))
        } else {
            (sub_and_kind, None)
        };
        let sub = u32::try_from(sub).ok()?;
        let key = take_bytes(&mut self.bytes)?;
        let record = match (self.format, deleted) {
            (ChunkFormat::Inline, Some(false)) => Some(take_bytes(&mut self.bytes)?),
            _ => None,
        };
        Some(RawEvent {
            revision: self.revision,
            sub,
            deleted,
            key,
            record,
        })
    }
}

impl<'a> Iterator for RawEvents<'a> {
    type Item = Option<RawEvent<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.bytes.is_empty() || self.failed {
            return None;
        }
        let event = self.parse();
        self.failed = event.is_none();
        Some(event)
    }
}

/// Builds one chunk's value.
#[derive(Debug)]
pub(crate) struct ChunkWriter {
    pub(crate) format: ChunkFormat,
    /// (revision, sub) of the first event.
    pub(crate) first: Option<(Revision, u32)>,
    /// Revision of the last event.
    pub(crate) previous: Revision,
    pub(crate) bytes: Vec<u8>,
}

impl Default for ChunkWriter {
    /// A chunk of today's format.
    fn default() -> Self {
        Self::new(ChunkFormat::Inline)
    }
}

impl ChunkWriter {
    pub(crate) fn new(format: ChunkFormat) -> Self {
        Self {
            format,
            first: None,
            previous: 0,
            bytes: Vec::new(),
        }
    }

    /// A writer for a chunk kept under the key (`revision`, `sub`), at or before its first
    /// event (a rewrite that drops the first events keeps its key).
    pub(crate) fn under_key(format: ChunkFormat, revision: Revision, sub: u32) -> Self {
        Self {
            format,
            first: Some((revision, sub)),
            previous: revision,
            bytes: Vec::new(),
        }
    }

    /// Add an event: `put` is the put's encoded version record (`None`: a delete). The
    /// formats without inline records drop it; the one without kinds drops the kind.
    pub(crate) fn push(&mut self, revision: Revision, sub: u32, key: &[u8], put: Option<&[u8]>) {
        if self.first.is_none() {
            self.first = Some((revision, sub));
            self.previous = revision;
        }
        put_varint(&mut self.bytes, revision.saturating_sub(self.previous) as u64);
        if self.format.kinded() {
            put_varint(&mut self.bytes, u64::from(sub) << 1 | u64::from(put.is_none()));
        } else {
            put_varint(&mut self.bytes, u64::from(sub));
        }
        put_bytes(&mut self.bytes, key);
        if let (ChunkFormat::Inline, Some(record)) = (self.format, put) {
            put_bytes(&mut self.bytes, record);
        }
        self.previous = revision;
    }

    /// Continue this chunk with the events of `other` (same format), which follow this
    /// chunk's last (the caller checks the order). Only `other`'s first event is
    /// re-encoded: its step was from its own chunk's first revision (zero), now it is
    /// from this chunk's last; the steps after it are unchanged.
    pub(crate) fn extend(&mut self, other: ChunkWriter) {
        let Some((revision, _)) = other.first else {
            return;
        };
        debug_assert_eq!(self.format, other.format);
        if self.first.is_none() {
            *self = other;
            return;
        }
        // The first event's step is zero by construction: one byte.
        debug_assert_eq!(other.bytes.first(), Some(&0));
        let rest = other.bytes.get(1..).unwrap_or_default();
        put_varint(&mut self.bytes, revision.saturating_sub(self.previous) as u64);
        self.bytes.extend_from_slice(rest);
        self.previous = other.previous;
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn take_bytes<'a>(bytes: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::try_from(take_varint(bytes)?).ok()?;
    let (taken, rest) = (bytes.get(..len)?, bytes.get(len..)?);
    *bytes = rest;
    Some(taken)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[inline]
fn take_varint(bytes: &mut &[u8]) -> Option<u64> {
    // Steps, subs and key lengths are mostly below 128: one byte.
    if let Some((&byte, rest)) = bytes.split_first()
        && byte < 0x80
    {
        *bytes = rest;
        return Some(u64::from(byte));
    }
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}
