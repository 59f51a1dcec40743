//! [`ProbeBackend`]: what the health and metrics endpoints ask of a member, implemented for every
//! backend of the gRPC services (the node) in terms of the calls they already serve.

use std::future::Future;

use raftkv_core::kv::RangeRequest;
use raftkv_proto::status::to_status;

use crate::{ClusterBackend, KvBackend, LeaderStatus};

/// The key the read checks read (keys only, at most one): any key does; etcd reads its
/// empty key, which the gRPC API refuses, so a named one here.
const HEALTH_KEY: &[u8] = b"health";

/// What the probes ask of a member. Blanket-implemented for every backend of the gRPC
/// services (the node).
pub trait ProbeBackend: Send + Sync + 'static {
    /// The member's active alarms, etcd's alarm type numbers.
    fn active_alarms(&self) -> impl Future<Output = Result<Vec<i32>, String>> + Send;
    /// Whether the member knows a leader now.
    fn knows_leader(&self) -> bool;
    /// One keys-only read of at most one key, serializable or linearizable; the error is
    /// etcd's text for it.
    fn read_one_key(&self, serializable: bool) -> impl Future<Output = Result<(), String>> + Send;
    /// The member's metrics in Prometheus' text format, for `/metrics`.
    fn metrics_text(&self) -> String;
}

/// Where `/metrics` comes from: the member's metrics in Prometheus' text exposition
/// format 0.0.4 (the node renders them under etcd's names).
pub trait MetricsSource: Send + Sync + 'static {
    /// Every metric, rendered now.
    fn prometheus_text(&self) -> String;
}

impl<B: KvBackend + ClusterBackend + LeaderStatus + MetricsSource> ProbeBackend for B {
    fn metrics_text(&self) -> String {
        self.prometheus_text()
    }

    async fn active_alarms(&self) -> Result<Vec<i32>, String> {
        ClusterBackend::active_alarms(self).map_err(|e| to_status(&e).message().to_string())
    }

    fn knows_leader(&self) -> bool {
        self.has_leader()
    }

    async fn read_one_key(&self, serializable: bool) -> Result<(), String> {
        let req = RangeRequest {
            limit: 1,
            keys_only: true,
            serializable,
            ..RangeRequest::key(HEALTH_KEY)
        };
        self.range(req)
            .await
            .map(|_| ())
            .map_err(|e| to_status(&e).message().to_string())
    }
}
