//! The same auth checks made over gRPC directly: tokens in metadata, txns, watches.

use super::*;
use raftkv_proto::etcdserverpb as pb;
use support::channel;
use tonic::Request;

/// The parts etcdctl cannot drive: tokens across members, expiry, watches.
pub(crate) async fn grpc_session(urls: &[String]) -> Vec<String> {
    let mut seen = Vec::new();
    let shown = |r: Result<String, tonic::Status>| match r {
        Ok(v) => format!("ok {v}"),
        Err(s) => format!("{:?} {}", s.code(), s.message()),
    };
    // etcdctl's passwd above set alice's password from stdin: empty. Set it again.
    let root = authenticate(&urls[0], "root", "rootpw").await.unwrap();
    let mut a = pb::auth_client::AuthClient::new(channel(&urls[1]).await);
    a.user_change_password(with_token(
        pb::AuthUserChangePasswordRequest {
            name: "alice".into(),
            password: "alicepw".into(),
        },
        &root,
    ))
    .await
    .unwrap();
    seen.push(format!(
        "wrong password over gRPC: {}",
        shown(authenticate(&urls[0], "alice", "x").await)
    ));
    let alice = authenticate(&urls[0], "alice", "alicepw").await.unwrap();
    // Issued by the first member, good on the third once it applied the entry.
    seen.push(format!(
        "token on another member: {}",
        shown(get(&urls[2], "/app/w", Some(&alice)).await)
    ));
    seen.push(format!(
        "denied read: {}",
        shown(get(&urls[2], "/other", Some(&alice)).await)
    ));
    seen.push(format!(
        "made-up token: {}",
        shown(get(&urls[2], "/app/w", Some("abc.1")).await)
    ));
    seen.push(format!(
        "read-only txn: {}",
        shown(txn(&urls[1], "/app/w", None, &alice).await)
    ));
    seen.push(format!(
        "txn comparing a denied key: {}",
        shown(txn(&urls[1], "/other", None, &alice).await)
    ));
    seen.push(format!(
        "txn writing a revoked key: {}",
        shown(txn(&urls[1], "/app/w", Some("/app/w"), &alice).await)
    ));
    seen.push(format!(
        "watch of a denied range: {}",
        watch_create(&urls[1], "/other", &alice).await
    ));
    seen.push(format!(
        "watch of a permitted range: {}",
        watch_create(&urls[1], "/app/w", &alice).await
    ));
    // Used within the TTL, a token lives on; unused for longer, it is gone (etcd checks
    // expiry every second: 2 s TTL + 1 s resolution + margin).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    seen.push(format!(
        "token used again: {}",
        shown(get(&urls[0], "/app/w", Some(&alice)).await)
    ));
    tokio::time::sleep(Duration::from_secs(4)).await;
    seen.push(format!(
        "expired token: {}",
        shown(get(&urls[0], "/app/w", Some(&alice)).await)
    ));
    seen.push(format!(
        "expired token on a write: {}",
        shown(put(&urls[0], "/app/w", Some(&alice)).await)
    ));
    seen
}

/// A txn comparing `compare`'s value, then reading it (or putting `put`).
pub(crate) async fn txn(
    url: &str,
    compare: &str,
    put: Option<&str>,
    token: &str,
) -> Result<String, tonic::Status> {
    let mut kv = pb::kv_client::KvClient::new(channel(url).await);
    let op = match put {
        Some(key) => pb::request_op::Request::RequestPut(pb::PutRequest {
            key: key.into(),
            value: b"t".to_vec(),
            ..Default::default()
        }),
        None => pb::request_op::Request::RequestRange(pb::RangeRequest {
            key: compare.into(),
            ..Default::default()
        }),
    };
    let req = pb::TxnRequest {
        compare: vec![pb::Compare {
            key: compare.into(),
            target: pb::compare::CompareTarget::Version as i32,
            result: pb::compare::CompareResult::Greater as i32,
            target_union: Some(pb::compare::TargetUnion::Version(0)),
            ..Default::default()
        }],
        success: vec![pb::RequestOp { request: Some(op) }],
        failure: vec![],
    };
    let r = kv.txn(with_token(req, token)).await?.into_inner();
    Ok(format!("succeeded {}", r.succeeded))
}

pub(crate) fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("token", token.parse().unwrap());
    request
}

pub(crate) async fn authenticate(url: &str, name: &str, password: &str) -> Result<String, tonic::Status> {
    let mut a = pb::auth_client::AuthClient::new(channel(url).await);
    let r = a
        .authenticate(pb::AuthenticateRequest {
            name: name.into(),
            password: password.into(),
        })
        .await?;
    Ok(r.into_inner().token)
}

pub(crate) async fn get(url: &str, key: &str, token: Option<&str>) -> Result<String, tonic::Status> {
    let mut kv = pb::kv_client::KvClient::new(channel(url).await);
    let req = pb::RangeRequest {
        key: key.into(),
        ..Default::default()
    };
    let req = match token {
        Some(t) => with_token(req, t),
        None => Request::new(req),
    };
    let r = kv.range(req).await?.into_inner();
    Ok(format!("{} keys", r.count))
}

pub(crate) async fn put(url: &str, key: &str, token: Option<&str>) -> Result<String, tonic::Status> {
    let mut kv = pb::kv_client::KvClient::new(channel(url).await);
    let req = pb::PutRequest {
        key: key.into(),
        value: b"v".to_vec(),
        ..Default::default()
    };
    let req = match token {
        Some(t) => with_token(req, t),
        None => Request::new(req),
    };
    kv.put(req).await?;
    Ok("put".into())
}

/// The first answer to a watch create on `key`: created / canceled and the reason.
pub(crate) async fn watch_create(url: &str, key: &str, token: &str) -> String {
    let mut w = pb::watch_client::WatchClient::new(channel(url).await);
    let create = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: key.into(),
                ..Default::default()
            },
        )),
    };
    use futures_util::StreamExt;
    let requests = futures_util::stream::iter([create]).chain(futures_util::stream::pending());
    let mut responses = w.watch(with_token(requests, token)).await.unwrap().into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), responses.message())
        .await
        .expect("a watch answer in time")
        .unwrap()
        .unwrap();
    format!(
        "created {} canceled {} id {} reason {:?}",
        first.created, first.canceled, first.watch_id, first.cancel_reason
    )
}
