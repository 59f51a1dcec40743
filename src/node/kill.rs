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

    /// Stop at once and wait until the listeners are closed and Raft has stopped.
    pub(crate) async fn kill(&self) {
        for server in self.stop_serving_now() {
            // `abort` only asks: the task (and the listener it owns) is dropped when the
            // runtime next gets to it. Waiting for that is what makes "a killed member
            // refuses connections" true when `kill` returns (t45 once connected
            // in the gap, on a loaded CI machine).
            let _ = server.await;
        }
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown after kill");
        }
    }

    /// Stop at once without waiting (for a `Drop`): Raft stops in the background when a
    /// runtime is at hand, else with the runtime.
    pub(crate) fn kill_now(&self) {
        drop(self.stop_serving_now());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let raft = self.inner.raft.clone();
            runtime.spawn(async move {
                let _ = raft.shutdown().await;
            });
        }
    }

    /// Signal shutdown, close the watch hub and abort the servers; the aborted servers'
    /// handles, to wait on (their listeners close when the tasks are dropped).
    fn stop_serving_now(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let _ = self.inner.shutdown.send(true);
        self.inner.shared.watch_hub().close();
        let servers: Vec<_> = self.inner.servers.lock().drain(..).collect();
        for server in &servers {
            server.abort();
        }
        servers
    }
}
