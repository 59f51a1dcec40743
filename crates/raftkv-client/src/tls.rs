//! [`TlsOptions`]: how the client speaks TLS to `https://` endpoints, as etcdctl's
//! `--cacert`, `--cert` and `--key` do: the servers' certificates are checked against
//! the given CA (and the endpoint's host, or `domain`), and the client presents its own
//! certificate to servers that require one (`--client-cert-auth`). rustls underneath
//! (tonic's `tls-ring`).

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::error::{ClientError, Result};

/// TLS settings for `https://` endpoints. `http://` endpoints stay plaintext.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct TlsOptions {
    /// PEM of the CA certificate(s) the servers' certificates must chain to.
    pub ca_pem: Vec<u8>,
    /// PEM of this client's certificate and of its private key, for servers that
    /// require client certificates.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name the servers' certificates must carry, when it is not the endpoint's
    /// host (etcdctl's `--discovery-srv`-style setups).
    pub domain: Option<String>,
}

impl TlsOptions {
    /// Read the CA, and the client's certificate and key if given, from PEM files (the
    /// paths etcdctl takes as `--cacert`, `--cert`, `--key`).
    pub fn from_files(ca: &Path, cert_and_key: Option<(&Path, &Path)>) -> Result<Self> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| ClientError::InvalidTls(format!("{}: {e}", path.display())))
        };
        let identity = match cert_and_key {
            Some((cert, key)) => Some((read(cert)?, read(key)?)),
            None => None,
        };
        Ok(Self {
            ca_pem: read(ca)?,
            identity,
            domain: None,
        })
    }

    /// tonic's configuration for one endpoint.
    pub(crate) fn config(&self) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(domain) = &self.domain {
            config = config.domain_name(domain.clone());
        }
        config
    }
}

/// Never prints the private key.
impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("ca_pem", &format_args!("{} bytes", self.ca_pem.len()))
            .field(
                "identity",
                &self.identity.as_ref().map(|_| "<certificate and key>"),
            )
            .field("domain", &self.domain)
            .finish()
    }
}
