//! Decoding transactions (`TxnRequest`, `TxnResponse`) as deep as etcd accepts them.
//!
//! etcd accepts transactions nested as deep as `--max-txn-ops` allows (each level spends
//! an operation), 128 levels by default. prost stops at 100 nested messages, about 50
//! transactions (a transaction and its operation are one message each), and its limit
//! is a compile-time constant that also guards every other message (against nested
//! groups in unknown fields, for one). So prost keeps its limit, and the transaction
//! levels are decoded here: this walks `TxnRequest` / `RequestOp` (and `TxnResponse` /
//! `ResponseOp`) by hand, refuses a transaction nested deeper than [`MAX_TXN_NESTING`]
//! before descending into it, and hands every other message inside (compares, the
//! range, put and delete requests and answers, headers) to prost, each with its own full
//! recursion budget. The result is what prost would decode: the same fields, the same
//! merging of a repeated oneof or optional message, unknown fields skipped (nested
//! groups bounded as prost bounds them), and an error where prost gives one.

use prost::Message;
use prost::bytes::Buf;

use crate::etcdserverpb::{RequestOp, ResponseOp, TxnRequest, TxnResponse, request_op, response_op};
pub use raftkv_core::kv::MAX_TXN_NESTING;

/// Why transaction bytes were not decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxnDecodeError {
    /// Nested deeper than [`MAX_TXN_NESTING`] levels.
    #[error("transaction nested deeper than {MAX_TXN_NESTING} levels")]
    TooDeep,
    /// Not a valid protobuf encoding of the message (prost's text, or ours alike).
    #[error("failed to decode Protobuf message: {0}")]
    Malformed(String),
}

/// prost's nested-group bound when skipping unknown fields.
const MAX_GROUP_NESTING: usize = 100;

const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LENGTH_DELIMITED: u64 = 2;
const START_GROUP: u64 = 3;
const FIXED32: u64 = 5;

/// Decode a `TxnRequest`.
pub fn txn_request(bytes: &[u8]) -> Result<TxnRequest, TxnDecodeError> {
    let mut txn = TxnRequest::default();
    merge_txn_request(&mut txn, bytes, 1)?;
    Ok(txn)
}

/// Decode a `TxnResponse`.
pub fn txn_response(bytes: &[u8]) -> Result<TxnResponse, TxnDecodeError> {
    let mut txn = TxnResponse::default();
    merge_txn_response(&mut txn, bytes, 1)?;
    Ok(txn)
}

fn merge_txn_request(txn: &mut TxnRequest, bytes: &[u8], level: usize) -> Result<(), TxnDecodeError> {
    if level > MAX_TXN_NESTING {
        return Err(TxnDecodeError::TooDeep);
    }
    let mut fields = Fields(bytes);
    while let Some((field, wire_type)) = fields.key()? {
        match field {
            1 => txn.compare.push(leaf(fields.message(wire_type)?)?),
            2 | 3 => {
                let mut op = RequestOp::default();
                merge_request_op(&mut op, fields.message(wire_type)?, level)?;
                if field == 2 {
                    &mut txn.success
                } else {
                    &mut txn.failure
                }
                .push(op);
            }
            _ => fields.skip(field, wire_type)?,
        }
    }
    Ok(())
}

fn merge_txn_response(txn: &mut TxnResponse, bytes: &[u8], level: usize) -> Result<(), TxnDecodeError> {
    if level > MAX_TXN_NESTING {
        return Err(TxnDecodeError::TooDeep);
    }
    let mut fields = Fields(bytes);
    while let Some((field, wire_type)) = fields.key()? {
        match field {
            1 => {
                let inner = fields.message(wire_type)?;
                let header = txn.header.get_or_insert_with(Default::default);
                merge_leaf(header, inner)?;
            }
            2 => txn.succeeded = fields.varint(wire_type)? != 0,
            3 => {
                let mut op = ResponseOp::default();
                merge_response_op(&mut op, fields.message(wire_type)?, level)?;
                txn.responses.push(op);
            }
            _ => fields.skip(field, wire_type)?,
        }
    }
    Ok(())
}

/// The merge of one transaction operation (`RequestOp` or `ResponseOp`): a oneof of three
/// leaf messages and a nested transaction. A member seen again merges into the one held;
/// another member replaces it (protobuf's rule, as prost applies it).
macro_rules! merge_op {
    ($name:ident, $op:ty, $oneof:ident, $kind:path, $range:ident, $put:ident, $delete:ident, $txn:ident, $merge_txn:ident) => {
        fn $name(op: &mut $op, bytes: &[u8], level: usize) -> Result<(), TxnDecodeError> {
            use $kind as Kind;
            let mut fields = Fields(bytes);
            while let Some((field, wire_type)) = fields.key()? {
                let inner = match field {
                    1..=4 => fields.message(wire_type)?,
                    _ => {
                        fields.skip(field, wire_type)?;
                        continue;
                    }
                };
                op.$oneof = Some(match (field, op.$oneof.take()) {
                    (1, Some(Kind::$range(mut m))) => Kind::$range(merge_leaf(&mut m, inner).map(|()| m)?),
                    (1, _) => Kind::$range(leaf(inner)?),
                    (2, Some(Kind::$put(mut m))) => Kind::$put(merge_leaf(&mut m, inner).map(|()| m)?),
                    (2, _) => Kind::$put(leaf(inner)?),
                    (3, Some(Kind::$delete(mut m))) => Kind::$delete(merge_leaf(&mut m, inner).map(|()| m)?),
                    (3, _) => Kind::$delete(leaf(inner)?),
                    (_, held) => {
                        let mut txn = match held {
                            Some(Kind::$txn(t)) => t,
                            _ => Default::default(),
                        };
                        $merge_txn(&mut txn, inner, level + 1)?;
                        Kind::$txn(txn)
                    }
                });
            }
            Ok(())
        }
    };
}

merge_op!(
    merge_request_op,
    RequestOp,
    request,
    request_op::Request,
    RequestRange,
    RequestPut,
    RequestDeleteRange,
    RequestTxn,
    merge_txn_request
);
merge_op!(
    merge_response_op,
    ResponseOp,
    response,
    response_op::Response,
    ResponseRange,
    ResponsePut,
    ResponseDeleteRange,
    ResponseTxn,
    merge_txn_response
);

/// A message without transactions inside, decoded by prost.
fn leaf<M: Message + Default>(bytes: &[u8]) -> Result<M, TxnDecodeError> {
    M::decode(bytes).map_err(malformed)
}

fn merge_leaf<M: Message>(held: &mut M, bytes: &[u8]) -> Result<(), TxnDecodeError> {
    held.merge(bytes).map_err(malformed)
}

fn malformed(e: prost::DecodeError) -> TxnDecodeError {
    // prost's text starts with the same prefix our `Display` adds.
    let text = e.to_string();
    let detail = text
        .strip_prefix("failed to decode Protobuf message: ")
        .unwrap_or(&text);
    TxnDecodeError::Malformed(detail.to_string())
}

fn fault(what: &str) -> TxnDecodeError {
    TxnDecodeError::Malformed(what.to_string())
}

/// The fields of one message, read in order.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    /// The next field's (number, wire type), or `None` at the end.
    fn key(&mut self) -> Result<Option<(u64, u64)>, TxnDecodeError> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let key = self.raw_varint()?;
        if key > u64::from(u32::MAX) {
            return Err(fault("invalid key value"));
        }
        let (field, wire_type) = (key >> 3, key & 7);
        if wire_type > FIXED32 {
            return Err(fault(&format!("invalid wire type value: {wire_type}")));
        }
        if field == 0 {
            return Err(fault("invalid tag value: 0"));
        }
        Ok(Some((field, wire_type)))
    }

    fn raw_varint(&mut self) -> Result<u64, TxnDecodeError> {
        prost::encoding::decode_varint(&mut self.0).map_err(malformed)
    }

    /// A varint field's value.
    fn varint(&mut self, wire_type: u64) -> Result<u64, TxnDecodeError> {
        expect(wire_type, VARINT)?;
        self.raw_varint()
    }

    /// A length-delimited field's bytes.
    fn message(&mut self, wire_type: u64) -> Result<&'a [u8], TxnDecodeError> {
        expect(wire_type, LENGTH_DELIMITED)?;
        let len = self.raw_varint()?;
        let len = usize::try_from(len)
            .ok()
            .filter(|l| *l <= self.0.len())
            .ok_or_else(|| fault("buffer underflow"))?;
        let (inner, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(inner)
    }

    /// Skip an unknown field `field` (a group with everything in it, its nested groups
    /// bounded and each closed by its own field number, as prost checks).
    fn skip(&mut self, field: u64, wire_type: u64) -> Result<(), TxnDecodeError> {
        let mut open_groups: Vec<u64> = Vec::new();
        let (mut field, mut wire_type) = (field, wire_type);
        loop {
            match wire_type {
                VARINT => {
                    self.raw_varint()?;
                }
                FIXED64 | FIXED32 => {
                    let n = if wire_type == FIXED64 { 8 } else { 4 };
                    if self.0.remaining() < n {
                        return Err(fault("buffer underflow"));
                    }
                    self.0.advance(n);
                }
                LENGTH_DELIMITED => {
                    self.message(wire_type)?;
                }
                START_GROUP => {
                    if open_groups.len() >= MAX_GROUP_NESTING {
                        return Err(fault("recursion limit reached"));
                    }
                    open_groups.push(field);
                }
                _ => {
                    // END_GROUP: it must close the innermost open group.
                    if open_groups.pop() != Some(field) {
                        return Err(fault("unexpected end group tag"));
                    }
                }
            }
            if open_groups.is_empty() {
                return Ok(());
            }
            match self.key()? {
                Some(next) => (field, wire_type) = next,
                None => return Err(fault("buffer underflow")),
            }
        }
    }
}

fn expect(wire_type: u64, expected: u64) -> Result<(), TxnDecodeError> {
    if wire_type == expected {
        Ok(())
    } else {
        Err(fault(&format!(
            "invalid wire type: {wire_type} (expected {expected})"
        )))
    }
}
