//! The sans-I/O part of [`super::AuthorityFix`]: reads the client's side of an HTTP/2
//! connection frame by frame and decides, at its first header block, whether anything
//! needs repair; if so, rewrites every later header block too.
//!
//! Why every block: HPACK is stateful. The client compresses each block against a
//! dynamic table the server's decoder rebuilds from the blocks it sees. Once one block
//! reaches the server changed, the two tables could differ, so from then on every block
//! is decoded here (with the client's table) and sent on as plain literals that never
//! touch the server's table. A connection whose first block is sound is handed through
//! untouched from there on, at no cost.

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};

/// What an HTTP/2 client sends first.
pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// Largest frame payload the server takes: h2's default `SETTINGS_MAX_FRAME_SIZE`, which
/// our servers keep. A longer frame is an error the server reports itself.
pub(crate) const MAX_FRAME_PAYLOAD: usize = 16_384;
/// The HPACK table size the server allows its clients (h2's default).
const HEADER_TABLE_SIZE: usize = 4_096;
/// A header block longer than this is handed through as it is (the server applies its
/// own header-list limit): a client cannot make us hold an endless block.
const MAX_HEADER_BLOCK: usize = 1 << 20;

/// Where the reading stands.
enum Stage {
    /// Matching the client preface; `usize` bytes of it seen.
    Preface(usize),
    /// Frames, until the first header block is judged.
    Deciding,
    /// The first block needed repair: every block is re-encoded.
    Rewriting,
}

/// A header block being collected (HEADERS, then CONTINUATION until END_HEADERS).
struct PendingBlock {
    /// The frames as received, to pass on unchanged if nothing is repaired.
    raw: BytesMut,
    /// The block's fragments, without padding or priority fields.
    fragment: Vec<u8>,
    stream: u32,
    end_stream: bool,
    /// The HEADERS frame's priority fields (stream dependency and weight), if any.
    priority: Option<[u8; 5]>,
}

/// Rewrites the client-to-server byte stream of one connection. `feed` consumes what it
/// can judge; `false` from it means "hand everything through from here on".
pub(crate) struct Rewriter {
    stage: Stage,
    decoder: fluke_hpack::Decoder<'static>,
    pending: Option<PendingBlock>,
}

impl Rewriter {
    pub(crate) fn new() -> Self {
        let mut decoder = fluke_hpack::Decoder::new();
        // A client may not grow the table past what the server allows: refuse, as the
        // server would, instead of holding a bigger table.
        decoder.set_max_allowed_table_size(HEADER_TABLE_SIZE);
        Self {
            stage: Stage::Preface(0),
            decoder,
            pending: None,
        }
    }

    /// Moves what can be judged from `input` to `output` (repaired where needed).
    /// Returns `false` once the rest of the connection passes through unchanged: the
    /// caller then moves `input` as it is, and everything after it.
    pub(crate) fn feed(&mut self, input: &mut BytesMut, output: &mut BytesMut) -> bool {
        loop {
            match self.stage {
                Stage::Preface(seen) => {
                    let take = input.len().min(PREFACE.len() - seen);
                    if input[..take] != PREFACE[seen..seen + take] {
                        // Not HTTP/2 with prior knowledge (an HTTP/1.1 probe, say).
                        return false;
                    }
                    output.extend_from_slice(&input.split_to(take));
                    if seen + take < PREFACE.len() {
                        self.stage = Stage::Preface(seen + take);
                        return true;
                    }
                    self.stage = Stage::Deciding;
                }
                Stage::Deciding | Stage::Rewriting => {
                    if input.len() < FRAME_HEADER_LEN {
                        return true;
                    }
                    let len = u32::from_be_bytes([0, input[0], input[1], input[2]]) as usize;
                    if len > MAX_FRAME_PAYLOAD {
                        return self.give_up(output);
                    }
                    if input.len() < FRAME_HEADER_LEN + len {
                        return true;
                    }
                    let frame = input.split_to(FRAME_HEADER_LEN + len);
                    if !self.frame(frame, output) {
                        return false;
                    }
                }
            }
        }
    }

    /// One whole frame. `false`: hand through from here on.
    fn frame(&mut self, frame: BytesMut, output: &mut BytesMut) -> bool {
        let (kind, flags) = (frame[3], frame[4]);
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[FRAME_HEADER_LEN..];
        match (&mut self.pending, kind) {
            (Some(block), CONTINUATION) if block.stream == stream => {
                block.fragment.extend_from_slice(payload);
                block.raw.extend_from_slice(&frame);
                if block.raw.len() > MAX_HEADER_BLOCK {
                    self.pending_to(output);
                    return false;
                }
            }
            // Anything else inside a header block is the client's protocol error: the
            // server says so.
            (Some(_), _) => {
                self.pending_to(output);
                output.extend_from_slice(&frame);
                return false;
            }
            (None, HEADERS) => {
                let Some((fragment, priority)) = headers_fragment(flags, payload) else {
                    output.extend_from_slice(&frame);
                    return false;
                };
                self.pending = Some(PendingBlock {
                    fragment: fragment.to_vec(),
                    raw: frame.clone(),
                    stream,
                    end_stream: flags & END_STREAM != 0,
                    priority,
                });
            }
            (None, _) => {
                output.extend_from_slice(&frame);
                return true;
            }
        }
        if flags & END_HEADERS == 0 {
            return true;
        }
        match self.pending.take() {
            Some(block) => self.block(block, output),
            None => true,
        }
    }

    /// A complete header block.
    fn block(&mut self, block: PendingBlock, output: &mut BytesMut) -> bool {
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let decoded = self
            .decoder
            .decode_with_cb(&block.fragment, |name: Cow<[u8]>, value: Cow<[u8]>| {
                fields.push((name.into_owned(), value.into_owned()))
            });
        if decoded.is_err() {
            // The server's decoder finds the same fault and ends the connection.
            output.extend_from_slice(&block.raw);
            return false;
        }
        let mut repaired = false;
        for (name, value) in &mut fields {
            if name.as_slice() == b":authority"
                && let Some(fixed) = repaired_authority(value)
            {
                *value = fixed;
                repaired = true;
            }
        }
        if let Stage::Deciding = self.stage {
            if !repaired {
                output.extend_from_slice(&block.raw);
                return false;
            }
            self.stage = Stage::Rewriting;
        }
        write_block(&block, &encode_literals(&fields), output);
        true
    }

    /// Hands through a block in progress and everything after it.
    fn give_up(&mut self, output: &mut BytesMut) -> bool {
        self.pending_to(output);
        false
    }

    fn pending_to(&mut self, output: &mut BytesMut) {
        if let Some(block) = self.pending.take() {
            output.extend_from_slice(&block.raw);
        }
    }
}

/// The header block fragment of a HEADERS frame's payload, and its priority fields;
/// `None` if the padding does not fit (the server reports that).
fn headers_fragment(flags: u8, payload: &[u8]) -> Option<(&[u8], Option<[u8; 5]>)> {
    let mut rest = payload;
    let mut pad = 0;
    if flags & PADDED != 0 {
        pad = *rest.first()? as usize;
        rest = &rest[1..];
    }
    let mut priority = None;
    if flags & PRIORITY != 0 {
        priority = Some(<[u8; 5]>::try_from(rest.get(..5)?).ok()?);
        rest = &rest[5..];
    }
    let end = rest.len().checked_sub(pad)?;
    Some((&rest[..end], priority))
}

/// A `:authority` the server's HTTP/2 layer would refuse, repaired: grpc-go sends the
/// endpoint as etcdctl was given it (`http://127.0.0.1:2379`) when it dials one member
/// directly, and etcd (Go) takes it as it is. `None` when the value is fine as it is or
/// cannot be repaired (then the server refuses it as before).
pub(crate) fn repaired_authority(value: &[u8]) -> Option<Vec<u8>> {
    if http::uri::Authority::try_from(value).is_ok() {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?;
    let rest = text.split_once("://").map_or(text, |(_, rest)| rest);
    let host = rest.split('/').next()?;
    let authority = http::uri::Authority::try_from(host).ok()?;
    Some(authority.as_str().as_bytes().to_vec())
}

/// The fields as HPACK literals without indexing (RFC 7541 6.2.2): the server's dynamic
/// table is never used, so nothing here has to track it.
fn encode_literals(fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        encode_string(&mut out, name);
        encode_string(&mut out, value);
    }
    out
}

/// A string literal without Huffman coding (RFC 7541 5.2).
fn encode_string(out: &mut Vec<u8>, s: &[u8]) {
    encode_integer(out, 0x00, 7, s.len());
    out.extend_from_slice(s);
}

/// An integer with an N-bit prefix (RFC 7541 5.1); `first` holds the bits above it.
fn encode_integer(out: &mut Vec<u8>, first: u8, prefix_bits: u32, mut value: usize) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// The block re-framed: HEADERS (with the original END_STREAM and priority, without
/// padding), then CONTINUATION frames, each within the server's frame size.
fn write_block(block: &PendingBlock, encoded: &[u8], output: &mut BytesMut) {
    let priority_len = if block.priority.is_some() { 5 } else { 0 };
    let first_room = MAX_FRAME_PAYLOAD - priority_len;
    let (first, mut rest) = encoded.split_at(encoded.len().min(first_room));
    let mut flags = if block.end_stream { END_STREAM } else { 0 };
    if block.priority.is_some() {
        flags |= PRIORITY;
    }
    if rest.is_empty() {
        flags |= END_HEADERS;
    }
    frame_header(output, priority_len + first.len(), HEADERS, flags, block.stream);
    if let Some(priority) = block.priority {
        output.put_slice(&priority);
    }
    output.put_slice(first);
    while !rest.is_empty() {
        let (chunk, after) = rest.split_at(rest.len().min(MAX_FRAME_PAYLOAD));
        let flags = if after.is_empty() { END_HEADERS } else { 0 };
        frame_header(output, chunk.len(), CONTINUATION, flags, block.stream);
        output.put_slice(chunk);
        rest = after;
    }
}

fn frame_header(output: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    output.put_uint(len as u64, 3);
    output.put_u8(kind);
    output.put_u8(flags);
    output.put_u32(stream);
}

/// Reads one frame from `bytes` (tests): kind, flags, stream, payload.
#[cfg(test)]
pub(crate) fn next_frame(bytes: &mut BytesMut) -> Option<(u8, u8, u32, BytesMut)> {
    if bytes.len() < FRAME_HEADER_LEN {
        return None;
    }
    let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
    let (kind, flags) = (bytes[3], bytes[4]);
    let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
    bytes::Buf::advance(bytes, FRAME_HEADER_LEN);
    Some((kind, flags, stream, bytes.split_to(len)))
}
