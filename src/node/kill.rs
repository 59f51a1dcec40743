//! Stopping a member at once, for the `testing` feature's cluster: what the other
//! members see when a process dies, as far as one process can show it (listeners
//! closed, in-flight requests failed, Raft stopped), without `shutdown`'s courtesies
//! (no drain, no stepping back from elections).

use super::Node;

impl Node {
    /// The network fault plan every outgoing peer call of this member goes through.
    pub(crate) fn net_faults(&self) -> &raftkv_net::NetFaults {
        self.inner.connections.faults()
    }

    /// Stop at once and wait until Raft has stopped.
    pub(crate) async fn kill(&self) {
        self.stop_serving_now();
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown after kill");
        }
    }

    /// Stop at once without waiting (for a `Drop`): Raft stops in the background when a
    /// runtime is at hand, else with the runtime.
    pub(crate) fn kill_now(&self) {
        self.stop_serving_now();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let raft = self.inner.raft.clone();
            runtime.spawn(async move {
                let _ = raft.shutdown().await;
            });
        }
    }

    fn stop_serving_now(&self) {
        let _ = self.inner.shutdown.send(true);
        self.inner.shared.watch_hub().close();
        // Aborting a server drops its listener at once: new connections are refused.
        for server in self.inner.servers.lock().drain(..) {
            server.abort();
        }
    }
}
