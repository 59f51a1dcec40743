//! Compaction pins: revisions that physical compaction must not delete past while
//! something streams the live tree (a snapshot build).
//!
//! A pin is taken with [`CompactionPins::pin`], which reads the revision to pin under the
//! registry's lock; the compactor reads the compact revision and the oldest pin under the
//! same lock ([`CompactionPins::bound`]). That one lock orders every pin against every
//! compaction target, which is what makes a pin airtight (the proof is in
//! [`crate::maintenance::compactor`]). The [`CompactionPin`] guard releases its pin on drop and wakes
//! the compactor, since a release may let it move on.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use raftkv_core::kv::Revision;

use crate::maintenance::compactor_link::CompactorWake;

/// The registry of live pins (one per running snapshot build).
#[derive(Debug)]
pub(crate) struct CompactionPins {
    /// Pin id -> pinned revision, plus the next id. A mutex rather than atomics because a
    /// pin's revision must be read, and the pin registered, in one step that the
    /// compactor's read of (compact revision, oldest pin) cannot interleave with. Held only
    /// for a map operation and an atomic load: never across I/O or an `.await`.
    inner: Mutex<PinsInner>,
    /// Woken when a pin is released, since a release may let the compactor move on.
    wake: CompactorWake,
}

#[derive(Debug, Default)]
struct PinsInner {
    next_id: u64,
    pinned: BTreeMap<u64, Revision>,
}

impl CompactionPins {
    pub(crate) fn new(wake: CompactorWake) -> Self {
        Self {
            inner: Mutex::default(),
            wake,
        }
    }

    /// Register a pin at the revision `revision()` returns, read under the lock.
    /// Returns the pin's id and revision.
    pub(crate) fn pin(&self, revision: impl FnOnce() -> Revision) -> (u64, Revision) {
        let mut inner = self.inner.lock();
        let revision = revision();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.pinned.insert(id, revision);
        (id, revision)
    }

    /// How far physical compaction may go now: the compact revision (read under the lock
    /// by `compact_revision()`), held back to the oldest pin.
    pub(crate) fn bound(&self, compact_revision: impl FnOnce() -> Revision) -> Revision {
        let inner = self.inner.lock();
        let compact = compact_revision();
        inner
            .pinned
            .values()
            .copied()
            .min()
            .map_or(compact, |oldest| oldest.min(compact))
    }

    /// The oldest pinned revision, if any pin is held.
    pub(crate) fn oldest(&self) -> Option<Revision> {
        self.inner.lock().pinned.values().copied().min()
    }

    fn release(&self, id: u64) {
        self.inner.lock().pinned.remove(&id);
    }
}

/// Holds physical compaction at or below its revision until dropped.
pub(crate) struct CompactionPin {
    pins: Arc<CompactionPins>,
    id: u64,
}

impl CompactionPin {
    /// Pin the revision `revision()` returns (the compact revision, for a snapshot build),
    /// read under the registry's lock (see [`CompactionPins::pin`]). Returns the guard and
    /// the revision it pins.
    pub(crate) fn take(pins: &Arc<CompactionPins>, revision: impl FnOnce() -> Revision) -> (Self, Revision) {
        let (id, revision) = pins.pin(revision);
        (
            Self {
                pins: pins.clone(),
                id,
            },
            revision,
        )
    }
}

impl Drop for CompactionPin {
    fn drop(&mut self) {
        self.pins.release(self.id);
        self.pins.wake.wake();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_pin_bounds_compaction_until_released() {
        let pins = CompactionPins::new(crate::maintenance::compactor_link::wake_channel().0);
        assert_eq!(pins.bound(|| 40), 40, "no pin: the compact revision");
        let (a, _) = pins.pin(|| 10);
        let (b, _) = pins.pin(|| 25);
        assert_eq!(pins.bound(|| 40), 10);
        assert_eq!(pins.bound(|| 5), 5, "never past the compact revision");
        pins.release(a);
        assert_eq!(pins.oldest(), Some(25));
        assert_eq!(pins.bound(|| 40), 25);
        pins.release(b);
        assert_eq!(pins.oldest(), None);
        assert_eq!(pins.bound(|| 40), 40);
    }
}
