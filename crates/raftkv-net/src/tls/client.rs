//! The dialing side of TLS, for connections to other members: the member's peer
//! certificate as its client certificate, the other member's certificate checked
//! against the peer CA and the host of its peer URL. Reloaded from disk like the server.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::reload::{Reloading, load_identity, load_roots};
use super::{TlsError, TlsSettings};

/// A client TLS configuration that follows its files. Cheap to clone.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<Reloading<ClientConfig>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Loads the files once (an error is a start-up error) and keeps following them.
    pub fn new(settings: &TlsSettings) -> Result<Self, TlsError> {
        if settings.trusted_ca_file.is_none() {
            return Err(TlsError::Invalid(
                "connecting to https peers needs a trusted CA file (raftkv does not read the system's CA store)".into(),
            ));
        }
        let settings = settings.clone();
        let mut paths = vec![settings.cert_file.clone(), settings.key_file.clone()];
        paths.extend(settings.trusted_ca_file.clone());
        let config = Reloading::new(paths, move || build(&settings))?;
        Ok(Self {
            config: Arc::new(config),
        })
    }

    /// A connector for tonic's `Endpoint::connect_with_connector_lazy`.
    pub fn connector(&self) -> TlsConnector {
        TlsConnector { tls: self.clone() }
    }
}

fn build(settings: &TlsSettings) -> Result<ClientConfig, TlsError> {
    let provider = settings.policy.provider()?;
    let versions = settings.policy.versions()?;
    let roots = match &settings.trusted_ca_file {
        Some(ca) => load_roots(ca)?,
        None => rustls::RootCertStore::empty(),
    };
    let (chain, key) = load_identity(&settings.cert_file, &settings.key_file)?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Dials TCP and performs the TLS handshake for the URI's host and port. The tonic
/// endpoint using it must have an `http://` URI (tonic would refuse `https://` without
/// its own TLS settings); the host and port are what count.
#[derive(Clone, Debug)]
pub struct TlsConnector {
    tls: ClientTls,
}

type Connected = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

impl tower_service::Service<http::Uri> for TlsConnector {
    type Response = Connected;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Connected, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = self.tls.config.current();
        Box::pin(async move {
            let invalid = |detail: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, detail);
            let host = uri
                .host()
                .ok_or_else(|| invalid(format!("{uri}: no host")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().ok_or_else(|| invalid(format!("{uri}: no port")))?;
            let server_name = ServerName::try_from(host.clone())
                .map_err(|e| invalid(format!("{host}: not a server name: {e}")))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(server_name, tcp)
                .await?;
            Ok(TokioIo::new(stream))
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::path::Path;

    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    };
    use tower_service::Service as _;

    use super::*;
    use crate::tls::{ServerTls, TlsPolicy};

    /// A CA, and a certificate it signs for `names` (server and client use).
    fn leaf(
        ca: &CertifiedIssuer<'static, KeyPair>,
        names: &[&str],
        dir: &Path,
        file: &str,
    ) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, ca).unwrap();
        let (cert_path, key_path) = (dir.join(format!("{file}.crt")), dir.join(format!("{file}.key")));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    use std::path::PathBuf;

    /// A member dialing a peer checks that the peer's certificate names the host of its
    /// peer URL: a certificate for `localhost` only is refused at `127.0.0.1`.
    #[tokio::test]
    async fn a_peer_certificate_must_name_the_host_dialed() {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let ca_path = dir.path().join("ca.crt");
        std::fs::write(&ca_path, ca.pem()).unwrap();
        let (server_cert, server_key) = leaf(&ca, &["localhost"], dir.path(), "server");
        let (client_cert, client_key) = leaf(&ca, &["127.0.0.1"], dir.path(), "client");
        let settings = |cert: PathBuf, key: PathBuf| TlsSettings {
            cert_file: cert,
            key_file: key,
            trusted_ca_file: Some(ca_path.clone()),
            client_cert_auth: true,
            policy: TlsPolicy::default(),
        };
        let server = ServerTls::new(&settings(server_cert, server_key), &[b"h2"]).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = tokio_rustls::TlsAcceptor::from(server.current());
                tokio::spawn(async move {
                    let _ = acceptor.accept(tcp).await;
                });
            }
        });
        let mut connector = ClientTls::new(&settings(client_cert, client_key))
            .unwrap()
            .connector();
        let wrong = connector
            .call(format!("http://127.0.0.1:{port}").parse().unwrap())
            .await
            .err()
            .map(|e| e.to_string());
        assert!(
            wrong.as_deref().is_some_and(|e| e.contains("not valid for name")),
            "{wrong:?}"
        );
        let right = connector
            .call(format!("http://localhost:{port}").parse().unwrap())
            .await;
        assert!(right.is_ok(), "{:?}", right.err());
    }
}
