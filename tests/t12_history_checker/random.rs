//! Random histories: a simulated register with clients, corrupted reads, and an exhaustive
//! search to compare the checker with on small histories.

use super::*;

/// `HISTORY_SEED` if set, else the clock; printed so a failure can be replayed.
pub(crate) fn seed() -> u64 {
    let seed = std::env::var("HISTORY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64);
    println!("seed {seed} (rerun with HISTORY_SEED={seed})");
    seed
}

/// Marsaglia's xorshift64: deterministic, good enough to pick operations.
pub(crate) struct XorShift(pub(crate) u64);

impl XorShift {
    pub(crate) fn new(seed: u64) -> Self {
        XorShift(seed.max(1))
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub(crate) const KEYS: [&str; 3] = ["a", "b", "c"];
pub(crate) const CLIENTS: u64 = 4;
pub(crate) const OPS_PER_CLIENT: u64 = 250;

/// The value each key holds at the end (None: absent).
pub(crate) type FinalReads = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Real threads against a mutex-guarded map (linearizable: each operation takes effect
/// inside the lock, between its invoke and its complete), with failed, timed-out and
/// abandoned requests mixed in. The seed picks the operations and their fates; the
/// interleaving is the OS's.
pub(crate) fn run_register(seed: u64) -> (Vec<Op>, FinalReads) {
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

pub(crate) fn acked(op: &Op) -> bool {
    matches!(op.outcome, Outcome::Ok(_))
}

/// A get that must have seen a later write: some acknowledged put `p`, then (strictly
/// after it) an acknowledged write `q`, then (strictly after that) the get. Values are
/// unique, so making the get return `p`'s value is certainly not linearizable.
pub(crate) fn stale_candidate(history: &[Op], rng: &mut XorShift) -> Option<(usize, Vec<u8>)> {
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
pub(crate) fn exhaustive(history: &[Op]) -> bool {
    pub(crate) fn extend(ops: &[&Op], order: &mut Vec<usize>) -> bool {
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
