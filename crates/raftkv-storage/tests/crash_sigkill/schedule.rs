//! The seeded kill schedule and the lines a writer child prints, parsed.

use super::*;

/// splitmix64: a tiny, good-enough seeded generator (no `rand` dependency).
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform enough in `lo..=hi` for picking kill points (modulo bias is negligible).
    pub(crate) fn in_range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

pub(crate) fn seed() -> u64 {
    match std::env::var(SEED_ENV) {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{SEED_ENV}={s:?} is not a u64: {e}")),
        Err(_) => {
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
            SplitMix64(nanos ^ u64::from(std::process::id()).rotate_left(32)).next_u64()
        }
    }
}

pub(crate) fn rounds() -> usize {
    match std::env::var(ROUNDS_ENV) {
        Ok(s) => {
            let n: usize = s
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("{ROUNDS_ENV}={s:?} is not a number: {e}"));
            assert!(n >= 1, "{ROUNDS_ENV} must be at least 1");
            n
        }
        Err(_) => DEFAULT_ROUNDS,
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum KillPoint {
    /// SIGKILL as soon as the parent has read this many acks of the round.
    AfterAcks(u64),
    /// SIGKILL this long after the child was spawned, whatever it is doing.
    AfterDelay(Duration),
}

impl std::fmt::Display for KillPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KillPoint::AfterAcks(n) => write!(f, "after {n} acks"),
            KillPoint::AfterDelay(d) => write!(f, "{} ms after spawn", d.as_millis()),
        }
    }
}

/// The kill points of all rounds: each block of three rounds has one of each kind
/// (few acks, many acks, wall-clock delay) in a random order.
pub(crate) fn kill_schedule(rng: &mut SplitMix64, rounds: usize) -> Vec<KillPoint> {
    let mut kinds = [0u8, 1, 2];
    let mut schedule = Vec::with_capacity(rounds);
    for round in 0..rounds {
        if round % 3 == 0 {
            // Fisher-Yates.
            for i in (1..kinds.len()).rev() {
                kinds.swap(i, rng.in_range(0, i as u64) as usize);
            }
        }
        schedule.push(match kinds[round % 3] {
            0 => KillPoint::AfterAcks(rng.in_range(1, 5)),
            1 => KillPoint::AfterAcks(rng.in_range(6, 500)),
            // The shorter of two draws: about a third land in the first 50 ms (start-up and
            // recovery on a fast machine), the rest spread over the whole window.
            _ => {
                let ms = rng
                    .in_range(0, MAX_KILL_DELAY_MS)
                    .min(rng.in_range(0, MAX_KILL_DELAY_MS));
                KillPoint::AfterDelay(Duration::from_millis(ms))
            }
        });
    }
    schedule
}

pub(crate) enum Event {
    Opened { last: u64, applied: u64 },
    Ack(u64),
    Garbled(String),
}

pub(crate) fn parse_line(line: &str) -> Option<Event> {
    let parse = |s: &str| s.trim().parse::<u64>().ok();
    if let Some(pos) = line.find("ACK ") {
        return Some(parse(&line[pos + 4..]).map_or_else(|| Event::Garbled(line.into()), Event::Ack));
    }
    if let Some(pos) = line.find("OPENED ") {
        let rest = &line[pos + 7..];
        let opened = rest.split_once(' ').and_then(|(l, a)| {
            Some(Event::Opened {
                last: parse(l.strip_prefix("last=")?)?,
                applied: parse(a.strip_prefix("applied=")?)?,
            })
        });
        return Some(opened.unwrap_or_else(|| Event::Garbled(line.into())));
    }
    None
}
