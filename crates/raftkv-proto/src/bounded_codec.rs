//! The gRPC codec of every generated service: tonic-prost's, except that transactions
//! (`TxnRequest`, `TxnResponse`) are decoded by `txn_decode.rs`, which accepts the 128
//! levels etcd does where prost stops at about 50.
//!
//! A request nested deeper than [`MAX_TXN_NESTING`] levels is refused with etcd's answer
//! to it (`InvalidArgument`, "too many operations in txn request": in etcd every level
//! spends an operation of `--max-txn-ops`); an answer nested that deep (from a hostile
//! server) with `Internal`; malformed bytes with `Internal`, as tonic-prost answers.

use std::any::{Any, TypeId};
use std::marker::PhantomData;

use prost::Message;
use prost::bytes::Buf;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::etcdserverpb::{TxnRequest, TxnResponse};
use crate::status::text;
use crate::txn_decode::{self, MAX_TXN_NESTING, TxnDecodeError};

/// prost's codec with the transaction nesting bound (see the module doc).
#[derive(Debug, Clone)]
pub struct BoundedCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for BoundedCodec<T, U> {
    fn default() -> Self {
        Self { _types: PhantomData }
    }
}

impl<T, U> Codec for BoundedCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = BoundedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        BoundedDecoder(PhantomData)
    }
}

/// Encodes `T` with prost.
#[derive(Debug)]
pub struct ProstEncoder<T>(PhantomData<T>);

impl<T: Message> Encoder for ProstEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        // An `EncodeBuf` grows as needed: prost's only error (too little room) cannot occur.
        item.encode(buf)
            .map_err(|e| Status::internal(format!("encoding a message: {e}")))
    }
}

/// Decodes `U` with prost, or with `txn_decode.rs` for a transaction.
#[derive(Debug)]
pub struct BoundedDecoder<U>(PhantomData<U>);

impl<U: Message + Default + 'static> Decoder for BoundedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let is = |t: TypeId| TypeId::of::<U>() == t;
        if !is(TypeId::of::<TxnRequest>()) && !is(TypeId::of::<TxnResponse>()) {
            // As tonic-prost: a protobuf fault is `Internal` (gRPC's status code guide).
            return U::decode(buf)
                .map(Some)
                .map_err(|e| Status::internal(e.to_string()));
        }
        let bytes = buf.copy_to_bytes(buf.remaining());
        let decoded: Box<dyn Any> = if is(TypeId::of::<TxnRequest>()) {
            Box::new(txn_decode::txn_request(&bytes).map_err(|e| refusal(e, true))?)
        } else {
            Box::new(txn_decode::txn_response(&bytes).map_err(|e| refusal(e, false))?)
        };
        match decoded.downcast::<U>() {
            Ok(message) => Ok(Some(*message)),
            Err(_) => Err(Status::internal("transaction decoder: type mismatch")),
        }
    }
}

/// The status for a transaction that did not decode: etcd's answer to one nested too
/// deep (a request), or `Internal`.
fn refusal(e: TxnDecodeError, request: bool) -> Status {
    match e {
        TxnDecodeError::TooDeep if request => Status::invalid_argument(text::TOO_MANY_OPS),
        TxnDecodeError::TooDeep => Status::internal(format!(
            "a transaction answer nested deeper than {MAX_TXN_NESTING} levels"
        )),
        malformed => Status::internal(malformed.to_string()),
    }
}
