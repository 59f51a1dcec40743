//! etcd's HTTP health endpoints beside the gRPC services on the client port:
//! `/health` (etcd 3.4/3.5), `/livez` and `/readyz` (etcd 3.5), as load balancers,
//! Kubernetes probes and monitoring scripts call them (plain HTTP/1.1 or HTTP/2 GETs).
//!
//! [`HttpProbesLayer`] wraps the gRPC router: a request for one of these paths is answered
//! here; any other request that is not gRPC (its content type is not `application/grpc*`)
//! gets Go's `404 page not found`, as etcd's HTTP mux answers; gRPC goes on untouched
//! (no allocation, no extra await on its path).
//!
//! What each endpoint checks, and its answers, follow etcd 3.5.17
//! (`server/etcdserver/api/etcdhttp/health.go`):
//! - `/health`: an active alarm not named in `?exclude=` (503, reason `ALARM NOSPACE` /
//!   `ALARM CORRUPT`), then a leader unless `?serializable=true` (`RAFT NO LEADER`), then a
//!   one-key read, linearizable unless `?serializable=true` (`RANGE ERROR:<etcd's text>`).
//!   200 `{"health":"true","reason":""}`, else 503 with the JSON and a newline. (etcd 3.4
//!   answers `{"health":"true"}`, with the same status codes, and has no `serializable`.)
//! - `/livez`: `serializable_read`. `/readyz`: `data_corruption` (no CORRUPT alarm),
//!   `serializable_read`, `linearizable_read`. Each check also at `/<endpoint>/<check>`;
//!   `?exclude=<check>` skips one; 200 `ok\n` (with `?verbose`, a `[+]<check> ok` line per
//!   check first); 503 with a `[+]`/`[-]<check> failed: <reason>` line per check. Checks
//!   run in name order (etcd runs them in Go's random map order).
//! - Methods other than GET: 405 `Method Not Allowed` with `Allow: GET`.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use raftkv_core::kv::RangeRequest;
use raftkv_proto::status::to_status;
use tonic::body::Body;
use tower_service::Service;

use crate::{ClusterBackend, KvBackend, LeaderStatus};

/// etcd's alarm types.
const ALARM_NOSPACE: i32 = 1;
const ALARM_CORRUPT: i32 = 2;

/// The key the read checks read (keys only, at most one): any key does; etcd reads its
/// empty key, which the gRPC API refuses, so a named one here.
const HEALTH_KEY: &[u8] = b"health";

/// What the probes ask of a member. Blanket-implemented for every backend of the gRPC
/// services (the node).
pub trait ProbeBackend: Send + Sync + 'static {
    /// The member's active alarms, etcd's alarm type numbers.
    fn active_alarms(&self) -> impl Future<Output = Result<Vec<i32>, String>> + Send;
    /// Whether the member knows a leader now.
    fn knows_leader(&self) -> bool;
    /// One keys-only read of at most one key, serializable or linearizable; the error is
    /// etcd's text for it.
    fn read_one_key(&self, serializable: bool) -> impl Future<Output = Result<(), String>> + Send;
}

impl<B: KvBackend + ClusterBackend + LeaderStatus> ProbeBackend for B {
    async fn active_alarms(&self) -> Result<Vec<i32>, String> {
        match self.alarm(0, 0, 0).await {
            Ok((_, alarms)) => Ok(alarms.into_iter().map(|a| a.alarm).collect()),
            Err(e) => Err(to_status(&e).message().to_string()),
        }
    }

    fn knows_leader(&self) -> bool {
        self.has_leader()
    }

    async fn read_one_key(&self, serializable: bool) -> Result<(), String> {
        let req = RangeRequest {
            limit: 1,
            keys_only: true,
            serializable,
            ..RangeRequest::key(HEALTH_KEY)
        };
        self.range(req)
            .await
            .map(|_| ())
            .map_err(|e| to_status(&e).message().to_string())
    }
}

/// A tower layer that serves the probes in front of the gRPC router.
pub struct HttpProbesLayer<B> {
    backend: Arc<B>,
}

impl<B> HttpProbesLayer<B> {
    /// Probes answered from `backend`.
    pub fn new(backend: Arc<B>) -> Self {
        Self { backend }
    }
}

impl<B> Clone for HttpProbesLayer<B> {
    fn clone(&self) -> Self {
        Self {
            backend: self.backend.clone(),
        }
    }
}

impl<B, S> tower_layer::Layer<S> for HttpProbesLayer<B> {
    type Service = HttpProbes<B, S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpProbes {
            backend: self.backend.clone(),
            inner,
        }
    }
}

/// The service [`HttpProbesLayer`] makes: probes here, gRPC to `inner`.
pub struct HttpProbes<B, S> {
    backend: Arc<B>,
    inner: S,
}

impl<B, S: Clone> Clone for HttpProbes<B, S> {
    fn clone(&self) -> Self {
        Self {
            backend: self.backend.clone(),
            inner: self.inner.clone(),
        }
    }
}

type ProbeFuture = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

pin_project_lite::pin_project! {
    /// The future of [`HttpProbes`]: the inner service's, or a probe's answer.
    #[project = AnswerProj]
    pub enum Answer<F> {
        /// A gRPC call.
        Grpc { #[pin] call: F },
        /// A probe (or a refusal of a non-gRPC request).
        Probe { answer: ProbeFuture },
    }
}

impl<F, E> Future for Answer<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AnswerProj::Grpc { call } => call.poll(cx),
            AnswerProj::Probe { answer } => answer.as_mut().poll(cx).map(Ok),
        }
    }
}

impl<B, S, ReqBody> Service<Request<ReqBody>> for HttpProbes<B, S>
where
    B: ProbeBackend,
    S: Service<Request<ReqBody>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Answer<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let grpc = req
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if grpc {
            return Answer::Grpc {
                call: self.inner.call(req),
            };
        }
        let backend = self.backend.clone();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let query = Query::parse(req.uri().query().unwrap_or(""));
        Answer::Probe {
            answer: Box::pin(async move {
                match Route::of(&path) {
                    None => text(StatusCode::NOT_FOUND, "404 page not found\n".into()),
                    Some(_) if method != Method::GET => {
                        let mut answer = text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n".into());
                        answer
                            .headers_mut()
                            .insert(header::ALLOW, HeaderValue::from_static("GET"));
                        answer
                    }
                    Some(Route::Health) => health(backend.as_ref(), &query).await,
                    Some(Route::Checks(endpoint, only)) => {
                        checks(backend.as_ref(), endpoint, only, &query).await
                    }
                }
            }),
        }
    }
}

/// The probe endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Health,
    /// `/livez` or `/readyz`, all their checks or one.
    Checks(Endpoint, Option<Check>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Livez,
    Readyz,
}

/// The named checks, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Check {
    DataCorruption,
    LinearizableRead,
    SerializableRead,
}

impl Check {
    fn name(self) -> &'static str {
        match self {
            Check::DataCorruption => "data_corruption",
            Check::LinearizableRead => "linearizable_read",
            Check::SerializableRead => "serializable_read",
        }
    }
}

impl Endpoint {
    fn checks(self) -> &'static [Check] {
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
    fn of(path: &str) -> Option<Route> {
        let (endpoint, rest) = match path {
            "/health" => return Some(Route::Health),
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
struct Query {
    exclude: BTreeSet<String>,
    serializable: bool,
    verbose: bool,
}

impl Query {
    fn parse(query: &str) -> Query {
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
fn percent_decode(s: &str) -> String {
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

async fn health<B: ProbeBackend>(backend: &B, query: &Query) -> Response<Body> {
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

async fn checks<B: ProbeBackend>(
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

/// A plain-text answer with the headers Go's `http.Error` sets.
fn text(status: StatusCode, body: String) -> Response<Body> {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::convert::Infallible;

    /// A member with the given alarms, leader and read outcome.
    struct Member {
        alarms: Vec<i32>,
        leader: bool,
        linearizable: Result<(), String>,
    }

    impl ProbeBackend for Member {
        async fn active_alarms(&self) -> Result<Vec<i32>, String> {
            Ok(self.alarms.clone())
        }
        fn knows_leader(&self) -> bool {
            self.leader
        }
        async fn read_one_key(&self, serializable: bool) -> Result<(), String> {
            if serializable {
                Ok(())
            } else {
                self.linearizable.clone()
            }
        }
    }

    fn healthy() -> Member {
        Member {
            alarms: Vec::new(),
            leader: true,
            linearizable: Ok(()),
        }
    }

    /// The inner gRPC router stand-in: answers 200 with body "grpc".
    #[derive(Clone)]
    struct Grpc;

    impl Service<Request<()>> for Grpc {
        type Response = Response<Body>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Response<Body>, Infallible>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: Request<()>) -> Self::Future {
            std::future::ready(Ok(Response::new(Body::new(http_body_util::Full::new(
                Bytes::from("grpc"),
            )))))
        }
    }

    async fn ask(member: Member, method: &str, uri: &str, content_type: Option<&str>) -> (u16, String) {
        use tower_layer::Layer;
        let mut service = HttpProbesLayer::new(Arc::new(member)).layer(Grpc);
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let answer = service.call(req.body(()).unwrap()).await.unwrap();
        let status = answer.status().as_u16();
        let body = answer.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn grpc_passes_through_and_other_paths_are_not_found() {
        let grpc = ask(
            healthy(),
            "POST",
            "/etcdserverpb.KV/Range",
            Some("application/grpc+proto"),
        )
        .await;
        assert_eq!(grpc, (200, "grpc".into()));
        // A gRPC call to a probe path is gRPC's business, not the probe's.
        assert_eq!(
            ask(healthy(), "POST", "/health", Some("application/grpc"))
                .await
                .1,
            "grpc"
        );
        assert_eq!(
            ask(healthy(), "GET", "/metricz", None).await,
            (404, "404 page not found\n".into())
        );
        assert_eq!(ask(healthy(), "GET", "/healthz", None).await.0, 404);
        assert_eq!(ask(healthy(), "GET", "/livezz", None).await.0, 404);
        assert_eq!(
            ask(healthy(), "PUT", "/livez", None).await,
            (405, "Method Not Allowed\n".into())
        );
    }

    #[tokio::test]
    async fn health_checks_alarms_then_leader_then_a_read() {
        let ok = (200, r#"{"health":"true","reason":""}"#.to_string());
        assert_eq!(ask(healthy(), "GET", "/health", None).await, ok);
        let nospace = || Member {
            alarms: vec![ALARM_NOSPACE],
            ..healthy()
        };
        let refused = (
            503,
            "{\"health\":\"false\",\"reason\":\"ALARM NOSPACE\"}\n".to_string(),
        );
        assert_eq!(ask(nospace(), "GET", "/health", None).await, refused);
        assert_eq!(ask(nospace(), "GET", "/health?exclude=NOSPACE", None).await, ok);
        assert_eq!(
            ask(nospace(), "GET", "/health?exclude=CORRUPT", None).await,
            refused
        );
        let corrupt = Member {
            alarms: vec![ALARM_CORRUPT],
            ..healthy()
        };
        assert!(
            ask(corrupt, "GET", "/health", None)
                .await
                .1
                .contains("ALARM CORRUPT")
        );
        let leaderless = || Member {
            leader: false,
            linearizable: Err("etcdserver: request timed out".into()),
            ..healthy()
        };
        assert_eq!(
            ask(leaderless(), "GET", "/health", None).await,
            (
                503,
                "{\"health\":\"false\",\"reason\":\"RAFT NO LEADER\"}\n".into()
            )
        );
        assert_eq!(
            ask(leaderless(), "GET", "/health?serializable=true", None).await,
            ok
        );
        // Go's Query().Get: the first value counts.
        assert_eq!(
            ask(
                leaderless(),
                "GET",
                "/health?serializable=false&serializable=true",
                None
            )
            .await
            .0,
            503
        );
        let stale = Member {
            linearizable: Err("etcdserver: \"quoted\"".into()),
            ..healthy()
        };
        assert_eq!(
            ask(stale, "GET", "/health", None).await,
            (
                503,
                "{\"health\":\"false\",\"reason\":\"RANGE ERROR:etcdserver: \\\"quoted\\\"\"}\n".into()
            )
        );
    }

    #[tokio::test]
    async fn livez_and_readyz_report_each_check() {
        assert_eq!(ask(healthy(), "GET", "/livez", None).await, (200, "ok\n".into()));
        assert_eq!(
            ask(healthy(), "GET", "/livez?verbose", None).await,
            (200, "[+]serializable_read ok\nok\n".into())
        );
        let cut_off = || Member {
            leader: false,
            linearizable: Err("etcdserver: request timed out".into()),
            ..healthy()
        };
        assert_eq!(ask(cut_off(), "GET", "/livez", None).await.0, 200);
        assert_eq!(
            ask(cut_off(), "GET", "/readyz", None).await,
            (
                503,
                "[+]data_corruption ok\n[-]linearizable_read failed: etcdserver: request timed out\n\
                 [+]serializable_read ok\n\n"
                    .into()
            )
        );
        assert_eq!(
            ask(
                cut_off(),
                "GET",
                "/readyz?exclude=linearizable_read&verbose",
                None
            )
            .await,
            (200, "[+]data_corruption ok\n[+]serializable_read ok\nok\n".into())
        );
        assert_eq!(
            ask(cut_off(), "GET", "/readyz/serializable_read", None).await.0,
            200
        );
        assert_eq!(
            ask(cut_off(), "GET", "/readyz/linearizable_read", None).await.0,
            503
        );
        let corrupt = Member {
            alarms: vec![ALARM_CORRUPT],
            ..healthy()
        };
        assert_eq!(
            ask(corrupt, "GET", "/readyz/data_corruption", None).await,
            (
                503,
                "[-]data_corruption failed: alarm activated: CORRUPT\n\n".into()
            )
        );
    }

    #[test]
    fn queries_decode_as_go_decodes_them() {
        let q = Query::parse("exclude=NO%53PACE&exclude=&exclude=a+b&verbose&serializable=true");
        assert_eq!(q.exclude.into_iter().collect::<Vec<_>>(), ["NOSPACE", "a b"]);
        assert!(q.verbose && q.serializable);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%C3%A9"), "é");
        assert_eq!(percent_decode("é%"), "é%");
    }
}
