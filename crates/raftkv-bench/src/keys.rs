//! Which key each operation touches: a small per-client RNG and the key names.
//!
//! Keys are `<prefix><i>` with `i` uniform in `0..key_space`, zero-padded to the width
//! of the largest index so every key has the same length. Each client owns an
//! [`XorShift`] seeded from its index: no shared state, no `rand` crate, and the same
//! key sequence on every run.

/// xorshift64*: a tiny, fast, non-cryptographic generator (Vigna, 2014).
#[derive(Debug, Clone)]
pub struct XorShift {
    state: u64,
}

impl XorShift {
    /// A generator for `seed`; distinct seeds give unrelated streams.
    pub fn new(seed: u64) -> Self {
        // splitmix64 spreads nearby seeds (client 0, 1, 2, ...) over the state space;
        // xorshift's state must never be zero.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        XorShift { state: z.max(1) }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number uniform in `0..n` (`0` when `n` is 0), by multiply-shift: no division,
    /// and a bias of at most n / 2^64.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Names the keys of a key space.
#[derive(Debug, Clone)]
pub struct KeyNamer {
    prefix: String,
    width: usize,
}

impl KeyNamer {
    /// Names for `0..key_space` under `prefix`.
    pub fn new(prefix: &str, key_space: u64) -> Self {
        let width = key_space.saturating_sub(1).to_string().len();
        KeyNamer {
            prefix: prefix.to_string(),
            width,
        }
    }

    /// The key with index `index`.
    pub fn key(&self, index: u64) -> Vec<u8> {
        format!("{}{:0width$}", self.prefix, index, width = self.width).into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_zero_padded_to_one_length() {
        let namer = KeyNamer::new("bench/", 100_000);
        assert_eq!(namer.key(0), b"bench/00000");
        assert_eq!(namer.key(99_999), b"bench/99999");
        assert_eq!(KeyNamer::new("k", 1).key(0), b"k0");
        assert_eq!(KeyNamer::new("k", 11).key(3), b"k03");
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = XorShift::new(7);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            let i = rng.below(10);
            seen[i as usize] += 1;
        }
        // Uniform: each bucket near 1000.
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
        assert_eq!(rng.below(1), 0);
        assert_eq!(rng.below(0), 0);
    }

    #[test]
    fn seeds_give_distinct_reproducible_streams() {
        let first: Vec<u64> = (0..4).map(|_| XorShift::new(0).next_u64()).collect();
        assert!(first.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(XorShift::new(0).next_u64(), XorShift::new(1).next_u64());
    }
}
