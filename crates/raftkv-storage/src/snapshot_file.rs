//! The snapshot file format (schema version [`crate::SCHEMA_VERSION`]): `"RAFTKVSN"`
//! (8 bytes), schema version (u32 BE), then frames, each a u32 BE length and a bincode
//! [`Frame`]: one `Header`, any number of `Pairs` (raw tree key/value pairs, at most
//! ~256 KiB a frame), one `End` with the pair count and an FNV-1a checksum of all frames
//! before it. [`FrameWriter`] writes it, [`FrameReader`] reads it back and refuses
//! another magic, schema version, an oversized frame or a checksum mismatch. What goes
//! into the frames, and when, is [`crate::snapshot`]'s business.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use raftkv_core::codec;
use raftkv_core::kv::Revision;

use crate::error::{Error, Result};

pub(crate) const MAGIC: &[u8; 8] = b"RAFTKVSN";
pub(crate) const MAX_FRAME_PAIR_BYTES: usize = 256 * 1024;
/// A frame longer than this is corrupt (frames are ~256 KiB plus one oversized pair).
const MAX_FRAME_LEN: usize = 64 * 1024 * 1024;

pub(crate) type SnapshotMetaOf = raftkv_core::types::SnapshotMeta;
/// Raw tree key/value pairs.
pub(crate) type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// One unit of the snapshot stream.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Frame {
    Header(SnapshotHeader),
    Pairs(Pairs),
    End { pairs: u64, checksum: u64 },
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SnapshotHeader {
    pub(crate) meta: SnapshotMetaOf,
    pub(crate) revision: Revision,
    pub(crate) compact_revision: Revision,
}

/// Writes frames and keeps the running count and checksum.
pub(crate) struct FrameWriter {
    out: BufWriter<File>,
    pairs: u64,
    checksum: Fnv64,
}

impl FrameWriter {
    pub(crate) fn create(path: &Path) -> Result<Self> {
        let mut out = BufWriter::new(File::create(path)?);
        out.write_all(MAGIC)?;
        out.write_all(&crate::SCHEMA_VERSION.to_be_bytes())?;
        Ok(Self {
            out,
            pairs: 0,
            checksum: Fnv64::new(),
        })
    }

    pub(crate) fn pairs(&mut self, pairs: Pairs) -> Result<()> {
        if pairs.is_empty() {
            return Ok(());
        }
        self.pairs += pairs.len() as u64;
        self.frame(&Frame::Pairs(pairs))
    }

    pub(crate) fn frame(&mut self, frame: &Frame) -> Result<()> {
        let bytes = codec::encode(frame)?;
        let len = (bytes.len() as u32).to_be_bytes();
        self.checksum.update(&len);
        self.checksum.update(&bytes);
        self.out.write_all(&len)?;
        self.out.write_all(&bytes)?;
        Ok(())
    }

    pub(crate) fn finish(mut self) -> Result<()> {
        let end = Frame::End {
            pairs: self.pairs,
            checksum: self.checksum.0,
        };
        self.frame(&end)?;
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(())
    }
}

/// Reads frames, checking magic, schema version and (at the end) the checksum.
pub(crate) struct FrameReader<R: Read> {
    input: R,
    checksum: Fnv64,
    pairs: u64,
}

impl<R: Read> FrameReader<R> {
    pub(crate) fn open(mut input: R) -> Result<Self> {
        let mut magic = [0u8; 8];
        input.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(Error::Corrupt {
                what: "snapshot",
                detail: "not a raftkv snapshot (bad magic)".into(),
            });
        }
        let mut version = [0u8; 4];
        input.read_exact(&mut version)?;
        let found = u32::from_be_bytes(version);
        if found != crate::SCHEMA_VERSION {
            return Err(Error::Schema {
                what: "snapshot",
                found,
                supported: crate::SCHEMA_VERSION,
            });
        }
        Ok(Self {
            input,
            checksum: Fnv64::new(),
            pairs: 0,
        })
    }

    /// The next frame with its raw bytes (length prefix included).
    pub(crate) fn next(&mut self) -> Result<(Frame, Vec<u8>)> {
        let mut len = [0u8; 4];
        self.input.read_exact(&mut len)?;
        let n = u32::from_be_bytes(len) as usize;
        if n > MAX_FRAME_LEN {
            return Err(Error::Corrupt {
                what: "snapshot",
                detail: format!("frame of {n} bytes"),
            });
        }
        let mut raw = Vec::with_capacity(4 + n);
        raw.extend_from_slice(&len);
        raw.resize(4 + n, 0);
        self.input.read_exact(&mut raw[4..])?;
        let frame: Frame = codec::decode(&raw[4..])?;
        match &frame {
            Frame::End { pairs, checksum } => {
                if *checksum != self.checksum.0 || *pairs != self.pairs {
                    return Err(Error::Corrupt {
                        what: "snapshot",
                        detail: format!(
                            "checksum/count mismatch: {checksum:x}/{pairs} recorded, {:x}/{} read",
                            self.checksum.0, self.pairs
                        ),
                    });
                }
            }
            Frame::Pairs(p) => self.pairs += p.len() as u64,
            Frame::Header(_) => {}
        }
        self.checksum.update(&raw);
        Ok((frame, raw))
    }
}

/// FNV-1a, 64 bit: catches truncation and bit rot in a snapshot; not a MAC.
struct Fnv64(u64);

impl Fnv64 {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}
