//! Accepting TLS connections for a tonic server: the accept loop hands each new socket
//! to a task of its own for the handshake (bounded by a deadline), so a slow client, a
//! plaintext client or a port scanner holds up no one else; only finished handshakes
//! reach the server. The loop ends, closing the listening socket, when the server stops
//! taking connections.

use std::time::Duration;

use futures_util::Stream;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::ServerTls;

/// A connection after its handshake. tonic reads the client's certificates from it.
pub type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;

/// Handshakes finished but not yet taken by the server.
const READY_BACKLOG: usize = 64;

/// The TLS connections accepted on `listener`, for `serve_with_incoming`.
pub fn incoming(
    listener: TcpListener,
    tls: ServerTls,
    handshake_timeout: Duration,
) -> impl Stream<Item = Result<TlsStream, std::io::Error>> + Send + 'static {
    let (ready, stream) = tokio::sync::mpsc::channel(READY_BACKLOG);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                // The server stopped: drop the listener, freeing the port.
                () = ready.closed() => break,
            };
            let (tcp, remote) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = TlsAcceptor::from(tls.current());
            let ready = ready.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = ready.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(%remote, error = %e, "rejected connection: TLS handshake failed")
                    }
                    Err(_) => tracing::warn!(%remote, "rejected connection: TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(stream)
}
