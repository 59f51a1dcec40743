//! etcd's TLS flags resolved into the settings of the three places TLS applies: the
//! `https://` client and metrics listeners, the peer listener, and connections to
//! members with `https://` peer URLs. With etcd's checks and texts: a TLS URL without
//! its key and certificate, one of the two without the other, an unknown version or
//! cipher suite.
//!
//! As in etcd, `--trusted-ca-file` alone already requires client certificates, and TLS
//! settings without an `https://` URL are inert. raftkv needs a CA file wherever a
//! certificate is verified: it does not read the system's CA store.

use std::path::PathBuf;

use raftkv_net::tls::{TlsError, TlsPolicy, TlsSettings, TlsVersion};

use super::ConfigError;
use super::settings::Settings;
use super::urls::ListenUrl;

/// Where TLS applies, and with what.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// The `https://` client and metrics URLs (`--cert-file`, ...).
    pub client: Option<TlsSettings>,
    /// The peer listener, when its URL is `https://` (`--peer-cert-file`, ...).
    pub peer_server: Option<TlsSettings>,
    /// Dialing members whose peer URL is `https://`: the peer certificate (or
    /// `--peer-client-cert-file`) as client certificate, the peer CA as roots.
    pub peer_client: Option<TlsSettings>,
}

fn conflict(text: String) -> ConfigError {
    ConfigError::Conflict(text)
}

fn version(flag: &str, value: Option<&str>) -> Result<Option<TlsVersion>, ConfigError> {
    match value.filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|e: TlsError| ConfigError::InvalidValue {
                flag: flag.into(),
                value: v.into(),
                reason: e.to_string(),
            }),
    }
}

fn policy(s: &Settings) -> Result<TlsPolicy, ConfigError> {
    let policy = TlsPolicy {
        min_version: version("--tls-min-version", s.tls_min_version.as_deref())?,
        max_version: version("--tls-max-version", s.tls_max_version.as_deref())?,
        cipher_suites: s
            .cipher_suites
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect(),
    };
    policy.validate().map_err(|e| conflict(e.to_string()))?;
    Ok(policy)
}

/// A certificate and key pair, both or neither (etcd's `baseConfig` text).
fn pair(cert: Option<&str>, key: Option<&str>) -> Result<Option<(PathBuf, PathBuf)>, ConfigError> {
    match (cert.filter(|c| !c.is_empty()), key.filter(|k| !k.is_empty())) {
        (Some(cert), Some(key)) => Ok(Some((cert.into(), key.into()))),
        (None, None) => Ok(None),
        (cert, key) => Err(conflict(format!(
            "KeyFile and CertFile must both be present[key: {}, cert: {}]",
            key.unwrap_or_default(),
            cert.unwrap_or_default()
        ))),
    }
}

fn ca(flag: &str, value: Option<&str>, auth: bool, auth_flag: &str) -> Result<Option<PathBuf>, ConfigError> {
    match value.filter(|v| !v.is_empty()) {
        Some(path) => Ok(Some(path.into())),
        None if auth => Err(conflict(format!(
            "{auth_flag} needs {flag}: raftkv does not read the system's CA store"
        ))),
        None => Ok(None),
    }
}

/// The TLS settings the flags give, checked against the URLs that need them.
pub fn resolve_tls<'a>(
    s: &Settings,
    mut client_listeners: impl Iterator<Item = &'a ListenUrl>,
    peer_listener: &ListenUrl,
    mut peer_urls: impl Iterator<Item = &'a str>,
) -> Result<TlsConfig, ConfigError> {
    let policy = policy(s)?;
    let mut config = TlsConfig::default();

    if let Some(url) = client_listeners.find(|u| u.tls) {
        let (cert_file, key_file) = pair(s.cert_file.as_deref(), s.key_file.as_deref())?.ok_or_else(|| {
            conflict(format!(
                "TLS key/cert (--cert-file, --key-file) must be provided for client url https://{} with HTTPS scheme",
                url.addr
            ))
        })?;
        let auth = s.client_cert_auth.unwrap_or(false);
        config.client = Some(TlsSettings {
            cert_file,
            key_file,
            trusted_ca_file: ca(
                "--trusted-ca-file",
                s.trusted_ca_file.as_deref(),
                auth,
                "--client-cert-auth",
            )?,
            client_cert_auth: auth,
            policy: policy.clone(),
        });
    }

    let peer_pair = || pair(s.peer_cert_file.as_deref(), s.peer_key_file.as_deref());
    let peer_auth = s.peer_client_cert_auth.unwrap_or(false);
    let peer_ca = || {
        ca(
            "--peer-trusted-ca-file",
            s.peer_trusted_ca_file.as_deref(),
            peer_auth,
            "--peer-client-cert-auth",
        )
    };
    if peer_listener.tls {
        let (cert_file, key_file) = peer_pair()?.ok_or_else(|| {
            conflict(format!(
                "TLS key/cert (--peer-cert-file, --peer-key-file) must be provided for peer url https://{} with HTTPS scheme",
                peer_listener.addr
            ))
        })?;
        config.peer_server = Some(TlsSettings {
            cert_file,
            key_file,
            trusted_ca_file: peer_ca()?,
            client_cert_auth: peer_auth,
            policy: policy.clone(),
        });
    }
    // Dialing members: with a peer certificate and CA, any https:// peer URL (members
    // added later included) is dialed with TLS, as etcd does; an https:// URL among the
    // initial members without them is refused now rather than failing at the first dial.
    let dial_pair = match pair(
        s.peer_client_cert_file.as_deref(),
        s.peer_client_key_file.as_deref(),
    )? {
        Some(pair) => Some(pair),
        None => peer_pair()?,
    };
    let https_peer = peer_urls.find(|u| u.starts_with("https://"));
    let dial_ca = s
        .peer_trusted_ca_file
        .as_deref()
        .filter(|f| !f.is_empty())
        .map(PathBuf::from);
    match (dial_pair, dial_ca, https_peer) {
        (Some((cert_file, key_file)), Some(trusted_ca_file), _) => {
            config.peer_client = Some(TlsSettings {
                cert_file,
                key_file,
                trusted_ca_file: Some(trusted_ca_file),
                client_cert_auth: false,
                policy,
            });
        }
        (None, _, Some(url)) => {
            return Err(conflict(format!(
                "peer url {url} uses TLS: --peer-cert-file and --peer-key-file (or --peer-client-cert-file and --peer-client-key-file) must be provided"
            )));
        }
        (Some(_), None, Some(url)) => {
            return Err(conflict(format!(
                "peer url {url} uses TLS: --peer-trusted-ca-file must be provided (raftkv does not read the system's CA store)"
            )));
        }
        _ => {}
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::{Config, ConfigError, InheritedAddrs};
    use super::*;

    fn load(args: &str) -> Result<Config, ConfigError> {
        Config::load(
            args.split_whitespace().map(String::from),
            InheritedAddrs::default(),
        )
        .map(|l| l.config)
    }

    /// The flags kubeadm (1.28-1.33) writes into its etcd static pod manifest.
    const KUBEADM: &str = "--advertise-client-urls=https://10.0.0.5:2379 \
        --cert-file=/etc/kubernetes/pki/etcd/server.crt --client-cert-auth=true \
        --data-dir=/var/lib/etcd --experimental-initial-corrupt-check=true \
        --experimental-watch-progress-notify-interval=5s \
        --initial-advertise-peer-urls=https://10.0.0.5:2380 \
        --initial-cluster=cp1=https://10.0.0.5:2380 \
        --key-file=/etc/kubernetes/pki/etcd/server.key \
        --listen-client-urls=https://127.0.0.1:2379,https://10.0.0.5:2379 \
        --listen-metrics-urls=http://127.0.0.1:2381 --listen-peer-urls=https://10.0.0.5:2380 \
        --name=cp1 --peer-cert-file=/etc/kubernetes/pki/etcd/peer.crt \
        --peer-client-cert-auth=true --peer-key-file=/etc/kubernetes/pki/etcd/peer.key \
        --peer-trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt --snapshot-count=10000 \
        --trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt";

    #[test]
    fn kubeadms_command_line_resolves_to_tls_everywhere_but_metrics() {
        let c = load(KUBEADM).unwrap();
        assert!(c.listen_client.iter().all(|u| u.tls));
        assert!(c.listen_peer.tls && !c.listen_metrics[0].tls);
        let client = c.tls.client.unwrap();
        assert_eq!(
            client.cert_file,
            PathBuf::from("/etc/kubernetes/pki/etcd/server.crt")
        );
        assert!(client.client_cert_auth);
        assert_eq!(
            client.trusted_ca_file,
            Some("/etc/kubernetes/pki/etcd/ca.crt".into())
        );
        let peer = c.tls.peer_server.unwrap();
        assert_eq!(peer.key_file, PathBuf::from("/etc/kubernetes/pki/etcd/peer.key"));
        assert!(peer.client_cert_auth);
        let dial = c.tls.peer_client.unwrap();
        assert_eq!(dial.cert_file, PathBuf::from("/etc/kubernetes/pki/etcd/peer.crt"));
        assert_eq!(c.advertise_peer_url, "https://10.0.0.5:2380");
    }

    #[test]
    fn tls_files_without_an_https_url_are_inert() {
        let c = load("--cert-file /c.pem --key-file /k.pem").unwrap();
        assert_eq!(c.tls, TlsConfig::default());
    }

    #[test]
    fn peer_certificates_dial_https_members_added_later() {
        // All initial members plaintext: a member added later with an https:// URL is
        // still dialed with TLS.
        let c =
            load("--peer-cert-file /p.crt --peer-key-file /p.key --peer-trusted-ca-file /ca.crt").unwrap();
        assert_eq!(c.tls.peer_client.unwrap().cert_file, PathBuf::from("/p.crt"));
        assert!(c.tls.peer_server.is_none());
    }

    #[test]
    fn what_etcd_refuses_is_refused_with_its_words() {
        for (args, expected) in [
            (
                "--listen-peer-urls https://127.0.0.1:2380",
                "TLS key/cert (--peer-cert-file, --peer-key-file) must be provided for peer url https://127.0.0.1:2380 with HTTPS scheme",
            ),
            (
                "--listen-client-urls https://127.0.0.1:2379 --cert-file /c.pem",
                "KeyFile and CertFile must both be present[key: , cert: /c.pem]",
            ),
            (
                "--listen-client-urls https://127.0.0.1:2379 --cert-file /c --key-file /k --client-cert-auth",
                "--client-cert-auth needs --trusted-ca-file",
            ),
            ("--tls-min-version TLS1.1", "unexpected TLS version \"TLS1.1\""),
            (
                "--tls-min-version TLS1.3 --tls-max-version TLS1.2",
                "min version (TLS1.3) is greater than max version (TLS1.2)",
            ),
            (
                "--cipher-suites TLS_FOO",
                "unexpected TLS cipher suite \"TLS_FOO\"",
            ),
            (
                "--initial-cluster default=https://127.0.0.1:2380 --peer-cert-file /c --peer-key-file /k",
                "--peer-trusted-ca-file must be provided",
            ),
            ("--auto-tls", "--auto-tls"),
            ("--peer-crl-file /crl.pem", "revocation lists"),
            ("--client-cert-auth=maybe", "--client-cert-auth"),
        ] {
            let err = load(args).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(expected), "{args}: {err:?} lacks {expected:?}");
        }
    }

    #[test]
    fn the_config_files_transport_security_sections_are_the_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etcd.yaml");
        std::fs::write(
            &path,
            "name: cp1\nlisten-client-urls: https://127.0.0.1:2379\nlisten-peer-urls: https://127.0.0.1:2380\n\
             initial-advertise-peer-urls: https://127.0.0.1:2380\ninitial-cluster: cp1=https://127.0.0.1:2380\n\
             client-transport-security:\n  cert-file: /s.crt\n  key-file: /s.key\n  trusted-ca-file: /ca.crt\n  client-cert-auth: true\n  auto-tls: false\n\
             peer-transport-security:\n  cert-file: /p.crt\n  key-file: /p.key\n  trusted-ca-file: /ca.crt\n  client-cert-auth: true\n\
             cipher-suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]\ntls-min-version: TLS1.2\n",
        )
        .unwrap();
        let c = load(&format!("--config-file {}", path.display())).unwrap();
        let client = c.tls.client.unwrap();
        assert_eq!(client.cert_file, PathBuf::from("/s.crt"));
        assert!(client.client_cert_auth);
        // etcd's config file takes the list as a YAML sequence.
        assert_eq!(
            client.policy.cipher_suites,
            [
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
            ]
        );
        assert_eq!(c.tls.peer_server.unwrap().cert_file, PathBuf::from("/p.crt"));
        assert_eq!(c.tls.peer_client.unwrap().key_file, PathBuf::from("/p.key"));
    }
}
