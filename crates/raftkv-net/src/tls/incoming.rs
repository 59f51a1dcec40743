//! Accepting TLS connections for a tonic server: the accept loop hands each new socket
//! to a task of its own for the handshake (bounded by a deadline), so a slow client, a
//! plaintext client or a port scanner holds up no one else; only finished handshakes
//! reach the server. At most [`MAX_HANDSHAKES`] run at once: beyond that a new socket is
//! closed at once, so a flood of idle connections costs bounded memory and descriptors.
//! The loop ends, closing the listening socket, when the server stops taking
//! connections.

use std::time::Duration;

use futures_util::Stream;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::ServerTls;

/// A connection after its handshake. tonic reads the client's certificates from it.
pub type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;

/// Handshakes finished but not yet taken by the server.
const READY_BACKLOG: usize = 64;
/// Handshakes in progress at most.
pub const MAX_HANDSHAKES: usize = 1024;

/// The TLS connections accepted on `listener`, for `serve_with_incoming`, and the task
/// that accepts them: it ends, closing the listening socket, once the stream is dropped
/// (await it after the server returns to know the port is free).
pub fn incoming(
    listener: TcpListener,
    tls: ServerTls,
    handshake_timeout: Duration,
) -> (
    impl Stream<Item = Result<TlsStream, std::io::Error>> + Send + 'static,
    tokio::task::JoinHandle<()>,
) {
    let (ready, stream) = tokio::sync::mpsc::channel(READY_BACKLOG);
    let in_progress = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    let accepting = tokio::spawn(async move {
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
            let Ok(permit) = in_progress.clone().try_acquire_owned() else {
                tracing::warn!(%remote, "rejected connection: {MAX_HANDSHAKES} TLS handshakes already in progress");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (tls, ready) = (tls.clone(), ready.clone());
            tokio::spawn(async move {
                let _permit = permit;
                // Off the accept loop: it may stat the files and rebuild the configuration.
                let acceptor = TlsAcceptor::from(tls.current());
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
    (tokio_stream::wrappers::ReceiverStream::new(stream), accepting)
}
