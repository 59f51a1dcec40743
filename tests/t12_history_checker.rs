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

/// `HISTORY_SEED` if set, else the clock; printed so a failure can be replayed.
fn seed() -> u64 {
    let seed = std::env::var("HISTORY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64);
    println!("seed {seed} (rerun with HISTORY_SEED={seed})");
    seed
}

/// Marsaglia's xorshift64: deterministic, good enough to pick operations.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const KEYS: [&str; 3] = ["a", "b", "c"];
const CLIENTS: u64 = 4;
const OPS_PER_CLIENT: u64 = 250;

/// The value each key holds at the end (None: absent).
type FinalReads = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Real threads against a mutex-guarded map (linearizable: each operation takes effect
/// inside the lock, between its invoke and its complete), with failed, timed-out and
/// abandoned requests mixed in. The seed picks the operations and their fates; the
/// interleaving is the OS's.
fn run_register(seed: u64) -> (Vec<Op>, FinalReads) {
    let recorder = Arc::new(Recorder::new());
    let store: Arc<Mutex<HashMap<Vec<u8>, Vec<u8>>>> = Arc::default();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (recorder, store) = (recorder.clone(), store.clone());
            let mut rng = XorShift::new(seed ^ (client + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            std::thread::spawn(move || {
                for i in 0..OPS_PER_CLIENT {
                    let key = KEYS[rng.below(KEYS.len() as u64) as usize];
                    let kind = match rng.below(10) {
                        0..=3 => OpKind::put(key, format!("c{client}-{i}")),
                        4 => OpKind::delete(key),
                        _ => OpKind::get(key),
                    };
                    // 0: refused; 1: timed out after applying; 2: timed out before;
                    // 3: abandoned after applying (never completes); else normal.
                    let fate = rng.below(25);
                    let pending = recorder.invoke(client, kind.clone());
                    if rng.below(2) == 0 {
                        std::thread::yield_now();
                    }
                    let seen = if matches!(fate, 0 | 2) {
                        None
                    } else {
                        let mut store = store.lock().unwrap();
                        match &kind {
                            OpKind::Put { key, value } => store.insert(key.clone(), value.clone()).and(None),
                            OpKind::Delete { key } => store.remove(key).and(None),
                            OpKind::Get { key } => store.get(key).cloned(),
                        }
                    };
                    if rng.below(2) == 0 {
                        std::thread::yield_now();
                    }
                    match fate {
                        0 => recorder.complete(pending, Outcome::Failed),
                        1 | 2 => recorder.complete(pending, Outcome::Unknown),
                        3 => drop(pending),
                        _ => recorder.complete(pending, Outcome::Ok(seen)),
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let store = store.lock().unwrap();
    let finals = KEYS
        .iter()
        .map(|k| (k.as_bytes().to_vec(), store.get(k.as_bytes()).cloned()))
        .collect();
    (recorder.history(), finals)
}

fn acked(op: &Op) -> bool {
    matches!(op.outcome, Outcome::Ok(_))
}

/// A get that must have seen a later write: some acknowledged put `p`, then (strictly
/// after it) an acknowledged write `q`, then (strictly after that) the get. Values are
/// unique, so making the get return `p`'s value is certainly not linearizable.
fn stale_candidate(history: &[Op], rng: &mut XorShift) -> Option<(usize, Vec<u8>)> {
    let done = |op: &Op| op.complete.unwrap_or(u64::MAX);
    let start = rng.below(history.len() as u64) as usize;
    (0..history.len())
        .map(|i| (start + i) % history.len())
        .find_map(|g| {
            let read = &history[g];
            if !matches!(read.kind, OpKind::Get { .. }) || !acked(read) {
                return None;
            }
            let same_key_writes = || {
                history
                    .iter()
                    .filter(|w| w.kind.key() == read.kind.key() && acked(w))
                    .filter(|w| !matches!(w.kind, OpKind::Get { .. }))
            };
            let q = same_key_writes()
                .filter(|q| done(q) < read.invoke)
                .max_by_key(|q| q.invoke)?;
            let p = same_key_writes().find(|p| matches!(p.kind, OpKind::Put { .. }) && done(p) < q.invoke)?;
            let OpKind::Put { value, .. } = &p.kind else {
                unreachable!()
            };
            Some((g, value.clone()))
        })
}

#[test]
fn random_linearizable_register_passes_and_a_corrupted_read_fails() {
    let seed = seed();
    let (history, finals) = run_register(seed);
    assert_eq!(history.len() as u64, CLIENTS * OPS_PER_CLIENT);
    assert!(history.windows(2).all(|w| w[0].invoke <= w[1].invoke));
    assert!(
        history
            .iter()
            .all(|op| op.complete.is_none_or(|c| c >= op.invoke))
    );

    let stats = check(&history).unwrap_or_else(|v| panic!("seed {seed}: correct history rejected: {v}"));
    println!("{stats:?}");
    assert_eq!(stats.keys, KEYS.len());
    final_state_check(&history, &finals).unwrap_or_else(|v| panic!("seed {seed}: {v}"));

    // One stale read.
    let mut rng = XorShift::new(seed);
    let (g, stale) = stale_candidate(&history, &mut rng).expect("some get follows two ordered writes");
    let mut corrupted = history.clone();
    corrupted[g].outcome = Outcome::Ok(Some(stale.clone()));
    let violation = check(&corrupted).expect_err("stale read accepted");
    println!("seed {seed}, corrupted #{g}: {violation}");
    assert!(
        matches!(violation, Violation::NotLinearizable { .. }),
        "{violation:?}"
    );
    assert_eq!(violation.key(), history[g].kind.key());

    // One invented value.
    let mut corrupted = history.clone();
    corrupted[g].outcome = Outcome::found("invented");
    let violation = check(&corrupted).expect_err("invented value accepted");
    assert!(
        matches!(violation, Violation::NeverWritten { .. }),
        "{violation:?}"
    );
    assert_eq!(violation.key(), history[g].kind.key());

    // A lost write at the end: the key's final value replaced by the overwritten one.
    let mut finals = finals;
    finals.insert(history[g].kind.key().to_vec(), Some(stale));
    let violation = final_state_check(&history, &finals).expect_err("lost write accepted");
    println!("seed {seed}: {violation}");
    assert!(matches!(violation, Violation::FinalState { .. }), "{violation:?}");
    assert_eq!(violation.key(), history[g].kind.key());
}

#[test]
fn recorder_marks_abandoned_operations_unknown() {
    let recorder = Recorder::new();
    let put = recorder.invoke(1, OpKind::put("k", "v"));
    let abandoned = recorder.invoke(2, OpKind::put("k", "w"));
    recorder.complete(put, Outcome::Ok(None));
    drop(abandoned);
    let get = recorder.invoke(1, OpKind::get("k"));
    recorder.complete(get, Outcome::found("w"));
    let history = recorder.history();
    assert_eq!(history[1].complete, None);
    assert_eq!(history[1].outcome, Outcome::Unknown);
    assert!(history[0].complete.unwrap() >= history[0].invoke);
    // The abandoned write may have landed: the read of its value is explained.
    let stats = check(&history).unwrap();
    assert_eq!(stats.unknown_writes_kept, 1);
}

/// Linearizable by the definition, with none of the checker's shortcuts: some order of the
/// completed operations and some of the unknown writes (failed operations and unknown
/// gets left out) in which no operation precedes one that completed before it was
/// invoked, and every get returns the value of the last write before it.
fn exhaustive(history: &[Op]) -> bool {
    fn extend(ops: &[&Op], order: &mut Vec<usize>) -> bool {
        let done = |op: &Op| {
            if op.outcome == Outcome::Unknown {
                u64::MAX
            } else {
                op.complete.unwrap_or(u64::MAX)
            }
        };
        let complete = ops
            .iter()
            .enumerate()
            .all(|(i, op)| op.outcome == Outcome::Unknown || order.contains(&i));
        let real_time = order
            .iter()
            .enumerate()
            .all(|(at, &a)| order[at..].iter().all(|&b| done(ops[b]) >= ops[a].invoke));
        if !real_time {
            return false;
        }
        let mut register: Option<&[u8]> = None;
        let reads_fit = order.iter().all(|&i| match (&ops[i].kind, &ops[i].outcome) {
            (OpKind::Put { value, .. }, _) => {
                register = Some(value);
                true
            }
            (OpKind::Delete { .. }, _) => {
                register = None;
                true
            }
            (OpKind::Get { .. }, outcome) => *outcome == Outcome::Ok(register.map(<[u8]>::to_vec)),
        });
        if complete && reads_fit {
            return true;
        }
        (0..ops.len()).any(|i| {
            if order.contains(&i) {
                return false;
            }
            order.push(i);
            let found = extend(ops, order);
            order.pop();
            found
        })
    }
    let ops: Vec<&Op> = history
        .iter()
        .filter(|op| op.outcome != Outcome::Failed)
        .filter(|op| !(matches!(op.kind, OpKind::Get { .. }) && op.outcome == Outcome::Unknown))
        .collect();
    extend(&ops, &mut Vec::new())
}

#[test]
fn agrees_with_an_exhaustive_search_on_small_random_histories() {
    let mut rng = XorShift::new(seed());
    let values = ["v1", "v2", "v3"];
    let (mut accepted, mut rejected) = (0, 0);
    for _ in 0..4_000 {
        // Up to seven overlapping operations on one key, values reused, every outcome.
        let history: Vec<Op> = (0..1 + rng.below(7))
            .map(|client| {
                let value = values[rng.below(3) as usize];
                let (kind, is_get) = match rng.below(3) {
                    0 => (OpKind::put("k", value), false),
                    1 => (OpKind::delete("k"), false),
                    _ => (OpKind::get("k"), true),
                };
                let outcome = match rng.below(6) {
                    0 => Outcome::Failed,
                    1 => Outcome::Unknown,
                    2 if is_get => Outcome::Ok(None),
                    _ if is_get => Outcome::found(value),
                    _ => Outcome::Ok(None),
                };
                let invoke = rng.below(20);
                let complete =
                    (outcome != Outcome::Unknown || rng.below(2) == 0).then(|| invoke + 1 + rng.below(8));
                Op {
                    client,
                    invoke,
                    complete,
                    kind,
                    outcome,
                }
            })
            .collect();
        let verdict = check(&history);
        assert_eq!(
            verdict.is_ok(),
            exhaustive(&history),
            "{verdict:?} for {history:#?}"
        );
        if verdict.is_ok() {
            accepted += 1
        } else {
            rejected += 1
        }
    }
    println!("{accepted} accepted, {rejected} rejected, all as the exhaustive search says");
    assert!(accepted > 300 && rejected > 300);
}
