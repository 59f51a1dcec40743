//! TLS on the client and peer ports, as a kubeadm control plane runs etcd: three
//! members started with the flags kubeadm writes into its etcd static pod (TLS
//! everywhere, client certificates required on both ports, plaintext metrics URL), the
//! third from the same settings as an etcd YAML config file; certificates made at run
//! time. One session against `raftkv-server` and one against etcd 3.4 must show the same.
//! What must hold:
//! - the members form a cluster over mutual TLS and serve gRPC and `/health` over TLS to
//!   a client with a certificate from the cluster's CA (kube-apiserver's health check: a
//!   linearizable get of `/registry/health`), and etcdctl with `--cacert/--cert/--key`;
//! - refused on the client port: no client certificate, one from another CA, an expired
//!   one, plaintext; on the peer port: no client certificate, one from another CA;
//! - a renewed server certificate is served from the next connection on, no restart;
//! - with auth enabled, a client certificate's common name is the user (root's
//!   administers, alice's reads what her role allows, an unknown name is denied).

#![allow(clippy::unwrap_used, clippy::expect_used)]
// ring: the provider the server uses (its post-quantum-less default is deprecated).
#![allow(deprecated)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::{PutRequest, RangeRequest};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support;
use crate::support::certs::{Leaf, TestCa, Validity};
use crate::support::child::{self, OwnedChild};
use crate::support::ports::ReservedPort;
use crate::support::process::SERVER_BIN;

const START_DEADLINE: Duration = Duration::from_secs(60);
const IO_DEADLINE: Duration = Duration::from_secs(10);

mod clients;

use clients::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeadms_tls_flags_give_etcd_and_raftkv_the_same_session() {
    let _turn = support::ClusterTurn::take();
    let raftkv = session(SERVER_BIN, true).await;
    let mut expected = vec![
        "every member healthy over TLS".to_string(),
        "get /registry/health: 0 keys".into(),
        r#"raftkv-client over TLS: Some("tls")"#.into(),
        "raftkv-client without TLS settings: refused".into(),
        r#"put and get over gRPC: Some("spec")"#.into(),
    ];
    if support::etcd::available() {
        expected.push("etcdctl endpoint health: true, 3 healthy".into());
        expected.push(r#"etcdctl get: true "/registry/pods/default/web\nspec\n""#.into());
        expected.push("etcdctl endpoint status: true, 3 members".into());
        expected.extend(
            [
                "as root: user add root:rootpw: true, User root created",
                "as root: user add alice:alicepw: true, User alice created",
                "as root: role add registry-reader: true, Role registry-reader created",
                "as root: role grant-permission registry-reader read /registry/ --prefix: true, Role registry-reader updated",
                "as root: user grant-role alice registry-reader: true, Role registry-reader is granted to user alice",
                "as root: auth enable: true, Authentication Enabled",
                "as root: user list: true, alice | root",
                "as alice: get /registry/pods/default/web --print-value-only: true, spec",
                "as alice: put /registry/x 1: false, Error: etcdserver: permission denied",
                "as alice: user list: false, Error: etcdserver: permission denied",
                "as client: get /registry/pods/default/web: false, Error: etcdserver: permission denied",
                "as root: auth disable: true, Authentication Disabled",
            ]
            .map(String::from),
        );
    }
    expected.extend(
        [
            "metrics URL /health: HTTP/1.1 200 OK",
            "client port, no client certificate: refused",
            "client port, a certificate from another CA: refused",
            "client port, an expired certificate: refused",
            "client port, plaintext: served false",
            "peer port, a member's certificate: refused false",
            "peer port, no client certificate: refused",
            "peer port, another CA: refused",
            "after renewal: the renewed certificate served true, HTTP/1.1 200 OK",
            "after renewal, another member healthy: true",
        ]
        .map(String::from),
    );
    assert_eq!(raftkv, expected);
    if support::etcd::available() {
        let etcd = session("etcd", false).await;
        assert_eq!(raftkv, etcd, "raftkv's session differs from etcd 3.4's");
    } else {
        assert!(std::env::var("CI").is_err(), "etcd is required under CI=true");
        eprintln!("etcd not installed: raftkv's session alone");
    }
}

/// One program's session: what it showed, line by line, for comparison. With
/// `rustls_alerts`, each refusal must also carry the TLS alert rustls sends for it (Go
/// names them differently).
pub(crate) async fn session(program: &'static str, rustls_alerts: bool) -> Vec<String> {
    let mut seen = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    std::fs::create_dir(&pki).unwrap();
    let ca = TestCa::new("raftkv test CA");
    let other_ca = TestCa::new("someone else's CA");
    ca.write(&pki, "ca");
    let (server_cert, server_key) = ca.leaf("member", Validity::Current).write(&pki, "server");
    ca.leaf("peer", Validity::Current).write(&pki, "peer");
    let client = ca.leaf("kube-apiserver-etcd-client", Validity::Current);
    client.write(&pki, "client");

    let members: Vec<Member> = (0..3)
        .map(|_| Member {
            client: ReservedPort::new(),
            peer: ReservedPort::new(),
            metrics: ReservedPort::new(),
        })
        .collect();
    let cluster: Vec<String> = members
        .iter()
        .enumerate()
        .map(|(i, m)| format!("m{i}=https://127.0.0.1:{}", m.peer.port()))
        .collect();
    let cluster = cluster.join(",");
    let mut children = Vec::new();
    for (i, m) in members.iter().enumerate() {
        let data_dir = dir.path().join(format!("m{i}"));
        // The third member from a config file with etcd's TLS sections.
        let args = if i < 2 {
            kubeadm_flags(&format!("m{i}"), m, &cluster, &data_dir, &pki)
        } else {
            let file = dir.path().join("m2.yaml");
            std::fs::write(&file, config_file("m2", m, &cluster, &data_dir, &pki)).unwrap();
            vec![format!("--config-file={}", file.display())]
        };
        let mut cmd = child::command(program, &args, &[]);
        cmd.stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join(format!("m{i}.log"))).unwrap());
        children.push(OwnedChild::spawn(cmd).unwrap());
    }
    let logs = || {
        (0..3)
            .map(|i| std::fs::read_to_string(dir.path().join(format!("m{i}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n---\n")
    };

    // Healthy (a leader elected over mutual TLS between members) on every member.
    let trusted = client_config(&ca.pem(), Some(&client), b"http/1.1");
    let deadline = Instant::now() + START_DEADLINE;
    for m in &members {
        loop {
            match https_get(m.client.port(), trusted.clone(), "/health").await {
                Ok(a) if a.status.contains("200") && a.body.starts_with(r#"{"health":"true""#) => break,
                other => assert!(
                    Instant::now() < deadline,
                    "{program}: member on {} not healthy: {:?}\n{}",
                    m.client.port(),
                    other.map(|a| (a.status, a.body)),
                    logs()
                ),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    seen.push("every member healthy over TLS".to_string());

    // gRPC over TLS: a put on one member, kube-apiserver's health check (a linearizable
    // get of /registry/health) and the value read on another.
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca.pem()))
        .identity(tonic::transport::Identity::from_pem(
            &client.cert_pem,
            &client.key_pem,
        ))
        .domain_name("127.0.0.1");
    let kv = |port: u16| {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
            .unwrap()
            .tls_config(tls.clone())
            .unwrap()
            .timeout(IO_DEADLINE);
        KvClient::new(endpoint.connect_lazy())
    };
    kv(members[0].client.port())
        .put(PutRequest {
            key: b"/registry/pods/default/web".to_vec(),
            value: b"spec".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    let health = kv(members[1].client.port())
        .range(RangeRequest {
            key: b"/registry/health".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    seen.push(format!("get /registry/health: {} keys", health.count));
    let read = kv(members[2].client.port())
        .range(RangeRequest {
            key: b"/registry/pods/default/web".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // The client crate over TLS, with etcdctl's three files; without TLS settings it
    // refuses an https endpoint itself.
    let https: Vec<String> = members
        .iter()
        .map(|m| format!("https://127.0.0.1:{}", m.client.port()))
        .collect();
    let files = raftkv_client::TlsOptions::from_files(
        &pki.join("ca.crt"),
        Some((&pki.join("client.crt"), &pki.join("client.key"))),
    )
    .unwrap();
    let options = raftkv_client::ClientOptions {
        tls: Some(files),
        ..Default::default()
    };
    let client = raftkv_client::Client::connect_with(https.clone(), options)
        .await
        .unwrap();
    client
        .put("/registry/from-the-client-crate", "tls")
        .await
        .unwrap();
    let got = client.get("/registry/from-the-client-crate").await.unwrap();
    seen.push(format!(
        "raftkv-client over TLS: {:?}",
        got.map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
    ));
    let plain = raftkv_client::Client::connect(https).await;
    seen.push(format!(
        "raftkv-client without TLS settings: {}",
        if plain.is_err() { "refused" } else { "accepted" }
    ));
    seen.push(format!(
        "put and get over gRPC: {:?}",
        read.kvs
            .first()
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
    ));

    // etcdctl as operators run it against a kubeadm etcd.
    if support::etcd::available() {
        let endpoints: Vec<String> = members
            .iter()
            .map(|m| format!("https://127.0.0.1:{}", m.client.port()))
            .collect();
        let (ok, out) = etcdctl(&endpoints.join(","), &pki, &["endpoint", "health"]);
        seen.push(format!(
            "etcdctl endpoint health: {ok}, {} healthy",
            out.matches("is healthy").count()
        ));
        let (ok, out) = etcdctl(&endpoints[2], &pki, &["get", "/registry/pods/default/web"]);
        seen.push(format!("etcdctl get: {ok} {out:?}"));
        // Dials each member with its `https://` URL as the HTTP/2 authority.
        let (ok, out) = etcdctl(&endpoints.join(","), &pki, &["endpoint", "status"]);
        seen.push(format!(
            "etcdctl endpoint status: {ok}, {} members",
            out.lines().filter(|l| l.starts_with("https://")).count()
        ));
        seen.extend(common_names_as_users(&endpoints[1], &ca, &pki));
    }

    // The metrics URL is plain HTTP, as kubeadm's probes expect.
    let metrics_health = plain_get(members[0].metrics.port(), "/health").await;
    seen.push(format!(
        "metrics URL /health: {}",
        metrics_health.lines().next().unwrap_or_default()
    ));

    // Refused on the client port.
    let port = members[0].client.port();
    // (what, the client's configuration, the alert the server must send)
    let refused = [
        (
            "no client certificate",
            client_config(&ca.pem(), None, b"http/1.1"),
            "CertificateRequired",
        ),
        (
            "a certificate from another CA",
            client_config(
                &ca.pem(),
                Some(&other_ca.leaf("intruder", Validity::Current)),
                b"http/1.1",
            ),
            "UnknownCA",
        ),
        (
            "an expired certificate",
            client_config(
                &ca.pem(),
                Some(&ca.leaf("expired", Validity::Expired)),
                b"http/1.1",
            ),
            "CertificateExpired",
        ),
    ];
    for (what, config, alert) in refused {
        match https_get(port, config, "/health").await {
            Err(why) => {
                assert!(
                    !rustls_alerts || why.contains(alert),
                    "client port, {what}: {why}"
                );
                seen.push(format!("client port, {what}: refused"));
            }
            Ok(answer) => seen.push(format!("client port, {what}: served {}", answer.status)),
        }
    }
    let plaintext = plain_get(port, "/health").await;
    seen.push(format!(
        "client port, plaintext: served {}",
        plaintext.starts_with("HTTP/1.1 200")
    ));

    // Refused on the peer port; a member's certificate is accepted (the control).
    let peer_port = members[0].peer.port();
    let peer_leaf = Leaf {
        cert_pem: std::fs::read_to_string(pki.join("peer.crt")).unwrap(),
        key_pem: std::fs::read_to_string(pki.join("peer.key")).unwrap(),
        der: Vec::new(),
    };
    let member = peer_port_refuses(peer_port, client_config(&ca.pem(), Some(&peer_leaf), b"h2")).await;
    seen.push(format!(
        "peer port, a member's certificate: refused {}",
        member.is_ok()
    ));
    for (what, identity, alert) in [
        ("no client certificate", None, "CertificateRequired"),
        (
            "another CA",
            Some(other_ca.leaf("intruder", Validity::Current)),
            "UnknownCA",
        ),
    ] {
        match peer_port_refuses(peer_port, client_config(&ca.pem(), identity.as_ref(), b"h2")).await {
            Ok(why) => {
                assert!(!rustls_alerts || why.contains(alert), "peer port, {what}: {why}");
                seen.push(format!("peer port, {what}: refused"));
            }
            Err(()) => seen.push(format!("peer port, {what}: accepted")),
        }
    }

    // A renewed server certificate is served from the next connection on.
    let renewed = ca.leaf("member-renewed", Validity::Current);
    renew(&renewed, &server_cert, &server_key);
    let answer = https_get(port, trusted.clone(), "/health").await.unwrap();
    seen.push(format!(
        "after renewal: the renewed certificate served {}, {}",
        answer.server_cert == renewed.der,
        answer.status
    ));

    // Still one cluster: the renewal touched no member's peer connections.
    let answer = https_get(members[2].client.port(), trusted, "/health")
        .await
        .unwrap();
    seen.push(format!(
        "after renewal, another member healthy: {}",
        answer.body.starts_with(r#"{"health":"true""#)
    ));
    drop(children);
    seen
}

/// A plaintext HTTP/1.1 GET, bounded: the whole answer, or what went wrong.
pub(crate) async fn plain_get(port: u16, path: &str) -> String {
    let exchange = async {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        tcp.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&answer).into_owned())
    };
    match tokio::time::timeout(IO_DEADLINE, exchange).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => format!("error: {e}"),
        Err(_) => "timed out".into(),
    }
}
