//! etcd's flags that raftkv does not implement, each with what is done about it: refused
//! when ignoring it would change what the operator gets (automatic TLS, CRLs, discovery, a separate WAL
//! dir, the v2 API), or accepted with a warning when raftkv already behaves as asked or
//! the knob tunes something raftkv does not have. Never silently ignored. A flag in
//! neither this table nor [`super::settings::Settings`] is refused by the parser.
//!
//! The names are etcd 3.4's `etcd --help` and the 3.5 additions kubeadm and operators pass.

use super::ConfigError;

/// What happens when an unimplemented etcd flag is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treatment {
    /// Accepted, logged as ignored, with why.
    Ignore(&'static str),
    /// Refused at start (exit 2), with why.
    Refuse(&'static str),
}

/// One etcd flag raftkv does not implement.
#[derive(Debug, Clone, Copy)]
pub struct EtcdFlag {
    /// Its name without dashes.
    pub name: &'static str,
    /// A Go boolean flag: given bare it means true, and false is as good as absent.
    pub boolean: bool,
    /// A value that means "off", as good as absent (etcd's default for some flags).
    pub inert: &'static str,
    /// What is done when it is set.
    pub treatment: Treatment,
}

const AUTO_TLS: Treatment =
    Treatment::Refuse("raftkv makes no self-signed certificates: give the certificate and key files");
const CRL: Treatment = Treatment::Refuse("certificate revocation lists are not checked yet");
const CN_CHECKS: Treatment =
    Treatment::Refuse("certificate name checks beyond the CA's are not implemented yet");
const DISCOVERY: Treatment =
    Treatment::Refuse("discovery is not supported: list the members with --initial-cluster");
const V2: Treatment = Treatment::Refuse("the v2 API is not served");
const PROXY: Treatment = Treatment::Ignore("raftkv has no proxy mode");
const PROXY_MODE: Treatment = Treatment::Refuse("raftkv has no proxy mode");
const LOGGING: Treatment = Treatment::Ignore("raftkv logs to stderr; use --log-level or --log for verbosity");
const NOT_NEEDED: Treatment = Treatment::Ignore("raftkv has no such mechanism to tune");

const fn value(name: &'static str, treatment: Treatment) -> EtcdFlag {
    value_except(name, "", treatment)
}

const fn value_except(name: &'static str, inert: &'static str, treatment: Treatment) -> EtcdFlag {
    EtcdFlag {
        name,
        boolean: false,
        inert,
        treatment,
    }
}

const fn boolean(name: &'static str, treatment: Treatment) -> EtcdFlag {
    EtcdFlag {
        name,
        boolean: true,
        inert: "false",
        treatment,
    }
}

/// The table.
pub const ETCD_FLAGS: &[EtcdFlag] = &[
    value("wal-dir", Treatment::Refuse("raftkv keeps its log in --data-dir")),
    value(
        "max-snapshots",
        Treatment::Ignore("raftkv keeps one snapshot, replaced when a new one is complete"),
    ),
    value(
        "max-wals",
        Treatment::Ignore("raftkv's log is truncated at each snapshot"),
    ),
    value("initial-election-tick-advance", NOT_NEEDED),
    value(
        "backend-batch-interval",
        Treatment::Ignore("raftkv commits its backend once per applied batch"),
    ),
    value(
        "backend-batch-limit",
        Treatment::Ignore("raftkv commits its backend once per applied batch"),
    ),
    value(
        "max-concurrent-streams",
        Treatment::Ignore("raftkv does not limit streams per connection"),
    ),
    value(
        "grpc-keepalive-min-time",
        Treatment::Ignore("gRPC keepalive is not configurable yet"),
    ),
    value(
        "grpc-keepalive-interval",
        Treatment::Ignore("gRPC keepalive is not configurable yet"),
    ),
    value(
        "grpc-keepalive-timeout",
        Treatment::Ignore("gRPC keepalive is not configurable yet"),
    ),
    value("discovery", DISCOVERY),
    value_except(
        "discovery-fallback",
        "proxy",
        Treatment::Ignore("discovery is not supported"),
    ),
    value("discovery-proxy", DISCOVERY),
    value("discovery-srv", DISCOVERY),
    value("discovery-srv-name", DISCOVERY),
    boolean(
        "strict-reconfig-check",
        Treatment::Ignore("raftkv always checks membership changes against the quorum"),
    ),
    boolean("pre-vote", Treatment::Ignore("raftkv always pre-votes")),
    boolean("enable-v2", V2),
    value("experimental-enable-v2v3", V2),
    value("client-crl-file", CRL),
    value("client-cert-allowed-hostname", CN_CHECKS),
    value(
        "client-cert-file",
        Treatment::Ignore("raftkv makes no client connections to its own client URLs"),
    ),
    value(
        "client-key-file",
        Treatment::Ignore("raftkv makes no client connections to its own client URLs"),
    ),
    boolean("auto-tls", AUTO_TLS),
    value("peer-cert-allowed-cn", CN_CHECKS),
    value("peer-cert-allowed-hostname", CN_CHECKS),
    boolean("peer-auto-tls", AUTO_TLS),
    value("peer-crl-file", CRL),
    value(
        "self-signed-cert-validity",
        Treatment::Ignore("raftkv makes no self-signed certificates"),
    ),
    boolean(
        "experimental-peer-skip-client-san-verification",
        Treatment::Ignore("raftkv does not check a peer's certificate against the address it connects from"),
    ),
    value("cors", Treatment::Ignore("no HTTP gateway is served")),
    value("host-whitelist", Treatment::Ignore("no HTTP gateway is served")),
    boolean(
        "enable-grpc-gateway",
        Treatment::Ignore("no gRPC gateway (JSON over HTTP) is served"),
    ),
    value(
        "listen-client-http-urls",
        Treatment::Refuse("gRPC and HTTP share the client URLs in raftkv"),
    ),
    boolean("enable-pprof", Treatment::Ignore("no pprof endpoint is served")),
    value("logger", LOGGING),
    value("log-outputs", LOGGING),
    value("log-format", LOGGING),
    value("log-package-levels", LOGGING),
    boolean("debug", LOGGING),
    boolean("enable-log-rotation", LOGGING),
    value("log-rotation-config-json", LOGGING),
    value_except("proxy", "off", PROXY_MODE),
    value("proxy-failure-wait", PROXY),
    value("proxy-refresh-interval", PROXY),
    value("proxy-dial-timeout", PROXY),
    value("proxy-write-timeout", PROXY),
    value("proxy-read-timeout", PROXY),
    boolean(
        "force-new-cluster",
        Treatment::Refuse("not supported: restore a snapshot into a new cluster instead"),
    ),
    boolean(
        "unsafe-no-fsync",
        Treatment::Ignore("raftkv always syncs before acknowledging"),
    ),
    boolean("socket-reuse-port", NOT_NEEDED),
    boolean("socket-reuse-address", NOT_NEEDED),
    boolean(
        "experimental-initial-corrupt-check",
        Treatment::Ignore("raftkv checks its files' checksums when it reads them"),
    ),
    value(
        "experimental-corrupt-check-time",
        Treatment::Ignore("no periodic cross-member hash check yet"),
    ),
    boolean(
        "experimental-compact-hash-check-enabled",
        Treatment::Ignore("no periodic cross-member hash check yet"),
    ),
    value(
        "experimental-compact-hash-check-time",
        Treatment::Ignore("no periodic cross-member hash check yet"),
    ),
    value(
        "experimental-backend-bbolt-freelist-type",
        Treatment::Ignore("the backend is sled, not bbolt"),
    ),
    boolean(
        "experimental-enable-lease-checkpoint",
        Treatment::Ignore("raftkv always checkpoints leases (--lease-checkpoint-ms)"),
    ),
    boolean(
        "experimental-enable-lease-checkpoint-persist",
        Treatment::Ignore("raftkv always persists lease checkpoints"),
    ),
    value("experimental-compaction-batch-limit", NOT_NEEDED),
    value("experimental-compaction-sleep-interval", NOT_NEEDED),
    value(
        "experimental-watch-progress-notify-interval",
        Treatment::Ignore("progress notifications are sent on request only"),
    ),
    value("experimental-warning-apply-duration", NOT_NEEDED),
    value("experimental-warning-unary-request-duration", NOT_NEEDED),
    boolean(
        "experimental-enable-distributed-tracing",
        Treatment::Ignore("no OpenTelemetry export; raftkv traces with tracing spans"),
    ),
    value("experimental-max-learners", NOT_NEEDED),
    value("experimental-snapshot-catchup-entries", NOT_NEEDED),
    boolean("experimental-memory-mlock", NOT_NEEDED),
    boolean(
        "experimental-stop-grpc-service-on-defrag",
        Treatment::Ignore("raftkv serves during defragmentation"),
    ),
    boolean("experimental-txn-mode-write-with-shared-buffer", NOT_NEEDED),
    value("experimental-bootstrap-defrag-threshold-megabytes", NOT_NEEDED),
    value("experimental-downgrade-check-time", NOT_NEEDED),
];

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The table's flags as parser arguments (hidden from `--help`, read from `ETCD_<FLAG>`).
pub fn args() -> Vec<clap::Arg> {
    ETCD_FLAGS
        .iter()
        .map(|flag| {
            let arg = clap::Arg::new(flag.name)
                .long(flag.name)
                .env(super::env_name(flag.name))
                .hide(true)
                .value_name("VALUE");
            if flag.boolean {
                arg.num_args(0..=1)
                    .require_equals(true)
                    .default_missing_value("true")
            } else {
                arg
            }
        })
        .collect()
}

/// Apply the table to a flag set to `value`: a warning to log, or the refusal.
pub fn check(flag: &EtcdFlag, value: &str, warnings: &mut Vec<String>) -> Result<(), ConfigError> {
    let set = if flag.boolean {
        parse_go_bool(value).ok_or_else(|| ConfigError::InvalidValue {
            flag: format!("--{}", flag.name),
            value: value.into(),
            reason: "expected true or false".into(),
        })?
    } else {
        !value.is_empty() && value != flag.inert
    };
    if !set {
        return Ok(());
    }
    match flag.treatment {
        Treatment::Ignore(why) => {
            warnings.push(format!("--{}={value} is ignored: {why}", flag.name));
            Ok(())
        }
        Treatment::Refuse(why) => Err(ConfigError::Unsupported {
            flag: format!("--{}", flag.name),
            reason: why.into(),
        }),
    }
}

/// The table entry of `name`, if any.
pub fn find(name: &str) -> Option<&'static EtcdFlag> {
    ETCD_FLAGS.iter().find(|f| f.name == name)
}
