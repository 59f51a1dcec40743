//! Inputs that used to abort the process, run in a child process: an abort or a stack
//! overflow kills the child, and the test reports it instead of taking the whole test
//! binary down.

use super::*;

pub(crate) const CHILD_CASE: &str = "RAFTKV_DECODE_FUZZ_CHILD_CASE";

/// Which case this process runs, if it is a child started by [`run_cases_in_children`].
pub(crate) fn child_case() -> Option<usize> {
    std::env::var(CHILD_CASE).ok().map(|case| case.parse().unwrap())
}

/// Run each case of the test `test` in a child process (this binary, running only `test`);
/// panic listing the cases whose child did not exit cleanly or ran no test.
pub(crate) fn run_cases_in_children(test: &str, cases: &[&str]) {
    let mut died = Vec::new();
    for (i, what) in cases.iter().enumerate() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_CASE, i.to_string())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            // The abort message, or a panic's location and (on the next line) its message.
            let lines: Vec<&str> = stderr.lines().collect();
            let why = lines
                .iter()
                .position(|l| {
                    l.contains("memory allocation") || l.contains("overflow") || l.contains("panicked")
                })
                .map_or("(no message)".to_string(), |at| {
                    lines[at..lines.len().min(at + 2)].join(" ")
                });
            died.push(format!("{what}: {}: {why}", out.status));
        } else if !stdout.contains("test result: ok. 1 passed") {
            // A child that filtered its test out would pass without checking anything.
            died.push(format!("{what}: the child ran no test: {stdout}"));
        }
    }
    assert!(
        died.is_empty(),
        "{} of {} cases died:\n{}",
        died.len(),
        cases.len(),
        died.join("\n")
    );
}

pub(crate) fn replace_once(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let at = haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("marker not found");
    [&haystack[..at], with, &haystack[at + needle.len()..]].concat()
}

/// `encoded` with the string `marker` (with its length byte) replaced by a length prefix
/// claiming 2^60 bytes, and everything after it cut off.
pub(crate) fn string_bomb(encoded: &[u8], marker: &str) -> Vec<u8> {
    let with_len = [&[marker.len() as u8][..], marker.as_bytes()].concat();
    let at = encoded
        .windows(with_len.len())
        .position(|w| w == with_len)
        .expect("marker not found");
    [&encoded[..at], &varint_u64(1 << 60)[..]].concat()
}

pub(crate) const MARK: &str = "MARK";

/// How a decoder ended on one hostile input: the error it refused the input with (`None`
/// if it decoded it), and the most bytes it had live at once, where that can be measured.
pub(crate) struct Outcome {
    error: Option<String>,
    peak: Option<usize>,
}

/// One hostile input: what it is, its bytes, and the decoder that must refuse it.
pub(crate) type Case = (&'static str, Vec<u8>, fn(&[u8]) -> Outcome);

/// `codec::decode` of `bytes` as a `T`, straight (without [`check`]'s oracle).
pub(crate) fn decode_as<T: DeserializeOwned>(bytes: &[u8]) -> Outcome {
    let (result, peak) = peak_bytes(|| codec::decode::<T>(bytes));
    Outcome {
        error: result.err().map(|e| e.0),
        peak: Some(peak),
    }
}

pub(crate) fn enc<T: Serialize>(value: &T) -> Vec<u8> {
    codec::encode(value).unwrap()
}

pub(crate) fn string_bomb_cases() -> Vec<Case> {
    let node = MemberNode::new(MARK);
    let membership = Membership::new(vec![BTreeSet::from([1])], BTreeMap::from([(1, node)])).unwrap();
    let log_id = LogId::new(raftkv_core::types::leader_id(1, 1), 1);
    let entry = Entry {
        log_id,
        payload: EntryPayload::Membership(membership.clone()),
    };
    let stored = StoredMembership::new(Some(log_id), membership.clone());
    let header: SnapshotHeaderMsg = (
        Vote::new_committed(1, 1),
        SnapshotMeta {
            last_log_id: Some(log_id),
            last_membership: stored.clone(),
        },
    );
    let append = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(1, 1),
        prev_log_id: None,
        entries: vec![entry.clone()],
        leader_commit: None,
    };
    let publish = Command::PublishMember {
        id: 1,
        name: MARK.into(),
        client_urls: Vec::new(),
    };
    let add = MembershipChange::AddLearner {
        id: 2,
        peer_url: MARK.into(),
        wait: true,
    };
    let rejected: ForwardAnswer = Ok((Response::Rejected(RequestError::Unsupported(MARK.into())), 1));
    let record: MemberRecord = (MARK.into(), Vec::new());
    // A snapshot file whose header frame holds the bomb, for `install_snapshot`.
    let frame = string_bomb(
        &enc(&FrameModel::Header {
            meta: header.1.clone(),
            revision: 1,
            compact_revision: 0,
        }),
        MARK,
    );
    let file = [
        &MAGIC[..],
        &SNAPSHOT_FORMAT_VERSION.to_be_bytes(),
        &(frame.len() as u32).to_be_bytes(),
        &frame,
    ]
    .concat();
    vec![
        (
            "log entry (membership peer URL)",
            string_bomb(&enc(&entry), MARK),
            decode_as::<Entry>,
        ),
        (
            "stored membership",
            string_bomb(&enc(&stored), MARK),
            decode_as::<StoredMembership>,
        ),
        (
            "published member record",
            string_bomb(&enc(&record), MARK),
            decode_as::<MemberRecord>,
        ),
        (
            "Command::PublishMember (Forward RPC, log)",
            string_bomb(&enc(&publish), MARK),
            decode_as::<Command>,
        ),
        (
            "MembershipChange (ChangeMembership RPC)",
            string_bomb(&enc(&add), MARK),
            decode_as::<MembershipChange>,
        ),
        (
            "AppendEntries RPC",
            string_bomb(&enc(&append), MARK),
            decode_as::<AppendEntriesRequest<TypeConfig>>,
        ),
        (
            "InstallSnapshot header chunk",
            string_bomb(&enc(&header), MARK),
            decode_as::<SnapshotHeaderMsg>,
        ),
        (
            "forwarded write's answer",
            string_bomb(&enc(&rejected), MARK),
            decode_as::<ForwardAnswer>,
        ),
        ("snapshot header frame", frame, decode_as::<FrameModel>),
        ("snapshot file (install_snapshot)", file, install_into_fresh_store),
    ]
}

/// A fresh store installing `bytes` as a snapshot. The frames are decoded on a blocking
/// thread, so memory is not measured here (the same header frame is, by `decode_as`).
pub(crate) fn install_into_fresh_store(bytes: &[u8]) -> Outcome {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let meta = SnapshotMeta {
        last_log_id: None,
        last_membership: StoredMembership::default(),
    };
    Outcome {
        error: runtime.block_on(install(&mut store, &meta, bytes)).err(),
        peak: None,
    }
}

/// A `String` length prefix claiming 2^60 bytes, wherever a record, a peer message or an
/// answer holds a string: refused by `codec::decode`'s byte limit before it allocates.
/// (bincode allocates a claimed length before reading it: without the limit, a dozen
/// bytes such as `[8, 1, 0xFD, 0,0,0,0,0,0,0,0x10]` as a `Command` aborted the process.)
#[test]
fn string_length_prefix_bombs_are_refused_without_allocating_them() {
    let cases = string_bomb_cases();
    if let Some(i) = child_case() {
        let (what, bytes, decode) = &cases[i];
        let Outcome { error, peak } = decode(bytes);
        let error = error.unwrap_or_else(|| panic!("{what}: decoded"));
        assert!(
            error.contains("LimitExceeded"),
            "{what}: refused otherwise: {error}"
        );
        // The claim is never allocated; what was decoded before it is a few hundred bytes.
        if let Some(peak) = peak {
            assert!(peak <= 64 << 10, "{what}: {peak} bytes live");
        }
        return;
    }
    let names: Vec<&str> = cases.iter().map(|c| c.0).collect();
    run_cases_in_children(
        "children::string_length_prefix_bombs_are_refused_without_allocating_them",
        &names,
    );
}

pub(crate) fn nested_batch(depth: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 * depth + 2);
    for _ in 0..depth {
        out.extend([3, 1]); // Command::Batch of one command:
    }
    out.extend([3, 0]); // an empty batch
    out
}

pub(crate) fn nested_batch_cases() -> Vec<Case> {
    const DEPTH: usize = 100_000;
    let entry = [&[1u8, 2, 3, 1][..], &nested_batch(DEPTH)].concat();
    let marker = Entry {
        log_id: LogId::new(raftkv_core::types::leader_id(1, 2), 3),
        payload: EntryPayload::Normal(Command::LeaseRevoke { id: 77 }),
    };
    let append = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(1, 1),
        prev_log_id: None,
        entries: vec![marker],
        leader_commit: None,
    };
    let append = replace_once(&enc(&append), &enc(&append.entries[0]), &entry);
    // Response::Batch (tag 4) of one response, DEPTH times, in a forwarded write's answer.
    let mut batch_answer = vec![0]; // Ok
    for _ in 0..DEPTH {
        batch_answer.extend([4, 1]);
    }
    batch_answer.extend([4, 0, 1]); // an empty batch, then the term
    // Response::Txn whose one ResponseOp is ResponseOp::Txn (tag 3), DEPTH times.
    let mut txn_answer = vec![0, 3]; // Ok, Response::Txn
    for _ in 0..DEPTH {
        txn_answer.extend([0, 0, 0, 0, 0, 1, 3]); // header, succeeded, one response: Txn
    }
    txn_answer.extend([0, 0, 0, 0, 0, 0, 1]); // the innermost, then the term
    vec![
        (
            "Command::Batch (Forward RPC)",
            nested_batch(DEPTH),
            decode_as::<Command>,
        ),
        ("log entry", entry, decode_as::<Entry>),
        (
            "AppendEntries RPC",
            append,
            decode_as::<AppendEntriesRequest<TypeConfig>>,
        ),
        (
            "Response::Batch (forwarded write's answer)",
            batch_answer,
            decode_as::<ForwardAnswer>,
        ),
        (
            "TxnResponse (forwarded write's answer)",
            txn_answer,
            decode_as::<ForwardAnswer>,
        ),
    ]
}

/// 100,000 nested batches (a few hundred kilobytes), in every message that holds a
/// command or an answer, and as many nested transaction answers: refused by the nesting
/// limits in `raftkv_core::codec` (2 levels of batches, `MAX_TXN_NESTING` of
/// transactions). Without them decoding recursed once per level: 2,000 levels overflowed
/// a debug build's 2 MiB thread stack and aborted the process, 100,000 a release build's.
#[test]
fn deeply_nested_batches_and_answers_are_refused_without_stack_overflow() {
    let cases = nested_batch_cases();
    if let Some(i) = child_case() {
        let (what, bytes, decode) = &cases[i];
        let Outcome { error, peak } = decode(bytes);
        let error = error.unwrap_or_else(|| panic!("{what}: decoded"));
        assert!(
            error.contains("nested deeper"),
            "{what}: refused otherwise: {error}"
        );
        // Refused at the limit, not after decoding every level: no more live than the
        // levels within it (each a one-element `Vec`).
        let peak = peak.unwrap();
        assert!(peak <= 64 << 10, "{what}: {peak} bytes live");
        return;
    }
    let names: Vec<&str> = cases.iter().map(|c| c.0).collect();
    run_cases_in_children(
        "children::deeply_nested_batches_and_answers_are_refused_without_stack_overflow",
        &names,
    );
}
