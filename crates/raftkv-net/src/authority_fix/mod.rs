//! [`AuthorityFix`]: lets etcd's Go clients dial a member by its `http://` URL.
//!
//! etcdctl 3.4 talks to one member directly for `endpoint status`, `endpoint hashkv`,
//! `defrag` and `move-leader`; grpc-go then sends the endpoint exactly as the user wrote
//! it as the HTTP/2 `:authority` (`http://127.0.0.1:2379`). etcd's Go server takes that;
//! the `h2` crate under tonic refuses the stream as malformed (`RST_STREAM
//! PROTOCOL_ERROR`), and h2 has no switch to relax it. So the client listener reads each
//! connection's bytes through this wrapper: at the first header block it decides, and if
//! the authority needs it, rewrites the authority of every block to the `host:port`
//! inside it (see `frames.rs` for why every block). Connections that need nothing (all
//! but those), HTTP/1.1 and TLS-wrapped ones alike, are handed through after their first
//! block with no further work.

mod frames;
#[cfg(test)]
mod tests;

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

use frames::Rewriter;

/// Bytes read from the socket at a time while frames are being examined.
const READ_CHUNK: usize = 8 * 1024;

/// A server-side connection whose client bytes are repaired as the module says; writes
/// pass straight through.
pub struct AuthorityFix<IO> {
    io: IO,
    /// `None` once the connection is handed through.
    rewriter: Option<Box<Rewriter>>,
    /// Read from the socket, not yet judged.
    input: BytesMut,
    /// Judged, not yet read by the server.
    output: BytesMut,
    /// The client closed its side; what is left in `output` is the last of it.
    eof: bool,
}

impl<IO> AuthorityFix<IO> {
    /// Examines `io`'s first header block and repairs as needed.
    pub fn new(io: IO) -> Self {
        Self {
            io,
            rewriter: Some(Box::new(Rewriter::new())),
            input: BytesMut::new(),
            output: BytesMut::new(),
            eof: false,
        }
    }

    /// Hands every byte through untouched (a listener that serves no etcd client).
    pub fn passthrough(io: IO) -> Self {
        Self {
            rewriter: None,
            ..Self::new(io)
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for AuthorityFix<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.output.is_empty() {
                let n = buf.remaining().min(this.output.len());
                buf.put_slice(&this.output.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let Some(rewriter) = this.rewriter.as_mut() else {
                return Pin::new(&mut this.io).poll_read(cx, buf);
            };
            let mut chunk = [0u8; READ_CHUNK];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                // The client is done: whatever was held back goes to the server as it is.
                let rest = this.input.split();
                this.output.extend_from_slice(&rest);
                this.rewriter = None;
                this.eof = true;
                continue;
            }
            this.input.extend_from_slice(read.filled());
            if !rewriter.feed(&mut this.input, &mut this.output) {
                let rest = this.input.split();
                this.output.extend_from_slice(&rest);
                this.rewriter = None;
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The connection's details (remote address, TLS certificates) are the wrapped one's,
/// so handlers see them unchanged.
impl<IO: Connected> Connected for AuthorityFix<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}
