//! `--auto-compaction-mode` and `--auto-compaction-retention` as etcd 3.4 reads them
//! (`parseCompactionRetention`): a whole number is hours in periodic mode and revisions
//! in revision mode; anything else is a Go duration (`30m`, `1h30m`, `1.5h`) and means
//! periodic. Zero turns compaction off.

use std::time::Duration;

use super::ConfigError;

/// What the leader compacts by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoCompactionConfig {
    /// Only on request.
    Off,
    /// Keep about this much history.
    Periodic(Duration),
    /// Keep this many revisions.
    Revisions(u64),
}

fn invalid(flag: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError::InvalidValue {
        flag: flag.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

/// Go's `time.ParseDuration` for non-negative durations: numbers with optional
/// fractions, each followed by a unit (ns, us, µs, ms, s, m, h).
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(number_len);
        let value: f64 = number.parse().ok()?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let nanos_per_unit = match unit {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += value * nanos_per_unit;
        rest = tail;
    }
    (total.is_finite() && total < u64::MAX as f64).then(|| Duration::from_nanos(total as u64))
}

/// The setting from the two flags (`mode` defaults to periodic, `retention` to 0).
pub fn parse_auto_compaction(mode: &str, retention: &str) -> Result<AutoCompactionConfig, ConfigError> {
    let flag = "--auto-compaction-retention";
    let revision_mode = match mode {
        "periodic" => false,
        "revision" => true,
        _ => {
            return Err(invalid(
                "--auto-compaction-mode",
                mode,
                "expected periodic or revision",
            ));
        }
    };
    let setting = match retention.parse::<u64>() {
        Ok(0) => AutoCompactionConfig::Off,
        Ok(n) if revision_mode => AutoCompactionConfig::Revisions(n),
        Ok(hours) => AutoCompactionConfig::Periodic(Duration::from_secs(hours.saturating_mul(3600))),
        Err(_) if revision_mode => {
            return Err(invalid(
                flag,
                retention,
                "revision mode keeps a whole number of revisions",
            ));
        }
        Err(_) => match parse_go_duration(retention) {
            Some(d) if d.is_zero() => AutoCompactionConfig::Off,
            Some(d) => AutoCompactionConfig::Periodic(d),
            None => {
                return Err(invalid(
                    flag,
                    retention,
                    "expected hours (a whole number) or a duration such as 30m or 1h30m",
                ));
            }
        },
    };
    Ok(setting)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn retention_reads_as_etcd_reads_it() {
        use AutoCompactionConfig::*;
        let hour = Duration::from_secs(3600);
        for (mode, retention, expected) in [
            ("periodic", "0", Off),
            ("periodic", "1", Periodic(hour)),
            ("periodic", "72", Periodic(hour * 72)),
            ("periodic", "30m", Periodic(hour / 2)),
            ("periodic", "1h30m", Periodic(hour * 3 / 2)),
            ("periodic", "1.5h", Periodic(hour * 3 / 2)),
            ("periodic", "500ms", Periodic(Duration::from_millis(500))),
            ("periodic", "0s", Off),
            ("revision", "1000", Revisions(1000)),
            ("revision", "0", Off),
        ] {
            assert_eq!(
                parse_auto_compaction(mode, retention).unwrap(),
                expected,
                "{mode} {retention}"
            );
        }
        for (mode, retention) in [
            ("periodic", "soon"),
            ("periodic", "-1"),
            ("periodic", "5x"),
            ("revision", "1h"),
            ("daily", "1"),
        ] {
            let bad = parse_auto_compaction(mode, retention);
            assert!(bad.is_err(), "{mode} {retention}: {bad:?}");
        }
        assert_eq!(parse_go_duration("1h1m1s"), Some(Duration::from_secs(3661)));
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration(""), None);
    }
}
