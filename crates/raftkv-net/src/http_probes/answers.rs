//! The checks behind each endpoint and the answers etcd gives: `/health`'s JSON, the
//! `[+]`/`[-]` check lines of `/livez` and `/readyz`, plain text with Go's headers.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use tonic::body::Body;

use super::backend::ProbeBackend;
use super::routes::{Check, Endpoint, Query};

/// etcd's alarm types.
pub(super) const ALARM_NOSPACE: i32 = 1;
pub(super) const ALARM_CORRUPT: i32 = 2;

pub(super) async fn health<B: ProbeBackend>(backend: &B, query: &Query) -> Response<Body> {
    let reason = health_problem(backend, query).await;
    let json = health_json(&reason);
    match reason {
        None => text(StatusCode::OK, json),
        Some(reason) => {
            tracing::warn!(%reason, "/health answered false");
            text(StatusCode::SERVICE_UNAVAILABLE, json + "\n")
        }
    }
}

/// etcd's `Health` struct as Go's `json.Marshal` writes it.
fn health_json(problem: &Option<String>) -> String {
    #[derive(serde::Serialize)]
    struct Health<'a> {
        health: &'a str,
        reason: &'a str,
    }
    let health = Health {
        health: if problem.is_none() { "true" } else { "false" },
        reason: problem.as_deref().unwrap_or(""),
    };
    // Serializing two strings cannot fail; the fallback keeps this panic-free anyway.
    serde_json::to_string(&health).unwrap_or_else(|_| format!("{{\"health\":\"{}\"}}", health.health))
}

/// Why `/health` is false, or `None`.
async fn health_problem<B: ProbeBackend>(backend: &B, query: &Query) -> Option<String> {
    match backend.active_alarms().await {
        Ok(alarms) => {
            if let Some(alarm) = alarms
                .into_iter()
                .find(|a| !query.exclude.contains(alarm_name(*a)))
            {
                return Some(
                    match alarm {
                        ALARM_NOSPACE => "ALARM NOSPACE",
                        ALARM_CORRUPT => "ALARM CORRUPT",
                        _ => "ALARM UNKNOWN",
                    }
                    .to_string(),
                );
            }
        }
        Err(e) => return Some(format!("ALARM ERROR:{e}")),
    }
    if !query.serializable && !backend.knows_leader() {
        return Some("RAFT NO LEADER".to_string());
    }
    backend
        .read_one_key(query.serializable)
        .await
        .err()
        .map(|e| format!("RANGE ERROR:{e}"))
}

fn alarm_name(alarm: i32) -> &'static str {
    match alarm {
        ALARM_NOSPACE => "NOSPACE",
        ALARM_CORRUPT => "CORRUPT",
        _ => "NONE",
    }
}

pub(super) async fn checks<B: ProbeBackend>(
    backend: &B,
    endpoint: Endpoint,
    only: Option<Check>,
    query: &Query,
) -> Response<Body> {
    let selected: Vec<Check> = match only {
        Some(check) => vec![check],
        None => endpoint
            .checks()
            .iter()
            .copied()
            .filter(|c| !query.exclude.contains(c.name()))
            .collect(),
    };
    let mut report = String::new();
    let mut failed = false;
    for check in selected {
        match run_check(backend, check).await {
            Ok(()) => report.push_str(&format!("[+]{} ok\n", check.name())),
            Err(e) => {
                failed = true;
                report.push_str(&format!("[-]{} failed: {e}\n", check.name()));
            }
        }
    }
    if failed {
        tracing::warn!(report = %report.trim_end(), "health check failed");
        return text(StatusCode::SERVICE_UNAVAILABLE, report + "\n");
    }
    let body = if query.verbose {
        report + "ok\n"
    } else {
        "ok\n".to_string()
    };
    text(StatusCode::OK, body)
}

async fn run_check<B: ProbeBackend>(backend: &B, check: Check) -> Result<(), String> {
    match check {
        Check::DataCorruption => {
            if backend.active_alarms().await?.contains(&ALARM_CORRUPT) {
                return Err("alarm activated: CORRUPT".to_string());
            }
            Ok(())
        }
        Check::SerializableRead => backend.read_one_key(true).await,
        Check::LinearizableRead => backend.read_one_key(false).await,
    }
}

/// `/metrics`: Prometheus' text exposition format, with the content type its Go client
/// answers a scraper that did not ask for protobuf.
pub(super) fn metrics(text_format: String) -> Response<Body> {
    let mut answer = Response::new(Body::new(http_body_util::Full::new(Bytes::from(text_format))));
    answer.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    answer
}

/// A plain-text answer with the headers Go's `http.Error` sets.
pub(super) fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut answer = Response::new(Body::new(http_body_util::Full::new(Bytes::from(body))));
    *answer.status_mut() = status;
    let headers = answer.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    answer
}
