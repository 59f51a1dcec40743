//! The layer's answers over a stand-in member and a stand-in gRPC router.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, header};
use tonic::body::Body;
use tower_service::Service;

use super::answers::{ALARM_CORRUPT, ALARM_NOSPACE};
use super::routes::{Query, percent_decode};
use super::{HttpProbesLayer, ProbeBackend};
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
    fn metrics_text(&self) -> String {
        "up 1\n".into()
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

impl<B> Service<Request<B>> for Grpc {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Body>, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: Request<B>) -> Self::Future {
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
    assert_eq!(
        ask(healthy(), "GET", "/metrics", None).await,
        (200, "up 1\n".into())
    );
    assert_eq!(ask(healthy(), "POST", "/metrics", None).await.0, 200);
    assert_eq!(
        ask(healthy(), "GET", "/metrics", None).await,
        (200, "up 1\n".into())
    );
    assert_eq!(ask(healthy(), "POST", "/metrics", None).await.0, 200);
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
