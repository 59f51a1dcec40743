//! The state machine's background sync: every [`StoreOptions::state_sync_interval`]
//! (100 ms by default, as etcd commits its backend), make what is applied durable.
//!
//! Apply never waits for the disk (`raft/state_machine.rs`); what it wrote becomes durable
//! here, in the background, together with the applied state that covers it (a sync
//! covers a prefix of the ordered writes, and `apply/rollback.rs` undoes the rest after a
//! crash). Without it the state machine was synced only when the log was purged and
//! before physical compaction, so each of those syncs had everything applied since the
//! last one to write, and openraft waits for `purge` between appends: a write behind a
//! purge waited for that whole sync. Synced every interval, the purge's own sync finds
//! little left. An idle member does not sync (nothing applied since the last sync).
//!
//! [`StoreOptions::state_sync_interval`]: crate::StoreOptions::state_sync_interval

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::error::Result;
use crate::state::StateShared;

/// Start the sync thread of `shared`; it ends once the store is dropped.
pub(crate) fn spawn(shared: &Arc<StateShared>, every: Duration) -> Result<()> {
    let shared = Arc::downgrade(shared);
    std::thread::Builder::new()
        .name("raftkv-sm-sync".into())
        .spawn(move || run(shared, every))?;
    Ok(())
}

fn run(shared: Weak<StateShared>, every: Duration) {
    let mut failing = false;
    loop {
        // A timer, not a wait for a condition: the sync's only job is to bound how much
        // a later sync (a purge's) has to write.
        std::thread::sleep(every);
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.applied().get() <= shared.synced_applied() {
            continue;
        }
        match shared.sync_durable() {
            Ok(_) if failing => {
                tracing::info!("background state-machine sync works again");
                failing = false;
            }
            Ok(_) => {}
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "background state-machine sync failed; retrying");
                }
                failing = true;
            }
        }
    }
}
