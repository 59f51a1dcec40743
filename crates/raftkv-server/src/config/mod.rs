//! The server's configuration, the way etcd takes it: etcd's flags (Go style: `--flag
//! value`, `--flag=value`, `-flag`), each also as `ETCD_<FLAG>`, or an etcd YAML file
//! with `--config-file`; parsed into a typed [`Config`] before anything touches the disk.
//!
//! The parts: [`settings`] is what the operator wrote (clap for flags and variables,
//! serde for the file), `resolve` applies defaults and checks and derives member ids
//! ([`urls`]), [`unsupported`] says what happens to each etcd flag raftkv lacks, and
//! [`file`] reads the YAML. Behaviour follows etcd 3.4 where it is observable: a flag
//! set both on the command line and in the environment is refused, an unknown `ETCD_*`
//! variable is warned about, the config file replaces both.

mod compaction;
mod file;
mod resolve;
pub mod restore;
pub mod settings;
mod tls;
pub mod unsupported;
pub mod urls;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::CommandFactory;
use clap::parser::ValueSource;

pub use compaction::{AutoCompactionConfig, parse_go_duration};
pub use resolve::InheritedAddrs;
pub use restore::RestorePlan;
pub use settings::Settings;
pub use tls::TlsConfig;
pub use urls::{InitialMember, ListenUrl, etcd_member_id, parse_initial_cluster};

/// A configuration that cannot be used; the binary prints it and exits with status 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The command line does not parse (clap's text: names the flag).
    #[error("{0}")]
    Parse(String),
    /// `--help` or `--version`: the text to print.
    #[error("{0}")]
    Help(String),
    /// A value that does not parse or is out of range.
    #[error("invalid value {value:?} for {flag}: {reason}")]
    InvalidValue {
        /// The flag or key.
        flag: String,
        /// The value given.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// An etcd flag raftkv does not implement and cannot ignore.
    #[error("{flag} is not supported: {reason}")]
    Unsupported {
        /// The flag or key.
        flag: String,
        /// Why.
        reason: String,
    },
    /// A flag given both ways (etcd's rule and wording).
    #[error(
        "conflicting environment variable {0:?} is shadowed by corresponding command-line flag \
         (either unset environment variable or disable flag)"
    )]
    EnvConflict(String),
    /// Settings that contradict each other.
    #[error("{0}")]
    Conflict(String),
    /// The config file cannot be read or parsed.
    #[error("config file {path}: {reason}")]
    File {
        /// Its path.
        path: String,
        /// Why.
        reason: String,
    },
}

/// `--state-cache-mb` unless given: sled's own default cache size, and the library's
/// (`StoreOptions::default`).
pub const DEFAULT_STATE_CACHE_MB: u64 = 1024;

/// The server's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Member id; `None` for a joining member without `--id`, which asks
    /// [`Config::existing_peers`] for it.
    pub id: Option<u64>,
    /// Member name.
    pub name: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Client (etcd API) listen addresses.
    pub listen_client: Vec<ListenUrl>,
    /// Peer listen address.
    pub listen_peer: ListenUrl,
    /// Where else the HTTP endpoints are served (etcd's `--listen-metrics-urls`).
    pub listen_metrics: Vec<ListenUrl>,
    /// Bootstrap members (id -> peer URL); empty when joining.
    pub initial_cluster: BTreeMap<u64, String>,
    /// Wait to be added instead of bootstrapping (`--initial-cluster-state existing`).
    pub join: bool,
    /// When joining: the other members' peer URLs (from `--initial-cluster`).
    pub existing_peers: Vec<String>,
    /// Client URLs to publish.
    pub advertise_client_urls: Vec<String>,
    /// Peer URL.
    pub advertise_peer_url: String,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Election timeout minimum (the maximum is twice it).
    pub election_timeout: Duration,
    /// Request deadline.
    pub request_timeout: Duration,
    /// Snapshot interval in entries.
    pub snapshot_every: u64,
    /// Disk quota in bytes.
    pub quota_backend_bytes: u64,
    /// What the leader compacts by itself.
    pub auto_compaction: AutoCompactionConfig,
    /// `--metrics extensive`: also the gRPC handling-time histogram.
    pub metrics_extensive: bool,
    /// Largest request accepted.
    pub max_request_bytes: usize,
    /// Most operations per transaction.
    pub max_txn_ops: usize,
    /// `--bcrypt-cost`.
    pub bcrypt_cost: u32,
    /// `--auth-token-ttl`.
    pub auth_token_ttl: Duration,
    /// How often the leader checkpoints the remaining TTL of every lease.
    pub lease_checkpoint: Duration,
    /// Automatic defragmentation's growth ratio (0: off).
    pub auto_defrag_ratio: u64,
    /// sled's page cache of the state database, in MiB.
    pub state_cache_mb: u64,
    /// `--proposer direct`: each request its own log entry, no group commit.
    pub direct_proposals: bool,
    /// tracing filter (`--log`, else from `--log-level`; none: `RUST_LOG`, else info).
    pub log: Option<String>,
    /// TLS of the client, metrics and peer URLs.
    pub tls: TlsConfig,
}

/// A configuration and what to warn about once logging is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// Ignored flags, keys and variables, each a sentence.
    pub warnings: Vec<String>,
}

/// The variable etcd reads for `flag`: `ETCD_` + upper case, `-` as `_`.
pub fn env_name(flag: &str) -> String {
    format!("ETCD_{}", flag.to_uppercase().replace('-', "_"))
}

/// Go's flag package takes `-name` as well as `--name`; clap wants two dashes.
fn normalize(arg: String) -> String {
    let single_dash_word = arg.starts_with('-') && !arg.starts_with("--") && arg.len() > 2;
    if single_dash_word { format!("-{arg}") } else { arg }
}

/// The flag name an argument sets, if it is one (`--name`, `--name=v` → `name`).
fn flag_name(arg: &str) -> Option<&str> {
    let name = arg.strip_prefix("--")?;
    Some(name.split_once('=').map_or(name, |(n, _)| n))
}

fn command() -> clap::Command {
    Settings::command().args(unsupported::args())
}

impl Config {
    /// Load from the arguments after the program name and the process environment.
    pub fn load(
        args: impl IntoIterator<Item = String>,
        inherited: InheritedAddrs,
    ) -> Result<Loaded, ConfigError> {
        let args: Vec<String> = args.into_iter().map(normalize).collect();
        let mut warnings = Vec::new();
        let from_file = args.iter().any(|a| flag_name(a) == Some("config-file"))
            || std::env::var("ETCD_CONFIG_FILE").is_ok_and(|f| !f.is_empty());
        let mut command = command();
        if from_file {
            // The file replaces the environment: read none of it (etcd does the same).
            command = command.mut_args(|arg| {
                if arg.get_id() == "config_file" {
                    arg
                } else {
                    arg.env(None)
                }
            });
        }
        let matches = command
            .clone()
            .try_get_matches_from(std::iter::once("raftkv-server".to_string()).chain(args.iter().cloned()))
            .map_err(|e| match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ConfigError::Help(e.render().to_string().trim_end().to_string())
                }
                _ => ConfigError::Parse(e.render().to_string().trim_end().to_string()),
            })?;
        let known_env: Vec<String> = command
            .get_arguments()
            .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
            .collect();
        let settings = if from_file {
            let path = <Settings as clap::FromArgMatches>::from_arg_matches(&matches)
                .map_err(|e| ConfigError::Parse(e.to_string()))?
                .config_file
                .unwrap_or_default();
            for arg in &args {
                if let Some(name) = flag_name(arg).filter(|n| *n != "config-file") {
                    warnings.push(format!(
                        "--{name} is ignored: --config-file replaces flags and environment variables"
                    ));
                }
            }
            let keys: Vec<String> = Settings::command()
                .get_arguments()
                .filter_map(|a| a.get_long().map(str::to_string))
                .filter(|k| k != "config-file")
                .collect();
            file::load(std::path::Path::new(&path), &keys, &mut warnings)?
        } else {
            for arg in command.get_arguments() {
                let from_command_line =
                    matches.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine);
                if let Some(env) = arg.get_env().map(|e| e.to_string_lossy().into_owned())
                    && from_command_line
                    && std::env::var_os(&env).is_some_and(|v| !v.is_empty())
                {
                    return Err(ConfigError::EnvConflict(env));
                }
            }
            for flag in unsupported::ETCD_FLAGS {
                if let Some(value) = matches.get_one::<String>(flag.name) {
                    unsupported::check(flag, value, &mut warnings)?;
                }
            }
            for (key, value) in std::env::vars_os() {
                let key = key.to_string_lossy();
                if key.starts_with("ETCD_") && !known_env.iter().any(|k| *k == key) {
                    warnings.push(format!(
                        "unrecognized environment variable {key}={}",
                        value.to_string_lossy()
                    ));
                }
            }
            <Settings as clap::FromArgMatches>::from_arg_matches(&matches)
                .map_err(|e| ConfigError::Parse(e.to_string()))?
        };
        let config = resolve::resolve(settings, inherited)?;
        Ok(Loaded { config, warnings })
    }
}
