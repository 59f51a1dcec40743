//! The command line, parsed by hand into a typed [`Config`] (a flag parser crate would be
//! one more dependency for a dozen flags).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A command line that does not make a valid configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A flag this server does not know.
    #[error("unknown flag {0} (see --help)")]
    UnknownFlag(String),
    /// A flag without its value.
    #[error("flag {0} needs a value")]
    MissingValue(String),
    /// A value that does not parse.
    #[error("invalid value for {flag}: {value:?} ({reason})")]
    InvalidValue {
        /// The flag.
        flag: String,
        /// The value given.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A required flag is missing.
    #[error("missing required flag {0}")]
    Missing(&'static str),
    /// Flags that contradict each other.
    #[error("{0}")]
    Conflict(String),
    /// `--help` was given.
    #[error("{USAGE}")]
    Help,
}

/// Usage text.
pub const USAGE: &str = "\
raftkv-server: a raftkv node speaking etcd's v3 gRPC API

  --id N                        member id (u64, non-zero; 0x... for hex)  [required]
  --data-dir DIR                log, state machine, snapshots             [required]
  --listen-client ADDR          etcd API address, e.g. 127.0.0.1:2379     [required*]
  --listen-peer ADDR            Raft peer address, e.g. 127.0.0.1:2380    [required*]
                                (*unless inherited: LISTEN_FDS with LISTEN_FDNAMES
                                naming them client and peer, as systemd passes them)
  --initial-cluster LIST        bootstrap members: 1=http://127.0.0.1:2380,2=...
                                (the same on every member; omit for a single node)
  --join                        do not bootstrap: wait to be added by a member
  --listen-metrics-urls LIST    more addresses for the HTTP health endpoints (/health,
                                /livez, /readyz; also on the client address), as
                                etcd's flag: http://127.0.0.1:2381[,...]
  --advertise-client-urls LIST  client URLs published (default http://<listen-client>)
  --advertise-peer-url URL      peer URL (default: from --initial-cluster, else http://<listen-peer>)
  --name NAME                   member name
  --heartbeat-ms N              Raft heartbeat interval (default 100)
  --election-timeout-ms N       election timeout minimum; maximum is twice it (default 350)
  --request-timeout-ms N        deadline of one request (default 7000, etcd's)
  --snapshot-every N            snapshot after at least N log entries (default 10000)
                                and as many bytes written as the last snapshot holds
  --quota-backend-bytes N       disk quota; past it NOSPACE is raised (default 2 GiB)
  --lease-checkpoint-ms N       how often the leader records every lease's remaining TTL
                                (default 5000); a leader change costs an idle lease at
                                most this much extra life
  --state-cache-mb N            sled's page cache of the state database, in MiB
                                (default 1024); a state larger than it is paged in
                                and out of the database file, which slows writes
  --auto-defrag-ratio N         rewrite the state database once its file is N times its
                                size at the last rewrite (taken as at least 64 MiB),
                                giving back the space sled keeps; 0: only on
                                Defragment (default 2)
  --proposer MODE               group-commit (default): requests queue and are batched
                                into log entries; direct: each request is its own entry
                                (for the ablation benchmark, README \"Performance\")
  --log FILTER                  tracing filter (default: RUST_LOG, else info)
";

/// `--state-cache-mb` unless given: sled's own default cache size, and the library's
/// (`StoreOptions::default`).
pub const DEFAULT_STATE_CACHE_MB: u64 = 1024;

/// The server's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Member id.
    pub id: u64,
    /// Member name.
    pub name: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Client (etcd API) listen address.
    pub listen_client: SocketAddr,
    /// Peer listen address.
    pub listen_peer: SocketAddr,
    /// Where else the HTTP health endpoints are served (etcd's `--listen-metrics-urls`).
    pub listen_metrics: Vec<SocketAddr>,
    /// Bootstrap members (id -> peer URL); empty for a single-node bootstrap.
    pub initial_cluster: BTreeMap<u64, String>,
    /// Wait to be added instead of bootstrapping.
    pub join: bool,
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
    /// How often the leader checkpoints the remaining TTL of every lease.
    pub lease_checkpoint: Duration,
    /// Automatic defragmentation's growth ratio (0: off).
    pub auto_defrag_ratio: u64,
    /// sled's page cache of the state database, in MiB.
    pub state_cache_mb: u64,
    /// `--proposer direct`: each request its own log entry, no group commit.
    pub direct_proposals: bool,
    /// Log filter.
    pub log: Option<String>,
}

fn parse_addr(flag: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    let trimmed = value.trim_start_matches("http://");
    trimmed
        .parse()
        .map_err(|e: std::net::AddrParseError| ConfigError::InvalidValue {
            flag: flag.into(),
            value: value.into(),
            reason: e.to_string(),
        })
}

fn parse_num<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e: T::Err| ConfigError::InvalidValue {
        flag: flag.into(),
        value: value.into(),
        reason: e.to_string(),
    })
}

fn parse_url(flag: &str, value: &str) -> Result<String, ConfigError> {
    if !(value.starts_with("http://") || value.starts_with("https://")) || value.len() <= "http://".len() {
        return Err(ConfigError::InvalidValue {
            flag: flag.into(),
            value: value.into(),
            reason: "expected a URL such as http://127.0.0.1:2380".into(),
        });
    }
    Ok(value.to_string())
}

/// `http://host:port[,...]`, as etcd's `--listen-metrics-urls` takes them: an IP address
/// and port each (etcd refuses host names there too); `https://` waits for TLS.
fn parse_listen_urls(flag: &str, value: &str) -> Result<Vec<SocketAddr>, ConfigError> {
    let invalid = |url: &str, reason: &str| ConfigError::InvalidValue {
        flag: flag.into(),
        value: url.into(),
        reason: reason.into(),
    };
    value
        .split(',')
        .filter(|u| !u.trim().is_empty())
        .map(|url| {
            let url = url.trim();
            if url.starts_with("https://") {
                return Err(invalid(url, "TLS is not supported yet: use http://"));
            }
            let addr = url
                .strip_prefix("http://")
                .ok_or_else(|| invalid(url, "expected a URL such as http://127.0.0.1:2381"))?;
            addr.trim_end_matches('/')
                .parse()
                .map_err(|e: std::net::AddrParseError| {
                    invalid(url, &format!("{e} (an IP address and a port)"))
                })
        })
        .collect()
}

/// A member id: decimal, or hexadecimal with `0x` (etcdctl prints ids in hex).
fn parse_member_id(flag: &str, value: &str) -> Result<u64, ConfigError> {
    match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).map_err(|e| ConfigError::InvalidValue {
            flag: flag.into(),
            value: value.into(),
            reason: e.to_string(),
        }),
        None => parse_num(flag, value),
    }
}

/// Parse `1=http://a:2380,2=http://b:2380`.
pub fn parse_initial_cluster(value: &str) -> Result<BTreeMap<u64, String>, ConfigError> {
    let flag = "--initial-cluster";
    let mut members = BTreeMap::new();
    for part in value.split(',').filter(|p| !p.trim().is_empty()) {
        let (id, url) = part.split_once('=').ok_or_else(|| ConfigError::InvalidValue {
            flag: flag.into(),
            value: part.into(),
            reason: "expected ID=URL".into(),
        })?;
        let id: u64 = parse_num(flag, id.trim())?;
        if id == 0 {
            return Err(ConfigError::InvalidValue {
                flag: flag.into(),
                value: part.into(),
                reason: "member ids are non-zero".into(),
            });
        }
        if members.insert(id, parse_url(flag, url.trim())?).is_some() {
            return Err(ConfigError::InvalidValue {
                flag: flag.into(),
                value: part.into(),
                reason: format!("member {id} given twice"),
            });
        }
    }
    Ok(members)
}

/// The listener addresses of sockets this process inherited (see
/// `socket_activation`): each replaces its `--listen-*` flag.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InheritedAddrs {
    /// The peer listener's address.
    pub peer: Option<SocketAddr>,
    /// The client listener's address.
    pub client: Option<SocketAddr>,
}

/// The listen address from the flag or the inherited socket; both must agree.
fn listen_addr(
    flag: &'static str,
    given: Option<SocketAddr>,
    inherited: Option<SocketAddr>,
) -> Result<SocketAddr, ConfigError> {
    match (given, inherited) {
        (Some(given), Some(inherited)) if given != inherited => Err(ConfigError::Conflict(format!(
            "{flag} {given} differs from the inherited socket's address {inherited} (LISTEN_FDS); \
             drop the flag or pass the same address"
        ))),
        (_, Some(addr)) | (Some(addr), None) => Ok(addr),
        (None, None) => Err(ConfigError::Missing(flag)),
    }
}

impl Config {
    /// Parse the arguments after the program name.
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Result<Self, ConfigError> {
        Self::from_args_and_sockets(args, InheritedAddrs::default())
    }

    /// Parse the arguments after the program name, for a process that inherited the
    /// listeners at `inherited`.
    pub fn from_args_and_sockets(
        args: impl IntoIterator<Item = String>,
        inherited: InheritedAddrs,
    ) -> Result<Self, ConfigError> {
        let mut args = args.into_iter();
        let mut id = None;
        let mut name = None;
        let mut data_dir = None;
        let mut listen_client = None;
        let mut listen_peer = None;
        let mut listen_metrics = Vec::new();
        let mut initial_cluster = BTreeMap::new();
        let mut join = false;
        let mut advertise_client_urls = Vec::new();
        let mut advertise_peer_url = None;
        let mut heartbeat = Duration::from_millis(100);
        let mut election_timeout = Duration::from_millis(350);
        // etcd's default (`raftkv::DEFAULT_REQUEST_TIMEOUT` says why).
        let mut request_timeout = Duration::from_millis(7000);
        let mut snapshot_every = 10_000;
        let mut quota_backend_bytes: u64 = 2 << 30;
        let mut lease_checkpoint = Duration::from_millis(5000);
        let mut auto_defrag_ratio = 2;
        let mut state_cache_mb = DEFAULT_STATE_CACHE_MB;
        let mut log = None;
        let mut direct_proposals = false;
        while let Some(flag) = args.next() {
            if flag == "--help" || flag == "-h" {
                return Err(ConfigError::Help);
            }
            if flag == "--join" {
                join = true;
                continue;
            }
            let value = args
                .next()
                .ok_or_else(|| ConfigError::MissingValue(flag.clone()))?;
            match flag.as_str() {
                "--id" => id = Some(parse_member_id(&flag, &value)?),
                "--name" => name = Some(value),
                "--data-dir" => data_dir = Some(PathBuf::from(value)),
                "--listen-client" => listen_client = Some(parse_addr(&flag, &value)?),
                "--listen-peer" => listen_peer = Some(parse_addr(&flag, &value)?),
                "--listen-metrics-urls" => listen_metrics = parse_listen_urls(&flag, &value)?,
                "--initial-cluster" => initial_cluster = parse_initial_cluster(&value)?,
                "--advertise-client-urls" => {
                    advertise_client_urls = value
                        .split(',')
                        .filter(|u| !u.is_empty())
                        .map(|u| parse_url(&flag, u))
                        .collect::<Result<_, _>>()?
                }
                "--advertise-peer-url" => advertise_peer_url = Some(parse_url(&flag, &value)?),
                "--heartbeat-ms" => heartbeat = Duration::from_millis(parse_num(&flag, &value)?),
                "--election-timeout-ms" => {
                    election_timeout = Duration::from_millis(parse_num(&flag, &value)?)
                }
                "--request-timeout-ms" => request_timeout = Duration::from_millis(parse_num(&flag, &value)?),
                "--snapshot-every" => snapshot_every = parse_num(&flag, &value)?,
                "--quota-backend-bytes" => quota_backend_bytes = parse_num(&flag, &value)?,
                "--lease-checkpoint-ms" => {
                    lease_checkpoint = Duration::from_millis(parse_num(&flag, &value)?);
                    if lease_checkpoint.is_zero() {
                        return Err(ConfigError::InvalidValue {
                            flag,
                            value,
                            reason: "must be positive".into(),
                        });
                    }
                }
                "--auto-defrag-ratio" => {
                    auto_defrag_ratio = parse_num(&flag, &value)?;
                    if auto_defrag_ratio == 1 {
                        return Err(ConfigError::InvalidValue {
                            flag,
                            value,
                            reason: "must be 0 (off) or at least 2".into(),
                        });
                    }
                }
                "--state-cache-mb" => {
                    state_cache_mb = parse_num(&flag, &value)?;
                    if state_cache_mb == 0 {
                        return Err(ConfigError::InvalidValue {
                            flag,
                            value,
                            reason: "must be at least 1".into(),
                        });
                    }
                }
                "--log" => log = Some(value),
                "--proposer" => {
                    direct_proposals = match value.as_str() {
                        "group-commit" => false,
                        "direct" => true,
                        _ => {
                            return Err(ConfigError::InvalidValue {
                                flag,
                                value,
                                reason: "must be group-commit or direct".into(),
                            });
                        }
                    }
                }
                _ => return Err(ConfigError::UnknownFlag(flag)),
            }
        }
        let id = id.ok_or(ConfigError::Missing("--id"))?;
        if id == 0 {
            return Err(ConfigError::InvalidValue {
                flag: "--id".into(),
                value: "0".into(),
                reason: "member ids are non-zero".into(),
            });
        }
        let listen_client = listen_addr("--listen-client", listen_client, inherited.client)?;
        let listen_peer = listen_addr("--listen-peer", listen_peer, inherited.peer)?;
        if join && !initial_cluster.is_empty() {
            return Err(ConfigError::Conflict(
                "--join and --initial-cluster exclude each other".into(),
            ));
        }
        if !initial_cluster.is_empty() && !initial_cluster.contains_key(&id) {
            return Err(ConfigError::Conflict(format!(
                "--initial-cluster does not contain --id {id}"
            )));
        }
        if heartbeat.is_zero() || election_timeout <= heartbeat * 3 {
            return Err(ConfigError::Conflict(
                "--election-timeout-ms must be more than three heartbeats".into(),
            ));
        }
        let advertise_peer_url = match advertise_peer_url {
            Some(url) => url,
            None => initial_cluster
                .get(&id)
                .cloned()
                .unwrap_or_else(|| format!("http://{listen_peer}")),
        };
        if advertise_client_urls.is_empty() {
            advertise_client_urls.push(format!("http://{listen_client}"));
        }
        Ok(Self {
            id,
            name: name.unwrap_or_else(|| format!("node-{id}")),
            data_dir: data_dir.ok_or(ConfigError::Missing("--data-dir"))?,
            listen_client,
            listen_peer,
            listen_metrics,
            initial_cluster,
            join,
            advertise_client_urls,
            advertise_peer_url,
            heartbeat,
            election_timeout,
            request_timeout,
            snapshot_every,
            quota_backend_bytes,
            lease_checkpoint,
            auto_defrag_ratio,
            state_cache_mb,
            direct_proposals,
            log,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_an_etcd_style_command_line() {
        let c = Config::from_args(args(
            "--id 2 --data-dir /tmp/d --listen-client 127.0.0.1:2379 --listen-peer 127.0.0.1:2380 \
             --initial-cluster 1=http://127.0.0.1:2480,2=http://127.0.0.1:2380,3=http://127.0.0.1:2580",
        ))
        .unwrap();
        assert_eq!(c.id, 2);
        assert_eq!(c.initial_cluster.len(), 3);
        assert_eq!(c.advertise_peer_url, "http://127.0.0.1:2380");
        assert_eq!(c.advertise_client_urls, vec!["http://127.0.0.1:2379".to_string()]);
        assert_eq!(c.auto_defrag_ratio, 2);
        assert_eq!(c.state_cache_mb, DEFAULT_STATE_CACHE_MB);
        let off = Config::from_args(args(
            "--id 1 --data-dir /tmp/d --listen-client 127.0.0.1:1 --listen-peer 127.0.0.1:2 \
             --auto-defrag-ratio 0 --state-cache-mb 256",
        ))
        .unwrap();
        assert_eq!(off.auto_defrag_ratio, 0);
        assert_eq!(off.state_cache_mb, 256);
        assert!(off.listen_metrics.is_empty());
        let probed = Config::from_args(args(
            "--id 1 --data-dir /tmp/d --listen-client 127.0.0.1:1 --listen-peer 127.0.0.1:2 \
             --listen-metrics-urls http://127.0.0.1:2381,http://[::1]:2381/",
        ))
        .unwrap();
        assert_eq!(
            probed.listen_metrics,
            vec![
                "127.0.0.1:2381".parse::<SocketAddr>().unwrap(),
                "[::1]:2381".parse().unwrap()
            ]
        );
    }

    #[test]
    fn inherited_sockets_replace_the_listen_flags() {
        let inherited = InheritedAddrs {
            peer: Some("127.0.0.1:4001".parse().unwrap()),
            client: Some("127.0.0.1:4002".parse().unwrap()),
        };
        let c = Config::from_args_and_sockets(args("--id 1 --data-dir /tmp/d"), inherited).unwrap();
        assert_eq!(c.listen_peer, inherited.peer.unwrap());
        assert_eq!(c.advertise_client_urls, vec!["http://127.0.0.1:4002".to_string()]);
        let same = Config::from_args_and_sockets(
            args("--id 1 --data-dir /tmp/d --listen-peer 127.0.0.1:4001"),
            inherited,
        );
        assert!(same.is_ok());
        let err = Config::from_args_and_sockets(
            args("--id 1 --data-dir /tmp/d --listen-client 127.0.0.1:9"),
            inherited,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("--listen-client 127.0.0.1:9 differs"), "{err}");
        let only_peer = InheritedAddrs {
            client: None,
            ..inherited
        };
        let err = Config::from_args_and_sockets(args("--id 1 --data-dir /tmp/d"), only_peer)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing required flag --listen-client"), "{err}");
    }

    #[test]
    fn bad_command_lines_get_clear_errors() {
        let base = "--data-dir /tmp/d --listen-client 127.0.0.1:1 --listen-peer 127.0.0.1:2";
        let cases = [
            (base.to_string(), "missing required flag --id"),
            (format!("--id 0 {base}"), "non-zero"),
            (
                format!("--id 1 {base} --initial-cluster 2=http://x:1"),
                "does not contain",
            ),
            (format!("--id 1 {base} --initial-cluster 1=x:1"), "expected a URL"),
            (
                format!("--id 1 {base} --join --initial-cluster 1=http://x:1"),
                "exclude",
            ),
            (format!("--id 1 {base} --bogus 1"), "unknown flag"),
            (
                format!("--id 1 {base} --listen-peer nope"),
                "invalid value for --listen-peer",
            ),
            (format!("--id 1 {base} --heartbeat-ms 500"), "three heartbeats"),
            (
                format!("--id 1 {base} --lease-checkpoint-ms 0"),
                "must be positive",
            ),
            (
                format!("--id 1 {base} --lease-checkpoint-ms soon"),
                "invalid value",
            ),
            (
                format!("--id 1 {base} --auto-defrag-ratio 1"),
                "0 (off) or at least 2",
            ),
            (format!("--id 1 {base} --auto-defrag-ratio -2"), "invalid value"),
            (format!("--id 1 {base} --state-cache-mb 0"), "at least 1"),
            (format!("--id 1 {base} --state-cache-mb lots"), "invalid value"),
            (
                format!("--id 1 {base} --listen-metrics-urls https://127.0.0.1:2381"),
                "TLS is not supported yet",
            ),
            (
                format!("--id 1 {base} --listen-metrics-urls http://localhost:2381"),
                "an IP address and a port",
            ),
            (
                format!("--id 1 {base} --listen-metrics-urls 127.0.0.1:2381"),
                "expected a URL",
            ),
        ];
        for (line, expected) in cases {
            let err = Config::from_args(args(&line)).unwrap_err().to_string();
            assert!(err.contains(expected), "{line}: {err}");
        }
    }
}
