//! Asks openraft for a snapshot whenever the storage's cadence says one is due
//! (`raftkv_storage::SnapshotCadence`: enough entries and enough new bytes, so the cost
//! of walking the state stays a flat share of the writes). openraft's own policy is off
//! (`SnapshotPolicy::Never`): it can only count entries.

use std::sync::Arc;
use std::time::Duration;

use raftkv_storage::StateShared;
use tokio::sync::watch;

/// openraft ignores a request while it is building already; a due snapshot is asked for
/// again at most this often until its capture restarts the cadence.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Runs until `shutdown` or until Raft stops.
pub(crate) async fn run(
    raft: raftkv_core::types::Raft<raftkv_storage::StateMachine>,
    shared: Arc<StateShared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = shared.snapshot_cadence().due() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        tracing::debug!(
            last_snapshot_bytes = shared.snapshot_cadence().last_snapshot_bytes(),
            "snapshot due"
        );
        if let Err(e) = raft.trigger().snapshot().await {
            tracing::debug!(error = %e, "raft stopped; no more snapshots");
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(RETRY_AFTER) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}
