//! The check every property runs on every input, for every type, and the mutations of valid
//! encodings it is run on.

use super::*;

/// Byte limit of the oracle decode.
pub(crate) const ORACLE_LIMIT: usize = 1 << 20;

/// Every generated input is smaller. bincode's byte limit counts what it reads at its
/// decoded size (a one-byte varint `u64` counts 8), so an input that decodes counts at
/// most 8 bytes per input byte (no type here holds a 128-bit integer): below 8 KiB only a
/// length prefix claiming more than the input holds exhausts the 64 KiB limit that
/// `codec::decode` sets for small inputs, and its verdict must be the oracle's.
pub(crate) const SMALL_INPUT: usize = 8 << 10;

/// What bincode makes of `bytes` as a `T` given a 1 MiB byte budget, which it checks a
/// `String`'s (or byte buffer's) claimed length against before allocating it: `Some(true)`
/// if it decodes all of `bytes`, `Some(false)` if it refuses them otherwise, `None` if it
/// refuses them because a length claims more than the budget (a length-prefix bomb).
pub(crate) fn oracle<T: DeserializeOwned>(bytes: &[u8]) -> Option<bool> {
    let limited = bincode::config::standard().with_limit::<ORACLE_LIMIT>();
    match bincode::serde::decode_from_slice::<T, _>(bytes, limited) {
        Ok((_, read)) => Some(read == bytes.len()),
        Err(bincode::error::DecodeError::LimitExceeded) => None,
        Err(_) => Some(false),
    }
}

/// How one decode ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Refused,
    Decoded,
    /// Refused, and a length prefix in it claims more than the input holds (see [`oracle`]).
    RefusedLengthBomb,
}

/// Decode `bytes` as a `T` and check the outcome: no panic (proptest catches it), quick,
/// bounded memory, the verdict of bincode with a byte limit, and a value that decodes must
/// re-encode canonically and stably.
pub(crate) fn check<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Verdict {
    let name = std::any::type_name::<T>();
    assert!(bytes.len() < SMALL_INPUT);
    let oracle = oracle::<T>(bytes);
    let started = Instant::now();
    let (result, peak) = peak_bytes(|| codec::decode::<T>(bytes));
    let took = started.elapsed();
    assert!(
        took < SLOW,
        "decoding {} bytes as {name} took {took:?}",
        bytes.len()
    );
    assert!(
        peak <= alloc_budget(bytes.len()),
        "decoding {} bytes as {name} had {peak} bytes live: {bytes:02x?}",
        bytes.len()
    );
    // The oracle's budget is larger than codec::decode's (64 KiB for an input this small),
    // so it refuses no more; and it refuses no less, see [`SMALL_INPUT`].
    assert_eq!(
        result.is_ok(),
        oracle == Some(true),
        "{name}: codec::decode: {:?}; bincode with a {ORACLE_LIMIT}-byte limit: {oracle:?} \
         (Some(true): decodes, None: a length bomb): {bytes:02x?}",
        result.as_ref().map(|_| "decodes")
    );
    match result {
        Err(e) => {
            assert!(!e.0.is_empty(), "an empty error for {name}");
            if oracle.is_none() {
                Verdict::RefusedLengthBomb
            } else {
                Verdict::Refused
            }
        }
        Ok(value) => {
            let canonical = codec::encode(&value).unwrap();
            assert!(
                canonical.len() <= bytes.len(),
                "{name}: canonical form ({} bytes) longer than the input ({} bytes)",
                canonical.len(),
                bytes.len()
            );
            assert_eq!(codec::encoded_len(&value).unwrap(), canonical.len());
            let again: T = codec::decode(&canonical).unwrap();
            assert_eq!(
                codec::encode(&again).unwrap(),
                canonical,
                "{name}: not a fixed point"
            );
            Verdict::Decoded
        }
    }
}

/// How many inputs of a property ended which way, so a property can assert that it
/// reached both outcomes (a fuzzer that only ever sees errors proves little).
#[derive(Default)]
pub(crate) struct Tally(Cell<[u32; 3]>);

impl Tally {
    pub(crate) fn add(&self, verdict: Verdict) {
        let mut counts = self.0.get();
        counts[verdict as usize] += 1;
        self.0.set(counts);
    }

    pub(crate) fn assert_reached_both(&self, what: &str) {
        let [refused, decoded, bombs] = self.0.get();
        assert!(
            refused + bombs > 0 && decoded > 0,
            "{what}: {refused} refused, {bombs} refused as length bombs, {decoded} decoded"
        );
    }
}

/// The case counts below suit CI (the whole file in seconds, in a debug build); set
/// `RAFTKV_FUZZ_SCALE=n` to run each property `n` times as long.
pub(crate) fn config(cases: u32) -> ProptestConfig {
    let scale = std::env::var("RAFTKV_FUZZ_SCALE").map_or(1, |s| s.parse().expect("RAFTKV_FUZZ_SCALE"));
    ProptestConfig {
        cases: cases * scale,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Run a property for `cases` inputs; a failure panics with the shrunk input.
pub(crate) fn run<S: Strategy>(
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    if let Err(e) = TestRunner::new(config(cases)).run(&strategy, test) {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------------------
// Mutations of valid encodings.

#[derive(Debug, Clone)]
pub(crate) enum Mutation {
    Truncate(Index),
    FlipBit(Index, u8),
    Overwrite(Index, u8),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
    Duplicate(Index, usize),
    /// Replace one byte with bincode's u64 varint form (0xFD, 8 bytes LE) of `claim`: a
    /// length-prefix bomb wherever that byte was a length.
    Bomb(Index, u64),
    /// Replace a window with one of the same length (or less) from another valid encoding.
    Splice {
        at: Index,
        from: Index,
        len: usize,
    },
}

/// A length-prefix bomb somewhere.
pub(crate) fn bomb() -> impl Strategy<Value = Mutation> {
    let claim = prop_oneof![Just(u64::MAX), Just(1u64 << 60), Just(1u64 << 32), any::<u64>()];
    (any::<Index>(), claim).prop_map(|(i, claim)| Mutation::Bomb(i, claim))
}

pub(crate) fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), 0u8..8).prop_map(|(i, bit)| Mutation::FlipBit(i, bit)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, byte)| Mutation::Overwrite(i, byte)),
        (any::<Index>(), vec(any::<u8>(), 1..8)).prop_map(|(i, bytes)| Mutation::Insert(i, bytes)),
        (any::<Index>(), 1usize..16).prop_map(|(i, n)| Mutation::Remove(i, n)),
        (any::<Index>(), 1usize..16).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        bomb(),
        (any::<Index>(), any::<Index>(), 1usize..16).prop_map(|(at, from, len)| Mutation::Splice {
            at,
            from,
            len
        }),
    ]
}

pub(crate) fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    vec(mutation(), 1..4)
}

pub(crate) fn mutate(mut bytes: Vec<u8>, donor: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len();
        let pos = |i: &Index| if len == 0 { 0 } else { i.index(len) };
        match m {
            Mutation::Truncate(i) => bytes.truncate(i.index(len + 1)),
            Mutation::FlipBit(i, bit) if len > 0 => bytes[pos(i)] ^= 1 << bit,
            Mutation::Overwrite(i, byte) if len > 0 => bytes[pos(i)] = *byte,
            Mutation::FlipBit(..) | Mutation::Overwrite(..) => {}
            Mutation::Insert(i, extra) => {
                let at = i.index(len + 1);
                bytes.splice(at..at, extra.iter().copied());
            }
            Mutation::Remove(i, n) => {
                let at = pos(i);
                bytes.drain(at..(at + n).min(len));
            }
            Mutation::Duplicate(i, n) => {
                let at = pos(i);
                let copy = bytes[at..(at + n).min(len)].to_vec();
                bytes.splice(at..at, copy);
            }
            Mutation::Bomb(i, claim) => {
                let mut varint = vec![0xfd];
                varint.extend(claim.to_le_bytes());
                let at = pos(i);
                bytes.splice(at..(at + 1).min(len), varint);
            }
            Mutation::Splice { at, from, len: n } => {
                if !donor.is_empty() {
                    let from = from.index(donor.len());
                    let piece = &donor[from..(from + n).min(donor.len())];
                    let at = at.index(len + 1);
                    bytes.splice(at..(at + piece.len()).min(len), piece.iter().copied());
                }
            }
        }
    }
    bytes
}

/// Encode a valid `T`, check that it round-trips, mutate it and check the result.
pub(crate) fn check_mutated<T: Serialize + DeserializeOwned>(
    value: &T,
    donor: &T,
    mutations: &[Mutation],
) -> Verdict {
    let valid = codec::encode(value).unwrap();
    let back: T = codec::decode(&valid).unwrap();
    assert_eq!(
        codec::encode(&back).unwrap(),
        valid,
        "a valid encoding did not round-trip"
    );
    check::<T>(&mutate(valid, &codec::encode(donor).unwrap(), mutations))
}

pub(crate) fn mutated_property<T>(cases: u32, values: BoxedStrategy<T>)
where
    T: Serialize + DeserializeOwned + Debug + Clone + 'static,
{
    let tally = Tally::default();
    run(
        cases,
        (values.clone(), values, mutations()),
        |(value, donor, m)| {
            tally.add(check_mutated(&value, &donor, &m));
            Ok(())
        },
    );
    tally.assert_reached_both(std::any::type_name::<T>());
}
