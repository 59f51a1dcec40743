//! URLs and member lists as etcd writes them: listen URLs (`http://ip:port`), advertised
//! URLs, `--initial-cluster name=url,...`, and the member ids etcd derives from them.
//!
//! Ids are etcd's own (`computeMemberID` in etcd's `membership/member.go`): the first
//! eight bytes, big-endian, of SHA-1 over the member's sorted peer URLs joined, then the
//! cluster token. The same flags give the same ids as etcd, so `etcdctl member list`
//! reads the same after a swap. One raftkv extension: a member *named* by a positive
//! decimal number has that number as its id (`1=http://...`, what raftkv took before it
//! spoke etcd's flags, and what tests use to know ids in advance).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use sha1::{Digest, Sha1};

use super::ConfigError;

fn invalid(flag: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::InvalidValue {
        flag: flag.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

/// `scheme://host:port` split into its parts; a path (other than none) is refused, as
/// etcd's `types.NewURLs` does.
fn split_url<'a>(flag: &str, url: &'a str) -> Result<(&'a str, &'a str), ConfigError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| invalid(flag, url, "expected a URL such as http://127.0.0.1:2380"))?;
    if scheme != "http" && scheme != "https" {
        return Err(invalid(
            flag,
            url,
            format!("URL scheme must be http or https, not {scheme:?}"),
        ));
    }
    if rest.contains('/') {
        return Err(invalid(flag, url, "URL must not contain a path"));
    }
    let has_port = rest
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !has_port {
        return Err(invalid(
            flag,
            url,
            "URL address does not have the form \"host:port\"",
        ));
    }
    Ok((scheme, rest))
}

/// An address to listen on, and whether its URL asked for TLS (`https://`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenUrl {
    /// The address to bind.
    pub addr: SocketAddr,
    /// `https://`: serve TLS.
    pub tls: bool,
}

impl ListenUrl {
    /// A plaintext listener on `addr`.
    pub fn http(addr: SocketAddr) -> Self {
        Self { addr, tls: false }
    }

    /// The URL's scheme.
    pub fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }
}

/// Comma-separated URLs, blanks dropped.
fn split_list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|u| !u.is_empty())
}

/// Addresses to listen on: `http://ip:port[,...]`; `localhost` is 127.0.0.1 (etcd binds
/// other host names to nothing useful and warns; raftkv refuses them).
pub fn parse_listen_urls(flag: &str, value: &str) -> Result<Vec<ListenUrl>, ConfigError> {
    let addrs: Vec<ListenUrl> = split_list(value)
        .map(|url| {
            let (scheme, host_port) = split_url(flag, url)?;
            let tls = scheme == "https";
            if let Some(port) = host_port.strip_prefix("localhost:") {
                let port: u16 = port.parse().map_err(|_| invalid(flag, url, "bad port"))?;
                return Ok(ListenUrl {
                    addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
                    tls,
                });
            }
            let addr = host_port
                .parse()
                .map_err(|e| invalid(flag, url, format!("{e} (an IP address or localhost, and a port)")))?;
            Ok(ListenUrl { addr, tls })
        })
        .collect::<Result<_, _>>()?;
    if addrs.is_empty() {
        return Err(invalid(flag, value, "no URL given"));
    }
    Ok(addrs)
}

/// URLs to advertise: `http://host:port[,...]`, host names allowed.
pub fn parse_advertise_urls(flag: &str, value: &str) -> Result<Vec<String>, ConfigError> {
    let urls: Vec<String> = split_list(value)
        .map(|url| {
            split_url(flag, url)?;
            Ok(url.to_string())
        })
        .collect::<Result<_, _>>()?;
    if urls.is_empty() {
        return Err(invalid(flag, value, "no URL given"));
    }
    Ok(urls)
}

/// One member of `--initial-cluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialMember {
    /// Its name (`--name` on that member).
    pub name: String,
    /// Its id: the decimal name itself, or etcd's hash.
    pub id: u64,
    /// Its peer URL.
    pub peer_url: String,
}

/// etcd's member id of a member with these peer URLs in cluster `token`.
pub fn etcd_member_id(peer_urls: &[&str], token: &str) -> u64 {
    let mut sorted = peer_urls.to_vec();
    sorted.sort_unstable();
    let mut hasher = Sha1::new();
    hasher.update(sorted.concat().as_bytes());
    hasher.update(token.as_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// `name=url,...` as etcd writes it. raftkv serves one peer URL per member: a name given
/// twice is refused rather than half-used.
pub fn parse_initial_cluster(value: &str, token: &str) -> Result<Vec<InitialMember>, ConfigError> {
    let flag = "--initial-cluster";
    let mut members: Vec<InitialMember> = Vec::new();
    for part in split_list(value) {
        let (name, url) = part
            .split_once('=')
            .ok_or_else(|| invalid(flag, part, "expected NAME=URL"))?;
        let (name, url) = (name.trim(), url.trim());
        if name.is_empty() {
            return Err(invalid(flag, part, "a member needs a name"));
        }
        split_url(flag, url)?;
        if members.iter().any(|m| m.name == name) {
            return Err(invalid(
                flag,
                part,
                format!("member {name} is given more than one peer URL; raftkv serves one per member"),
            ));
        }
        let id = match name.parse::<u64>() {
            Ok(id) if id > 0 => id,
            _ => etcd_member_id(&[url], token),
        };
        if let Some(other) = members.iter().find(|m| m.id == id || m.peer_url == url) {
            return Err(invalid(
                flag,
                part,
                format!(
                    "member {name} has the same id or peer URL as member {}",
                    other.name
                ),
            ));
        }
        members.push(InitialMember {
            name: name.to_string(),
            id,
            peer_url: url.to_string(),
        });
    }
    if members.is_empty() {
        return Err(invalid(flag, value, "no member given"));
    }
    Ok(members)
}

/// The members by id, as the node builder takes them.
pub fn members_by_id(members: &[InitialMember]) -> BTreeMap<u64, String> {
    members.iter().map(|m| (m.id, m.peer_url.clone())).collect()
}

/// A member id: decimal, or hexadecimal with `0x` (etcdctl prints ids in hex).
pub fn parse_member_id(flag: &str, value: &str) -> Result<u64, ConfigError> {
    let parsed = match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => value.parse(),
    };
    match parsed {
        Ok(0) => Err(invalid(flag, value, "member ids are non-zero")),
        Ok(id) => Ok(id),
        Err(e) => Err(invalid(flag, value, e.to_string())),
    }
}
