//! What the operator said, before any default or check: one struct read from the command
//! line (with `ETCD_<FLAG>` variables, through clap) or from an etcd YAML config file
//! (through serde, keys = flag names). Every field is optional so that `resolve`
//! can tell "not given" from "given the default".

// The field docs are also clap's help text, which quotes etcd's `<name>` placeholders.
#![allow(rustdoc::invalid_html_tags)]

use clap::Parser;
use serde::Deserialize;

/// What `--version` prints after the program's name.
fn version_text() -> &'static str {
    static TEXT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "{}\netcd API Version: 3.4\nRust OS/Arch: {}/{}",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::env::consts::ARCH
        )
    });
    TEXT.as_str()
}

/// The flags raftkv implements: etcd's names first, then raftkv's own.
#[derive(Debug, Default, Clone, PartialEq, Eq, Parser, Deserialize)]
#[command(
    name = "raftkv-server",
    about = "A raftkv member speaking etcd's v3 gRPC API. Takes etcd's flags; each flag \
             can also be set as ETCD_<FLAG> (upper case, - as _), and a flag given both \
             ways is refused, as etcd does. --config-file replaces flags and variables.",
    // `--version`, as etcd has it: the build, the etcd API it speaks, the platform.
    version = version_text()
)]
#[serde(rename_all = "kebab-case")]
pub struct Settings {
    /// etcd YAML config file (keys are the flag names); replaces flags and variables.
    #[arg(long, env = "ETCD_CONFIG_FILE", value_name = "PATH")]
    #[serde(skip)]
    pub config_file: Option<String>,

    /// Human-readable name of this member (its entry in --initial-cluster).
    #[arg(long, env = "ETCD_NAME", help_heading = "Member")]
    pub name: Option<String>,
    /// Path to the data directory [default: <name>.etcd].
    #[arg(long, env = "ETCD_DATA_DIR", value_name = "DIR", help_heading = "Member")]
    pub data_dir: Option<String>,
    /// Entries applied between snapshots (raftkv also waits for as many bytes written as
    /// the last snapshot held) [default: 10000].
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", value_name = "N", help_heading = "Member")]
    pub snapshot_count: Option<u64>,
    /// Time between heartbeats, in ms [default: 100].
    #[arg(
        long,
        env = "ETCD_HEARTBEAT_INTERVAL",
        value_name = "MS",
        help_heading = "Member"
    )]
    pub heartbeat_interval: Option<u64>,
    /// Election timeout in ms; a follower waits between it and twice it [default: 350].
    #[arg(
        long,
        env = "ETCD_ELECTION_TIMEOUT",
        value_name = "MS",
        help_heading = "Member"
    )]
    pub election_timeout: Option<u64>,
    /// URLs to serve the Raft peer protocol on (one) [default: http://localhost:2380].
    #[arg(
        long,
        env = "ETCD_LISTEN_PEER_URLS",
        value_name = "URLS",
        help_heading = "Member"
    )]
    pub listen_peer_urls: Option<String>,
    /// URLs to serve etcd's gRPC API (and /health, /metrics) on [default: http://localhost:2379].
    #[arg(
        long,
        env = "ETCD_LISTEN_CLIENT_URLS",
        value_name = "URLS",
        help_heading = "Member"
    )]
    pub listen_client_urls: Option<String>,
    /// Backend size at which the NOSPACE alarm is raised; 0: 2 GiB; negative: no quota.
    #[arg(
        long,
        env = "ETCD_QUOTA_BACKEND_BYTES",
        value_name = "BYTES",
        allow_negative_numbers = true,
        help_heading = "Member"
    )]
    pub quota_backend_bytes: Option<i64>,
    /// Largest client request accepted, in bytes [default: 1572864].
    #[arg(
        long,
        env = "ETCD_MAX_REQUEST_BYTES",
        value_name = "BYTES",
        help_heading = "Member"
    )]
    pub max_request_bytes: Option<u32>,
    /// Most operations in one transaction [default: 128].
    #[arg(long, env = "ETCD_MAX_TXN_OPS", value_name = "N", help_heading = "Member")]
    pub max_txn_ops: Option<u32>,
    /// Token type: `simple` (the only one served) [default: simple].
    #[arg(long, env = "ETCD_AUTH_TOKEN", value_name = "TYPE", help_heading = "Auth")]
    pub auth_token: Option<String>,
    /// Seconds a simple token lives without use [default: 300].
    #[arg(
        long,
        env = "ETCD_AUTH_TOKEN_TTL",
        value_name = "SECONDS",
        help_heading = "Auth"
    )]
    pub auth_token_ttl: Option<u64>,
    /// bcrypt cost of password hashes, 4 to 31 [default: 10].
    #[arg(long, env = "ETCD_BCRYPT_COST", value_name = "COST", help_heading = "Auth")]
    pub bcrypt_cost: Option<u32>,

    /// This member's peer URL as the others reach it [default: its --initial-cluster entry].
    #[arg(
        long,
        env = "ETCD_INITIAL_ADVERTISE_PEER_URLS",
        value_name = "URLS",
        help_heading = "Clustering"
    )]
    pub initial_advertise_peer_urls: Option<String>,
    /// Members at bootstrap: name=peer-url,... (the same on every member); ids are
    /// etcd's, except that a positive decimal name is the id itself
    /// [default: <name>=<initial-advertise-peer-urls>].
    #[arg(
        long,
        env = "ETCD_INITIAL_CLUSTER",
        value_name = "LIST",
        help_heading = "Clustering"
    )]
    pub initial_cluster: Option<String>,
    /// new: bootstrap the cluster; existing: join one that added this member [default: new].
    #[arg(
        long,
        env = "ETCD_INITIAL_CLUSTER_STATE",
        value_name = "STATE",
        help_heading = "Clustering"
    )]
    pub initial_cluster_state: Option<String>,
    /// Cluster token; member ids derive from it and the peer URLs [default: etcd-cluster].
    #[arg(
        long,
        env = "ETCD_INITIAL_CLUSTER_TOKEN",
        value_name = "TOKEN",
        help_heading = "Clustering"
    )]
    pub initial_cluster_token: Option<String>,
    /// Client URLs published to the cluster [default: the listen client URLs].
    #[arg(
        long,
        env = "ETCD_ADVERTISE_CLIENT_URLS",
        value_name = "URLS",
        help_heading = "Clustering"
    )]
    pub advertise_client_urls: Option<String>,
    /// periodic: keep about the retention's time of history; revision: keep that many
    /// revisions [default: periodic].
    #[arg(
        long,
        env = "ETCD_AUTO_COMPACTION_MODE",
        value_name = "MODE",
        help_heading = "Clustering"
    )]
    pub auto_compaction_mode: Option<String>,
    /// Auto compaction retention: hours (a whole number) or a duration such as 30m in
    /// periodic mode, revisions in revision mode; 0 disables it [default: 0].
    #[arg(
        long,
        env = "ETCD_AUTO_COMPACTION_RETENTION",
        value_name = "RETENTION",
        help_heading = "Clustering"
    )]
    #[serde(default, deserialize_with = "scalar_as_string")]
    pub auto_compaction_retention: Option<String>,

    /// Client TLS certificate (PEM); needed by https:// client URLs.
    #[arg(long, env = "ETCD_CERT_FILE", value_name = "PATH", help_heading = "Security")]
    pub cert_file: Option<String>,
    /// Client TLS private key (PEM).
    #[arg(long, env = "ETCD_KEY_FILE", value_name = "PATH", help_heading = "Security")]
    pub key_file: Option<String>,
    /// CA certificates client certificates must chain to; setting it requires client
    /// certificates, as in etcd.
    #[arg(
        long,
        env = "ETCD_TRUSTED_CA_FILE",
        value_name = "PATH",
        help_heading = "Security"
    )]
    pub trusted_ca_file: Option<String>,
    /// Require client certificates signed by --trusted-ca-file.
    #[arg(long, env = "ETCD_CLIENT_CERT_AUTH", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = go_bool,
          help_heading = "Security")]
    pub client_cert_auth: Option<bool>,
    /// Peer TLS certificate (PEM): served on the peer URL and presented to other members.
    #[arg(
        long,
        env = "ETCD_PEER_CERT_FILE",
        value_name = "PATH",
        help_heading = "Security"
    )]
    pub peer_cert_file: Option<String>,
    /// Peer TLS private key (PEM).
    #[arg(
        long,
        env = "ETCD_PEER_KEY_FILE",
        value_name = "PATH",
        help_heading = "Security"
    )]
    pub peer_key_file: Option<String>,
    /// CA certificates of the members' certificates (both directions).
    #[arg(
        long,
        env = "ETCD_PEER_TRUSTED_CA_FILE",
        value_name = "PATH",
        help_heading = "Security"
    )]
    pub peer_trusted_ca_file: Option<String>,
    /// Require members to present certificates signed by --peer-trusted-ca-file.
    #[arg(long, env = "ETCD_PEER_CLIENT_CERT_AUTH", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = go_bool,
          help_heading = "Security")]
    pub peer_client_cert_auth: Option<bool>,
    /// Certificate presented when dialing other members [default: --peer-cert-file].
    #[arg(
        long,
        env = "ETCD_PEER_CLIENT_CERT_FILE",
        value_name = "PATH",
        help_heading = "Security"
    )]
    pub peer_client_cert_file: Option<String>,
    /// Its key [default: --peer-key-file].
    #[arg(
        long,
        env = "ETCD_PEER_CLIENT_KEY_FILE",
        value_name = "PATH",
        help_heading = "Security"
    )]
    pub peer_client_key_file: Option<String>,
    /// TLS 1.2 cipher suites by Go's names, comma-separated, in preference order
    /// (TLS 1.3 suites are always on, as in Go) [default: rustls's AEAD suites].
    #[arg(
        long,
        env = "ETCD_CIPHER_SUITES",
        value_name = "LIST",
        help_heading = "Security"
    )]
    #[serde(default, deserialize_with = "string_or_list")]
    pub cipher_suites: Option<String>,
    /// TLS1.2 or TLS1.3 [default: TLS1.2].
    #[arg(
        long,
        env = "ETCD_TLS_MIN_VERSION",
        value_name = "VERSION",
        help_heading = "Security"
    )]
    pub tls_min_version: Option<String>,
    /// TLS1.2 or TLS1.3 [default: TLS1.3].
    #[arg(
        long,
        env = "ETCD_TLS_MAX_VERSION",
        value_name = "VERSION",
        help_heading = "Security"
    )]
    pub tls_max_version: Option<String>,

    /// basic, or extensive: also grpc_server_handling_seconds [default: basic].
    #[arg(long, env = "ETCD_METRICS", value_name = "LEVEL", help_heading = "Monitoring")]
    pub metrics: Option<String>,
    /// More URLs serving /metrics, /health, /livez and /readyz only.
    #[arg(
        long,
        env = "ETCD_LISTEN_METRICS_URLS",
        value_name = "URLS",
        help_heading = "Monitoring"
    )]
    pub listen_metrics_urls: Option<String>,
    /// debug, info, warn, error, panic or fatal [default: info].
    #[arg(long, env = "ETCD_LOG_LEVEL", value_name = "LEVEL", help_heading = "Logging")]
    pub log_level: Option<String>,

    /// This member's id when joining (--initial-cluster-state existing), decimal or
    /// 0x-hex; without it the id `etcdctl member add` made is asked of the other members.
    #[arg(long, env = "ETCD_ID", value_name = "ID", help_heading = "raftkv")]
    pub id: Option<String>,
    /// deadline of one client request, in ms [default: 7000].
    #[arg(
        long,
        env = "ETCD_REQUEST_TIMEOUT_MS",
        value_name = "MS",
        help_heading = "raftkv"
    )]
    pub request_timeout_ms: Option<u64>,
    /// how often the leader records every lease's remaining TTL, in ms; a leader
    /// change gives an idle lease at most this much extra life [default: 5000].
    #[arg(
        long,
        env = "ETCD_LEASE_CHECKPOINT_MS",
        value_name = "MS",
        help_heading = "raftkv"
    )]
    pub lease_checkpoint_ms: Option<u64>,
    /// sled's page cache of the state database, in MiB [default: 1024].
    #[arg(
        long,
        env = "ETCD_STATE_CACHE_MB",
        value_name = "MIB",
        help_heading = "raftkv"
    )]
    pub state_cache_mb: Option<u64>,
    /// rewrite the state database once its file is N times its size at the last
    /// rewrite (taken as at least 64 MiB); 0: only on Defragment [default: 2].
    #[arg(
        long,
        env = "ETCD_AUTO_DEFRAG_RATIO",
        value_name = "N",
        help_heading = "raftkv"
    )]
    pub auto_defrag_ratio: Option<u64>,
    /// group-commit (requests batched into log entries) or direct (one entry
    /// each, for the ablation benchmark) [default: group-commit].
    #[arg(long, env = "ETCD_PROPOSER", value_name = "MODE", help_heading = "raftkv")]
    pub proposer: Option<String>,
    /// a tracing filter (e.g. raftkv=debug,openraft=info); beats --log-level.
    #[arg(long, env = "ETCD_LOG", value_name = "FILTER", help_heading = "raftkv")]
    pub log: Option<String>,
}

/// A Go boolean flag's value (`strconv.ParseBool`).
fn go_bool(value: &str) -> Result<bool, String> {
    super::unsupported::parse_go_bool(value).ok_or_else(|| format!("{value:?} is not true or false"))
}

/// A comma-separated list as text, from a YAML string or sequence (etcd's config file
/// takes `cipher-suites` as a list).
fn string_or_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let value = Option::<serde_yaml_ng::Value>::deserialize(d)?;
    match value {
        None | Some(serde_yaml_ng::Value::Null) => Ok(None),
        Some(serde_yaml_ng::Value::String(s)) => Ok(Some(s)),
        Some(serde_yaml_ng::Value::Sequence(items)) => items
            .into_iter()
            .map(|item| match item {
                serde_yaml_ng::Value::String(s) => Ok(s),
                other => Err(serde::de::Error::custom(format!(
                    "expected a string, got {other:?}"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|items| Some(items.join(","))),
        Some(other) => Err(serde::de::Error::custom(format!(
            "expected a string or a list, got {other:?}"
        ))),
    }
}

/// A YAML scalar as text (`auto-compaction-retention: 1` and `"1h"` both mean something).
fn scalar_as_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let value = Option::<serde_yaml_ng::Value>::deserialize(d)?;
    match value {
        None | Some(serde_yaml_ng::Value::Null) => Ok(None),
        Some(serde_yaml_ng::Value::String(s)) => Ok(Some(s)),
        Some(serde_yaml_ng::Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(serde::de::Error::custom(format!(
            "expected a number or a string, got {other:?}"
        ))),
    }
}
