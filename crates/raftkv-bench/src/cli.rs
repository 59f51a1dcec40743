//! The command line, parsed by hand into a typed [`Command`].
//!
//! Flags take their value as the next argument (`--clients 64`) or after `=`
//! (`--clients=64`). Every mistake is a [`CliError`] that names the flag and what was
//! wrong with it; nothing here prints or exits, so `main` decides how to show it.

use std::path::PathBuf;
use std::time::Duration;

/// The text of `raftkv-bench --help`.
pub const USAGE: &str = include_str!("usage.txt");

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Run a load workload against servers.
    Load(LoadConfig),
    /// Measure the physical floor.
    Floor(FloorConfig),
    /// Print [`USAGE`].
    Help,
}

/// Which request each operation sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// `Put(key, value)`.
    Put,
    /// `Range(key)`.
    Get {
        /// Linearizable or serializable reads.
        consistency: Consistency,
        /// Write every key of the key space once before measuring.
        prefill: bool,
    },
    /// A `Txn` whose always-true compare guards a put of the same key.
    Txn,
}

impl Workload {
    /// The name used in reports: `put`, `get`, `get-serializable`, `txn`.
    pub fn name(&self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Get {
                consistency: Consistency::Linearizable,
                ..
            } => "get",
            Workload::Get {
                consistency: Consistency::Serializable,
                ..
            } => "get-serializable",
            Workload::Txn => "txn",
        }
    }
}

/// The read consistency of the `get` workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Read through the leader's read index (etcd's default).
    Linearizable,
    /// Read whatever the serving member has applied.
    Serializable,
}

/// What the `--watchers` watch while the load runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WatchMode {
    /// Watcher `i` watches the single key `<key-prefix>idle/<i>`, which the load never
    /// writes: the cost of watchers that receive nothing.
    #[default]
    Idle,
    /// Every watcher watches the whole `<key-prefix>` range, so each receives every
    /// event the load causes.
    Written,
}

impl WatchMode {
    /// The name used on the command line and in reports: `idle`, `written`.
    pub fn name(&self) -> &'static str {
        match self {
            WatchMode::Idle => "idle",
            WatchMode::Written => "written",
        }
    }
}

/// The settings of a load run.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadConfig {
    /// The requests to send.
    pub workload: Workload,
    /// Server URLs, each with a scheme.
    pub endpoints: Vec<String>,
    /// Concurrent requesters.
    pub clients: usize,
    /// gRPC connections, at most `clients`.
    pub conns: usize,
    /// Stop after this long.
    pub duration: Duration,
    /// Stop after this many operations, if set.
    pub total: Option<u64>,
    /// Bytes per value written.
    pub value_size: usize,
    /// Number of distinct keys.
    pub key_space: u64,
    /// Prefix of every key.
    pub key_prefix: String,
    /// Where to write the JSON report, if anywhere.
    pub json: Option<PathBuf>,
    /// Watchers opened before the measured phase and drained during it (0: none).
    pub watchers: usize,
    /// What the watchers watch.
    pub watch_mode: WatchMode,
    /// The one server the watchers are opened on; the first of `endpoints` if unset.
    pub watch_endpoint: Option<String>,
}

impl LoadConfig {
    /// A config with the command line's defaults for `workload` against `endpoints`.
    pub fn new(workload: Workload, endpoints: Vec<String>) -> Self {
        LoadConfig {
            workload,
            endpoints,
            clients: 64,
            conns: 8,
            duration: Duration::from_secs(30),
            total: None,
            value_size: 256,
            key_space: 100_000,
            key_prefix: "bench/".to_string(),
            json: None,
            watchers: 0,
            watch_mode: WatchMode::Idle,
            watch_endpoint: None,
        }
    }

    /// The server the watchers are opened on: `watch_endpoint`, else the first endpoint.
    pub fn watch_endpoint(&self) -> Option<&str> {
        self.watch_endpoint
            .as_deref()
            .or_else(|| self.endpoints.first().map(String::as_str))
    }
}

/// The settings of the `floor` command.
#[derive(Debug, Clone, PartialEq)]
pub struct FloorConfig {
    /// Directory that holds the fdatasync test file.
    pub dir: PathBuf,
    /// Samples of each measurement.
    pub count: usize,
    /// Where to write the JSON result, if anywhere.
    pub json: Option<PathBuf>,
}

/// A command line that cannot be run, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// No subcommand was given.
    #[error("missing command: expected put, get, txn or floor")]
    MissingCommand,
    /// The first argument is not a known subcommand.
    #[error("unknown command {0:?}: expected put, get, txn or floor")]
    UnknownCommand(String),
    /// A flag the subcommand does not take.
    #[error("unknown flag {flag:?} for `{command}`")]
    UnknownFlag {
        /// The subcommand.
        command: String,
        /// The flag as given.
        flag: String,
    },
    /// A flag that needs a value came last.
    #[error("flag {0} needs a value")]
    MissingValue(String),
    /// A flag that takes no value was given one with `=`.
    #[error("flag {0} takes no value")]
    UnexpectedValue(String),
    /// A required flag is absent.
    #[error("missing required flag {0}")]
    MissingFlag(&'static str),
    /// A flag's value does not parse or is out of range.
    #[error("invalid value {value:?} for {flag}: {reason}")]
    InvalidValue {
        /// The flag.
        flag: String,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A positional argument where only flags are expected.
    #[error("unexpected argument {0:?}")]
    UnexpectedArgument(String),
    /// A flag given where it means nothing: a watch flag without watchers, or for
    /// `floor`.
    #[error("flag {flag} {reason}")]
    Misplaced {
        /// The flag as given.
        flag: String,
        /// Why it does not apply, e.g. `needs --watchers N with N > 0`.
        reason: &'static str,
    },
}

/// The most `--watchers` one run opens.
pub const MAX_WATCHERS: usize = 1_000_000;

/// Whether `flag` is one of the watch flags of the load workloads.
fn is_watch_flag(flag: &str) -> bool {
    matches!(flag, "--watchers" | "--watch-mode" | "--watch-endpoint")
}

/// Parses the arguments after the program name.
pub fn parse_args<I, S>(args: I) -> Result<Command, CliError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut args = args.into_iter().map(Into::into);
    let command = args.next().ok_or(CliError::MissingCommand)?;
    let rest: Vec<String> = args.collect();
    if rest.iter().any(|a| a == "--help" || a == "-h") {
        return Ok(Command::Help);
    }
    match command.as_str() {
        "--help" | "-h" | "help" => Ok(Command::Help),
        "put" => parse_load(Workload::Put, &command, rest),
        "txn" => parse_load(Workload::Txn, &command, rest),
        "get" => parse_load(
            Workload::Get {
                consistency: Consistency::Linearizable,
                prefill: false,
            },
            &command,
            rest,
        ),
        "floor" => parse_floor(&command, rest),
        _ => Err(CliError::UnknownCommand(command)),
    }
}

/// Parses a duration with a unit: `500ms`, `30s`, `2m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return Err("expected a number followed by ms, s, m or h".to_string());
    }
    let amount: u64 = digits.parse().map_err(|_| "number too large".to_string())?;
    let millis_per_unit = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "" => return Err("missing unit: write e.g. 30s, 500ms or 2m".to_string()),
        _ => return Err(format!("unknown unit {unit:?}: use ms, s, m or h")),
    };
    let millis = amount
        .checked_mul(millis_per_unit)
        .ok_or_else(|| "duration too large".to_string())?;
    if millis == 0 {
        return Err("must be greater than zero".to_string());
    }
    Ok(Duration::from_millis(millis))
}

/// Walks `--flag value` / `--flag=value` pairs.
struct Flags {
    command: String,
    args: std::vec::IntoIter<String>,
}

impl Flags {
    /// The next flag and its `=value`, if it had one.
    fn next_flag(&mut self) -> Result<Option<(String, Option<String>)>, CliError> {
        let Some(arg) = self.args.next() else {
            return Ok(None);
        };
        if !arg.starts_with("--") {
            return Err(CliError::UnexpectedArgument(arg));
        }
        Ok(Some(match arg.split_once('=') {
            Some((flag, value)) => (flag.to_string(), Some(value.to_string())),
            None => (arg, None),
        }))
    }

    /// The value of `flag`: the inline one, or the next argument.
    fn value(&mut self, flag: &str, inline: Option<String>) -> Result<String, CliError> {
        match inline {
            Some(value) => Ok(value),
            None => self
                .args
                .next()
                .ok_or_else(|| CliError::MissingValue(flag.to_string())),
        }
    }

    fn unknown(&self, flag: String) -> CliError {
        CliError::UnknownFlag {
            command: self.command.clone(),
            flag,
        }
    }
}

fn invalid(flag: &str, value: &str, reason: impl Into<String>) -> CliError {
    CliError::InvalidValue {
        flag: flag.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Parses a whole number of at least `min`.
fn number<T>(flag: &str, value: &str, min: T) -> Result<T, CliError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let parsed: T = value
        .parse()
        .map_err(|_| invalid(flag, value, "expected a whole number"))?;
    if parsed < min {
        return Err(invalid(flag, value, format!("must be at least {min}")));
    }
    Ok(parsed)
}

fn parse_endpoints(flag: &str, value: &str) -> Result<Vec<String>, CliError> {
    let mut endpoints = Vec::new();
    for part in value.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(invalid(flag, value, "empty endpoint in the list"));
        }
        if part.contains("://") {
            endpoints.push(part.to_string());
        } else {
            endpoints.push(format!("http://{part}"));
        }
    }
    Ok(endpoints)
}

fn parse_load(mut workload: Workload, command: &str, args: Vec<String>) -> Result<Command, CliError> {
    let mut config = LoadConfig::new(workload, Vec::new());
    // --watch-mode and --watch-endpoint as given: they need watchers.
    let mut watch_flags = Vec::new();
    let mut flags = Flags {
        command: command.to_string(),
        args: args.into_iter(),
    };
    while let Some((flag, inline)) = flags.next_flag()? {
        if flag == "--prefill" {
            match (&mut workload, inline) {
                (_, Some(_)) => return Err(CliError::UnexpectedValue(flag)),
                (Workload::Get { prefill, .. }, None) => *prefill = true,
                _ => return Err(flags.unknown(flag)),
            }
            continue;
        }
        let known = matches!(
            flag.as_str(),
            "--endpoints"
                | "--clients"
                | "--conns"
                | "--duration"
                | "--total"
                | "--value-size"
                | "--key-space"
                | "--key-prefix"
                | "--json"
                | "--consistency"
                | "--watchers"
                | "--watch-mode"
                | "--watch-endpoint"
        );
        if !known || (flag == "--consistency" && !matches!(workload, Workload::Get { .. })) {
            return Err(flags.unknown(flag));
        }
        let value = flags.value(&flag, inline)?;
        match flag.as_str() {
            "--endpoints" => config.endpoints = parse_endpoints(&flag, &value)?,
            "--clients" => config.clients = number(&flag, &value, 1)?,
            "--conns" => config.conns = number(&flag, &value, 1)?,
            "--duration" => {
                config.duration = parse_duration(&value).map_err(|r| invalid(&flag, &value, r))?
            }
            "--total" => config.total = Some(number(&flag, &value, 1)?),
            "--value-size" => config.value_size = number(&flag, &value, 0)?,
            "--key-space" => config.key_space = number(&flag, &value, 1)?,
            "--key-prefix" => config.key_prefix = value,
            "--json" => config.json = Some(PathBuf::from(value)),
            "--watchers" => {
                config.watchers = number(&flag, &value, 0)?;
                if config.watchers > MAX_WATCHERS {
                    return Err(invalid(&flag, &value, format!("must be at most {MAX_WATCHERS}")));
                }
            }
            "--watch-mode" => {
                config.watch_mode = match value.as_str() {
                    "idle" => WatchMode::Idle,
                    "written" => WatchMode::Written,
                    _ => return Err(invalid(&flag, &value, "expected idle or written")),
                };
                watch_flags.push(flag);
            }
            "--watch-endpoint" => {
                let mut endpoints = parse_endpoints(&flag, &value)?;
                if endpoints.len() != 1 {
                    return Err(invalid(&flag, &value, "expected one endpoint, not a list"));
                }
                config.watch_endpoint = endpoints.pop();
                watch_flags.push(flag);
            }
            "--consistency" => {
                let chosen = match value.as_str() {
                    "l" | "linearizable" => Consistency::Linearizable,
                    "s" | "serializable" => Consistency::Serializable,
                    _ => return Err(invalid(&flag, &value, "expected l or s")),
                };
                if let Workload::Get { consistency, .. } = &mut workload {
                    *consistency = chosen;
                }
            }
            _ => return Err(flags.unknown(flag)),
        }
    }
    if config.endpoints.is_empty() {
        return Err(CliError::MissingFlag("--endpoints"));
    }
    if config.watchers == 0
        && let Some(flag) = watch_flags.into_iter().next()
    {
        return Err(CliError::Misplaced {
            flag,
            reason: "needs --watchers N with N > 0",
        });
    }
    config.workload = workload;
    // More connections than clients would leave some idle: cap them.
    config.conns = config.conns.min(config.clients);
    Ok(Command::Load(config))
}

fn parse_floor(command: &str, args: Vec<String>) -> Result<Command, CliError> {
    let mut dir = None;
    let mut count = 2000;
    let mut json = None;
    let mut flags = Flags {
        command: command.to_string(),
        args: args.into_iter(),
    };
    while let Some((flag, inline)) = flags.next_flag()? {
        if is_watch_flag(&flag) {
            return Err(CliError::Misplaced {
                flag,
                reason: "is for the load workloads (put, get, txn), not floor",
            });
        }
        if !matches!(flag.as_str(), "--dir" | "--count" | "--json") {
            return Err(flags.unknown(flag));
        }
        let value = flags.value(&flag, inline)?;
        match flag.as_str() {
            "--dir" => dir = Some(PathBuf::from(value)),
            "--count" => count = number(&flag, &value, 1)?,
            _ => json = Some(PathBuf::from(value)),
        }
    }
    let dir = dir.ok_or(CliError::MissingFlag("--dir"))?;
    Ok(Command::Floor(FloorConfig { dir, count, json }))
}

#[cfg(test)]
mod tests;
