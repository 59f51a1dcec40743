//! The linearizability checker the fault tests rely on, checked itself: it accepts
//! sequential histories, overlapping writes read in either order and unknown writes that
//! did or did not take effect; it rejects stale reads, reads of values never written,
//! reads going back in time and lost acknowledged writes, naming the key; it gives up
//! with a clear error instead of hanging; it agrees with an exhaustive search on small
//! random histories; and a randomized register run by real threads through the Recorder
//! passes, then fails once one read is corrupted. `HISTORY_SEED` replays a printed seed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::history;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use history::{CheckOptions, Op, OpKind, Outcome, Recorder, Violation, check, check_with, final_state_check};

mod random;

/// An operation that completed at `complete`.
fn op(client: u64, invoke: u64, complete: u64, kind: OpKind, outcome: Outcome) -> Op {
    Op {
        client,
        invoke,
        complete: Some(complete),
        kind,
        outcome,
    }
}

fn put(client: u64, invoke: u64, complete: u64, key: &str, value: &str) -> Op {
    op(
        client,
        invoke,
        complete,
        OpKind::put(key, value),
        Outcome::Ok(None),
    )
}

fn get(client: u64, invoke: u64, complete: u64, key: &str, seen: Option<&str>) -> Op {
    op(
        client,
        invoke,
        complete,
        OpKind::get(key),
        Outcome::Ok(seen.map(Into::into)),
    )
}

fn delete(client: u64, invoke: u64, complete: u64, key: &str) -> Op {
    op(client, invoke, complete, OpKind::delete(key), Outcome::Ok(None))
}

/// A write that timed out at `timed_out` (it may still take effect later, or never).
fn timed_out(client: u64, invoke: u64, timed_out: u64, kind: OpKind) -> Op {
    op(client, invoke, timed_out, kind, Outcome::Unknown)
}

fn rejected(history: &[Op]) -> Violation {
    let violation = check(history).expect_err("history should be rejected");
    println!("{violation}");
    violation
}

#[test]
fn accepts_sequential_histories() {
    let history = [
        get(1, 0, 10, "k", None),
        put(1, 20, 30, "k", "v1"),
        get(2, 40, 50, "k", Some("v1")),
        put(2, 60, 70, "k", "v2"),
        put(1, 80, 90, "other", "x"),
        get(1, 100, 110, "k", Some("v2")),
        delete(2, 120, 130, "k"),
        get(1, 140, 150, "k", None),
        get(1, 160, 170, "other", Some("x")),
    ];
    let stats = check(&history).unwrap();
    assert_eq!((stats.keys, stats.ops_checked, stats.ops_dropped), (2, 9, 0));
    assert!(check(&[]).is_ok());
}

#[test]
fn accepts_overlapping_writes_read_in_either_order() {
    // put v1 [0, 100] and put v2 [10, 90] overlap: either may win, but reads must agree.
    let v1_then_v2 = [
        put(1, 0, 100, "k", "v1"),
        put(2, 10, 90, "k", "v2"),
        get(3, 20, 30, "k", Some("v1")),
        get(3, 40, 50, "k", Some("v2")),
        get(3, 110, 120, "k", Some("v2")),
    ];
    let v2_then_v1 = [
        put(1, 0, 100, "k", "v1"),
        put(2, 10, 90, "k", "v2"),
        get(3, 20, 30, "k", Some("v2")),
        get(3, 110, 120, "k", Some("v1")),
    ];
    // A read overlapping both writes may also see the register before either.
    let neither_yet = [
        put(1, 0, 100, "k", "v1"),
        put(2, 10, 90, "k", "v2"),
        get(3, 5, 95, "k", None),
        get(3, 110, 120, "k", Some("v1")),
    ];
    for history in [&v1_then_v2[..], &v2_then_v1, &neither_yet] {
        check(history).unwrap();
    }
}

#[test]
fn accepts_unknown_writes_that_took_effect_and_ones_that_did_not() {
    let base = || {
        vec![
            put(1, 0, 10, "k", "v1"),
            timed_out(2, 20, 1_000, OpKind::put("k", "v2")),
        ]
    };
    let mut took_effect = base();
    took_effect.push(get(3, 30, 40, "k", Some("v2")));
    let mut did_not = base();
    did_not.push(get(3, 2_000, 2_010, "k", Some("v1")));
    // Long after the client gave up, the write can still land (a proposal in the log).
    let mut landed_late = did_not.clone();
    landed_late.push(get(3, 3_000, 3_010, "k", Some("v2")));
    // A write whose request never came back at all, and a delete that timed out.
    let mut never_completed = base();
    never_completed.push(Op {
        client: 4,
        invoke: 50,
        complete: None,
        kind: OpKind::delete("k"),
        outcome: Outcome::Unknown,
    });
    never_completed.push(get(3, 60, 70, "k", None));
    for history in [&took_effect, &did_not, &landed_late, &never_completed] {
        check(history).unwrap();
    }
    // Unknown gets say nothing; failed writes never happened; unknown writes nobody read
    // are dropped before the search.
    let noise = [
        put(1, 0, 10, "k", "v1"),
        op(2, 20, 30, OpKind::get("k"), Outcome::Unknown),
        op(2, 40, 50, OpKind::put("k", "lost"), Outcome::Failed),
        timed_out(3, 45, 55, OpKind::put("k", "unread")),
        get(1, 60, 70, "k", Some("v1")),
    ];
    let stats = check(&noise).unwrap();
    assert_eq!(
        (stats.ops_checked, stats.ops_dropped, stats.unknown_writes_kept),
        (2, 3, 0)
    );
    let stats = check(&landed_late).unwrap();
    assert_eq!(stats.unknown_writes_kept, 1);
}

#[test]
fn rejects_a_stale_read() {
    let history = [
        put(1, 0, 10, "fine", "x"),
        put(1, 20, 30, "k", "v1"),
        put(1, 40, 50, "k", "v2"),
        get(2, 60, 70, "k", Some("v1")),
        get(2, 80, 90, "fine", Some("x")),
    ];
    let violation = rejected(&history);
    assert!(
        matches!(violation, Violation::NotLinearizable { .. }),
        "{violation:?}"
    );
    assert_eq!(violation.key(), b"k");
    let text = violation.to_string();
    assert!(text.contains("key \"k\""), "{text}");
    assert!(
        text.contains("#3 client 2 get \"k\""),
        "the stale read is named: {text}"
    );
    assert!(text.contains("holds \"v2\""), "{text}");
}

#[test]
fn rejects_a_read_of_a_value_never_written() {
    let history = [put(1, 0, 10, "k", "v1"), get(2, 20, 30, "k", Some("v9"))];
    let violation = rejected(&history);
    assert!(
        matches!(violation, Violation::NeverWritten { .. }),
        "{violation:?}"
    );
    assert_eq!(violation.key(), b"k");
    // A failed write definitely did not happen, so reading its value is just as wrong.
    let history = [
        op(1, 0, 10, OpKind::put("j", "v1"), Outcome::Failed),
        get(2, 20, 30, "j", Some("v1")),
    ];
    assert_eq!(rejected(&history).key(), b"j");
    // A value written to another key does not count.
    let history = [put(1, 0, 10, "a", "v1"), get(2, 20, 30, "b", Some("v1"))];
    assert_eq!(rejected(&history).key(), b"b");
}

#[test]
fn rejects_reads_going_back_in_time() {
    // The writes overlap, so either order is possible, but once v2 has been read after
    // both completed... v1 cannot come back.
    let history = [
        put(1, 0, 10, "k", "v1"),
        put(2, 5, 100, "k", "v2"),
        get(3, 20, 30, "k", Some("v2")),
        get(3, 40, 50, "k", Some("v1")),
    ];
    let violation = rejected(&history);
    assert!(
        matches!(violation, Violation::NotLinearizable { .. }),
        "{violation:?}"
    );
    assert_eq!(violation.key(), b"k");
    // The same with two readers: the second read starts after the first one returned.
    let history = [
        put(1, 0, 10, "t", "v1"),
        put(1, 20, 30, "t", "v2"),
        get(2, 0, 100, "t", Some("v2")),
        get(3, 110, 120, "t", Some("v1")),
    ];
    assert_eq!(rejected(&history).key(), b"t");
}

#[test]
fn final_state_accepts_a_possible_last_write_and_rejects_lost_or_invented_ones() {
    let history = [
        put(1, 0, 10, "seq", "v1"),
        put(1, 20, 30, "seq", "v2"),
        put(1, 0, 100, "par", "a"),
        put(2, 10, 90, "par", "b"),
        put(1, 0, 10, "gone", "x"),
        delete(1, 20, 30, "gone"),
        put(1, 0, 10, "late", "v1"),
        timed_out(2, 20, 30, OpKind::put("late", "v2")),
        timed_out(2, 0, 10, OpKind::put("maybe", "m")),
    ];
    let finals = |pairs: &[(&str, Option<&str>)]| -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec())))
            .collect()
    };
    let good = [
        finals(&[
            ("seq", Some("v2")),
            ("par", Some("a")),
            ("gone", None),
            ("late", Some("v1")),
        ]),
        finals(&[
            ("par", Some("b")),
            ("late", Some("v2")),
            ("maybe", Some("m")),
            ("never", None),
        ]),
        finals(&[("maybe", None)]),
    ];
    for reads in &good {
        final_state_check(&history, reads).unwrap();
    }
    for (reads, key) in [
        (finals(&[("seq", Some("v1"))]), "seq"), // v2 was acknowledged after v1: lost
        (finals(&[("par", None)]), "par"),       // both writes lost
        (finals(&[("gone", Some("x"))]), "gone"), // the acknowledged delete lost
        (finals(&[("seq", Some("v3"))]), "seq"), // never written
        (finals(&[("never", Some("z"))]), "never"), // invented
    ] {
        let violation = final_state_check(&history, &reads).expect_err(key);
        println!("{violation}");
        assert!(matches!(violation, Violation::FinalState { .. }), "{violation:?}");
        assert_eq!(violation.key(), key.as_bytes());
        assert!(violation.to_string().contains(&format!("key {key:?}")));
    }
}

#[test]
fn gives_up_with_a_clear_error_instead_of_hanging() {
    // Twenty fully overlapping writes followed by two reads that disagree: not
    // linearizable, and proving it means trying every order of the twenty writes.
    let mut history: Vec<Op> = (0..20)
        .map(|i| put(i, i, 1_000 + i, "wide", &format!("v{i}")))
        .collect();
    history.push(get(30, 2_000, 2_010, "wide", Some("v3")));
    history.push(get(30, 2_020, 2_030, "wide", Some("v5")));
    let options = CheckOptions {
        max_states_per_key: 10_000,
    };
    let violation = check_with(&history, &options).expect_err("budget");
    println!("{violation}");
    assert!(
        matches!(violation, Violation::SearchBudgetExceeded { ops: 22, .. }),
        "{violation:?}"
    );
    assert_eq!(violation.key(), b"wide");
}
