//! The clients of the TLS test: an HTTPS client, a peer-port probe, etcdctl with certificates,
//! and the members' flags and config files as kubeadm writes them.

use super::*;

/// A TLS client configuration trusting `ca`, presenting `identity` if any.
pub(crate) fn client_config(ca: &str, identity: Option<&Leaf>, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
    let mut config = match identity {
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

/// What a TLS connection to `port` gave: the server's certificate and, for an HTTP/1.1
/// `GET path`, the status line and body; or why it failed.
pub(crate) struct Answer {
    pub(crate) server_cert: Vec<u8>,
    pub(crate) status: String,
    pub(crate) body: String,
}

pub(crate) async fn https_get(
    port: u16,
    config: Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<Answer, String> {
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        let mut tls = tokio_rustls::TlsConnector::from(config)
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let server_cert = tls.get_ref().1.peer_certificates().unwrap_or_default()[0].to_vec();
        let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        tls.write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut answer = Vec::new();
        tls.read_to_end(&mut answer)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let (head, body) = answer
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("no HTTP answer: {answer:?}"))?;
        Ok(Answer {
            server_cert,
            status: head.lines().next().unwrap_or_default().to_string(),
            body: body.to_string(),
        })
    };
    tokio::time::timeout(IO_DEADLINE, exchange)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

/// A TLS client on the peer port (HTTP/2 only, no request sent): refused (and why), or
/// `Err` when the server answers HTTP/2's preface.
pub(crate) async fn peer_port_refuses(port: u16, config: Arc<rustls::ClientConfig>) -> Result<String, ()> {
    // Both answers come at once; the wait only bounds a machine under load.
    const IDLE: Duration = Duration::from_secs(10);
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut tls = match tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
    {
        Ok(tls) => tls,
        Err(e) => return Ok(format!("handshake: {e}")),
    };
    // Speak first: an accepted connection then answers. etcd's peer port waits for the
    // client's bytes to pick a protocol and closes a silent connection after its 5 s
    // read timeouts, so silence cannot stand for acceptance; and its peer gRPC server
    // expects a second TLS handshake inside the first, so HTTP/2 is no control there
    // either. An HTTP/1.1 request gets etcd's answer; raftkv's HTTP/2-only peer server
    // sends its SETTINGS before it reads anything.
    const REQUEST: &[u8] = b"GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    // A refused write is no answer yet: the reason is in the alert, read next.
    let _ = tls.write_all(REQUEST).await;
    // TLS 1.3: the client's certificate is judged after the client's side of the
    // handshake is done; a refusal arrives as an alert on the first read.
    let mut byte = [0u8; 1];
    match tokio::time::timeout(IDLE, tls.read(&mut byte)).await {
        Ok(Ok(0)) => Ok("closed".into()),
        Ok(Err(e)) => Ok(e.to_string()),
        Ok(Ok(_)) => Err(()),
        Err(_) => Ok(format!("silent for {IDLE:?}")),
    }
}

pub(crate) fn etcdctl(endpoints: &str, certs: &Path, args: &[&str]) -> (bool, String) {
    etcdctl_as("client", endpoints, certs, args)
}

/// etcdctl presenting the client certificate `who`.crt (its common name is a user
/// while auth is enabled).
pub(crate) fn etcdctl_as(who: &str, endpoints: &str, certs: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg(format!("--cacert={}", certs.join("ca.crt").display()))
        .arg(format!("--cert={}", certs.join(format!("{who}.crt")).display()))
        .arg(format!("--key={}", certs.join(format!("{who}.key")).display()))
        .args(["--dial-timeout=2s", "--command-timeout=5s"])
        .args(args)
        .output()
        .expect("run etcdctl");
    // `endpoint health` reports on stderr, `get` on stdout.
    let text = [out.stdout, out.stderr].concat();
    (out.status.success(), String::from_utf8_lossy(&text).into_owned())
}

/// With `--client-cert-auth`, a certificate's common name is the user when a request
/// carries no token: root's certificate administers, alice's reads what her role allows,
/// a name that is no user is denied. Auth is disabled again at the end.
pub(crate) fn common_names_as_users(endpoint: &str, ca: &TestCa, pki: &Path) -> Vec<String> {
    for name in ["root", "alice"] {
        ca.leaf(name, Validity::Current).write(pki, name);
    }
    let mut seen = Vec::new();
    let mut run = |who: &str, args: &[&str]| {
        let (ok, out) = etcdctl_as(who, endpoint, pki, args);
        // The answer without the client's JSON log lines, or the error etcdctl ends with.
        let lines: Vec<&str> = out.trim().lines().filter(|l| !l.starts_with('{')).collect();
        let shown = if ok {
            lines.join(" | ")
        } else {
            lines.last().copied().unwrap_or_default().to_string()
        };
        seen.push(format!("as {who}: {}: {ok}, {shown}", args.join(" ")));
    };
    run("root", &["user", "add", "root:rootpw"]);
    run("root", &["user", "add", "alice:alicepw"]);
    run("root", &["role", "add", "registry-reader"]);
    run(
        "root",
        &[
            "role",
            "grant-permission",
            "registry-reader",
            "read",
            "/registry/",
            "--prefix",
        ],
    );
    run("root", &["user", "grant-role", "alice", "registry-reader"]);
    run("root", &["auth", "enable"]);
    run("root", &["user", "list"]);
    run(
        "alice",
        &["get", "/registry/pods/default/web", "--print-value-only"],
    );
    run("alice", &["put", "/registry/x", "1"]);
    run("alice", &["user", "list"]);
    run("client", &["get", "/registry/pods/default/web"]);
    run("root", &["auth", "disable"]);
    seen
}

pub(crate) struct Member {
    pub(crate) client: ReservedPort,
    pub(crate) peer: ReservedPort,
    pub(crate) metrics: ReservedPort,
}

/// The command line kubeadm writes for its etcd static pod, on loopback ports.
pub(crate) fn kubeadm_flags(
    name: &str,
    m: &Member,
    cluster: &str,
    data_dir: &Path,
    pki: &Path,
) -> Vec<String> {
    let pki = |f: &str| pki.join(f).display().to_string();
    let (c, p, x) = (m.client.port(), m.peer.port(), m.metrics.port());
    [
        format!("--advertise-client-urls=https://127.0.0.1:{c}"),
        format!("--cert-file={}", pki("server.crt")),
        "--client-cert-auth=true".into(),
        format!("--data-dir={}", data_dir.display()),
        "--experimental-initial-corrupt-check=true".into(),
        "--experimental-watch-progress-notify-interval=5s".into(),
        format!("--initial-advertise-peer-urls=https://127.0.0.1:{p}"),
        format!("--initial-cluster={cluster}"),
        format!("--key-file={}", pki("server.key")),
        format!("--listen-client-urls=https://127.0.0.1:{c}"),
        format!("--listen-metrics-urls=http://127.0.0.1:{x}"),
        format!("--listen-peer-urls=https://127.0.0.1:{p}"),
        format!("--name={name}"),
        format!("--peer-cert-file={}", pki("peer.crt")),
        "--peer-client-cert-auth=true".into(),
        format!("--peer-key-file={}", pki("peer.key")),
        format!("--peer-trusted-ca-file={}", pki("ca.crt")),
        "--snapshot-count=10000".into(),
        format!("--trusted-ca-file={}", pki("ca.crt")),
    ]
    .into()
}

/// kubeadm's flags as an etcd YAML config file: TLS under `client-transport-security:`
/// and `peer-transport-security:`.
pub(crate) fn config_file(name: &str, m: &Member, cluster: &str, data_dir: &Path, pki: &Path) -> String {
    let pki = |f: &str| pki.join(f).display().to_string();
    let (c, p, x) = (m.client.port(), m.peer.port(), m.metrics.port());
    format!(
        "name: {name}\ndata-dir: {data}\nlisten-client-urls: https://127.0.0.1:{c}\n\
         advertise-client-urls: https://127.0.0.1:{c}\nlisten-peer-urls: https://127.0.0.1:{p}\n\
         initial-advertise-peer-urls: https://127.0.0.1:{p}\ninitial-cluster: {cluster}\n\
         listen-metrics-urls: http://127.0.0.1:{x}\nsnapshot-count: 10000\n\
         client-transport-security:\n  cert-file: {server_crt}\n  key-file: {server_key}\n  \
         client-cert-auth: true\n  trusted-ca-file: {ca}\n\
         peer-transport-security:\n  cert-file: {peer_crt}\n  key-file: {peer_key}\n  \
         client-cert-auth: true\n  trusted-ca-file: {ca}\n",
        data = data_dir.display(),
        server_crt = pki("server.crt"),
        server_key = pki("server.key"),
        peer_crt = pki("peer.crt"),
        peer_key = pki("peer.key"),
        ca = pki("ca.crt"),
    )
}

/// Swap in a renewed certificate as cert-manager or kubeadm would: each file replaced
/// whole by a rename.
pub(crate) fn renew(leaf: &Leaf, cert: &PathBuf, key: &PathBuf) {
    for (path, text) in [(key, &leaf.key_pem), (cert, &leaf.cert_pem)] {
        let staged = path.with_extension("new");
        std::fs::write(&staged, text).unwrap();
        std::fs::rename(&staged, path).unwrap();
    }
}
