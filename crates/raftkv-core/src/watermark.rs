//! [`Watermark`]: a monotonically advancing index (the commit index, the applied index)
//! that many tasks read and wait on, with no lock around the value.
//!
//! The value is one `AtomicU64`. `advance(to)` is a compare-and-swap loop that only ever
//! moves it forward: a late, smaller value is a no-op, so racing writers cannot move it
//! back. `get()` is one atomic load. `wait_for(i)` returns at once when the value has
//! reached `i`, otherwise it parks on a `tokio::sync::Notify` that every successful
//! advance wakes (all waiters, each re-checks its own target).
//!
//! Lost wake-ups are impossible: a waiter registers (`Notified::enable`) before it checks
//! the value, and an advance stores the value before it notifies, so either the waiter
//! sees the new value or the advance sees the registered waiter. `waiters` lets an
//! advance with nobody waiting skip the notifier entirely (it is the common case on the
//! write path); both sides use `SeqCst` so that check is race-free too.
//!
//! **Ablation variants.** For the benchmark that compares the lock-free index with locked
//! ones inside the real node, the cargo features `watermark-std-mutex` and
//! `watermark-parking-lot` swap the `AtomicU64` for a `std::sync::Mutex<u64>` or a
//! `parking_lot::Mutex<u64>` ([`IndexCell`]); everything else stays the same. They exist
//! only for that comparison: the default, and every shipped build, is lock-free.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// A monotonically advancing `u64` with lock-free reads and async waits.
#[derive(Debug, Default)]
pub struct Watermark {
    value: IndexCell,
    /// Number of tasks inside `wait_for` (registered or about to register).
    waiters: AtomicUsize,
    notify: Notify,
}

/// Returned by [`Watermark::wait_for_timeout`] when the deadline passes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("watermark did not reach {target} in time (at {reached})")]
pub struct WaitTimeout {
    /// The index waited for.
    pub target: u64,
    /// The value when the deadline passed.
    pub reached: u64,
}

impl Watermark {
    /// A watermark starting at `initial`.
    pub fn new(initial: u64) -> Self {
        Self {
            value: IndexCell::new(initial),
            waiters: AtomicUsize::new(0),
            notify: Notify::new(),
        }
    }

    /// The current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.value.load()
    }

    /// Move the value forward to `to`. Returns `true` if this call moved it, `false` if it
    /// already was at `to` or beyond (the value never moves backward).
    pub fn advance(&self, to: u64) -> bool {
        if !self.value.advance(to) {
            return false;
        }
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.notify.notify_waiters();
        }
        true
    }

    /// Wait until the value is at least `target`. Cancel by dropping the future.
    pub async fn wait_for(&self, target: u64) {
        if self.get() >= target {
            return;
        }
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let _registered = WaiterGuard(&self.waiters);
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.value.load() >= target {
                return;
            }
            notified.await;
        }
    }

    /// [`Watermark::wait_for`] with a deadline.
    pub async fn wait_for_timeout(&self, target: u64, timeout: Duration) -> Result<u64, WaitTimeout> {
        match tokio::time::timeout(timeout, self.wait_for(target)).await {
            Ok(()) => Ok(self.get()),
            Err(_) => Err(WaitTimeout {
                target,
                reached: self.get(),
            }),
        }
    }
}

/// The index itself. Lock-free by default; see the module doc for the ablation variants.
#[cfg(not(any(feature = "watermark-std-mutex", feature = "watermark-parking-lot")))]
#[derive(Debug, Default)]
pub struct IndexCell(std::sync::atomic::AtomicU64);

#[cfg(not(any(feature = "watermark-std-mutex", feature = "watermark-parking-lot")))]
impl IndexCell {
    /// The name of this variant, for benchmark reports.
    pub const VARIANT: &'static str = "atomic-cas";

    fn new(initial: u64) -> Self {
        Self(std::sync::atomic::AtomicU64::new(initial))
    }

    #[inline]
    fn load(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    /// Compare-and-swap loop: move to `to` only if it is ahead.
    #[inline]
    fn advance(&self, to: u64) -> bool {
        let mut current = self.0.load(Ordering::Acquire);
        loop {
            if to <= current {
                return false;
            }
            match self
                .0
                .compare_exchange_weak(current, to, Ordering::SeqCst, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(observed) => current = observed,
            }
        }
    }
}

/// The index behind a `std::sync::Mutex` (benchmark ablation only).
#[cfg(all(feature = "watermark-std-mutex", not(feature = "watermark-parking-lot")))]
#[derive(Debug, Default)]
pub struct IndexCell(std::sync::Mutex<u64>);

#[cfg(all(feature = "watermark-std-mutex", not(feature = "watermark-parking-lot")))]
impl IndexCell {
    /// The name of this variant, for benchmark reports.
    pub const VARIANT: &'static str = "std-mutex";

    fn new(initial: u64) -> Self {
        Self(std::sync::Mutex::new(initial))
    }

    fn load(&self) -> u64 {
        // A poisoned lock still holds a valid u64 (nothing can panic while holding it).
        let v = *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        std::sync::atomic::fence(Ordering::SeqCst);
        v
    }

    fn advance(&self, to: u64) -> bool {
        let moved = {
            let mut v = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let moved = to > *v;
            if moved {
                *v = to;
            }
            moved
        };
        std::sync::atomic::fence(Ordering::SeqCst);
        moved
    }
}

/// The index behind a `parking_lot::Mutex` (benchmark ablation only).
#[cfg(feature = "watermark-parking-lot")]
#[derive(Debug, Default)]
pub struct IndexCell(parking_lot::Mutex<u64>);

#[cfg(feature = "watermark-parking-lot")]
impl IndexCell {
    /// The name of this variant, for benchmark reports.
    pub const VARIANT: &'static str = "parking-lot-mutex";

    fn new(initial: u64) -> Self {
        Self(parking_lot::Mutex::new(initial))
    }

    fn load(&self) -> u64 {
        let v = *self.0.lock();
        std::sync::atomic::fence(Ordering::SeqCst);
        v
    }

    fn advance(&self, to: u64) -> bool {
        let moved = {
            let mut v = self.0.lock();
            let moved = to > *v;
            if moved {
                *v = to;
            }
            moved
        };
        std::sync::atomic::fence(Ordering::SeqCst);
        moved
    }
}

/// Keeps `waiters` right however `wait_for` ends (returned, or dropped while parked).
struct WaiterGuard<'a>(&'a AtomicUsize);

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn never_moves_backward_under_eight_racing_threads() {
        let mark = Arc::new(Watermark::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        // An observer checks every value it sees is >= the previous one.
        let observer = {
            let (mark, stop) = (mark.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut last = 0;
                let mut observations = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let now = mark.get();
                    assert!(now >= last, "watermark moved backward: {last} -> {now}");
                    last = now;
                    observations += 1;
                }
                observations
            })
        };
        let writers: Vec<_> = (0..8u64)
            .map(|t| {
                let mark = mark.clone();
                std::thread::spawn(move || {
                    // Each thread advances to a pseudo-random, often stale, sequence of
                    // values; its own maximum is 100_000 * 8 + t.
                    let mut x = t.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                    let mut moved = 0u32;
                    for i in 0..100_000u64 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let jitter = x % 64;
                        let to = (i * 8 + t).saturating_sub(jitter);
                        if mark.advance(to) {
                            moved += 1;
                        }
                    }
                    mark.advance(100_000 * 8 + t);
                    moved
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        assert!(observer.join().unwrap() > 0);
        assert_eq!(mark.get(), 100_000 * 8 + 7);
        // A late, smaller value is a no-op.
        assert!(!mark.advance(5));
        assert_eq!(mark.get(), 100_000 * 8 + 7);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_advance_wakes_every_satisfied_waiter() {
        let mark = Arc::new(Watermark::new(0));
        let mut satisfied = Vec::new();
        for target in 1..=50u64 {
            let mark = mark.clone();
            satisfied.push(tokio::spawn(async move {
                mark.wait_for(target).await;
                target
            }));
        }
        // Waiters above the advance must stay parked.
        let mut unsatisfied = Vec::new();
        for target in [51u64, 100] {
            let mark = mark.clone();
            unsatisfied.push(tokio::spawn(async move { mark.wait_for(target).await }));
        }
        // Let every waiter register before the single advance (waiting on the count, not
        // sleeping: each registered waiter bumps `waiters`).
        tokio::time::timeout(Duration::from_secs(10), async {
            while mark.waiters.load(Ordering::SeqCst) < 52 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("waiters registered");
        assert!(mark.advance(50));
        for handle in satisfied {
            tokio::time::timeout(Duration::from_secs(10), handle)
                .await
                .expect("a satisfied waiter was not woken")
                .unwrap();
        }
        for handle in &unsatisfied {
            assert!(!handle.is_finished());
        }
        mark.advance(100);
        for handle in unsatisfied {
            tokio::time::timeout(Duration::from_secs(10), handle)
                .await
                .expect("woken after the second advance")
                .unwrap();
        }
        assert_eq!(mark.waiters.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn wait_returns_at_once_when_reached_and_times_out_otherwise() {
        let mark = Watermark::new(10);
        mark.wait_for(10).await;
        mark.wait_for(3).await;
        let err = mark
            .wait_for_timeout(11, Duration::from_millis(20))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            WaitTimeout {
                target: 11,
                reached: 10
            }
        );
        // A cancelled wait leaves no registered waiter behind.
        assert_eq!(mark.waiters.load(Ordering::SeqCst), 0);
    }
}
