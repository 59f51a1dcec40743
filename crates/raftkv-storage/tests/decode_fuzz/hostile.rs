//! Hand-built hostile inputs: nesting beyond the limit, length prefixes of sequences.

use super::*;

/// bincode's u64 varint form: 0xFD then 8 bytes little-endian.
pub(crate) fn varint_u64(value: u64) -> Vec<u8> {
    let mut out = vec![0xfd];
    out.extend(value.to_le_bytes());
    out
}

/// `Command::Txn` whose success branch nests `depth` more transactions (each level: empty
/// compares, one success op which is `RequestOp::Txn` (tag 3), then after the nested one an
/// empty failure branch). `claim` is the length each success branch announces: 1 is
/// honest, anything larger is a length bomb that fails after the nested transaction.
pub(crate) fn nested_txn_command(depth: usize, claim: u64) -> Vec<u8> {
    let claim = if claim < 251 {
        vec![claim as u8]
    } else {
        varint_u64(claim)
    };
    let mut out = vec![2]; // Command::Txn
    for _ in 0..depth {
        out.push(0); // no compares
        out.extend(&claim); // success: `claim` ops, the first one:
        out.push(3); // RequestOp::Txn
    }
    out.extend([0, 0, 0]); // the innermost transaction is empty
    out.extend(std::iter::repeat_n(0, if claim == [1] { depth } else { 0 })); // failure branches
    out
}

#[test]
fn deeply_nested_transactions_are_refused_by_the_nesting_limit() {
    // The boundary: `Command::Txn` itself is the outermost level and not counted.
    let deepest = codec::decode::<Command>(&nested_txn_command(MAX_TXN_NESTING, 1)).unwrap();
    assert_eq!(
        codec::encode(&deepest).unwrap(),
        nested_txn_command(MAX_TXN_NESTING, 1)
    );
    let err = codec::decode::<Command>(&nested_txn_command(MAX_TXN_NESTING + 1, 1)).unwrap_err();
    assert!(err.0.contains("nested deeper"), "{err}");
    // Far deeper than any encoder makes: refused by the same limit, not by a stack overflow.
    let hostile = nested_txn_command(10_000, 1);
    let err = codec::decode::<Command>(&hostile).unwrap_err();
    assert!(err.0.contains("nested deeper"), "{err}");
    // The same bytes inside a log entry (log id 1/2/3, EntryPayload::Normal) and inside an
    // AppendEntries from a peer.
    let mut entry = vec![1, 2, 3, 1];
    entry.extend(&hostile);
    assert!(
        codec::decode::<Entry>(&entry)
            .unwrap_err()
            .0
            .contains("nested deeper")
    );
    let mut append = codec::encode(&AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(1, 1),
        prev_log_id: None,
        entries: Vec::new(),
        leader_commit: None,
    })
    .unwrap();
    let entries_len = append.len() - 2; // the entry count, before `leader_commit: None`
    assert_eq!(append[entries_len..], [0, 0]);
    append[entries_len] = 1;
    append.splice(entries_len + 1..entries_len + 1, entry);
    let err = codec::decode::<AppendEntriesRequest<TypeConfig>>(&append).unwrap_err();
    assert!(err.0.contains("nested deeper"), "{err}");
    // The depth counter is per thread and restored after every refusal.
    assert_eq!(
        codec::decode::<Command>(&nested_txn_command(MAX_TXN_NESTING, 1)).unwrap(),
        deepest
    );
}

/// One input for [`check`]: what it is, its bytes, and `check` at the type to decode.
pub(crate) type CheckCase = (&'static str, Vec<u8>, fn(&[u8]) -> Verdict);

#[test]
fn length_prefixes_of_sequences_cost_at_most_a_bounded_preallocation() {
    // Each claims 2^60 elements of a sequence (serde's `Vec`, `BTreeSet`, `BTreeMap`):
    // refused at the end of the input, after preallocating at most 1 MiB.
    let bomb = varint_u64(1 << 60);
    let cases: Vec<CheckCase> = vec![
        ("PutRequest.key", [&[0u8][..], &bomb].concat(), check::<Command>),
        (
            "PutRequest.value",
            [&[0u8, 1, b'k'][..], &bomb].concat(),
            check::<Command>,
        ),
        ("Command::Batch", [&[3u8][..], &bomb].concat(), check::<Command>),
        ("LeaseCheckpoint", [&[7u8][..], &bomb].concat(), check::<Command>),
        (
            "TxnRequest.compare",
            [&[2u8][..], &bomb].concat(),
            check::<Command>,
        ),
        (
            "VersionRecord.value",
            [&[0u8, 2, 2, 0][..], &bomb].concat(),
            check::<VersionRecord>,
        ),
        (
            "Membership.configs",
            [&[1u8, 2, 3, 2][..], &bomb].concat(),
            check::<Entry>,
        ),
        (
            "Promote ids",
            [&[1u8][..], &bomb].concat(),
            check::<MembershipChange>,
        ),
        ("client URLs", [&[0u8][..], &bomb].concat(), check::<MemberRecord>),
        (
            "AppendEntries.entries",
            [&[1u8, 1, 1, 0][..], &bomb].concat(),
            check::<AppendEntriesRequest<TypeConfig>>,
        ),
    ];
    for (what, bytes, check) in cases {
        let (verdict, peak) = peak_bytes(|| check(&bytes));
        // Keys and values are byte strings (`serde_bytes`): bincode checks their claimed
        // length against the byte limit before reading, so they are refused at once.
        let byte_string = what.ends_with(".key") || what.ends_with(".value");
        let expected = if byte_string {
            Verdict::RefusedLengthBomb
        } else {
            Verdict::Refused
        };
        assert_eq!(verdict, expected, "{what}");
        assert!(peak <= 2 << 20, "{what}: {peak} bytes live");
    }
    // The worst a transaction can do: every level claims 2^60 operations, so each keeps a
    // 1 MiB preallocation open while the next level decodes. Bounded by the nesting limit
    // (about 64 MiB from 700 bytes); the limit must not be raised without revisiting this.
    let worst = nested_txn_command(MAX_TXN_NESTING, 1 << 60);
    let (verdict, peak) = peak_bytes(|| check::<Command>(&worst));
    assert_eq!(verdict, Verdict::Refused);
    assert!(
        peak <= (MAX_TXN_NESTING + 2) << 20,
        "{peak} bytes live for {} input bytes",
        worst.len()
    );
}
