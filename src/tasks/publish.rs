//! Publishing this member's client URLs through the log (as etcd publishes member
//! attributes), so every node, and every client given a "not leader" hint, learns where
//! the others serve clients. Retries with backoff until it is applied or the node stops.

use std::time::Duration;

use raftkv_core::Command;
use tokio::sync::watch;

use crate::node::Node;

pub(crate) async fn publish_client_urls(
    node: Node,
    name: String,
    client_urls: Vec<String>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        match node.inner.reader.published_member(node.id()) {
            Ok(Some((_, urls))) if urls == client_urls => return,
            _ => {}
        }
        let command = Command::PublishMember {
            id: node.id(),
            name: name.clone(),
            client_urls: client_urls.clone(),
        };
        match node.propose_command(command).await {
            Ok(_) => {
                tracing::info!(urls = ?client_urls, "client urls published");
                return;
            }
            Err(e) => tracing::debug!(error = %e, "publishing client urls; will retry"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}
