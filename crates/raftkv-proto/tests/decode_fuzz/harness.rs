//! The check every property runs on every input, for every message type.

use super::*;

/// How one decode ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Refused,
    Decoded,
}

/// Decode `bytes` as an `M` and check the outcome: no panic (proptest catches it), quick,
/// bounded memory, and a message that decodes must re-encode to bytes that decode to the
/// same message (and to the same bytes again). Then hand it to `then`.
pub(crate) fn check<M: Message + Default + PartialEq>(bytes: &[u8], then: impl FnOnce(M)) -> Verdict {
    let name = std::any::type_name::<M>();
    let started = Instant::now();
    let (result, peak) = peak_bytes(|| M::decode(bytes));
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
    match result {
        Err(e) => {
            assert!(!e.to_string().is_empty(), "an empty error for {name}");
            Verdict::Refused
        }
        Ok(message) => {
            let canonical = message.encode_to_vec();
            assert_eq!(message.encoded_len(), canonical.len(), "{name}");
            let again = M::decode(canonical.as_slice()).unwrap();
            assert!(again == message, "{name}: re-encoding changed the message");
            assert_eq!(again.encode_to_vec(), canonical, "{name}: not a fixed point");
            then(message);
            Verdict::Decoded
        }
    }
}

/// How many inputs of a property ended which way, so a property can assert that it
/// reached both outcomes (a fuzzer that only ever sees errors proves little).
#[derive(Default)]
pub(crate) struct Tally(Cell<[u32; 2]>);

impl Tally {
    pub(crate) fn add(&self, verdict: Verdict) {
        let mut counts = self.0.get();
        counts[verdict as usize] += 1;
        self.0.set(counts);
    }

    pub(crate) fn assert_reached_both(&self, what: &str) {
        let [refused, decoded] = self.0.get();
        assert!(
            refused > 0 && decoded > 0,
            "{what}: {refused} refused, {decoded} decoded"
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
