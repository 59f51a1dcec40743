//! The informer's local copy of a prefix: replaced whole by a list, kept current by
//! watch events, and answering each change as an add, update or delete.
//!
//! Pure bookkeeping (no I/O, no locks), so the diffing a re-list does and the skipping of
//! events a resumed watch delivers twice are tested here on their own.

use std::collections::BTreeMap;

use crate::kv::{KeyValue, Revision};
use crate::watch::{Event, EventType};

/// One change of the cache, as the handlers hear of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A key appeared.
    Added(KeyValue),
    /// A key's value (or lease) changed.
    Updated {
        /// Before.
        old: KeyValue,
        /// After.
        new: KeyValue,
    },
    /// A key went away; its last known key-value.
    Deleted(KeyValue),
}

/// The keys of one prefix as of `revision`.
#[derive(Debug, Default)]
pub(crate) struct Cache {
    pub(crate) map: BTreeMap<Vec<u8>, KeyValue>,
    /// Every change up to this revision is reflected (0 before the first list).
    pub(crate) revision: Revision,
}

impl Cache {
    /// Replace the contents by a list taken at `revision`: the changes are what happened
    /// in between as far as a list can tell (keys gone, keys new, keys changed), in key
    /// order, deletes first.
    pub(crate) fn replace(&mut self, listed: Vec<KeyValue>, revision: Revision) -> Vec<Change> {
        let mut fresh: BTreeMap<Vec<u8>, KeyValue> =
            listed.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
        let mut changes: Vec<Change> = self
            .map
            .iter()
            .filter(|(key, _)| !fresh.contains_key(*key))
            .map(|(_, kv)| Change::Deleted(kv.clone()))
            .collect();
        for (key, new) in &fresh {
            match self.map.get(key) {
                None => changes.push(Change::Added(new.clone())),
                Some(old)
                    if old.mod_revision != new.mod_revision || old.create_revision != new.create_revision =>
                {
                    changes.push(Change::Updated {
                        old: old.clone(),
                        new: new.clone(),
                    })
                }
                Some(_) => {}
            }
        }
        std::mem::swap(&mut self.map, &mut fresh);
        self.revision = revision;
        changes
    }

    /// Apply a watch response's events; events at or below the cache's revision (a
    /// resumed watch's repeats) change nothing.
    pub(crate) fn apply(&mut self, events: &[Event]) -> Vec<Change> {
        let mut changes = Vec::new();
        // A response holds whole revisions (a txn's events together), so the floor is
        // the revision before the response, not before each event.
        let floor = self.revision;
        for event in events {
            let revision = event.revision();
            if revision <= floor {
                continue;
            }
            match event.kind {
                EventType::Put => {
                    let new = event.kv.clone();
                    match self.map.insert(new.key.clone(), new.clone()) {
                        None => changes.push(Change::Added(new)),
                        Some(old) => changes.push(Change::Updated { old, new }),
                    }
                }
                EventType::Delete => {
                    if let Some(old) = self.map.remove(&event.kv.key) {
                        changes.push(Change::Deleted(old));
                    }
                }
            }
            self.revision = self.revision.max(revision);
        }
        changes
    }

    /// A progress notification: nothing changed under the prefix up to `revision`.
    pub(crate) fn progress(&mut self, revision: Revision) {
        self.revision = self.revision.max(revision);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str, create: Revision, modified: Revision) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
            create_revision: create,
            mod_revision: modified,
            version: 1,
            lease: 0,
        }
    }

    fn put(kv: KeyValue) -> Event {
        Event {
            kind: EventType::Put,
            kv,
            prev_kv: None,
        }
    }

    fn delete(key: &str, revision: Revision) -> Event {
        Event {
            kind: EventType::Delete,
            kv: KeyValue {
                key: key.into(),
                mod_revision: revision,
                ..KeyValue::default()
            },
            prev_kv: None,
        }
    }

    #[test]
    fn a_relist_reports_what_changed_while_the_watch_was_away() {
        let mut cache = Cache::default();
        let first = cache.replace(
            vec![kv("a", "1", 2, 2), kv("b", "1", 3, 3), kv("c", "1", 4, 4)],
            4,
        );
        assert_eq!(first.len(), 3);
        assert!(first.iter().all(|c| matches!(c, Change::Added(_))));
        // Meanwhile: a deleted, b rewritten, c untouched, d new.
        let changes = cache.replace(
            vec![kv("b", "2", 3, 7), kv("c", "1", 4, 4), kv("d", "1", 8, 8)],
            9,
        );
        assert_eq!(
            changes,
            vec![
                Change::Deleted(kv("a", "1", 2, 2)),
                Change::Updated {
                    old: kv("b", "1", 3, 3),
                    new: kv("b", "2", 3, 7)
                },
                Change::Added(kv("d", "1", 8, 8)),
            ]
        );
        assert_eq!((cache.revision, cache.map.len()), (9, 3));
    }

    #[test]
    fn events_update_the_map_and_repeats_are_skipped() {
        let mut cache = Cache::default();
        cache.replace(vec![kv("a", "1", 2, 2)], 5);
        let changes = cache.apply(&[put(kv("a", "old", 2, 4)), put(kv("a", "2", 2, 6)), delete("x", 7)]);
        assert_eq!(
            changes,
            vec![Change::Updated {
                old: kv("a", "1", 2, 2),
                new: kv("a", "2", 2, 6)
            }],
            "the event at 4 is before the list's revision, the delete of an unknown key nothing"
        );
        assert_eq!(cache.revision, 7);
        let changes = cache.apply(&[delete("a", 8), put(kv("b", "1", 8, 8))]);
        assert_eq!(
            changes,
            vec![
                Change::Deleted(kv("a", "2", 2, 6)),
                Change::Added(kv("b", "1", 8, 8))
            ]
        );
        // A resumed watch delivers revision 8 again: nothing changes.
        assert!(cache.apply(&[delete("a", 8), put(kv("b", "1", 8, 8))]).is_empty());
        cache.progress(12);
        assert_eq!(cache.revision, 12);
        cache.progress(10);
        assert_eq!(cache.revision, 12, "progress never goes back");
    }
}
