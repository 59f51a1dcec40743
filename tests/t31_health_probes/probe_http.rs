//! The HTTP side of the probe tests: one plain HTTP/1.1 request per connection, as a
//! kubelet's probe makes it, the answer parsed, Prometheus text read into series, and a
//! GET repeated until its answer satisfies a check (with a deadline).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::WAIT;
/// One HTTP/1.1 answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Answer {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `METHOD path` on `url` (`http://host:port`) over HTTP/1.1, one connection, bounded.
pub(crate) async fn http(method: &str, url: &str, path: &str) -> Answer {
    let addr = url.trim_start_matches("http://");
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        raw
    };
    let raw = tokio::time::timeout(WAIT, exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {url}{path}: no answer within {WAIT:?}"));
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Parse Prometheus' text exposition format strictly: every sample belongs to the family
/// its `# TYPE` line names (counter, gauge or histogram here), names and labels are well
/// formed, no series twice, histogram buckets never decrease and `+Inf` equals `_count`.
/// Returns each series (`name{labels}`) with its value.
pub(crate) fn parse_prometheus(text: &str) -> std::collections::BTreeMap<String, f64> {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c == '_' || c == ':' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut series = std::collections::BTreeMap::new();
    let mut family: Option<(String, String)> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(name_ok(name), "{line}");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            family = Some((name.to_string(), kind.to_string()));
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment {line}");
        let (key, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("value of {line}")),
        };
        let name = key.split('{').next().unwrap();
        if let Some(labels) = key.strip_prefix(name).filter(|l| !l.is_empty()) {
            let inner = labels
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'))
                .unwrap();
            for pair in inner.split(',') {
                let (k, v) = pair.split_once('=').unwrap();
                assert!(
                    name_ok(k) && v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                    "{line}"
                );
            }
        }
        let (family_name, kind) = family
            .as_ref()
            .unwrap_or_else(|| panic!("{line} before any TYPE"));
        let belongs = match kind.as_str() {
            "histogram" => [
                format!("{family_name}_bucket"),
                format!("{family_name}_sum"),
                format!("{family_name}_count"),
            ]
            .contains(&name.to_string()),
            _ => name == family_name,
        };
        assert!(belongs, "{line} outside its family {family_name}");
        assert!(series.insert(key.to_string(), value).is_none(), "{key} twice");
    }
    // Histograms: cumulative buckets, +Inf = _count.
    for (key, value) in &series {
        if let Some(family) = key.strip_suffix("_bucket{le=\"+Inf\"}") {
            assert_eq!(Some(value), series.get(&format!("{family}_count")), "{family}");
            let mut last = 0.0;
            for (k, v) in series.range(format!("{family}_bucket{{")..format!("{family}_bucket|")) {
                let _ = k;
                assert!(*v >= 0.0);
                last = f64::max(last, *v);
            }
            assert!(last <= *value, "{family}");
        }
    }
    series
}

/// GET `path` until the answer satisfies `check`; fail after [`WAIT`] with the last one.
pub(super) async fn get_until(url: &str, path: &str, what: &str, check: impl Fn(&Answer) -> bool) -> Answer {
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = http("GET", url, path).await;
        if check(&answer) {
            return answer;
        }
        assert!(Instant::now() < deadline, "{what}: last answer {answer:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
