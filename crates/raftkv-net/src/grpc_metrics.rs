//! [`GrpcCounters`]: the gRPC server counters etcd exports through go-grpc-prometheus,
//! `grpc_server_started_total` and `grpc_server_handled_total`, with its labels
//! (`grpc_type`, `grpc_service`, `grpc_method`, and `grpc_code` for handled calls), so
//! etcd's dashboards and the etcd-mixin alert on failed gRPC requests read raftkv.
//!
//! Counted by [`crate::HttpProbesLayer`] on the client port: a call is started when it
//! reaches the services and handled when its status is known: from the response headers
//! for a trailers-only answer (tonic's errors), else from the trailers as the body ends.
//! A stream the client abandons before its trailers is counted `Canceled`, the status its
//! handler would see. Like go-grpc-prometheus, every served method is reported from the
//! start, with zeros; a path that is no served method is not counted (tonic answers it
//! `Unimplemented`).
//!
//! Also etcd's `etcd_network_client_grpc_{received,sent}_bytes_total`: the data bytes of
//! the calls' request bodies ([`CountedRequest`], a pass-through wrapper, not boxed) and
//! response bodies (gRPC's 5-byte frame headers included; etcd counts the messages).
//!
//! With etcd's `--metrics extensive` ([`GrpcCounters::extensive`]), also
//! `grpc_server_handling_seconds{grpc_type,grpc_service,grpc_method}`: from the call's
//! arrival to its status, Prometheus' default buckets, as go-grpc-prometheus times it.
//!
//! Cost per call: a scan of the method table (the KV methods come first), two relaxed
//! atomic adds, and for answers with trailers one boxed body wrapper; with the histogram,
//! a clock read at each end and two more adds.

use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use raftkv_core::histogram::Histogram;
use tonic::body::Body;

use crate::grpc_methods::{CANCELED, CODES, METHODS, UNKNOWN};

/// Prometheus' default buckets (`prometheus.DefBuckets`), go-grpc-prometheus' choice.
const DEFAULT_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Started and handled calls per served method (and per code).
#[derive(Debug)]
pub struct GrpcCounters {
    started: Box<[AtomicU64]>,
    /// `handled[method * CODES.len() + code]`.
    handled: Box<[AtomicU64]>,
    /// Per method, with `--metrics extensive` only.
    handling: Option<Box<[Histogram]>>,
    /// gRPC body bytes received from clients and sent to them.
    received_bytes: AtomicU64,
    sent_bytes: AtomicU64,
}

impl Default for GrpcCounters {
    fn default() -> Self {
        Self {
            started: METHODS.iter().map(|_| AtomicU64::new(0)).collect(),
            handled: (0..METHODS.len() * CODES.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            handling: None,
            received_bytes: AtomicU64::new(0),
            sent_bytes: AtomicU64::new(0),
        }
    }
}

impl GrpcCounters {
    /// The counters and the handling-time histogram (etcd's `--metrics extensive`).
    pub fn extensive() -> Self {
        Self {
            handling: Some(METHODS.iter().map(|_| Histogram::new(&DEFAULT_BUCKETS)).collect()),
            ..Self::default()
        }
    }

    /// Count a call to `path` as started; `None` for a path that is no served method.
    pub(crate) fn start(self: &Arc<Self>, path: &str) -> Option<Call> {
        let method = METHODS.iter().position(|m| m.path == path)?;
        self.started[method].fetch_add(1, Ordering::Relaxed);
        Some(Call {
            counters: self.clone(),
            method,
            arrived: self.handling.is_some().then(Instant::now),
        })
    }

    fn handled(&self, call: &Call, code: usize) {
        let code = if code < CODES.len() { code } else { UNKNOWN };
        if let Some(counter) = self.handled.get(call.method * CODES.len() + code) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        if let (Some(histograms), Some(arrived)) = (&self.handling, call.arrived)
            && let Some(histogram) = histograms.get(call.method)
        {
            histogram.observe(arrived.elapsed());
        }
    }

    /// The families in Prometheus' text format, as go-grpc-prometheus and etcd write them.
    pub fn render(&self, out: &mut String) {
        for (name, help, counter) in [
            (
                "etcd_network_client_grpc_received_bytes_total",
                "The total number of bytes received from grpc clients.",
                &self.received_bytes,
            ),
            (
                "etcd_network_client_grpc_sent_bytes_total",
                "The total number of bytes sent to grpc clients.",
                &self.sent_bytes,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP grpc_server_handled_total Total number of RPCs completed on the server, regardless of success or failure.\n# TYPE grpc_server_handled_total counter"
        );
        for (i, m) in METHODS.iter().enumerate() {
            for (code, name) in CODES.iter().enumerate() {
                let n = self.handled[i * CODES.len() + code].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "grpc_server_handled_total{{grpc_code=\"{name}\",grpc_method=\"{}\",grpc_service=\"{}\",grpc_type=\"{}\"}} {n}",
                    m.name, m.service, m.kind
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP grpc_server_started_total Total number of RPCs started on the server.\n# TYPE grpc_server_started_total counter"
        );
        for (i, m) in METHODS.iter().enumerate() {
            let n = self.started[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "grpc_server_started_total{{grpc_method=\"{}\",grpc_service=\"{}\",grpc_type=\"{}\"}} {n}",
                m.name, m.service, m.kind
            );
        }
        if let Some(histograms) = &self.handling {
            let name = "grpc_server_handling_seconds";
            let _ = writeln!(
                out,
                "# HELP {name} Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.\n# TYPE {name} histogram"
            );
            for (m, histogram) in METHODS.iter().zip(histograms.iter()) {
                let labels = format!(
                    "grpc_method=\"{}\",grpc_service=\"{}\",grpc_type=\"{}\"",
                    m.name, m.service, m.kind
                );
                let h = histogram.snapshot();
                for (bound, count) in &h.buckets {
                    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {count}");
                }
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum_seconds);
                let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
            }
        }
    }
}

/// A started call, counted as handled once its status is known.
pub(crate) struct Call {
    counters: Arc<GrpcCounters>,
    method: usize,
    /// When it arrived, if its handling time is measured.
    arrived: Option<Instant>,
}

impl Call {
    /// Count the call from a trailers-only answer now, or from the body's trailers later.
    pub(crate) fn answered(self, response: Response<Body>) -> Response<Body> {
        if let Some(code) = grpc_status(response.headers()) {
            self.counters.handled(&self, code);
            return response;
        }
        response.map(|body| {
            Body::new(CountedBody {
                inner: body,
                call: Some(self),
            })
        })
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<usize> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// A response body that counts its call when the trailers pass, or when dropped first.
struct CountedBody {
    inner: Body,
    call: Option<Call>,
}

impl CountedBody {
    fn count(&mut self, code: usize) {
        if let Some(call) = self.call.take() {
            call.counters.handled(&call, code);
        }
    }
}

impl HttpBody for CountedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(call)) = (frame.data_ref(), &self.call) {
                    call.counters
                        .sent_bytes
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                if let Some(trailers) = frame.trailers_ref() {
                    let code = grpc_status(trailers).unwrap_or(UNKNOWN);
                    self.count(code);
                }
            }
            Poll::Ready(Some(Err(status))) => self.count(status.code() as usize),
            Poll::Ready(None) => self.count(UNKNOWN),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for CountedBody {
    fn drop(&mut self) {
        self.count(CANCELED);
    }
}

pin_project_lite::pin_project! {
    /// A request body counting its data bytes into `counters`
    /// (`etcd_network_client_grpc_received_bytes_total`); with none, a plain pass-through.
    /// Not boxed: the gRPC router takes it as it is.
    pub struct CountedRequest<B> {
        #[pin]
        inner: B,
        counters: Option<Arc<GrpcCounters>>,
    }
}

impl<B> CountedRequest<B> {
    /// `inner`, counted into `counters` if any.
    pub(crate) fn new(inner: B, counters: Option<Arc<GrpcCounters>>) -> Self {
        Self { inner, counters }
    }
}

impl<B: HttpBody<Data = Bytes>> HttpBody for CountedRequest<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(counters)) = (&polled, this.counters.as_ref())
            && let Some(data) = frame.data_ref()
        {
            counters
                .received_bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn every_method_is_reported_from_the_start() {
        let mut out = String::new();
        GrpcCounters::default().render(&mut out);
        assert!(out.contains(
            "grpc_server_handled_total{grpc_code=\"Unavailable\",grpc_method=\"Range\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 0\n"
        ));
        assert!(out.contains(
            "grpc_server_started_total{grpc_method=\"Watch\",grpc_service=\"etcdserverpb.Watch\",grpc_type=\"bidi_stream\"} 0\n"
        ));
        // 17 codes handled and one started per method, and the two byte counters.
        assert_eq!(
            out.lines().filter(|l| !l.starts_with('#')).count(),
            METHODS.len() * 18 + 2
        );
        assert!(out.contains("etcd_network_client_grpc_received_bytes_total 0\n"));
        assert!(!out.contains("grpc_server_handling_seconds"), "extensive only");
        let mut extensive = String::new();
        GrpcCounters::extensive().render(&mut extensive);
        assert!(extensive.contains(
            "grpc_server_handling_seconds_bucket{grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\",le=\"0.005\"} 0\n"
        ));
    }

    #[tokio::test]
    async fn calls_are_counted_by_their_status_wherever_it_comes() {
        let counters = Arc::new(GrpcCounters::default());
        assert!(counters.start("/etcdserverpb.KV/Nope").is_none());
        // Trailers-only (an error answered at once).
        let call = counters.start("/etcdserverpb.KV/Put").unwrap();
        let mut refused = Response::new(Body::empty());
        refused.headers_mut().insert("grpc-status", "14".parse().unwrap());
        let _ = call.answered(refused);
        // Status in the trailers after the message.
        let call = counters.start("/etcdserverpb.KV/Put").unwrap();
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let body = http_body_util::Full::new(Bytes::from_static(b"msg"))
            .map_err(|never| match never {})
            .with_trailers(async move { Some(Ok::<_, tonic::Status>(trailers)) });
        let answered = call.answered(Response::new(Body::new(body)));
        answered.into_body().collect().await.unwrap();
        // A stream dropped before its trailers.
        let call = counters.start("/etcdserverpb.Watch/Watch").unwrap();
        drop(call.answered(Response::new(Body::new(http_body_util::Full::new(
            Bytes::from_static(b"e"),
        )))));
        let code = |m: usize, c: &str| {
            let c = CODES.iter().position(|n| *n == c).unwrap();
            counters.handled[m * CODES.len() + c].load(Ordering::Relaxed)
        };
        assert_eq!(counters.started[0].load(Ordering::Relaxed), 2);
        assert_eq!((code(0, "Unavailable"), code(0, "OK")), (1, 1));
        assert_eq!(code(5, "Canceled"), 1);
    }
}
