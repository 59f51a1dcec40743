//! etcd's lease vocabulary: what a lease looks like to callers ([`LeaseInfo`]), the calls a
//! follower forwards to the leader because only the leader can answer them
//! ([`LeaseCall`] / [`LeaseAnswer`]), and the limits every member applies the same way.
//!
//! The log commands themselves (`LeaseGrant`, `LeaseRevoke`, `LeaseCheckpoint`) are in
//! [`crate::command`]; a lease's deadline is never in the log, only its granted TTL and,
//! from checkpoints, its remaining TTL.

use serde::{Deserialize, Serialize};

use crate::command::Response;
use crate::error::RequestError;

/// The largest TTL a lease may be granted (etcd's `MaxLeaseTTL`, seconds).
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// Most leases one checkpoint command carries (more go in further commands).
pub const MAX_CHECKPOINT_LEASES: usize = 1024;

/// A lease as `TimeToLive` answers it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// The lease id.
    pub id: i64,
    /// Seconds until it expires, rounded up (-1: the lease does not exist).
    pub ttl: i64,
    /// The TTL it was granted.
    pub granted_ttl: i64,
    /// Keys attached to it (only when asked for).
    pub keys: Vec<Vec<u8>>,
}

/// A lease request a follower forwards to the leader over the peer protocol's `Lease`
/// call: keep-alives and time-to-live because only the leader holds deadlines, grants
/// and revokes because only the leader proposes (lease commands never travel through the
/// generic `Forward` call).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseCall {
    /// Renew the lease: its deadline becomes now + its granted TTL.
    KeepAlive {
        /// The lease.
        id: i64,
    },
    /// How long the lease has left, and optionally its keys.
    TimeToLive {
        /// The lease.
        id: i64,
        /// Whether to list the attached keys.
        keys: bool,
    },
    /// Propose a grant (id chosen and TTL clamped by the follower; the leader checks both).
    Grant {
        /// The lease (non-zero).
        id: i64,
        /// Its TTL, seconds.
        ttl: i64,
    },
    /// Propose a revoke.
    Revoke {
        /// The lease.
        id: i64,
    },
}

/// The leader's answer to a [`LeaseCall`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseAnswer {
    /// Answer to [`LeaseCall::KeepAlive`]: the renewed TTL (0: no such lease, as etcd).
    KeepAlive {
        /// Seconds.
        ttl: i64,
    },
    /// Answer to [`LeaseCall::TimeToLive`].
    TimeToLive(LeaseInfo),
    /// Answer to [`LeaseCall::Grant`] and [`LeaseCall::Revoke`]: what applying the entry
    /// answered, and the entry's term.
    Written {
        /// The state machine's answer.
        response: Response,
        /// Term of the entry.
        term: u64,
    },
}

/// The TTL a grant of `requested` seconds gets: at least `min_ttl` (etcd raises short
/// TTLs to 1.5 election timeouts, so a lease outlives a leader election), at most
/// [`MAX_LEASE_TTL`] (refused beyond it).
pub fn granted_ttl(requested: i64, min_ttl: i64) -> Result<i64, RequestError> {
    if requested > MAX_LEASE_TTL {
        return Err(RequestError::LeaseTtlTooLarge(requested));
    }
    Ok(requested.max(min_ttl).max(1))
}

/// etcd's minimum lease TTL for an election timeout of `election_timeout_ms`:
/// ceil(1.5 × the election timeout), in seconds.
pub fn min_ttl(election_timeout_ms: u64) -> i64 {
    (election_timeout_ms.saturating_mul(3)).div_ceil(2000).max(1) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_ttl_is_one_and_a_half_election_timeouts_rounded_up() {
        assert_eq!(min_ttl(1000), 2);
        assert_eq!(min_ttl(1500), 3);
        assert_eq!(min_ttl(100), 1);
        assert_eq!(min_ttl(0), 1);
    }

    #[test]
    fn granted_ttl_clamps_and_refuses() {
        assert_eq!(granted_ttl(1, 2), Ok(2));
        assert_eq!(granted_ttl(-5, 2), Ok(2));
        assert_eq!(granted_ttl(60, 2), Ok(60));
        assert!(granted_ttl(MAX_LEASE_TTL + 1, 2).is_err());
    }
}
