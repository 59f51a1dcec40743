//! The one binary encoding raftkv writes to disk and sends inside peer messages: bincode 2
//! (standard config) over serde. Kept in one place so every crate encodes alike.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Encoding or decoding failed (corrupt bytes, or a value bincode cannot represent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("codec: {0}")]
pub struct CodecError(pub String);

/// Encode `value`.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(|e| CodecError(e.to_string()))
}

/// Decode a `T` that fills `bytes` exactly.
///
/// bincode allocates a string's claimed length before reading it, so a few hostile bytes
/// claiming 2^60 would abort the process. A byte limit makes it refuse such a claim
/// first. The limit counts values at their size in memory (every integer or length 8
/// bytes, every enum tag 4, however few bytes encode them), so valid data may count up
/// to 8 times its encoded size: the limit is 16 times the input's size class (bincode's
/// limit is a compile-time constant). Nothing raftkv encodes is larger than a peer
/// message or a snapshot frame (64 MiB); bigger input is refused outright.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * KIB;
    const AMPLIFICATION: usize = 16;
    match bytes.len() {
        n if n <= 64 * KIB => decode_limited::<T, { AMPLIFICATION * 64 * KIB }>(bytes),
        n if n <= MIB => decode_limited::<T, { AMPLIFICATION * MIB }>(bytes),
        n if n <= 16 * MIB => decode_limited::<T, { AMPLIFICATION * 16 * MIB }>(bytes),
        n if n <= 128 * MIB => decode_limited::<T, { AMPLIFICATION * 128 * MIB }>(bytes),
        n => Err(CodecError(format!(
            "{n} bytes is more than any encoded value may be"
        ))),
    }
}

fn decode_limited<T: DeserializeOwned, const LIMIT: usize>(bytes: &[u8]) -> Result<T, CodecError> {
    let config = bincode::config::standard().with_limit::<LIMIT>();
    let (value, read) =
        bincode::serde::decode_from_slice(bytes, config).map_err(|e| CodecError(e.to_string()))?;
    if read != bytes.len() {
        return Err(CodecError(format!("{} trailing bytes", bytes.len() - read)));
    }
    Ok(value)
}

/// The encoded size of `value`, without allocating.
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> Result<usize, CodecError> {
    let mut size = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(value, &mut size, bincode::config::standard())
        .map_err(|e| CodecError(e.to_string()))?;
    Ok(size.bytes_written)
}

/// Bounds on how deep the recursive values nest while they are decoded: transactions in
/// transactions (requests and answers) and batches of commands or answers. Without them a
/// few kilobytes of hostile bytes (a peer message, a corrupt log entry) nest deep enough
/// to overflow the decoding thread's stack, which aborts the process.
pub(crate) mod nesting {
    use std::cell::Cell;

    use serde::de::Error;
    use serde::{Deserialize, Deserializer};

    /// How deep transactions may nest: as deep as etcd's default `--max-txn-ops` (128)
    /// lets a transaction nest (each level spends one operation; an empty innermost level
    /// spends none). The gRPC codec refuses deeper ones before decoding them, and this
    /// bound keeps a hostile peer's bincode message from exhausting the stack while it is
    /// decoded. (`crate::kv` re-exports it.)
    pub const MAX_TXN_NESTING: usize = 129;

    /// How deep batches and caller wrappers (`Command::AsUser`) may nest together. The
    /// proposer never nests batches (a forwarded batch is refused) and a wrapper holds one
    /// request, so a batch of wrapped requests (2 levels) is the deepest made.
    const MAX_BATCH_NESTING: usize = 2;

    #[derive(Clone, Copy)]
    enum Shape {
        TxnRequest,
        TxnResponse,
        Batch,
    }

    impl Shape {
        fn limit(self) -> usize {
            match self {
                Shape::TxnRequest | Shape::TxnResponse => MAX_TXN_NESTING,
                Shape::Batch => MAX_BATCH_NESTING,
            }
        }

        fn what(self) -> &'static str {
            match self {
                Shape::TxnRequest => "transactions",
                Shape::TxnResponse => "transaction answers",
                Shape::Batch => "batches",
            }
        }
    }

    thread_local! {
        /// Levels of each shape being decoded on this thread.
        static DEPTH: [Cell<usize>; 3] = const { [Cell::new(0), Cell::new(0), Cell::new(0)] };
    }

    /// One level entered; leaving it (however decoding ends) restores the depth.
    struct Level(Shape);

    impl Level {
        fn enter(shape: Shape) -> (Self, usize) {
            let depth = DEPTH.with(|d| {
                let cell = &d[shape as usize];
                cell.set(cell.get() + 1);
                cell.get()
            });
            (Level(shape), depth)
        }
    }

    impl Drop for Level {
        fn drop(&mut self) {
            DEPTH.with(|d| {
                let cell = &d[self.0 as usize];
                cell.set(cell.get().saturating_sub(1));
            });
        }
    }

    fn guarded<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D, shape: Shape) -> Result<T, D::Error> {
        let (_level, depth) = Level::enter(shape);
        if depth > shape.limit() {
            return Err(D::Error::custom(format!(
                "{} nested deeper than {} levels",
                shape.what(),
                shape.limit()
            )));
        }
        T::deserialize(d)
    }

    // Generic in what they decode, so this module names none of the types that use it
    // (`command.rs` and `kv.rs` point their serde attributes here).

    /// A transaction request one level deeper.
    pub(crate) fn txn_request<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<T, D::Error> {
        guarded(d, Shape::TxnRequest)
    }

    /// A transaction answer one level deeper.
    pub(crate) fn txn_response<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<T, D::Error> {
        guarded(d, Shape::TxnResponse)
    }

    /// A batch (of commands or answers) or a wrapped command one level deeper.
    pub(crate) fn batch<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<T, D::Error> {
        guarded(d, Shape::Batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_strings_encode_as_a_sequence_of_u8_did() {
        // Keys and values are `#[serde(with = "serde_bytes")]` (decoded as one slice,
        // not byte by byte); on disk and between peers they must stay what the
        // sequence encoding wrote, or older data directories and peers would not read.
        for bytes in [&b""[..], b"k", &[7u8; 300][..], &[0xffu8; 70_000][..]] {
            let as_seq = encode(&bytes.to_vec()).unwrap();
            let as_bytes = encode(serde_bytes::Bytes::new(bytes)).unwrap();
            assert_eq!(as_seq, as_bytes);
            let back: serde_bytes::ByteBuf = decode(&as_seq).unwrap();
            assert_eq!(back.as_slice(), bytes);
        }
    }

    #[test]
    fn a_claimed_length_beyond_the_input_is_refused_before_allocating() {
        // A string claiming 2^60 bytes: varint tag 0xFD + u64 little endian.
        let mut bomb = vec![0xFD];
        bomb.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(decode::<String>(&bomb).is_err());
        let mut bytes_bomb = vec![0xFD];
        bytes_bomb.extend_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(decode::<serde_bytes_like::Buf>(&bytes_bomb).is_err());
    }

    #[test]
    fn batches_nested_too_deep_are_refused_without_overflowing_the_stack() {
        use crate::command::{Command, Response};
        // Each level: variant tag 3 (Batch), then a one-element list.
        let mut hostile = Vec::new();
        for _ in 0..100_000 {
            hostile.extend([3u8, 1]);
        }
        hostile.extend([3u8, 0]);
        let err = decode::<Command>(&hostile).unwrap_err();
        assert!(err.to_string().contains("nested deeper"), "{err}");
        assert!(decode::<Response>(&hostile).is_err());
        // What the proposer makes decodes, and the depth was restored after the refusal.
        let batch = Command::Batch(vec![Command::Batch(vec![]), Command::Batch(vec![])]);
        assert_eq!(decode::<Command>(&encode(&batch).unwrap()).unwrap(), batch);
    }

    #[test]
    fn values_made_of_small_numbers_decode_at_the_top_of_each_class() {
        // One byte on the wire, 8 counted by the limit: the worst case for valid data.
        for len in [64 * 1024 / 2, 1024 * 1024 / 2, 16 * 1024 * 1024 / 2] {
            let value: Vec<u64> = vec![1; len];
            let bytes = encode(&value).unwrap();
            assert!(bytes.len() <= 2 * len);
            assert_eq!(decode::<Vec<u64>>(&bytes).unwrap().len(), len);
        }
    }

    #[test]
    fn values_of_every_size_class_round_trip() {
        for len in [
            0,
            10,
            64 * 1024 - 16,
            64 * 1024,
            2 * 1024 * 1024,
            20 * 1024 * 1024,
        ] {
            let value = "x".repeat(len);
            let bytes = encode(&value).unwrap();
            assert_eq!(decode::<String>(&bytes).unwrap(), value, "len {len}");
        }
    }

    mod serde_bytes_like {
        /// A byte buffer decoded through `deserialize_byte_buf`, as `Vec<u8>` fields are
        /// when they use serde's byte-buffer path.
        #[derive(Debug)]
        pub struct Buf;

        impl<'de> serde::Deserialize<'de> for Buf {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = Buf;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("bytes")
                    }
                    fn visit_byte_buf<E>(self, _v: Vec<u8>) -> Result<Buf, E> {
                        Ok(Buf)
                    }
                }
                d.deserialize_byte_buf(V)
            }
        }
    }
}
