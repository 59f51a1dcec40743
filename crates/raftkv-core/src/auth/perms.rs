//! Range permissions with etcd 3.4's interval conventions (`auth/range_perm_cache.go`
//! over `pkg/adt`'s "bytes affine" intervals), so a role grants exactly what it grants
//! in etcd.
//!
//! - A bound that is empty is +infinity (so a permission or request with `range_end`
//!   `[0]`, "every key from here on", ends at +infinity).
//! - A permission with an empty `range_end` is the point `[key, key + "\0")`.
//! - A request for one key (empty `range_end`) is allowed when some permission of the
//!   right type contains the key; a request for a range when the permissions that
//!   overlap it, taken in key order, cover it without a gap.

use std::cmp::Ordering;

use super::{Permission, PermissionType};

/// The kind of access a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read (range, watch, txn compare, prev_kv).
    Read,
    /// Write (put, delete).
    Write,
}

impl Access {
    fn granted_by(self, perm: PermissionType) -> bool {
        matches!(
            (self, perm),
            (_, PermissionType::ReadWrite)
                | (Access::Read, PermissionType::Read)
                | (Access::Write, PermissionType::Write)
        )
    }
}

/// etcd's `BytesAffineComparable`: empty sorts after everything.
fn affine_cmp(a: &[u8], b: &[u8]) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.cmp(b),
    }
}

/// A half-open interval `[begin, end)` of affine bounds.
struct Interval<'a> {
    begin: &'a [u8],
    end: std::borrow::Cow<'a, [u8]>,
}

impl<'a> Interval<'a> {
    fn of_permission(perm: &'a Permission) -> Self {
        let end = if perm.range_end.is_empty() {
            let mut point_end = perm.key.clone();
            point_end.push(0);
            std::borrow::Cow::Owned(point_end)
        } else if perm.range_end == [0] {
            std::borrow::Cow::Borrowed(&[][..])
        } else {
            std::borrow::Cow::Borrowed(perm.range_end.as_slice())
        };
        Interval {
            begin: &perm.key,
            end,
        }
    }

    /// etcd's `Interval.Compare(..) == 0`: the two overlap.
    fn overlaps(&self, other: &Interval<'_>) -> bool {
        let left_of = affine_cmp(self.begin, other.begin) == Ordering::Less
            && affine_cmp(&self.end, other.begin) != Ordering::Greater;
        let right_of = affine_cmp(self.begin, &other.end) != Ordering::Less;
        !left_of && !right_of
    }
}

/// Whether `perms` allow `access` to `[key, range_end)` (etcd's conventions above).
pub(crate) fn allowed<'a>(
    perms: impl Iterator<Item = &'a Permission>,
    access: Access,
    key: &[u8],
    range_end: &[u8],
) -> bool {
    let granted = perms
        .filter(|p| access.granted_by(p.perm_type))
        .map(Interval::of_permission);
    if range_end.is_empty() {
        let mut point_end = key.to_vec();
        point_end.push(0);
        let point = Interval {
            begin: key,
            end: std::borrow::Cow::Owned(point_end),
        };
        return granted.into_iter().any(|ivl| point.overlaps(&ivl));
    }
    let wanted = Interval {
        begin: key,
        end: std::borrow::Cow::Borrowed(if range_end == [0] { &[][..] } else { range_end }),
    };
    let mut hits: Vec<Interval<'_>> = granted.filter(|ivl| wanted.overlaps(ivl)).collect();
    hits.sort_by(|a, b| affine_cmp(a.begin, b.begin).then_with(|| affine_cmp(&a.end, &b.end)));
    let Some(first) = hits.first() else {
        return false;
    };
    let min_begin = first.begin;
    let mut max_end: &[u8] = &first.end;
    for ivl in &hits[1..] {
        if affine_cmp(max_end, ivl.begin) == Ordering::Less {
            return false;
        }
        if affine_cmp(&ivl.end, max_end) == Ordering::Greater {
            max_end = &ivl.end;
        }
    }
    affine_cmp(max_end, &wanted.end) != Ordering::Less
        && affine_cmp(min_begin, wanted.begin) != Ordering::Greater
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(t: PermissionType, key: &str, end: &[u8]) -> Permission {
        Permission {
            perm_type: t,
            key: key.as_bytes().to_vec(),
            range_end: end.to_vec(),
        }
    }

    #[test]
    fn points_ranges_and_prefixes_follow_etcd() {
        use PermissionType::*;
        let perms = [
            perm(Read, "a", b""),
            perm(ReadWrite, "foo/", b"foo0"),
            perm(Write, "w", b"\0"),
            perm(Read, "m", b"n"),
            perm(Read, "n", b"p"),
        ];
        let ok = |a, k: &str, e: &[u8]| allowed(perms.iter(), a, k.as_bytes(), e);
        assert!(ok(Access::Read, "a", b""));
        assert!(!ok(Access::Write, "a", b""));
        assert!(!ok(Access::Read, "a0", b""));
        // A point permission covers the point as a range too: [a, a\0).
        assert!(ok(Access::Read, "a", b"a\0"));
        assert!(!ok(Access::Read, "a", b"b"));
        assert!(ok(Access::Write, "foo/x", b""));
        assert!(ok(Access::Read, "foo/", b"foo0"));
        assert!(ok(Access::Read, "foo/a", b"foo/b"));
        assert!(!ok(Access::Read, "foo/", b"foo1"));
        // From "w" on, writes only.
        assert!(ok(Access::Write, "zzz", b""));
        assert!(ok(Access::Write, "w", b"\0"));
        assert!(ok(Access::Write, "x", b"\0"));
        assert!(!ok(Access::Write, "v", b"\0"));
        assert!(!ok(Access::Read, "x", b""));
        // Adjacent ranges join; a gap does not.
        assert!(ok(Access::Read, "m", b"p"));
        assert!(ok(Access::Read, "mm", b"o"));
        assert!(!ok(Access::Read, "m", b"q"));
        assert!(!ok(Access::Read, "l", b"n"));
    }

    #[test]
    fn nothing_granted_allows_nothing() {
        assert!(!allowed([].iter(), Access::Read, b"k", b""));
        assert!(!allowed([].iter(), Access::Read, b"k", b"\0"));
    }
}
