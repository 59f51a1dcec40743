//! The paths (`/health`, `/livez[/<check>]`, `/readyz[/<check>]`, `/metrics`) and the query
//! options they read, decoded as Go's `net/url` decodes them.

use std::collections::BTreeSet;

/// The probe endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    Health,
    Metrics,
    /// `/livez` or `/readyz`, all their checks or one.
    Checks(Endpoint, Option<Check>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint {
    Livez,
    Readyz,
}

/// The named checks, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Check {
    DataCorruption,
    LinearizableRead,
    SerializableRead,
}

impl Check {
    pub(super) fn name(self) -> &'static str {
        match self {
            Check::DataCorruption => "data_corruption",
            Check::LinearizableRead => "linearizable_read",
            Check::SerializableRead => "serializable_read",
        }
    }
}

impl Endpoint {
    pub(super) fn checks(self) -> &'static [Check] {
        match self {
            Endpoint::Livez => &[Check::SerializableRead],
            Endpoint::Readyz => &[
                Check::DataCorruption,
                Check::LinearizableRead,
                Check::SerializableRead,
            ],
        }
    }
}

impl Route {
    pub(super) fn of(path: &str) -> Option<Route> {
        let (endpoint, rest) = match path {
            "/health" => return Some(Route::Health),
            "/metrics" => return Some(Route::Metrics),
            _ if path.starts_with("/livez") => (Endpoint::Livez, &path["/livez".len()..]),
            _ if path.starts_with("/readyz") => (Endpoint::Readyz, &path["/readyz".len()..]),
            _ => return None,
        };
        if rest.is_empty() {
            return Some(Route::Checks(endpoint, None));
        }
        let name = rest.strip_prefix('/')?;
        let check = endpoint.checks().iter().find(|c| c.name() == name)?;
        Some(Route::Checks(endpoint, Some(*check)))
    }
}

/// The query parameters the probes read.
#[derive(Debug, Default)]
pub(super) struct Query {
    pub(super) exclude: BTreeSet<String>,
    pub(super) serializable: bool,
    pub(super) verbose: bool,
}

impl Query {
    pub(super) fn parse(query: &str) -> Query {
        let mut parsed = Query::default();
        let mut serializable = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value);
            match percent_decode(name).as_str() {
                "exclude" if !value.is_empty() => {
                    parsed.exclude.insert(value);
                }
                // etcd: `r.URL.Query().Get("serializable") == "true"`: the first value.
                "serializable" => {
                    serializable.get_or_insert(value == "true");
                }
                // Present at all, with or without a value.
                "verbose" => parsed.verbose = true,
                _ => {}
            }
        }
        parsed.serializable = serializable.unwrap_or(false);
        parsed
    }
}

/// `%XX` escapes and `+` as a space, as Go's query parsing decodes them; a malformed
/// escape is kept as written (the name then matches nothing).
pub(super) fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&hi), Some(&lo)) => hex(hi).zip(hex(lo)).map(|(hi, lo)| hi * 16 + lo),
            _ => None,
        };
        match (bytes[i], escaped) {
            (_, Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (b, None) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
