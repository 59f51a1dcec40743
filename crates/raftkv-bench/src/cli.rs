//! The command line, parsed by clap into a typed [`Command`].
//!
//! Flags take their value as the next argument (`--clients 64`) or after `=`
//! (`--clients=64`); durations are humantime's (`500ms`, `30s`, `2m`, `1h 30m`). Every
//! mistake is a [`CliError`] whose text names the flag and what was wrong with it;
//! nothing here prints or exits, so `main` decides how to show it. The rules clap cannot
//! say (watch flags need watchers, connections capped at clients) are checked after it.

use std::path::PathBuf;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// What follows the generated `--help` of the program.
const AFTER_HELP: &str = include_str!("usage.txt");

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Run a load workload against servers.
    Load(LoadConfig),
    /// Measure the physical floor.
    Floor(FloorConfig),
    /// Print this help text (`--help`, `--version`): not an error.
    Help(String),
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
    /// `Range` of every key under `--key-prefix` (etcdctl's `get --prefix`): what a
    /// list costs, which grows with the keys it returns, never with their history.
    Range {
        /// Linearizable or serializable reads.
        consistency: Consistency,
        /// At most this many keys per answer (0: all), as a paginated list asks.
        limit: i64,
        /// Ask for the count alone.
        count_only: bool,
    },
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
            Workload::Range {
                consistency: Consistency::Linearizable,
                ..
            } => "range",
            Workload::Range {
                consistency: Consistency::Serializable,
                ..
            } => "range-serializable",
        }
    }
}

/// The read consistency of the `get` and `range` workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Read through the leader's read index (etcd's default).
    Linearizable,
    /// Read whatever the serving member has applied.
    Serializable,
}

/// What the `--watchers` watch while the load runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
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
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// What clap refused (an unknown command or flag, a missing or bad value), in its
    /// words: the flag, the value and why.
    #[error("{0}")]
    Parse(String),
    /// A flag given where it means nothing: a watch flag without watchers.
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

/// raftkv-bench: load generator for etcd v3 servers (raftkv, etcd), and the physical floor.
#[derive(Debug, Parser)]
#[command(name = "raftkv-bench", version, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Sub,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// Put(key, value) of a uniformly random key.
    Put(LoadArgs),
    /// Range of one uniformly random key (linearizable unless --consistency s).
    Get {
        #[command(flatten)]
        load: LoadArgs,
        /// l = linearizable (through the leader's read index), s = serializable.
        #[arg(long, value_name = "l|s", value_parser = consistency, default_value = "l")]
        consistency: Consistency,
        /// First write every key of the key space once.
        #[arg(long)]
        prefill: bool,
    },
    /// Txn: if version(key) > -1 (always true) then Put(key, value).
    Txn(LoadArgs),
    /// Range of every key under --key-prefix (linearizable unless --consistency s).
    /// Write the keys first, e.g. with `put --key-space N --total M` (M / N versions each).
    Range {
        #[command(flatten)]
        load: LoadArgs,
        /// l = linearizable (through the leader's read index), s = serializable.
        #[arg(long, value_name = "l|s", value_parser = consistency, default_value = "l")]
        consistency: Consistency,
        /// At most N keys per answer (0: all), as a paginated list asks.
        #[arg(long, value_name = "N", default_value_t = 0)]
        limit: i64,
        /// Ask for the count alone (etcdctl's --count-only).
        #[arg(long)]
        count_only: bool,
    },
    /// The physical floor: fdatasync of 4 KiB appends in DIR, and a 64-byte round trip
    /// over loopback TCP; p50 and p99 of each.
    Floor {
        /// Directory for the fdatasync test file (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Samples of each measurement.
        #[arg(long, value_name = "N", allow_negative_numbers = true, default_value_t = 2000, value_parser = at_least_one)]
        count: usize,
        /// Also write the result to FILE as one flat JSON object.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
}

/// The flags of the load workloads (put, get, txn).
#[derive(Debug, Args)]
struct LoadArgs {
    /// Servers, comma-separated; `http://` is added when missing.
    #[arg(long, value_name = "URL,...", value_parser = endpoint_list)]
    endpoints: EndpointList,
    /// Concurrent requesters.
    #[arg(long, value_name = "N", allow_negative_numbers = true, default_value_t = 64, value_parser = at_least_one)]
    clients: usize,
    /// gRPC connections the clients share, opened round-robin over the endpoints;
    /// capped at --clients.
    #[arg(long, value_name = "N", allow_negative_numbers = true, default_value_t = 8, value_parser = at_least_one)]
    conns: usize,
    /// Stop after this long, e.g. 500ms, 30s, 2m, 1h.
    #[arg(long, value_name = "D", default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Stop after N operations (whichever bound comes first).
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(1..))]
    total: Option<u64>,
    /// Value size for put and txn, in bytes.
    #[arg(
        long,
        value_name = "BYTES",
        allow_negative_numbers = true,
        default_value_t = 256
    )]
    value_size: usize,
    /// Keys are <prefix><i>, i uniform in 0..N, zero-padded.
    #[arg(long, value_name = "N", allow_negative_numbers = true, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    key_space: u64,
    /// Prefix of every key.
    #[arg(long, value_name = "P", default_value = "bench/")]
    key_prefix: String,
    /// Also write the report to FILE as one flat JSON object.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Open N etcd watchers before the measured phase and drain their events during
    /// it; 100 per Watch stream, the streams spread over up to 4 connections of their own.
    #[arg(long, value_name = "N", allow_negative_numbers = true, default_value_t = 0, value_parser = watcher_count)]
    watchers: usize,
    /// idle: watcher i watches <prefix>idle/<i>, never written; written: every watcher
    /// watches the whole <prefix> range and receives every event [default: idle].
    #[arg(long, value_name = "M", value_enum)]
    watch_mode: Option<WatchMode>,
    /// The one server the watchers use [default: the first endpoint].
    #[arg(long, value_name = "URL", value_parser = one_endpoint)]
    watch_endpoint: Option<String>,
}

/// A parsed `--endpoints` list (one flag value that holds many).
#[derive(Debug, Clone)]
struct EndpointList(Vec<String>);

/// Parses the arguments after the program name.
pub fn parse_args<I, S>(args: I) -> Result<Command, CliError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let argv = std::iter::once("raftkv-bench".to_string()).chain(args.into_iter().map(Into::into));
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            return Ok(Command::Help(e.render().to_string()));
        }
        Err(e) => return Err(CliError::Parse(e.render().to_string().trim_end().to_string())),
    };
    Ok(match cli.command {
        Sub::Put(load) => Command::Load(load.into_config(Workload::Put)?),
        Sub::Txn(load) => Command::Load(load.into_config(Workload::Txn)?),
        Sub::Get {
            load,
            consistency,
            prefill,
        } => Command::Load(load.into_config(Workload::Get { consistency, prefill })?),
        Sub::Range {
            load,
            consistency,
            limit,
            count_only,
        } => Command::Load(load.into_config(Workload::Range {
            consistency,
            limit,
            count_only,
        })?),
        Sub::Floor { dir, count, json } => Command::Floor(FloorConfig { dir, count, json }),
    })
}

impl LoadArgs {
    fn into_config(self, workload: Workload) -> Result<LoadConfig, CliError> {
        if self.watchers == 0 {
            let given = [
                ("--watch-mode", self.watch_mode.is_some()),
                ("--watch-endpoint", self.watch_endpoint.is_some()),
            ];
            if let Some((flag, _)) = given.into_iter().find(|(_, given)| *given) {
                return Err(CliError::Misplaced {
                    flag: flag.to_string(),
                    reason: "needs --watchers N with N > 0",
                });
            }
        }
        Ok(LoadConfig {
            workload,
            endpoints: self.endpoints.0,
            clients: self.clients,
            // More connections than clients would leave some idle: cap them.
            conns: self.conns.min(self.clients),
            duration: self.duration,
            total: self.total,
            value_size: self.value_size,
            key_space: self.key_space,
            key_prefix: self.key_prefix,
            json: self.json,
            watchers: self.watchers,
            watch_mode: self.watch_mode.unwrap_or_default(),
            watch_endpoint: self.watch_endpoint,
        })
    }
}

/// Parses a duration with humantime (`500ms`, `30s`, `2m`, `1h 30m`); zero is refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration =
        humantime::parse_duration(text).map_err(|e| format!("{e}: write e.g. 30s, 500ms or 2m"))?;
    if duration.is_zero() {
        return Err("must be greater than zero".to_string());
    }
    Ok(duration)
}

fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(n) => Ok(n),
        Err(_) => Err("expected a whole number".to_string()),
    }
}

fn watcher_count(text: &str) -> Result<usize, String> {
    let n: usize = text.parse().map_err(|_| "expected a whole number".to_string())?;
    if n > MAX_WATCHERS {
        return Err(format!("must be at most {MAX_WATCHERS}"));
    }
    Ok(n)
}

fn consistency(text: &str) -> Result<Consistency, String> {
    match text {
        "l" | "linearizable" => Ok(Consistency::Linearizable),
        "s" | "serializable" => Ok(Consistency::Serializable),
        _ => Err("expected l or s".to_string()),
    }
}

fn endpoint_list(text: &str) -> Result<EndpointList, String> {
    let mut endpoints = Vec::new();
    for part in text.split(',').map(str::trim) {
        if part.is_empty() {
            return Err("empty endpoint in the list".to_string());
        }
        if part.contains("://") {
            endpoints.push(part.to_string());
        } else {
            endpoints.push(format!("http://{part}"));
        }
    }
    Ok(EndpointList(endpoints))
}

fn one_endpoint(text: &str) -> Result<String, String> {
    let mut endpoints = endpoint_list(text)?.0;
    match (endpoints.pop(), endpoints.is_empty()) {
        (Some(endpoint), true) => Ok(endpoint),
        _ => Err("expected one endpoint, not a list".to_string()),
    }
}

#[cfg(test)]
mod tests;
