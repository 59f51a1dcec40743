//! SIGTERM and SIGINT as one future: the server stops accepting, drains and shuts down
//! when it completes.

/// Completes on the first SIGTERM or SIGINT. If the handlers cannot be installed it never
/// completes (and logs why), so the server keeps serving rather than exiting.
pub async fn terminate() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            std::future::pending::<()>().await;
        }
    }
}
