//! [`NetFaults`]: test-only faults on the peer network, switched at run time.
//!
//! Every outgoing peer RPC (replication, votes, snapshots, read index, forwarded writes,
//! membership changes) asks [`NetFaults::before_request`] before it leaves and
//! [`NetFaults::after_response`] when its answer arrives. Faults are keyed by the peer's
//! URL, the only name a channel has. A one-way partition A→B is two settings: A drops its
//! requests to B, and B drops the responses it gets from A (A's answers are A→B traffic).
//! A request that is "lost" costs the caller its whole deadline, as a real lost packet
//! on a stalled connection would; a lost response is noticed as soon as it arrives, after
//! the peer has acted on the request, which is the case that makes retries unsafe.
//!
//! Duplication applies only to Raft messages (appends and votes), which Raft must
//! tolerate: the copy is re-sent in the background after a random delay, so it also
//! arrives out of order. Forwarded writes are never duplicated (gRPC over TCP does not
//! duplicate; a resent write would be an application retry, which is a different test).
//!
//! Random choices come from one seeded generator per process, so a failing run names the
//! seed that replays the same sequence of choices (timing still varies).
//!
//! Without the `net-faults` feature (which `failpoints` and the root package's `testing`
//! turn on) this module is a zero-sized no-op: release builds carry no fault state.

use std::time::Duration;

/// A message the fault plan decided to lose.
#[derive(Debug, Clone, thiserror::Error)]
#[error("injected network fault: {0}")]
pub struct Lost(pub &'static str);

/// Counters of the faults injected so far (all zero without the feature).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Requests not sent (partition or random loss).
    pub requests_dropped: u64,
    /// Responses discarded after the peer acted (partition or random loss).
    pub responses_dropped: u64,
    /// Requests held back by a delay.
    pub delayed: u64,
    /// Raft messages sent twice.
    pub duplicated: u64,
}

/// The network faults in force; replaces the previous plan as a whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetFaultPlan {
    /// Peer URLs this node's requests never reach.
    pub drop_requests_to: Vec<String>,
    /// Peer URLs whose responses this node never receives.
    pub drop_responses_from: Vec<String>,
    /// Chance (0-100) of losing each request, and separately each response.
    pub loss_percent: u32,
    /// Each request waits a uniformly random delay in this range before leaving.
    pub delay: (Duration, Duration),
    /// Chance (0-100) that a Raft message is sent a second time, later.
    pub duplicate_percent: u32,
    /// Seed of the random choices.
    pub seed: u64,
}

#[cfg(feature = "net-faults")]
pub use enabled::NetFaults;

#[cfg(not(feature = "net-faults"))]
pub use disabled::NetFaults;

#[cfg(feature = "net-faults")]
mod enabled {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use parking_lot::Mutex;

    use super::{FaultCounts, Lost, NetFaultPlan};

    /// The fault plan of one node, shared by every peer call. Cheap to clone.
    #[derive(Clone, Default)]
    pub struct NetFaults {
        inner: Arc<Inner>,
    }

    #[derive(Default)]
    struct Inner {
        /// Held for a few instructions, never across an `.await`.
        state: Mutex<State>,
        requests_dropped: AtomicU64,
        responses_dropped: AtomicU64,
        delayed: AtomicU64,
        duplicated: AtomicU64,
    }

    #[derive(Default)]
    struct State {
        plan: NetFaultPlan,
        rng: SplitMix64,
    }

    /// splitmix64: tiny, seedable, good enough to pick faults.
    #[derive(Default)]
    struct SplitMix64(u64);

    impl SplitMix64 {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn percent(&mut self, p: u32) -> bool {
            p > 0 && self.next() % 100 < u64::from(p)
        }

        fn between(&mut self, (low, high): (Duration, Duration)) -> Duration {
            if high <= low {
                return low;
            }
            let span = (high - low).as_micros() as u64;
            low + Duration::from_micros(self.next() % (span + 1))
        }
    }

    /// What happens to one request.
    enum Fate {
        Lost,
        Send {
            delay: Duration,
            duplicate: Option<Duration>,
        },
    }

    impl NetFaults {
        /// Replace the plan in force.
        pub fn set(&self, plan: NetFaultPlan) {
            let mut state = self.inner.state.lock();
            state.rng = SplitMix64(plan.seed);
            state.plan = plan;
        }

        /// Faults injected so far.
        pub fn counts(&self) -> FaultCounts {
            FaultCounts {
                requests_dropped: self.inner.requests_dropped.load(Ordering::Relaxed),
                responses_dropped: self.inner.responses_dropped.load(Ordering::Relaxed),
                delayed: self.inner.delayed.load(Ordering::Relaxed),
                duplicated: self.inner.duplicated.load(Ordering::Relaxed),
            }
        }

        fn fate(&self, peer_url: &str, raft_message: bool) -> Fate {
            let mut state = self.inner.state.lock();
            let State { plan, rng } = &mut *state;
            if plan.drop_requests_to.iter().any(|u| u == peer_url) || rng.percent(plan.loss_percent) {
                return Fate::Lost;
            }
            let delay = rng.between(plan.delay);
            let duplicate = (raft_message && rng.percent(plan.duplicate_percent))
                .then(|| rng.between((Duration::ZERO, plan.delay.1.max(Duration::from_millis(20)))));
            Fate::Send { delay, duplicate }
        }

        /// Before a request to `peer_url` leaves: waits out the injected delay, or, for a
        /// lost request, the caller's whole `deadline` and then fails. On success, says
        /// whether (and after how long) a Raft message should be sent a second time.
        pub async fn before_request(
            &self,
            peer_url: &str,
            deadline: Duration,
            raft_message: bool,
        ) -> Result<Option<Duration>, Lost> {
            match self.fate(peer_url, raft_message) {
                Fate::Lost => {
                    self.inner.requests_dropped.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(deadline).await;
                    Err(Lost("request lost"))
                }
                Fate::Send { delay, duplicate } => {
                    if !delay.is_zero() {
                        self.inner.delayed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(delay).await;
                    }
                    if duplicate.is_some() {
                        self.inner.duplicated.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(duplicate)
                }
            }
        }

        /// When the response from `peer_url` arrives: fails if the plan loses it.
        pub fn after_response(&self, peer_url: &str) -> Result<(), Lost> {
            let mut state = self.inner.state.lock();
            let State { plan, rng } = &mut *state;
            if plan.drop_responses_from.iter().any(|u| u == peer_url) || rng.percent(plan.loss_percent) {
                self.inner.responses_dropped.fetch_add(1, Ordering::Relaxed);
                return Err(Lost("response lost"));
            }
            Ok(())
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[tokio::test(start_paused = true)]
        async fn partitions_drop_requests_and_responses_per_peer() {
            let faults = NetFaults::default();
            faults.set(NetFaultPlan {
                drop_requests_to: vec!["http://b".into()],
                drop_responses_from: vec!["http://c".into()],
                ..NetFaultPlan::default()
            });
            let deadline = Duration::from_secs(1);
            assert!(faults.before_request("http://b", deadline, true).await.is_err());
            assert!(faults.before_request("http://c", deadline, true).await.is_ok());
            assert!(faults.after_response("http://c").is_err());
            assert!(faults.after_response("http://b").is_ok());
            assert_eq!(faults.counts().requests_dropped, 1);
            assert_eq!(faults.counts().responses_dropped, 1);
            faults.set(NetFaultPlan::default());
            assert!(faults.before_request("http://b", deadline, true).await.is_ok());
        }

        #[tokio::test(start_paused = true)]
        async fn loss_and_duplication_follow_their_rates() {
            let faults = NetFaults::default();
            faults.set(NetFaultPlan {
                loss_percent: 20,
                duplicate_percent: 10,
                seed: 7,
                ..NetFaultPlan::default()
            });
            let mut lost = 0;
            for _ in 0..2000 {
                if faults
                    .before_request("http://a", Duration::ZERO, true)
                    .await
                    .is_err()
                {
                    lost += 1;
                }
            }
            assert!((300..500).contains(&lost), "lost {lost} of 2000 at 20%");
            let duplicated = faults.counts().duplicated;
            assert!(
                (100..220).contains(&duplicated),
                "duplicated {duplicated} of ~1600 at 10%"
            );
            // Forwarded writes are never duplicated.
            let before = faults.counts().duplicated;
            faults.set(NetFaultPlan {
                duplicate_percent: 100,
                ..NetFaultPlan::default()
            });
            assert_eq!(
                faults
                    .before_request("http://a", Duration::ZERO, false)
                    .await
                    .ok(),
                Some(None)
            );
            assert_eq!(faults.counts().duplicated, before);
        }

        #[tokio::test(start_paused = true)]
        async fn a_lost_request_costs_its_deadline() {
            let faults = NetFaults::default();
            faults.set(NetFaultPlan {
                drop_requests_to: vec!["http://b".into()],
                ..NetFaultPlan::default()
            });
            let start = tokio::time::Instant::now();
            assert!(
                faults
                    .before_request("http://b", Duration::from_millis(300), false)
                    .await
                    .is_err()
            );
            assert_eq!(start.elapsed(), Duration::from_millis(300));
        }
    }
}

#[cfg(not(feature = "net-faults"))]
mod disabled {
    use std::time::Duration;

    use super::{FaultCounts, Lost, NetFaultPlan};

    /// Without the `net-faults` feature: no state, no faults.
    #[derive(Clone, Default)]
    pub struct NetFaults(());

    impl NetFaults {
        /// Ignored without the feature.
        pub fn set(&self, _plan: NetFaultPlan) {}

        /// Always zero without the feature.
        pub fn counts(&self) -> FaultCounts {
            FaultCounts::default()
        }

        /// Always sends, at once, once.
        #[inline(always)]
        pub async fn before_request(
            &self,
            _peer_url: &str,
            _deadline: Duration,
            _raft_message: bool,
        ) -> Result<Option<Duration>, Lost> {
            Ok(None)
        }

        /// Never loses anything.
        #[inline(always)]
        pub fn after_response(&self, _peer_url: &str) -> Result<(), Lost> {
            Ok(())
        }
    }
}
