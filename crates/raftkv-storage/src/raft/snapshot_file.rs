//! The snapshot file format (version [`crate::SNAPSHOT_FORMAT_VERSION`]): `"RAFTKVSN"`
//! (8 bytes), schema version (u32 BE), then frames, each a u32 BE length and a bincode
//! [`Frame`]: one `Header`, any number of `Pairs` (raw tree key/value pairs, at most
//! ~256 KiB a frame), one `EndCrc32` with the pair count and the CRC-32 (crc32fast) of all
//! frames before it. [`FrameWriter`] writes it, [`FrameReader`] reads it back and refuses
//! another magic, schema version, an oversized frame or a checksum mismatch. What goes
//! into the frames, and when, is [`crate::raft::snapshot`]'s business.
//!
//! Files written before 2026-12-06 end with `End` and an FNV-1a 64 checksum instead; the
//! reader still checks those, because a member keeps its current snapshot file until it
//! builds the next one and sends it to followers as it is. That is the only reason the
//! small FNV-1a hasher below stays, and it runs on format 1 files only (format 2 came
//! after the CRC-32 end, so its files never end the old way).

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
    /// The end of a file written before 2026-12-06: FNV-1a 64 of the frames before it.
    End {
        pairs: u64,
        checksum: u64,
    },
    /// The end: the pair count and the CRC-32 of the frames before it.
    EndCrc32 {
        pairs: u64,
        crc32: u32,
    },
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
    crc32: crc32fast::Hasher,
}

impl FrameWriter {
    pub(crate) fn create(path: &Path) -> Result<Self> {
        let mut out = BufWriter::new(File::create(path)?);
        out.write_all(MAGIC)?;
        out.write_all(&crate::SNAPSHOT_FORMAT_VERSION.to_be_bytes())?;
        Ok(Self {
            out,
            pairs: 0,
            crc32: crc32fast::Hasher::new(),
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
        self.crc32.update(&len);
        self.crc32.update(&bytes);
        self.out.write_all(&len)?;
        self.out.write_all(&bytes)?;
        Ok(())
    }

    pub(crate) fn finish(mut self) -> Result<()> {
        let end = Frame::EndCrc32 {
            pairs: self.pairs,
            crc32: self.crc32.clone().finalize(),
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
    crc32: crc32fast::Hasher,
    /// For files written before 2026-12-06 (see the module doc): only format 1 files can
    /// end that way, so only theirs pay for the byte-at-a-time hash.
    legacy_fnv: Option<Fnv64>,
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
        if !(1..=crate::SNAPSHOT_FORMAT_VERSION).contains(&found) {
            return Err(Error::Schema {
                what: "snapshot",
                found,
                supported: crate::SNAPSHOT_FORMAT_VERSION,
            });
        }
        Ok(Self {
            input,
            crc32: crc32fast::Hasher::new(),
            legacy_fnv: (found == 1).then(Fnv64::new),
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
            Frame::End { pairs, checksum } => match &self.legacy_fnv {
                Some(fnv) => self.check_end(*pairs, *checksum, fnv.0)?,
                None => {
                    return Err(Error::Corrupt {
                        what: "snapshot",
                        detail: "an old-style end frame in a format 2 file".into(),
                    });
                }
            },
            Frame::EndCrc32 { pairs, crc32 } => {
                let read = self.crc32.clone().finalize();
                self.check_end(*pairs, u64::from(*crc32), u64::from(read))?
            }
            Frame::Pairs(p) => self.pairs += p.len() as u64,
            Frame::Header(_) => {}
        }
        self.crc32.update(&raw);
        if let Some(fnv) = &mut self.legacy_fnv {
            fnv.update(&raw);
        }
        Ok((frame, raw))
    }

    /// The end frame's verdict: the recorded checksum and pair count against those read.
    fn check_end(&self, pairs: u64, recorded: u64, read: u64) -> Result<()> {
        if recorded != read || pairs != self.pairs {
            return Err(Error::Corrupt {
                what: "snapshot",
                detail: format!(
                    "checksum/count mismatch: {recorded:x}/{pairs} recorded, {read:x}/{} read",
                    self.pairs
                ),
            });
        }
        Ok(())
    }
}

/// FNV-1a, 64 bit: the checksum of snapshot files written before 2026-12-06.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Frame {
        Frame::Header(SnapshotHeader {
            meta: SnapshotMetaOf::default(),
            revision: 7,
            compact_revision: 0,
        })
    }

    /// Every frame of a file, read back through the reader's checks.
    fn read_all(bytes: &[u8]) -> Result<Vec<Frame>> {
        let mut reader = FrameReader::open(bytes)?;
        let mut frames = Vec::new();
        loop {
            let (frame, _) = reader.next()?;
            let end = matches!(frame, Frame::End { .. } | Frame::EndCrc32 { .. });
            frames.push(frame);
            if end {
                return Ok(frames);
            }
        }
    }

    fn written() -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.snap");
        let mut writer = FrameWriter::create(&path).unwrap();
        writer.frame(&header()).unwrap();
        writer
            .pairs(vec![
                (b"k".to_vec(), b"v".to_vec()),
                (b"k2".to_vec(), vec![0; 300]),
            ])
            .unwrap();
        writer.finish().unwrap();
        std::fs::read(&path).unwrap()
    }

    #[test]
    fn a_written_file_reads_back_and_ends_with_its_crc32() {
        let frames = read_all(&written()).unwrap();
        assert!(
            matches!(frames.last(), Some(Frame::EndCrc32 { pairs: 2, .. })),
            "{frames:?}"
        );
    }

    #[test]
    fn a_flipped_byte_is_a_checksum_mismatch() {
        let mut bytes = written();
        // A byte of the second pair's value, well inside the Pairs frame.
        let at = bytes.len() - 100;
        bytes[at] ^= 0x40;
        let error = read_all(&bytes).unwrap_err().to_string();
        assert!(error.contains("checksum/count mismatch"), "{error}");
    }

    #[test]
    fn a_file_of_the_fnv_era_still_reads_and_is_still_checked() {
        // Frames as the builds before 2026-12-06 wrote them: FNV-1a over the same bytes.
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&1u32.to_be_bytes());
        let mut fnv = Fnv64::new();
        for frame in [header(), Frame::Pairs(vec![(b"a".to_vec(), b"1".to_vec())])] {
            let encoded = codec::encode(&frame).unwrap();
            let len = (encoded.len() as u32).to_be_bytes();
            fnv.update(&len);
            fnv.update(&encoded);
            bytes.extend_from_slice(&len);
            bytes.extend_from_slice(&encoded);
        }
        let end = |checksum| codec::encode(&Frame::End { pairs: 1, checksum }).unwrap();
        let mut good = bytes.clone();
        let encoded = end(fnv.0);
        good.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
        good.extend_from_slice(&encoded);
        assert!(matches!(
            read_all(&good).unwrap().last(),
            Some(Frame::End { pairs: 1, .. })
        ));
        let encoded = end(fnv.0 ^ 1);
        let mut bad = bytes.clone();
        bad.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
        bad.extend_from_slice(&encoded);
        assert!(read_all(&bad).is_err());

        // Format 2 files were never written with the FNV end (the reader does not hash
        // them that way): one that ends so is refused, even with the right checksum.
        let mut format2 = good;
        format2[8..12].copy_from_slice(&2u32.to_be_bytes());
        let error = read_all(&format2).unwrap_err().to_string();
        assert!(error.contains("old-style end frame"), "{error}");
    }
}
