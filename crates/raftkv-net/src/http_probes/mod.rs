//! etcd's HTTP health and metrics endpoints beside the gRPC services on the client port:
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
//! - `/metrics`: the member's [`MetricsSource`] text, `text/plain; version=0.0.4`.
//!
//! Parts: [`ProbeBackend`] (what a probe asks of the member, `backend.rs`), the paths and
//! query options (`routes.rs`), the checks and their answers (`answers.rs`), and here the
//! layer that routes a request to them or on to gRPC.

mod answers;
mod backend;
mod routes;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use tonic::body::Body;
use tower_service::Service;

pub use backend::{MetricsSource, ProbeBackend};

use crate::grpc_metrics::{Call, CountedRequest, GrpcCounters};
use answers::{checks, health, metrics, text};
use routes::{Query, Route};

/// A tower layer that serves the probes in front of the gRPC router.
pub struct HttpProbesLayer<B> {
    backend: Arc<B>,
    grpc: Option<Arc<GrpcCounters>>,
}

impl<B> HttpProbesLayer<B> {
    /// Probes answered from `backend`.
    pub fn new(backend: Arc<B>) -> Self {
        Self { backend, grpc: None }
    }

    /// Also count the gRPC calls that pass through, into `counters`.
    pub fn counting_grpc(mut self, counters: Arc<GrpcCounters>) -> Self {
        self.grpc = Some(counters);
        self
    }
}

impl<B> Clone for HttpProbesLayer<B> {
    fn clone(&self) -> Self {
        Self {
            backend: self.backend.clone(),
            grpc: self.grpc.clone(),
        }
    }
}

impl<B, S> tower_layer::Layer<S> for HttpProbesLayer<B> {
    type Service = HttpProbes<B, S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpProbes {
            backend: self.backend.clone(),
            grpc: self.grpc.clone(),
            inner,
        }
    }
}

/// The service [`HttpProbesLayer`] makes: probes here, gRPC to `inner`.
pub struct HttpProbes<B, S> {
    backend: Arc<B>,
    grpc: Option<Arc<GrpcCounters>>,
    inner: S,
}

impl<B, S: Clone> Clone for HttpProbes<B, S> {
    fn clone(&self) -> Self {
        Self {
            backend: self.backend.clone(),
            grpc: self.grpc.clone(),
            inner: self.inner.clone(),
        }
    }
}

type ProbeFuture = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

pin_project_lite::pin_project! {
    /// The future of [`HttpProbes`]: the inner service's, or a probe's answer.
    #[project = AnswerProj]
    pub enum Answer<F> {
        /// A gRPC call (counted, if it is a served method and counting is on).
        Grpc { #[pin] call: F, counted: Option<Call> },
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
            AnswerProj::Grpc { call, counted } => match call.poll(cx) {
                Poll::Ready(Ok(response)) => {
                    let response = crate::oversize_status::as_grpc_go(response);
                    Poll::Ready(Ok(match counted.take() {
                        Some(counted) => counted.answered(response),
                        None => response,
                    }))
                }
                other => other,
            },
            AnswerProj::Probe { answer } => answer.as_mut().poll(cx).map(Ok),
        }
    }
}

impl<B, S, ReqBody> Service<Request<ReqBody>> for HttpProbes<B, S>
where
    B: ProbeBackend,
    S: Service<Request<CountedRequest<ReqBody>>, Response = Response<Body>>,
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
            let counted = self.grpc.as_ref().and_then(|c| c.start(req.uri().path()));
            let counters = counted.as_ref().map(|_| self.grpc.clone()).unwrap_or_default();
            return Answer::Grpc {
                call: self
                    .inner
                    .call(req.map(|body| CountedRequest::new(body, counters))),
                counted,
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
                    // Any method, as Prometheus' Go handler serves it.
                    Some(Route::Metrics) => metrics(backend.metrics_text()),
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
