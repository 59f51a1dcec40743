//! The listening side of TLS: a rustls server configuration per etcd's `ServerConfig()`
//! (client certificates required whenever a trusted CA file is given), reloaded from
//! disk when the files change.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;

use super::reload::{Reloading, load_identity, load_roots};
use super::{TlsError, TlsSettings};

/// A server TLS configuration that follows its files. Cheap to clone.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<Reloading<ServerConfig>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

/// ALPN for the client port: gRPC over HTTP/2, and HTTP/1.1 for the health and metrics
/// endpoints (curl, load balancers, kubelet).
pub const CLIENT_PORT_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];
/// ALPN for the peer port: gRPC only.
pub const PEER_PORT_ALPN: &[&[u8]] = &[b"h2"];

impl ServerTls {
    /// Loads the files once (an error is a start-up error) and keeps following them.
    pub fn new(settings: &TlsSettings, alpn: &[&[u8]]) -> Result<Self, TlsError> {
        if settings.client_cert_auth && settings.trusted_ca_file.is_none() {
            return Err(TlsError::Invalid(
                "client certificate authentication needs a trusted CA file (raftkv does not read the system's CA store)"
                    .into(),
            ));
        }
        let settings = settings.clone();
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let mut paths = vec![settings.cert_file.clone(), settings.key_file.clone()];
        paths.extend(settings.trusted_ca_file.clone());
        let config = Reloading::new(paths, move || build(&settings, &alpn))?;
        Ok(Self {
            config: Arc::new(config),
        })
    }

    /// The configuration for the next handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.config.current()
    }
}

fn build(settings: &TlsSettings, alpn: &[Vec<u8>]) -> Result<ServerConfig, TlsError> {
    let provider = settings.policy.provider()?;
    let versions = settings.policy.versions()?;
    let (chain, key) = load_identity(&settings.cert_file, &settings.key_file)?;
    let builder = ServerConfig::builder_with_provider(provider.clone()).with_protocol_versions(&versions)?;
    let builder = match &settings.trusted_ca_file {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(load_roots(ca)?), provider)
                .build()
                .map_err(|e| TlsError::Invalid(format!("client certificate verifier: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = alpn.to_vec();
    Ok(config)
}
