//! A TLS configuration rebuilt from its files when they change: certificates are renewed
//! on disk (cert-manager, kubeadm, a cron job) and etcd picks them up at the next
//! handshake without a restart. Each handshake stats the files (cheap: connections are
//! long-lived) and rebuilds only when one changed; a rebuild that fails (a renewal
//! caught half-written, a key that does not match yet) keeps the last good
//! configuration and warns once per change.

use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;

/// What identifies one version of a file: modification time, length, inode (a
/// Kubernetes secret update swaps a symlink, so the inode changes) and change time (a
/// copy that keeps the old modification time and length still changes it).
type Stamp = Option<(SystemTime, u64, u64, (i64, i64))>;

fn stamp(path: &PathBuf) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((
        meta.modified().ok()?,
        meta.len(),
        meta.ino(),
        (meta.ctime(), meta.ctime_nsec()),
    ))
}

type Build<C> = Box<dyn Fn() -> Result<C, TlsError> + Send + Sync>;

struct Current<C> {
    stamps: Vec<Stamp>,
    config: Arc<C>,
    /// The stamps of the last failed rebuild, so a broken renewal warns once.
    warned: Option<Vec<Stamp>>,
}

/// A configuration of type `C` built from `paths`, rebuilt when they change.
pub(crate) struct Reloading<C> {
    paths: Vec<PathBuf>,
    build: Build<C>,
    current: Mutex<Current<C>>,
}

impl<C> Reloading<C> {
    /// Builds the first configuration: an error here is a start-up error.
    pub(crate) fn new(
        paths: Vec<PathBuf>,
        build: impl Fn() -> Result<C, TlsError> + Send + Sync + 'static,
    ) -> Result<Self, TlsError> {
        let stamps = paths.iter().map(stamp).collect();
        let config = Arc::new(build()?);
        Ok(Self {
            paths,
            build: Box::new(build),
            current: Mutex::new(Current {
                stamps,
                config,
                warned: None,
            }),
        })
    }

    /// The configuration for the next handshake.
    pub(crate) fn current(&self) -> Arc<C> {
        let stamps: Vec<Stamp> = self.paths.iter().map(stamp).collect();
        {
            let current = self.current.lock();
            if current.stamps == stamps || current.warned.as_ref() == Some(&stamps) {
                return current.config.clone();
            }
        }
        // Built outside the lock: handshakes meanwhile use the old configuration.
        let rebuilt = (self.build)();
        let mut current = self.current.lock();
        match rebuilt {
            Ok(config) => {
                tracing::info!(files = ?self.paths, "TLS files changed: reloaded");
                current.config = Arc::new(config);
                current.stamps = stamps;
                current.warned = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "TLS files changed but do not load; serving the last good ones");
                current.warned = Some(stamps);
            }
        }
        current.config.clone()
    }
}

fn read(what: &'static str, path: &PathBuf) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.clone(),
        source,
    })
}

/// A PEM certificate chain and its private key.
pub(crate) fn load_identity(
    cert: &PathBuf,
    key: &PathBuf,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = load_certificates("certificate", cert)?;
    let key_pem = read("key", key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
        path: key.clone(),
        detail: format!("no private key: {e}"),
    })?;
    Ok((chain, key))
}

/// Every certificate in a PEM file (at least one).
pub(crate) fn load_certificates(
    what: &'static str,
    path: &PathBuf,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.clone(),
            detail: format!("bad PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.clone(),
            detail: "no certificate".into(),
        });
    }
    Ok(certs)
}

/// A root store of the CA certificates in a PEM file.
pub(crate) fn load_roots(path: &PathBuf) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certificates("trusted CA file", path)? {
        roots.add(cert).map_err(|e| TlsError::Pem {
            path: path.clone(),
            detail: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}
