//! Applying the lease commands (an extension of [`Applier`], see `apply/applier.rs`).
//!
//! A grant writes a [`LeaseRecord`] (refused if the id exists); a revoke deletes every key
//! attached to the lease as ONE request, so in one revision with one watch event per key,
//! then drops the record (a lease with no keys left changes no revision); a checkpoint
//! records the remaining TTLs the leader measured. Grants and checkpoints change no key
//! and so no revision. Leases and attachments changed earlier in the same `apply()` call
//! are seen through the applier's overlays.

use std::collections::BTreeSet;

use raftkv_core::RequestError;
use raftkv_core::codec;
use raftkv_core::kv::Revision;

use crate::apply::applier::Applier;
use crate::apply::lease_table::{self, LeaseRecord};
use crate::error::Error;
use crate::keys;

impl Applier<'_> {
    /// Lease `id` as this call left it so far.
    pub(crate) fn lease(&self, id: i64) -> Result<Option<LeaseRecord>, Error> {
        match self.leases.get(&id) {
            Some(state) => Ok(*state),
            None => lease_table::get(self.tree, id),
        }
    }

    fn set_lease(&mut self, id: i64, record: Option<LeaseRecord>) -> Result<(), Error> {
        match &record {
            Some(r) => self.batch.insert(keys::lease_key(id), codec::encode(r)?),
            None => self.batch.remove(keys::lease_key(id)),
        }
        self.leases.insert(id, record);
        Ok(())
    }

    /// Grant lease `id` (refused if it exists). Changes no key, so no revision.
    pub(crate) fn lease_grant(&mut self, id: i64, ttl: i64) -> Result<Result<(), RequestError>, Error> {
        if id == 0 {
            return Ok(Err(RequestError::LeaseNotFound(0)));
        }
        if self.lease(id)?.is_some() {
            return Ok(Err(RequestError::LeaseExists(id)));
        }
        self.set_lease(id, Some(LeaseRecord { ttl, remaining: 0 }))?;
        Ok(Ok(()))
    }

    /// The keys attached to lease `id` as of the requests applied so far.
    pub(crate) fn attached_keys(&self, id: i64) -> Result<BTreeSet<Vec<u8>>, Error> {
        let mut attached: BTreeSet<Vec<u8>> = lease_table::attached(self.tree, id)?.into_iter().collect();
        for ((lease, key), on) in &self.attachments {
            if *lease == id {
                if *on {
                    attached.insert(key.clone());
                } else {
                    attached.remove(key);
                }
            }
        }
        Ok(attached)
    }

    /// Revoke lease `id`: delete its keys in one revision, then the lease.
    pub(crate) fn lease_revoke(&mut self, id: i64) -> Result<Result<Revision, RequestError>, Error> {
        if self.lease(id)?.is_none() {
            return Ok(Err(RequestError::LeaseNotFound(id)));
        }
        let attached = self.attached_keys(id)?;
        let deleted = self.client_request(|a, scope| {
            for key in &attached {
                // The index is maintained with every write; re-check against the key itself.
                if let Some(meta) = a.latest_meta(scope, key)
                    && meta.lease == id
                {
                    let prev = a.prev_if_needed(scope, key, Some(meta), false)?;
                    scope.write(&a.watch, key, None, id, prev.as_ref())?;
                }
            }
            Ok(())
        })?;
        match deleted {
            Ok(((), revision)) => {
                self.set_lease(id, None)?;
                Ok(Ok(revision))
            }
            Err(e) => Ok(Err(e)),
        }
    }

    /// Record the remaining TTLs the leader measured (leases that no longer exist are
    /// skipped).
    pub(crate) fn lease_checkpoint(&mut self, remaining: &[(i64, i64)]) -> Result<(), Error> {
        for &(id, left) in remaining {
            if let Some(mut record) = self.lease(id)? {
                record.remaining = left.max(1);
                self.set_lease(id, Some(record))?;
            }
        }
        Ok(())
    }
}
