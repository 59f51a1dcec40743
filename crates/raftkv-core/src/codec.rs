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
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, read) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map_err(|e| CodecError(e.to_string()))?;
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
