//! The rewriter as the server sees its output: a client's byte stream (HPACK with a
//! dynamic table, padded and prioritized HEADERS, CONTINUATION frames, DATA) read in
//! small uneven pieces, then decoded by a fresh decoder as the server's would.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use super::AuthorityFix;
use super::frames::{MAX_FRAME_PAYLOAD, PREFACE, next_frame, repaired_authority};

/// Yields its bytes a few at a time, in a repeating pattern of sizes.
struct Trickle {
    data: Vec<u8>,
    at: usize,
    step: usize,
}

impl AsyncRead for Trickle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let size = [1, 7, 3, 13, 2, 4096][self.step % 6];
        self.step += 1;
        let end = (self.at + size)
            .min(self.data.len())
            .min(self.at + buf.remaining());
        buf.put_slice(&self.data[self.at..end]);
        self.at = end;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Trickle {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

async fn through_fix(data: Vec<u8>) -> Vec<u8> {
    let mut fixed = AuthorityFix::new(Trickle { data, at: 0, step: 0 });
    let mut out = Vec::new();
    fixed.read_to_end(&mut out).await.unwrap();
    out
}

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let mut header = BytesMut::new();
    header.put_uint(payload.len() as u64, 3);
    header.put_u8(kind);
    header.put_u8(flags);
    header.put_u32(stream);
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
}

/// A header list: (name, value) pairs in order.
type Fields = Vec<(Vec<u8>, Vec<u8>)>;

fn request(authority: &str, path: &str) -> Fields {
    [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("user-agent", "grpc-go/1.26.0"),
        ("te", "trailers"),
    ]
    .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
    .to_vec()
}

/// A client connection: the preface, SETTINGS, then per request a header block
/// (HEADERS padded and prioritized, its block cut into CONTINUATIONs) and a DATA frame.
fn client_stream(requests: &[Fields]) -> Vec<u8> {
    let mut encoder = fluke_hpack::Encoder::new();
    let mut out = PREFACE.to_vec();
    frame(&mut out, 0x4, 0, 0, &[]);
    for (i, fields) in requests.iter().enumerate() {
        let stream = 1 + 2 * i as u32;
        let block = encoder.encode(fields.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        let cut = block.len().min(10);
        let mut headers = vec![3u8]; // pad length
        headers.extend_from_slice(&[0, 0, 0, 0, 15]); // priority: depends on 0, weight 16
        headers.extend_from_slice(&block[..cut]);
        headers.extend_from_slice(&[0, 0, 0]);
        frame(&mut out, 0x1, 0x8 | 0x20, stream, &headers);
        for (j, piece) in block[cut..].chunks(MAX_FRAME_PAYLOAD).enumerate() {
            let last = cut + (j + 1) * MAX_FRAME_PAYLOAD >= block.len();
            frame(&mut out, 0x9, if last { 0x4 } else { 0 }, stream, piece);
        }
        if cut == block.len() {
            frame(&mut out, 0x9, 0x4, stream, &[]);
        }
        frame(&mut out, 0x0, 0x1, stream, &[0, 0, 0, 0, 2, 8, 1]);
    }
    out
}

/// What the server reads: the header lists and DATA payloads, checking each frame fits.
fn server_view(bytes: Vec<u8>) -> (Vec<Fields>, Vec<Vec<u8>>) {
    assert!(bytes.starts_with(PREFACE));
    let mut rest = BytesMut::from(&bytes[PREFACE.len()..]);
    let mut decoder = fluke_hpack::Decoder::new();
    let (mut blocks, mut data) = (Vec::new(), Vec::new());
    let mut block = Vec::new();
    while let Some((kind, flags, _stream, payload)) = next_frame(&mut rest) {
        assert!(payload.len() <= MAX_FRAME_PAYLOAD);
        match kind {
            0x1 | 0x9 => {
                let mut fragment = &payload[..];
                if kind == 0x1 && flags & 0x20 != 0 {
                    assert_eq!(&fragment[..5], &[0, 0, 0, 0, 15], "priority kept");
                    fragment = &fragment[5..];
                }
                block.extend_from_slice(fragment);
                if flags & 0x4 != 0 {
                    blocks.push(decoder.decode(&block).unwrap());
                    block.clear();
                }
            }
            0x0 => data.push(payload.to_vec()),
            _ => {}
        }
    }
    assert!(rest.is_empty());
    (blocks, data)
}

#[test]
fn a_url_authority_becomes_its_host_and_port() {
    let fixed = |v: &str| repaired_authority(v.as_bytes()).map(|f| String::from_utf8(f).unwrap());
    assert_eq!(fixed("http://127.0.0.1:2379").as_deref(), Some("127.0.0.1:2379"));
    assert_eq!(
        fixed("https://etcd-0.etcd:2379/").as_deref(),
        Some("etcd-0.etcd:2379")
    );
    assert_eq!(fixed("127.0.0.1:2379"), None, "already fine");
    assert_eq!(fixed("localhost"), None, "already fine");
    assert_eq!(
        fixed("http://bad host:1"),
        None,
        "not repairable: refused as before"
    );
}

#[tokio::test]
async fn every_block_of_a_connection_gets_the_repaired_authority() {
    let sent = [
        request("http://127.0.0.1:2379", "/etcdserverpb.Maintenance/Status"),
        request("http://127.0.0.1:2379", "/etcdserverpb.Maintenance/HashKV"),
        request("http://127.0.0.1:2379", "/etcdserverpb.Maintenance/Status"),
    ];
    let (blocks, data) = server_view(through_fix(client_stream(&sent)).await);
    assert_eq!(blocks.len(), 3);
    for (got, mut want) in blocks.into_iter().zip(sent) {
        want[3].1 = b"127.0.0.1:2379".to_vec();
        assert_eq!(got, want);
    }
    assert_eq!(data, vec![vec![0, 0, 0, 0, 2, 8, 1]; 3]);
}

#[tokio::test]
async fn a_block_that_outgrows_one_frame_is_continued() {
    let mut big = request("http://127.0.0.1:2379", "/etcdserverpb.Maintenance/Status");
    big.push((b"x-big".to_vec(), vec![b'v'; 3 * MAX_FRAME_PAYLOAD]));
    let (blocks, _) = server_view(through_fix(client_stream(std::slice::from_ref(&big))).await);
    big[3].1 = b"127.0.0.1:2379".to_vec();
    assert_eq!(blocks, vec![big]);
}

#[tokio::test]
async fn sound_connections_and_http1_pass_unchanged() {
    let sound = client_stream(&[
        request("127.0.0.1:2379", "/etcdserverpb.KV/Put"),
        request("127.0.0.1:2379", "/etcdserverpb.KV/Range"),
    ]);
    assert_eq!(through_fix(sound.clone()).await, sound);
    let http1 = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    assert_eq!(through_fix(http1.clone()).await, http1);
    let post = b"POST /v3/kv/put HTTP/1.1\r\n\r\n".to_vec();
    assert_eq!(through_fix(post.clone()).await, post);
}

#[tokio::test]
async fn a_connection_cut_short_loses_no_byte() {
    let whole = client_stream(&[request("127.0.0.1:2379", "/etcdserverpb.KV/Put")]);
    for cut in [3, PREFACE.len() + 5, whole.len() - 4] {
        let part = whole[..cut].to_vec();
        assert_eq!(through_fix(part.clone()).await, part, "cut at {cut}");
    }
    // Garbage after the preface, or a frame over the size limit: handed on for the
    // server to refuse.
    let mut odd = PREFACE.to_vec();
    frame(&mut odd, 0x0, 0, 1, &vec![0; MAX_FRAME_PAYLOAD + 1]);
    assert_eq!(through_fix(odd.clone()).await, odd);
}

#[tokio::test]
async fn an_endless_header_block_is_handed_through_not_held() {
    let mut huge = request("http://127.0.0.1:2379", "/etcdserverpb.Maintenance/Status");
    huge.push((b"x-huge".to_vec(), vec![b'v'; 2 << 20]));
    let stream = client_stream(&[huge]);
    assert_eq!(through_fix(stream.clone()).await, stream);
}
