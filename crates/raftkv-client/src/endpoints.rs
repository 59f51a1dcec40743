//! [`Endpoints`]: the servers a client knows, one long-lived gRPC channel each, and which
//! of them it prefers.
//!
//! Each endpoint gets its tonic `Channel` once, lazily (`connect_lazy`: nothing is dialed
//! until the first request, and a broken connection is re-dialed by the channel on the
//! next one). Channels are cheap handles to a shared connection, so every task of every
//! clone of the client multiplexes its requests over the same HTTP/2 connection.
//!
//! The *preferred* endpoint is an index in an atomic: every call starts there. After a
//! transport failure the call moves the preference to the next endpoint with a
//! compare-and-swap from the index it used, so many calls failing on the same endpoint
//! at once move it one step, not many. A leader hint sets the preference to the leader's
//! URL, adding it to the set when it is new (etcd members publish client URLs the user
//! may not have listed). The set only grows, up to [`MAX_ENDPOINTS`]; indices stay valid.
//!
//! URLs are `http://host:port`, or `https://host:port` when the client has TLS settings
//! (then every https channel uses them); a bare `host:port` gets `http://` in front. A
//! trailing `/` is dropped, so the same server named twice is one endpoint.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::error::{ClientError, Result};

/// Largest response the client decodes on any channel (etcd's clients use the same
/// limit); tonic's default of 4 MiB is too small for a large range.
pub(crate) const MAX_RESPONSE_BYTES: usize = i32::MAX as usize;

/// The set never grows past this many endpoints (leader hints come from servers; a
/// confused one must not make the client dial without bound).
pub(crate) const MAX_ENDPOINTS: usize = 64;

/// The `index` of a target outside the set (see [`Endpoints::pinned`]).
pub(crate) const DETACHED: usize = usize::MAX;

/// Idle time before TCP keepalive probes start on a connection.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// One server: its URL and its channel.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Position in the set.
    pub(crate) index: usize,
    /// The normalized URL.
    pub(crate) url: Arc<str>,
    /// The long-lived channel to it.
    pub(crate) channel: Channel,
}

/// The endpoint set and the preferred endpoint.
#[derive(Debug)]
pub(crate) struct Endpoints {
    /// Read (cloned out) at the start of every attempt; written only when a leader hint
    /// names a new URL. A std `RwLock` because it is held only to clone or push, never
    /// across `.await`; the set only grows, so indices handed out stay valid.
    targets: RwLock<Vec<Target>>,
    /// Index of the endpoint calls start with.
    preferred: AtomicUsize,
    /// How channels are made, also later ones from leader hints.
    dial: Dial,
}

/// What a new channel needs.
#[derive(Debug, Clone)]
struct Dial {
    connect_timeout: Duration,
    /// For `https://` endpoints; without it they are refused.
    tls: Option<ClientTlsConfig>,
}

impl Endpoints {
    /// Build the set, one lazy channel per distinct URL. Must run inside a Tokio runtime
    /// (the channels spawn their connection tasks there).
    pub(crate) fn new(
        urls: Vec<String>,
        connect_timeout: Duration,
        tls: Option<&crate::TlsOptions>,
    ) -> Result<Self> {
        let dial = Dial {
            connect_timeout,
            tls: tls.map(crate::TlsOptions::config),
        };
        let mut targets: Vec<Target> = Vec::with_capacity(urls.len());
        for raw in urls {
            let url = normalize(&raw, dial.tls.is_some())?;
            if targets.iter().any(|t| *t.url == *url) {
                continue;
            }
            if targets.len() == MAX_ENDPOINTS {
                return Err(ClientError::InvalidEndpoint(format!(
                    "more than {MAX_ENDPOINTS} endpoints"
                )));
            }
            let channel = channel(&url, &dial)?;
            targets.push(Target {
                index: targets.len(),
                url: url.into(),
                channel,
            });
        }
        if targets.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        Ok(Self {
            targets: RwLock::new(targets),
            preferred: AtomicUsize::new(0),
            dial,
        })
    }

    /// The endpoint a call should use now. (`new` refuses an empty set and the set never
    /// shrinks, so this finds one; the error is for completeness, not a reachable state.)
    pub(crate) fn preferred(&self) -> Result<Target> {
        let targets = self.targets.read().unwrap_or_else(PoisonError::into_inner);
        let index = self.preferred.load(Ordering::Acquire) % targets.len().max(1);
        targets.get(index).cloned().ok_or(ClientError::NoEndpoints)
    }

    /// `failed` did not answer: prefer the next endpoint, unless another call already
    /// moved the preference away from it.
    pub(crate) fn rotate_from(&self, failed: &Target) {
        let len = self.len();
        let next = (failed.index + 1) % len.max(1);
        let _ = self
            .preferred
            .compare_exchange(failed.index, next, Ordering::AcqRel, Ordering::Acquire);
    }

    /// A server named the leader at one of `urls`: prefer the first usable one, adding
    /// it to the set if it is new. Returns the new preferred target, or `None` when no
    /// URL is usable (the hint is then ignored).
    pub(crate) fn prefer_leader(&self, urls: &[String]) -> Option<Target> {
        for raw in urls {
            let Ok(url) = normalize(raw, self.dial.tls.is_some()) else {
                tracing::debug!(url = %raw, "ignoring an unusable leader URL");
                continue;
            };
            if let Some(target) = self.find_or_add(&url) {
                self.preferred.store(target.index, Ordering::Release);
                return Some(target);
            }
        }
        None
    }

    /// A target for a call pinned to the server at `raw` (see `client::Route::Pinned`):
    /// the known endpoint when it is one, else a detached target with its own lazy
    /// channel, used for that call only and not added to the set (a question about one
    /// member must not change where other calls go). A detached target's `index` is
    /// [`DETACHED`]; pinned calls never rotate or follow hints, so it is never used.
    pub(crate) fn pinned(&self, raw: &str) -> Result<Target> {
        let url = normalize(raw, self.dial.tls.is_some())?;
        if let Some(target) = self.find(&url) {
            return Ok(target);
        }
        Ok(Target {
            index: DETACHED,
            channel: channel(&url, &self.dial)?,
            url: url.into(),
        })
    }

    fn find_or_add(&self, url: &str) -> Option<Target> {
        if let Some(t) = self.find(url) {
            return Some(t);
        }
        let channel = channel(url, &self.dial).ok()?;
        let mut targets = self.targets.write().unwrap_or_else(PoisonError::into_inner);
        // Another call may have added it since `find`.
        if let Some(t) = targets.iter().find(|t| &*t.url == url) {
            return Some(t.clone());
        }
        if targets.len() >= MAX_ENDPOINTS {
            tracing::warn!(url, "endpoint set is full; not following the leader hint");
            return None;
        }
        let target = Target {
            index: targets.len(),
            url: url.into(),
            channel,
        };
        tracing::info!(url, "learned a new endpoint from a leader hint");
        targets.push(target.clone());
        Some(target)
    }

    fn find(&self, url: &str) -> Option<Target> {
        let targets = self.targets.read().unwrap_or_else(PoisonError::into_inner);
        targets.iter().find(|t| &*t.url == url).cloned()
    }

    /// How many endpoints are known.
    pub(crate) fn len(&self) -> usize {
        self.targets.read().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// The known URLs, in set order.
    pub(crate) fn urls(&self) -> Vec<String> {
        let targets = self.targets.read().unwrap_or_else(PoisonError::into_inner);
        targets.iter().map(|t| t.url.to_string()).collect()
    }
}

/// `http://host:port` (or `https://`, given `tls`) form of a user's or a server's URL.
pub(crate) fn normalize(raw: &str, tls: bool) -> Result<String> {
    let raw = raw.trim();
    let (scheme, rest) = raw.split_once("://").unwrap_or(("http", raw));
    let scheme = scheme.to_ascii_lowercase();
    match scheme.as_str() {
        "http" => {}
        "https" if tls => {}
        "https" => {
            return Err(ClientError::InvalidEndpoint(format!(
                "{raw}: https needs TLS settings (ClientOptions::tls)"
            )));
        }
        _ => {
            return Err(ClientError::InvalidEndpoint(format!(
                "{raw}: scheme {scheme:?} is not supported (only http and https)"
            )));
        }
    }
    let host_port = rest.trim_end_matches('/');
    if host_port.is_empty() {
        return Err(ClientError::InvalidEndpoint(format!("{raw:?}: no host")));
    }
    Ok(format!("{scheme}://{host_port}"))
}

/// A lazy channel to `url` (already normalized).
fn channel(url: &str, dial: &Dial) -> Result<Channel> {
    let mut endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| ClientError::InvalidEndpoint(format!("{url}: {e}")))?;
    if let (true, Some(tls)) = (url.starts_with("https://"), &dial.tls) {
        endpoint = endpoint
            .tls_config(tls.clone())
            .map_err(|e| ClientError::InvalidTls(format!("{url}: {e}")))?;
    }
    let endpoint = endpoint
        .connect_timeout(dial.connect_timeout)
        .tcp_nodelay(true)
        // TCP keepalive, so an idle connection to a vanished host is eventually dropped
        // and re-dialed. Not HTTP/2 pings: etcd answers pings on an idle connection with
        // GOAWAY (its keepalive policy does not permit them without streams).
        .tcp_keepalive(Some(TCP_KEEPALIVE));
    Ok(endpoint.connect_lazy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_normalized() {
        assert_eq!(
            normalize("127.0.0.1:2379", false).unwrap(),
            "http://127.0.0.1:2379"
        );
        assert_eq!(normalize("HTTP://a:1/", false).unwrap(), "http://a:1");
        assert!(matches!(
            normalize("https://a:1", false),
            Err(ClientError::InvalidEndpoint(_))
        ));
        assert_eq!(normalize("HTTPS://a:1/", true).unwrap(), "https://a:1");
        assert_eq!(normalize("a:1", true).unwrap(), "http://a:1");
        assert!(matches!(
            normalize("unix://a", true),
            Err(ClientError::InvalidEndpoint(_))
        ));
        assert!(matches!(
            normalize("http://", false),
            Err(ClientError::InvalidEndpoint(_))
        ));
    }

    #[tokio::test]
    async fn hints_add_endpoints_and_rotation_moves_once() {
        let set = Endpoints::new(
            vec!["http://a:1".into(), "a:1".into(), "http://b:2".into()],
            Duration::from_secs(1),
            None,
        )
        .unwrap();
        assert_eq!(set.urls(), ["http://a:1", "http://b:2"]);
        let first = set.preferred().unwrap();
        assert_eq!(&*first.url, "http://a:1");
        set.rotate_from(&first);
        set.rotate_from(&first); // a second failure on the same endpoint: no extra step
        assert_eq!(&*set.preferred().unwrap().url, "http://b:2");

        let leader = set.prefer_leader(&["not a url at all\u{0}".into(), "http://c:3/".into()]);
        assert_eq!(leader.map(|t| t.index), Some(2));
        assert_eq!(&*set.preferred().unwrap().url, "http://c:3");
        assert_eq!(
            set.prefer_leader(&["http://a:1".into()]).map(|t| t.index),
            Some(0)
        );
        assert_eq!(set.len(), 3);

        // Pinning reuses a known endpoint and does not add an unknown one.
        assert_eq!(set.pinned("b:2/").unwrap().index, 1);
        let detached = set.pinned("http://d:4").unwrap();
        assert_eq!((detached.index, &*detached.url), (DETACHED, "http://d:4"));
        assert_eq!(set.len(), 3);
        assert!(set.pinned("https://d:4").is_err());
    }

    #[tokio::test]
    async fn no_endpoints_is_an_error() {
        let none: Vec<String> = Vec::new();
        assert_eq!(
            Endpoints::new(none, Duration::from_secs(1), None).unwrap_err(),
            ClientError::NoEndpoints
        );
    }
}
