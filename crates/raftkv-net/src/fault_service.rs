//! [`FaultService`]: the test-only admin endpoint that switches faults at run time.
//!
//! Served on the peer port, and only by builds with the `failpoints` feature (the module
//! does not exist otherwise). Network faults go to this node's [`NetFaults`]; storage
//! failpoints go to the `fail` crate's registry, limited to the names the storage layer
//! declares so a typo in a test is an error rather than a fault that never fires.

use std::time::Duration;

use raftkv_proto::raftkvfaults::faults_server::Faults;
use raftkv_proto::raftkvfaults::{Failpoint, FaultReport, NetworkFaults, ReportRequest};
use tonic::{Request, Response, Status};

use crate::faults::{NetFaultPlan, NetFaults};

/// The fault-injection service of one node.
pub struct FaultService {
    network: NetFaults,
    failpoints: Vec<&'static str>,
    storage_faults: fn() -> u64,
}

impl FaultService {
    /// A service over `network` and the failpoints named in `failpoints`, whose storage
    /// firings `storage_faults` counts.
    pub fn new(network: NetFaults, failpoints: Vec<&'static str>, storage_faults: fn() -> u64) -> Self {
        Self {
            network,
            failpoints,
            storage_faults,
        }
    }

    fn report(&self) -> FaultReport {
        let counts = self.network.counts();
        FaultReport {
            requests_dropped: counts.requests_dropped,
            responses_dropped: counts.responses_dropped,
            delayed: counts.delayed,
            duplicated: counts.duplicated,
            storage_faults: (self.storage_faults)(),
        }
    }
}

#[tonic::async_trait]
impl Faults for FaultService {
    async fn set_network(&self, request: Request<NetworkFaults>) -> Result<Response<FaultReport>, Status> {
        let faults = request.into_inner();
        if faults.loss_percent > 100 || faults.duplicate_percent > 100 {
            return Err(Status::invalid_argument("percentages must be 0-100"));
        }
        if faults.delay_min_ms > faults.delay_max_ms {
            return Err(Status::invalid_argument(
                "delay_min_ms must not exceed delay_max_ms",
            ));
        }
        let plan = NetFaultPlan {
            drop_requests_to: faults.drop_requests_to,
            drop_responses_from: faults.drop_responses_from,
            loss_percent: faults.loss_percent,
            delay: (
                Duration::from_millis(faults.delay_min_ms.into()),
                Duration::from_millis(faults.delay_max_ms.into()),
            ),
            duplicate_percent: faults.duplicate_percent,
            seed: faults.seed,
        };
        tracing::warn!(?plan, "network fault plan set");
        self.network.set(plan);
        Ok(Response::new(self.report()))
    }

    async fn set_failpoint(&self, request: Request<Failpoint>) -> Result<Response<FaultReport>, Status> {
        let Failpoint { name, actions } = request.into_inner();
        if !self.failpoints.contains(&name.as_str()) {
            return Err(Status::invalid_argument(format!(
                "unknown failpoint {name:?}; known: {}",
                self.failpoints.join(", ")
            )));
        }
        fail::cfg(name.clone(), &actions).map_err(Status::invalid_argument)?;
        tracing::warn!(failpoint = %name, %actions, "storage failpoint set");
        Ok(Response::new(self.report()))
    }

    async fn report(&self, _request: Request<ReportRequest>) -> Result<Response<FaultReport>, Status> {
        Ok(Response::new(self.report()))
    }
}
