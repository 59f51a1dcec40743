//! [`CoalescedWrites`]: a server connection whose HTTP/2 frames of one flush leave in one
//! write, so a small gRPC response (headers, message, trailers) is one TCP segment.
//!
//! Why: tonic's HTTP/2 layer (`h2`) copies a DATA payload into its frame buffer only if it
//! is shorter than a threshold: 256 bytes on a connection that says it writes vectored,
//! 1 KiB on one that does not. A longer payload is chained instead, and `h2` then writes
//! everything buffered so far before it takes the next frame. A 300-byte response (a
//! 256-byte value and its metadata) thus cost two writes: headers and message, then the
//! trailers that carry `grpc-status`; the client woke twice for one answer, and each
//! write is a trip through the loopback stack that the sender pays for (a third of a
//! member's CPU under 64-client reads was `writev`). etcd's Go server sends all three in
//! one write.
//!
//! So this wrapper says it does not write vectored (payloads under 1 KiB are copied) and
//! buffers what it is given until `h2` flushes: everything `h2` buffered before a flush
//! goes out in one write, larger payloads included (those up to the buffer's size).

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, BufWriter, ReadBuf};
use tonic::transport::server::Connected;

/// Bytes gathered before a write is forced; larger writes go straight through.
const BUFFER_BYTES: usize = 64 * 1024;

/// A connection that gathers writes until flushed (see the module doc).
pub struct CoalescedWrites<IO> {
    io: BufWriter<IO>,
}

impl<IO: AsyncWrite> CoalescedWrites<IO> {
    /// Gathers `io`'s writes until each flush.
    pub fn new(io: IO) -> Self {
        Self {
            io: BufWriter::with_capacity(BUFFER_BYTES, io),
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for CoalescedWrites<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for CoalescedWrites<IO> {
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

    /// `false` whatever the socket can do: it is what makes `h2` copy payloads under
    /// 1 KiB into its buffer instead of writing out before the next frame.
    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The connection's details (remote address, TLS certificates) are the wrapped one's.
impl<IO: Connected + AsyncWrite> Connected for CoalescedWrites<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.get_ref().connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A socket that records each write it is given, and can refuse the next few.
    #[derive(Default)]
    struct Recording {
        writes: Vec<Vec<u8>>,
        refuse: usize,
    }

    impl AsyncWrite for Recording {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            if self.refuse > 0 {
                self.refuse -= 1;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.writes.push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn the_frames_of_one_flush_leave_in_one_write() {
        let mut io = CoalescedWrites::new(Recording::default());
        assert!(
            !io.is_write_vectored(),
            "h2 must copy small payloads, not chain them"
        );
        // Headers, a chained 300-byte message, trailers: what h2 hands over for a response.
        io.write_all(b"headers").await.unwrap();
        io.write_all(&[7u8; 300]).await.unwrap();
        io.write_all(b"trailers").await.unwrap();
        assert!(
            io.io.get_ref().writes.is_empty(),
            "nothing leaves before the flush"
        );
        io.flush().await.unwrap();
        let writes = &io.io.get_ref().writes;
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].len(), 7 + 300 + 8);
        assert!(writes[0].starts_with(b"headers") && writes[0].ends_with(b"trailers"));
    }

    #[tokio::test]
    async fn a_busy_socket_loses_and_reorders_nothing() {
        let mut io = CoalescedWrites::new(Recording {
            refuse: 3,
            ..Recording::default()
        });
        let big = vec![9u8; BUFFER_BYTES + 10];
        io.write_all(b"first").await.unwrap();
        // Larger than the buffer: what is gathered goes first, then this one as it is.
        io.write_all(&big).await.unwrap();
        io.write_all(b"last").await.unwrap();
        io.flush().await.unwrap();
        let sent: Vec<u8> = io.io.get_ref().writes.concat();
        let mut expected = b"first".to_vec();
        expected.extend_from_slice(&big);
        expected.extend_from_slice(b"last");
        assert_eq!(sent, expected);
        assert_eq!(io.io.get_ref().writes.len(), 3);
    }
}
