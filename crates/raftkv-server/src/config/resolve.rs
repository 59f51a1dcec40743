//! From what the operator said ([`Settings`]) to a [`Config`]: etcd's defaults where
//! raftkv has no measured reason to differ, the checks etcd makes (with its wording where
//! operators search for it), and the member ids.
//!
//! Defaults that differ from etcd's, each for a reason written in `--help`: the
//! election timeout (350 ms, not 1000: raftkv's failover figures in the README), the
//! snapshot count (10,000, not 100,000: raftkv's log entries carry whole batches), and
//! the advertised client URLs (the listen URLs, where etcd requires the flag).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::compaction::parse_auto_compaction;
use super::settings::Settings;
use super::tls::resolve_tls;
use super::urls::{
    ListenUrl, members_by_id, parse_advertise_urls, parse_initial_cluster, parse_listen_urls, parse_member_id,
};
use super::{Config, ConfigError, DEFAULT_STATE_CACHE_MB};

/// The listener addresses of sockets this process inherited (see
/// `socket_activation`): each replaces its `--listen-*-urls` flag.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InheritedAddrs {
    /// The peer listener's address.
    pub peer: Option<SocketAddr>,
    /// The client listener's address.
    pub client: Option<SocketAddr>,
}

fn invalid(flag: &str, value: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::InvalidValue {
        flag: flag.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

/// The URLs from the flag, or the inherited socket's address; both must agree (the
/// flag's scheme says whether the inherited socket speaks TLS).
fn listen_urls(
    flag: &str,
    given: Option<&str>,
    inherited: Option<SocketAddr>,
    default_port: u16,
) -> Result<Vec<ListenUrl>, ConfigError> {
    let given = given.map(|v| parse_listen_urls(flag, v)).transpose()?;
    match (given, inherited) {
        (Some(given), Some(inherited)) if given.iter().map(|u| u.addr).ne([inherited]) => {
            Err(ConfigError::Conflict(format!(
                "{flag} {given:?} differs from the inherited socket's address {inherited} (LISTEN_FDS); \
                 drop the flag or pass the same address"
            )))
        }
        (Some(given), _) => Ok(given),
        (None, Some(addr)) => Ok(vec![ListenUrl::http(addr)]),
        (None, None) => Ok(vec![ListenUrl::http(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            default_port,
        ))]),
    }
}

/// A listen address others can be told to use in place of an advertised URL: not the
/// unspecified address (0.0.0.0 or ::), which means "every interface" to a listener and
/// nothing to a client.
fn reachable(advertise_flag: &str, addr: SocketAddr) -> Result<SocketAddr, ConfigError> {
    if addr.ip().is_unspecified() {
        return Err(ConfigError::Conflict(format!(
            "{advertise_flag} is required when listening on {addr} (every interface): \
             nobody can connect to that address"
        )));
    }
    Ok(addr)
}

fn positive(flag: &str, value: u64) -> Result<u64, ConfigError> {
    if value == 0 {
        return Err(invalid(flag, "0", "must be positive"));
    }
    Ok(value)
}

/// etcd's `--log-level` as a tracing filter.
fn log_filter(level: &str) -> Result<String, ConfigError> {
    match level {
        // openraft's info lines are per election and membership step: etcd's `info` is
        // quieter than that.
        "info" => Ok("info,openraft=warn".to_string()),
        "debug" | "warn" | "error" => Ok(level.to_string()),
        "dpanic" | "panic" | "fatal" => Ok("error".to_string()),
        _ => Err(invalid(
            "--log-level",
            level,
            "expected debug, info, warn, error, panic or fatal",
        )),
    }
}

/// Apply defaults and checks.
pub fn resolve(s: Settings, inherited: InheritedAddrs) -> Result<Config, ConfigError> {
    let name = s.name.clone().unwrap_or_else(|| "default".to_string());
    if name.is_empty() {
        return Err(invalid("--name", "", "must not be empty"));
    }
    let data_dir = s.data_dir.clone().unwrap_or_else(|| format!("{name}.etcd"));
    let token = s
        .initial_cluster_token
        .clone()
        .unwrap_or_else(|| "etcd-cluster".to_string());

    let peer_addrs = listen_urls(
        "--listen-peer-urls",
        s.listen_peer_urls.as_deref(),
        inherited.peer,
        2380,
    )?;
    let [listen_peer] = peer_addrs.as_slice() else {
        return Err(invalid(
            "--listen-peer-urls",
            s.listen_peer_urls.unwrap_or_default(),
            "raftkv serves the peer protocol on one URL",
        ));
    };
    let listen_peer = *listen_peer;
    let listen_client = listen_urls(
        "--listen-client-urls",
        s.listen_client_urls.as_deref(),
        inherited.client,
        2379,
    )?;
    let listen_metrics = match s.listen_metrics_urls.as_deref() {
        Some(urls) => parse_listen_urls("--listen-metrics-urls", urls)?,
        None => Vec::new(),
    };

    let join = match s.initial_cluster_state.as_deref() {
        None | Some("new") => false,
        Some("existing") => true,
        Some(other) => {
            return Err(invalid(
                "--initial-cluster-state",
                other,
                "expected new or existing",
            ));
        }
    };
    let advertise_peer = match s.initial_advertise_peer_urls.as_deref() {
        Some(urls) => match parse_advertise_urls("--initial-advertise-peer-urls", urls)?.as_slice() {
            [url] => Some(url.clone()),
            _ => {
                return Err(invalid(
                    "--initial-advertise-peer-urls",
                    urls,
                    "raftkv advertises one peer URL",
                ));
            }
        },
        None => None,
    };
    let cluster_text = match (&s.initial_cluster, &advertise_peer) {
        (Some(cluster), _) => cluster.clone(),
        (None, Some(url)) => format!("{name}={url}"),
        (None, None) => format!(
            "{name}={}://{}",
            listen_peer.scheme(),
            reachable("--initial-advertise-peer-urls", listen_peer.addr)?
        ),
    };
    let members = parse_initial_cluster(&cluster_text, &token)?;
    let own = members.iter().find(|m| m.name == name).ok_or_else(|| {
        ConfigError::Conflict(format!(
            "couldn't find local name {name:?} in the initial cluster configuration (--initial-cluster {cluster_text})"
        ))
    })?;
    if let Some(url) = &advertise_peer
        && *url != own.peer_url
    {
        return Err(ConfigError::Conflict(format!(
            "--initial-cluster has {name}={} but missing from --initial-advertise-peer-urls={url}",
            own.peer_url
        )));
    }
    let given_id =
        s.id.as_deref()
            .map(|id| parse_member_id("--id", id))
            .transpose()?;
    let id = match (join, given_id) {
        // Joining: the id MemberAdd chose, given or looked up from the peers.
        (true, given) => given,
        (false, Some(id)) if id != own.id => {
            return Err(ConfigError::Conflict(format!(
                "--id {id:#x} differs from the id --initial-cluster gives member {name} ({:#x})",
                own.id
            )));
        }
        (false, _) => Some(own.id),
    };
    let existing_peers = if join {
        members
            .iter()
            .filter(|m| m.name != name)
            .map(|m| m.peer_url.clone())
            .collect()
    } else {
        Vec::new()
    };

    let advertise_client_urls = match s.advertise_client_urls.as_deref() {
        Some(urls) => parse_advertise_urls("--advertise-client-urls", urls)?,
        None => listen_client
            .iter()
            .map(|u| {
                Ok(format!(
                    "{}://{}",
                    u.scheme(),
                    reachable("--advertise-client-urls", u.addr)?
                ))
            })
            .collect::<Result<_, ConfigError>>()?,
    };

    let tls = resolve_tls(
        &s,
        listen_client.iter().chain(&listen_metrics),
        &listen_peer,
        members.iter().map(|m| m.peer_url.as_str()),
    )?;

    let heartbeat = Duration::from_millis(s.heartbeat_interval.unwrap_or(100));
    let election_timeout = Duration::from_millis(s.election_timeout.unwrap_or(350));
    if heartbeat.is_zero() || election_timeout <= heartbeat * 3 {
        return Err(ConfigError::Conflict(format!(
            "--election-timeout ({}ms) must be more than three --heartbeat-interval ({}ms)",
            election_timeout.as_millis(),
            heartbeat.as_millis()
        )));
    }
    let quota_backend_bytes = match s.quota_backend_bytes.unwrap_or(0) {
        0 => 2 << 30,
        negative if negative < 0 => u64::MAX,
        bytes => bytes.unsigned_abs(),
    };
    let auto_compaction = parse_auto_compaction(
        s.auto_compaction_mode.as_deref().unwrap_or("periodic"),
        s.auto_compaction_retention.as_deref().unwrap_or("0"),
    )?;
    let metrics_extensive = match s.metrics.as_deref() {
        None | Some("basic") => false,
        Some("extensive") => true,
        Some(other) => return Err(invalid("--metrics", other, "expected basic or extensive")),
    };
    let auto_defrag_ratio = s.auto_defrag_ratio.unwrap_or(2);
    if auto_defrag_ratio == 1 {
        return Err(invalid(
            "--auto-defrag-ratio",
            "1",
            "must be 0 (off) or at least 2",
        ));
    }
    let direct_proposals = match s.proposer.as_deref() {
        None | Some("group-commit") => false,
        Some("direct") => true,
        Some(other) => return Err(invalid("--proposer", other, "must be group-commit or direct")),
    };
    // etcd's `simple`; its `jwt` tokens need signing keys raftkv does not manage yet.
    match s.auth_token.as_deref() {
        None | Some("simple") => {}
        Some(other) if other.starts_with("jwt") => {
            return Err(invalid(
                "--auth-token",
                other,
                "only simple tokens are served (jwt is not yet)",
            ));
        }
        Some(other) => return Err(invalid("--auth-token", other, "expected simple")),
    }
    // etcd falls back to its default for a cost out of bcrypt's range; refuse instead.
    let bcrypt_cost = s.bcrypt_cost.unwrap_or(10);
    if !(4..=31).contains(&bcrypt_cost) {
        return Err(invalid(
            "--bcrypt-cost",
            bcrypt_cost.to_string(),
            "must be 4 to 31",
        ));
    }
    let log = match (s.log, s.log_level) {
        (Some(filter), _) => Some(filter),
        (None, Some(level)) => Some(log_filter(&level)?),
        (None, None) => None,
    };
    Ok(Config {
        id,
        name: name.clone(),
        data_dir: data_dir.into(),
        listen_client,
        listen_peer,
        listen_metrics,
        initial_cluster: if join {
            Default::default()
        } else {
            members_by_id(&members)
        },
        join,
        existing_peers,
        advertise_client_urls,
        advertise_peer_url: own.peer_url.clone(),
        heartbeat,
        election_timeout,
        request_timeout: Duration::from_millis(positive(
            "--request-timeout-ms",
            s.request_timeout_ms.unwrap_or(7000),
        )?),
        snapshot_every: positive("--snapshot-count", s.snapshot_count.unwrap_or(10_000))?,
        quota_backend_bytes,
        auto_compaction,
        metrics_extensive,
        max_request_bytes: positive(
            "--max-request-bytes",
            u64::from(s.max_request_bytes.unwrap_or(1_572_864)),
        )? as usize,
        max_txn_ops: positive("--max-txn-ops", u64::from(s.max_txn_ops.unwrap_or(128)))? as usize,
        bcrypt_cost,
        auth_token_ttl: Duration::from_secs(positive("--auth-token-ttl", s.auth_token_ttl.unwrap_or(300))?),
        lease_checkpoint: Duration::from_millis(positive(
            "--lease-checkpoint-ms",
            s.lease_checkpoint_ms.unwrap_or(5000),
        )?),
        auto_defrag_ratio,
        state_cache_mb: positive(
            "--state-cache-mb",
            s.state_cache_mb.unwrap_or(DEFAULT_STATE_CACHE_MB),
        )?,
        direct_proposals,
        log,
        tls,
    })
}
