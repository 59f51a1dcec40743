//! TLS on the client and peer ports, configured as etcd configures it (`TLSInfo` in etcd's
//! `pkg/transport`), on rustls with ring as the one crypto provider.
//!
//! - [`TlsSettings`]: one port's files and rules: certificate and key, the CA that client
//!   certificates must chain to, whether one is required, and the [`TlsPolicy`] (minimum
//!   and maximum version, etcd's `--cipher-suites` by Go's names).
//! - [`ServerTls`]: the listening side. Certificates are re-read when their files change
//!   (checked at each handshake, as etcd re-reads them at each handshake), so a renewed
//!   certificate is served without a restart; a renewal caught half-written keeps the
//!   last good configuration. [`incoming`] accepts and handshakes off the accept loop,
//!   each handshake with a deadline, so a slow or plaintext client holds up no one.
//! - [`ClientTls`]: the dialing side of the peer port. A member presents its peer
//!   certificate as its client certificate and checks the other member's certificate
//!   against the peer CA and the peer URL's host (an IP address needs an IP SAN), as
//!   etcd's peer transport does. [`ClientTls::connector`] plugs into a tonic endpoint.
//!
//! What etcd does that this leaves out: automatic self-signed certificates
//! (`--auto-tls`), CRLs, `--peer-cert-allowed-cn`/`-hostname`, and the check that a
//! connecting peer's certificate names the address it connects from. The server
//! refuses those flags rather than ignore them.

mod client;
mod incoming;
mod policy;
mod reload;
mod server;

pub use client::{ClientTls, TlsConnector};
pub use incoming::{TlsStream, incoming};
pub use policy::{TlsPolicy, TlsVersion};
pub use server::{CLIENT_PORT_ALPN, PEER_PORT_ALPN, ServerTls};

use std::path::PathBuf;

/// One port's TLS: etcd's `--cert-file`, `--key-file`, `--trusted-ca-file`,
/// `--client-cert-auth` (or their `--peer-` forms) and the policy both ports share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA certificates: clients must present a certificate chaining to one (etcd
    /// requires client certificates whenever this is set); for peers, also the CAs
    /// the other members' server certificates must chain to.
    pub trusted_ca_file: Option<PathBuf>,
    /// Require a client certificate (needs `trusted_ca_file`).
    pub client_cert_auth: bool,
    /// Versions and cipher suites.
    pub policy: TlsPolicy,
}

/// Why TLS could not be set up or a connection could not be secured.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate, key or CA file could not be read.
    #[error("reading {what} {path}: {source}")]
    Read {
        /// Which file (e.g. "certificate").
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file was read but holds no usable PEM of the expected kind.
    #[error("{path}: {detail}")]
    Pem {
        /// Its path.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// A setting etcd would refuse (its texts where it has one).
    #[error("{0}")]
    Invalid(String),
    /// rustls refused the configuration (e.g. a key that does not match the certificate).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}
