//! Mutations of valid encodings.

use super::*;

#[derive(Debug, Clone)]
pub(crate) enum Mutation {
    Truncate(Index),
    FlipBit(Index, u8),
    Overwrite(Index, u8),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
    Duplicate(Index, usize),
    /// Replace one byte with the protobuf varint of `claim`: a length-prefix bomb wherever
    /// that byte was a length.
    Bomb(Index, u64),
    /// Replace a window with one of the same length (or less) from another valid encoding.
    Splice {
        at: Index,
        from: Index,
        len: usize,
    },
}

pub(crate) fn mutation() -> impl Strategy<Value = Mutation> {
    let claim = prop_oneof![Just(u64::MAX), Just(1u64 << 60), Just(1u64 << 32), any::<u64>()];
    prop_oneof![
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), 0u8..8).prop_map(|(i, bit)| Mutation::FlipBit(i, bit)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, byte)| Mutation::Overwrite(i, byte)),
        (any::<Index>(), vec(any::<u8>(), 1..8)).prop_map(|(i, bytes)| Mutation::Insert(i, bytes)),
        (any::<Index>(), 1usize..16).prop_map(|(i, n)| Mutation::Remove(i, n)),
        (any::<Index>(), 1usize..16).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        (any::<Index>(), claim).prop_map(|(i, claim)| Mutation::Bomb(i, claim)),
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

pub(crate) fn varint(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
    out
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
                let at = pos(i);
                bytes.splice(at..(at + 1).min(len), varint(*claim));
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

/// For messages of one type: the valid encoding decodes to the message, and the mutated
/// one passes [`check`] (then `then`).
pub(crate) fn mutated_property<M>(cases: u32, messages: BoxedStrategy<M>, then: fn(M))
where
    M: Message + Default + PartialEq + Clone + Debug + 'static,
{
    let tally = Tally::default();
    run(
        cases,
        (messages.clone(), messages, mutations()),
        |(message, donor, m)| {
            let valid = message.encode_to_vec();
            assert!(
                M::decode(valid.as_slice()).unwrap() == message,
                "a valid encoding did not round-trip"
            );
            tally.add(check(&mutate(valid, &donor.encode_to_vec(), &m), then));
            Ok(())
        },
    );
    tally.assert_reached_both(std::any::type_name::<M>());
}
