//! [`KeyRange`]: the keys a watcher covers, in one normalized form, shared by the hub that
//! routes events, the history replay and the event collector.

use raftkv_core::watch::{WatchRequest, cancel_reason};

/// The keys a watcher covers, normalized from etcd's (key, range_end) forms.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum KeyRange {
    /// One key.
    Single(Vec<u8>),
    /// `[start, end)`, or every key `>= start` when `end` is `None`.
    Range {
        /// Inclusive start.
        start: Vec<u8>,
        /// Exclusive end; `None`: unbounded.
        end: Option<Vec<u8>>,
    },
}

impl KeyRange {
    /// etcd's normalization (`v3rpc/watch.go`): an empty key is `\0`, the smallest key;
    /// an empty `range_end` is the key alone; `[0]` is every key `>= key`. A range that
    /// holds no key is refused with etcd's reason.
    pub(crate) fn from_request(req: &WatchRequest) -> std::result::Result<Self, &'static str> {
        let start = if req.key.is_empty() {
            vec![0]
        } else {
            req.key.clone()
        };
        match req.range_end.as_slice() {
            [] => Ok(KeyRange::Single(start)),
            [0] => Ok(KeyRange::Range { start, end: None }),
            end if start.as_slice() >= end => Err(cancel_reason::EMPTY_RANGE),
            end => Ok(KeyRange::Range {
                start,
                end: Some(end.to_vec()),
            }),
        }
    }

    /// Whether `key` is covered.
    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeyRange::Single(k) => k.as_slice() == key,
            KeyRange::Range { start, end } => {
                key >= start.as_slice() && end.as_ref().is_none_or(|e| key < e.as_slice())
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_normalized_as_etcd_does() {
        let single = KeyRange::from_request(&WatchRequest::key("a")).unwrap();
        assert!(single.contains(b"a") && !single.contains(b"ab"));
        let prefix = KeyRange::from_request(&WatchRequest::prefix("a")).unwrap();
        assert!(prefix.contains(b"a") && prefix.contains(b"azz") && !prefix.contains(b"b"));
        let everything = KeyRange::from_request(&WatchRequest::prefix("")).unwrap();
        assert!(everything.contains(b"\x00") && everything.contains(b"\xff\xff"));
        let from_b = KeyRange::from_request(&WatchRequest::interval("b", vec![0])).unwrap();
        assert!(!from_b.contains(b"a") && from_b.contains(b"zz"));
        assert_eq!(
            KeyRange::from_request(&WatchRequest::interval("b", "a")),
            Err(cancel_reason::EMPTY_RANGE)
        );
        assert_eq!(
            KeyRange::from_request(&WatchRequest::interval("b", "b")),
            Err(cancel_reason::EMPTY_RANGE)
        );
        assert_eq!(
            KeyRange::from_request(&WatchRequest::default()).unwrap(),
            KeyRange::Single(vec![0])
        );
    }
}
