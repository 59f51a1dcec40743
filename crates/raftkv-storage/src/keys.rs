//! The byte layout of the state-machine tree (layout version
//! [`crate::STATE_LAYOUT_VERSION`]). Everything the state machine owns lives in ONE sled
//! tree, written in order by one writer at a time, so that what a crash leaves is a
//! prefix of the writes (`apply/rollback.rs` says what that prefix may hold and how it is
//! undone); a one-byte prefix tells the families apart:
//!
//! | key                                   | value                      |
//! |---------------------------------------|----------------------------|
//! | `m` name                              | metadata: [`meta::STATE`] (applied log id, membership, revision, compact revision: ONE record, written last by every apply), physical compaction progress, cluster id |
//! | `v` escaped(key) 00 00 rev(8, BE)     | [`crate::mvcc::VersionRecord`]: a put of `key` at `rev` (layouts before 4 also wrote tombstones here) |
//! | `h` rev(8, BE) sub(4, BE) 02          | a chunk of the event history by revision, from (rev, sub) on: the user keys changed, each with its (rev, sub) and whether it was deleted; a delete has no other record (`mvcc/history_records.rs`; layout 3 wrote chunks without kinds, mark 01, layout 2 `h` rev sub without a mark, value the one key) |
//! | `p` member id(8, BE)                  | a member's published client URLs |
//! | `l` lease id(8, sign-flipped BE)      | [`crate::apply::lease_table::LeaseRecord`]: granted TTL, last checkpointed remaining TTL |
//! | `a` lease id(8, sign-flipped BE) key  | empty: `key` (raw user key) is attached to the lease |
//! | `r` alarm type(4, BE) member id(8, BE) | empty: the alarm is active (`apply/alarm_table.rs`) |
//! | `x`                                   | the auth store ([`raftkv_core::auth::AuthState`]: users with their bcrypt hashes, roles, enabled, auth revision; `apply/auth_table.rs`) |
//! | `u` index(8, BE) tree key             | an apply's undo record: the record at `tree key` (an `l`, `p`, `r`, `x` or `m` record, which apply overwrites in place) before the apply that ends at `index` changed it |
//!
//! The `a` family is an index: the newest version of a live `key` names the lease too. It
//! is not copied into snapshots; an install rebuilds it from the key index of the tree it
//! received.
//!
//! `escaped(key)` writes each 0x00 byte as 0x00 0xFF and ends with 0x00 0x00. It keeps the
//! order of user keys (a key sorts before every longer key it prefixes, since the
//! terminator 00 00 sorts below both 00 FF and any non-zero byte), so `[a, b)` over user
//! keys is one sled range, and every version of a key is contiguous and ordered by
//! revision.
//!
//! Physical compaction ([`crate::maintenance::compactor`]) removes `v` records no read at or above the
//! compact revision can see and every `h` record whose events are all below the revision it
//! compacted to; the `h` family therefore holds the history a future watch could still
//! replay, plus the older events of the one record that reaches that revision.

use raftkv_core::Revision;

/// Metadata family.
pub const META: u8 = b'm';
/// Versions family.
pub const VERSION: u8 = b'v';
/// History family.
pub const HISTORY: u8 = b'h';
/// Published members family.
pub const MEMBER: u8 = b'p';
/// Leases family.
pub const LEASE: u8 = b'l';
/// Lease attachments family (lease id, key).
pub const ATTACHMENT: u8 = b'a';
/// Undo records of in-place overwrites (apply's last index, tree key).
pub const UNDO: u8 = b'u';
/// Active alarms (alarm type, member id).
pub const ALARM: u8 = b'r';
/// The auth store: ONE record, [`AUTH_STATE`] (users, roles, enabled, auth revision).
pub const AUTH: u8 = b'x';
/// The auth store's record ([`raftkv_core::auth::AuthState`]).
pub const AUTH_STATE: &[u8] = b"x";

/// Metadata key names.
pub mod meta {
    /// The applied state (`apply::applied_state::AppliedState`): ONE record, so that
    /// the applied log id, membership, revision and compact revision a crash leaves
    /// always belong together. Layout version 2 on.
    pub const STATE: &[u8] = b"mstate";
    /// Last applied log id (layout version 1 only; read once to migrate).
    pub const APPLIED: &[u8] = b"mapplied";
    /// Last applied membership (layout version 1 only).
    pub const MEMBERSHIP: &[u8] = b"mmembership";
    /// Current revision (layout version 1 only).
    pub const REVISION: &[u8] = b"mrevision";
    /// Compact revision (logical: reads below it are refused; layout version 1 only).
    pub const COMPACT: &[u8] = b"mcompact";
    /// Revision physically compacted up to (see [`crate::maintenance::compactor`]); absent means 0.
    /// Local to this tree: never copied into a snapshot.
    pub const COMPACT_DONE: &[u8] = b"mcompact_done";
    /// The cluster id, derived from the first membership ever applied.
    pub const CLUSTER_ID: &[u8] = b"mcluster_id";
}

/// Append the escaped form of `key` (with its terminator) to `out`: the runs between
/// zero bytes are copied whole (keys of `etcdctl check perf` are 256 bytes, mostly zeros).
fn escape_into(out: &mut Vec<u8>, key: &[u8]) {
    let mut runs = key.split(|&b| b == 0);
    if let Some(first) = runs.next() {
        out.extend_from_slice(first);
    }
    for run in runs {
        out.extend_from_slice(&[0, 0xff]);
        out.extend_from_slice(run);
    }
    out.extend_from_slice(&[0, 0]);
}

/// `v` + escaped(key): the prefix shared by every version of `key`.
pub fn version_prefix(key: &[u8]) -> Vec<u8> {
    let zeros = key.iter().filter(|&&b| b == 0).count();
    // Room for the revision too: `version_key` appends it without growing the buffer.
    let mut out = Vec::with_capacity(1 + key.len() + zeros + 2 + 8);
    out.push(VERSION);
    escape_into(&mut out, key);
    out
}

/// The tree key of `key` at `rev`.
pub fn version_key(key: &[u8], rev: Revision) -> Vec<u8> {
    let mut out = version_prefix(key);
    out.extend_from_slice(&rev_bytes(rev));
    out
}

/// Split a version tree key into (escaped user key with `v` prefix, revision).
pub fn split_version_key(tree_key: &[u8]) -> Option<(&[u8], Revision)> {
    if tree_key.len() < 11 || tree_key[0] != VERSION {
        return None;
    }
    let (prefix, rev) = tree_key.split_at(tree_key.len() - 8);
    let rev: [u8; 8] = rev.try_into().ok()?;
    Some((prefix, u64::from_be_bytes(rev) as Revision))
}

/// Decode the user key from a version prefix (`v` + escaped(key)).
pub fn decode_user_key(prefix: &[u8]) -> Option<Vec<u8>> {
    let body = prefix.get(1..prefix.len().checked_sub(2)?)?;
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        out.push(body[i]);
        if body[i] == 0 {
            if body.get(i + 1) != Some(&0xff) {
                return None;
            }
            i += 1;
        }
        i += 1;
    }
    Some(out)
}

/// The tree-key bounds `[lower, upper)` covering user keys `[key, range_end)` with
/// etcd's forms: empty `range_end` is just `key`; `[0]` is every key >= `key`.
pub fn version_bounds(key: &[u8], range_end: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let lower = version_prefix(key);
    let upper = if range_end.is_empty() {
        // Every version of `key` and nothing else: the prefix with its terminator bumped.
        let mut upper = lower.clone();
        if let Some(last) = upper.last_mut() {
            *last = 1;
        }
        upper
    } else if range_end == [0] {
        vec![VERSION + 1]
    } else {
        version_prefix(range_end)
    };
    (lower, upper)
}

/// The history key of (rev, sub) as layout 2 wrote it (a chunk's adds
/// [`crate::mvcc::history_records::ChunkFormat::mark`]); also the bound readers seek to.
pub fn history_key(rev: Revision, sub: u32) -> [u8; 13] {
    let mut out = [0u8; 13];
    out[0] = HISTORY;
    out[1..9].copy_from_slice(&rev_bytes(rev));
    out[9..].copy_from_slice(&sub.to_be_bytes());
    out
}

/// Revision of a history key.
pub fn history_revision(tree_key: &[u8]) -> Option<Revision> {
    let bytes: [u8; 8] = tree_key.get(1..9)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes) as Revision)
}

/// The published-member key of `id`.
pub fn member_key(id: u64) -> [u8; 9] {
    let mut out = [0u8; 9];
    out[0] = MEMBER;
    out[1..].copy_from_slice(&id.to_be_bytes());
    out
}

/// The key of an active alarm of type `alarm` raised for `member_id`: by type first, so
/// the alarms of one type are one prefix.
pub fn alarm_key(alarm: i32, member_id: u64) -> [u8; 13] {
    let mut out = [0u8; 13];
    out[0] = ALARM;
    out[1..5].copy_from_slice(&alarm.to_be_bytes());
    out[5..].copy_from_slice(&member_id.to_be_bytes());
    out
}

/// The prefix of the alarms of type `alarm`.
pub fn alarm_prefix(alarm: i32) -> [u8; 5] {
    let mut out = [0u8; 5];
    out[0] = ALARM;
    out[1..].copy_from_slice(&alarm.to_be_bytes());
    out
}

/// The (alarm type, member id) of an alarm key.
pub fn alarm_of(tree_key: &[u8]) -> Option<(i32, u64)> {
    if tree_key.len() != 13 || tree_key[0] != ALARM {
        return None;
    }
    let alarm: [u8; 4] = tree_key.get(1..5)?.try_into().ok()?;
    let member: [u8; 8] = tree_key.get(5..13)?.try_into().ok()?;
    Some((i32::from_be_bytes(alarm), u64::from_be_bytes(member)))
}

/// Lease ids are i64: flip the sign bit so the big-endian bytes sort like the number.
fn lease_id_bytes(id: i64) -> [u8; 8] {
    ((id as u64) ^ (1 << 63)).to_be_bytes()
}

/// The lease id encoded by [`lease_id_bytes`] at `bytes[0..8]`.
fn lease_id_from(bytes: &[u8]) -> Option<i64> {
    let raw: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some((u64::from_be_bytes(raw) ^ (1 << 63)) as i64)
}

/// The lease record key of `id`.
pub fn lease_key(id: i64) -> [u8; 9] {
    let mut out = [0u8; 9];
    out[0] = LEASE;
    out[1..].copy_from_slice(&lease_id_bytes(id));
    out
}

/// The lease id of a lease record key.
pub fn lease_id_of(tree_key: &[u8]) -> Option<i64> {
    if tree_key.len() != 9 || tree_key[0] != LEASE {
        return None;
    }
    lease_id_from(&tree_key[1..])
}

/// The prefix of every attachment of lease `id`.
pub fn attachment_prefix(id: i64) -> [u8; 9] {
    let mut out = [0u8; 9];
    out[0] = ATTACHMENT;
    out[1..].copy_from_slice(&lease_id_bytes(id));
    out
}

/// The attachment key of `key` to lease `id`.
pub fn attachment_key(id: i64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + key.len());
    out.extend_from_slice(&attachment_prefix(id));
    out.extend_from_slice(key);
    out
}

/// The undo-record key of the record at `tree_key` for the apply that ends at log index
/// `index`.
pub fn undo_key(index: u64, tree_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + tree_key.len());
    out.push(UNDO);
    out.extend_from_slice(&index.to_be_bytes());
    out.extend_from_slice(tree_key);
    out
}

/// The (apply's last index, tree key) of an undo-record key.
pub fn split_undo_key(undo_key: &[u8]) -> Option<(u64, &[u8])> {
    if undo_key.len() < 10 || undo_key[0] != UNDO {
        return None;
    }
    let index: [u8; 8] = undo_key.get(1..9)?.try_into().ok()?;
    Some((u64::from_be_bytes(index), &undo_key[9..]))
}

/// Whether apply overwrites the record at `tree_key` in place (so a crash needs an undo
/// record to take it back): lease records, published members, alarms and metadata.
/// Versions and history are keyed by revision, attachments follow the versions.
pub fn overwritten_in_place(tree_key: &[u8]) -> bool {
    matches!(
        tree_key.first(),
        Some(&LEASE) | Some(&MEMBER) | Some(&ALARM) | Some(&AUTH) | Some(&META)
    )
}

/// The user key of an attachment key.
pub fn attached_user_key(tree_key: &[u8]) -> Option<&[u8]> {
    if tree_key.first() != Some(&ATTACHMENT) {
        return None;
    }
    tree_key.get(9..)
}

fn rev_bytes(rev: Revision) -> [u8; 8] {
    // Revisions are >= 1, so the unsigned big-endian form sorts like the number.
    (rev.max(0) as u64).to_be_bytes()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn encoding_keeps_key_then_revision_order() {
        let keys: Vec<&[u8]> = vec![
            b"",
            b"\x00",
            b"\x00\x00",
            b"\x00\x01",
            b"a",
            b"a\x00",
            b"a\x00b",
            b"ab",
            b"b",
            b"\xff",
        ];
        let mut encoded = Vec::new();
        for k in &keys {
            for rev in [1, 2, 300] {
                encoded.push(version_key(k, rev));
            }
        }
        let mut sorted = encoded.clone();
        sorted.sort();
        assert_eq!(encoded, sorted);
        assert_eq!(version_prefix(b""), b"v\x00\x00");
        assert_eq!(version_prefix(b"\x00"), b"v\x00\xff\x00\x00");
        assert_eq!(
            version_prefix(b"a\x00\x00b\x00"),
            b"va\x00\xff\x00\xffb\x00\xff\x00\x00"
        );
        let zeros = [0u8; 256];
        assert_eq!(version_key(&zeros, 1).len(), 1 + 512 + 2 + 8);
        for k in &keys {
            let tree_key = version_key(k, 42);
            let (prefix, rev) = split_version_key(&tree_key).unwrap();
            assert_eq!(rev, 42);
            assert_eq!(decode_user_key(prefix).unwrap(), k.to_vec());
        }
    }

    #[test]
    fn alarm_keys_round_trip_and_group_by_type() {
        let key = alarm_key(1, 0xdead_beef);
        assert_eq!(alarm_of(&key), Some((1, 0xdead_beef)));
        assert!(key.starts_with(&alarm_prefix(1)));
        assert!(!alarm_key(2, 7).starts_with(&alarm_prefix(1)));
        assert_eq!(alarm_of(&key[..12]), None);
        assert!(overwritten_in_place(&key));
    }

    #[test]
    fn lease_keys_sort_like_ids_and_round_trip() {
        let ids = [i64::MIN, -5, -1, 1, 7, i64::MAX];
        let encoded: Vec<_> = ids.iter().map(|id| lease_key(*id)).collect();
        let mut sorted = encoded.clone();
        sorted.sort();
        assert_eq!(encoded, sorted);
        for id in ids {
            assert_eq!(lease_id_of(&lease_key(id)), Some(id));
            let a = attachment_key(id, b"k\x00");
            assert!(a.starts_with(&attachment_prefix(id)));
            assert_eq!(attached_user_key(&a), Some(&b"k\x00"[..]));
        }
    }

    #[test]
    fn bounds_cover_exactly_the_range() {
        let (lo, hi) = version_bounds(b"a", b"");
        assert!(lo <= version_key(b"a", 1) && version_key(b"a", i64::MAX) < hi);
        assert!(
            version_key(b"a\x00", 1) >= hi,
            "a longer key is outside a single-key range"
        );
        let (lo, hi) = version_bounds(b"a", b"b");
        assert!(version_key(b"azzz", 5) < hi && version_key(b"a", 5) >= lo);
        assert!(version_key(b"b", 1) >= hi);
        let (_, hi) = version_bounds(b"a", &[0]);
        assert!(version_key(b"\xff\xff", 9) < hi);
    }
}
