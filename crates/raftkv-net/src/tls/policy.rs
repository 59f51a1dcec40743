//! etcd's TLS policy flags (`--tls-min-version`, `--tls-max-version`, `--cipher-suites`)
//! turned into a rustls crypto provider and version list, with etcd's error texts.
//!
//! As in Go, `--cipher-suites` orders and limits the TLS 1.2 suites; TLS 1.3 suites are
//! not configurable (Go ignores them in the list, and so does this). Go names the
//! suites rustls lacks (CBC, RSA key exchange, 3DES, RC4): those are refused by name.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{SupportedCipherSuite, SupportedProtocolVersion};

use super::TlsError;

/// A TLS protocol version etcd lets an operator choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2 (etcd's default minimum).
    Tls12,
    /// TLS 1.3.
    Tls13,
}

impl TlsVersion {
    /// etcd's spelling ("TLS1.2", "TLS1.3").
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "TLS1.2",
            TlsVersion::Tls13 => "TLS1.3",
        }
    }

    fn rustls(self) -> &'static SupportedProtocolVersion {
        match self {
            TlsVersion::Tls12 => &rustls::version::TLS12,
            TlsVersion::Tls13 => &rustls::version::TLS13,
        }
    }
}

impl std::str::FromStr for TlsVersion {
    type Err = TlsError;

    fn from_str(s: &str) -> Result<Self, TlsError> {
        match s {
            "TLS1.2" => Ok(TlsVersion::Tls12),
            "TLS1.3" => Ok(TlsVersion::Tls13),
            // etcd 3.5's text (client/pkg/tlsutil/versions.go).
            other => Err(TlsError::Invalid(format!(
                "unexpected TLS version {other:?} (must be one of: TLS1.2, TLS1.3)"
            ))),
        }
    }
}

/// Versions and cipher suites, shared by the client and peer ports as in etcd.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsPolicy {
    /// Lowest version accepted; `None`: TLS 1.2.
    pub min_version: Option<TlsVersion>,
    /// Highest version offered; `None`: TLS 1.3.
    pub max_version: Option<TlsVersion>,
    /// TLS 1.2 cipher suites by Go's names, in preference order; empty: rustls's.
    pub cipher_suites: Vec<String>,
}

/// Go's names of the suites rustls does not implement (`tls.CipherSuites()` and
/// `tls.InsecureCipherSuites()` minus rustls's): known, so refused as unsupported
/// rather than unexpected.
const GO_SUITES_RUSTLS_LACKS: &[&str] = &[
    "TLS_RSA_WITH_RC4_128_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
];

/// Go's names of the TLS 1.3 suites: accepted in the list and, as in Go, ignored.
const GO_TLS13_SUITES: &[&str] = &[
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

impl TlsPolicy {
    /// Checks the settings as etcd does at start-up.
    pub fn validate(&self) -> Result<(), TlsError> {
        self.versions()?;
        self.provider()?;
        Ok(())
    }

    /// The versions between the minimum and the maximum.
    pub(crate) fn versions(&self) -> Result<Vec<&'static SupportedProtocolVersion>, TlsError> {
        let min = self.min_version.unwrap_or(TlsVersion::Tls12);
        let max = self.max_version.unwrap_or(TlsVersion::Tls13);
        if min > max {
            return Err(TlsError::Invalid(format!(
                "min version ({}) is greater than max version ({})",
                min.as_str(),
                max.as_str()
            )));
        }
        if min == TlsVersion::Tls13 && !self.cipher_suites.is_empty() {
            return Err(TlsError::Invalid(
                "cipher suites cannot be configured when only TLS1.3 is enabled".into(),
            ));
        }
        Ok([TlsVersion::Tls12, TlsVersion::Tls13]
            .into_iter()
            .filter(|v| (min..=max).contains(v))
            .map(TlsVersion::rustls)
            .collect())
    }

    /// ring's provider, its TLS 1.2 suites limited and ordered by `cipher_suites`.
    pub(crate) fn provider(&self) -> Result<Arc<CryptoProvider>, TlsError> {
        // ring's provider has no post-quantum key exchange (hence deprecated); aws-lc-rs
        // has, but needs cmake and a C toolchain for every build. Go 1.22 (etcd 3.5)
        // offers none either.
        #[allow(deprecated)]
        let mut provider = rustls::crypto::ring::default_provider();
        if self.cipher_suites.is_empty() {
            return Ok(Arc::new(provider));
        }
        let available = provider.cipher_suites.clone();
        let mut chosen: Vec<SupportedCipherSuite> = available
            .iter()
            .filter(|s| matches!(s, SupportedCipherSuite::Tls13(_)))
            .copied()
            .collect();
        for name in &self.cipher_suites {
            if GO_TLS13_SUITES.contains(&name.as_str()) {
                continue;
            }
            if GO_SUITES_RUSTLS_LACKS.contains(&name.as_str()) {
                return Err(TlsError::Invalid(format!(
                    "TLS cipher suite {name:?} is not supported by raftkv (rustls offers only AEAD suites with ECDHE key exchange)"
                )));
            }
            // Go also knows the ChaCha20 suites without their hash (etcd's tlsutil).
            let canonical = match name.as_str() {
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" => "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" => "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
                other => other,
            };
            let suite = available
                .iter()
                .find(|s| {
                    matches!(s, SupportedCipherSuite::Tls12(_)) && s.suite().as_str() == Some(canonical)
                })
                .ok_or_else(|| TlsError::Invalid(format!("unexpected TLS cipher suite {name:?}")))?;
            if !chosen.contains(suite) {
                chosen.push(*suite);
            }
        }
        provider.cipher_suites = chosen;
        Ok(Arc::new(provider))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suites(names: &[&str]) -> TlsPolicy {
        TlsPolicy {
            cipher_suites: names.iter().map(|s| s.to_string()).collect(),
            ..TlsPolicy::default()
        }
    }

    #[test]
    fn versions_span_the_minimum_to_the_maximum() {
        assert_eq!(TlsPolicy::default().versions().map(|v| v.len()).ok(), Some(2));
        let only13 = TlsPolicy {
            min_version: Some(TlsVersion::Tls13),
            ..TlsPolicy::default()
        };
        assert_eq!(only13.versions().ok(), Some(vec![&rustls::version::TLS13]));
        let inverted = TlsPolicy {
            min_version: Some(TlsVersion::Tls13),
            max_version: Some(TlsVersion::Tls12),
            ..TlsPolicy::default()
        };
        assert_eq!(
            inverted.versions().err().map(|e| e.to_string()).as_deref(),
            Some("min version (TLS1.3) is greater than max version (TLS1.2)")
        );
        assert!("TLS1.1".parse::<TlsVersion>().is_err());
    }

    #[test]
    fn cipher_suites_keep_tls13_and_order_tls12_as_given() {
        let provider = suites(&[
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            "TLS_AES_128_GCM_SHA256",
        ])
        .provider();
        let names: Vec<_> = provider
            .map(|p| {
                p.cipher_suites
                    .iter()
                    .filter_map(|s| s.suite().as_str())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            names[names.len() - 2..],
            [
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
            ]
        );
        assert!(names.iter().filter(|n| n.starts_with("TLS13_")).count() >= 2);
    }

    #[test]
    fn unknown_and_unsupported_suites_are_refused_by_name() {
        let unknown = suites(&["TLS_NOPE"]).validate().err().map(|e| e.to_string());
        assert_eq!(
            unknown.as_deref(),
            Some("unexpected TLS cipher suite \"TLS_NOPE\"")
        );
        let cbc = suites(&["TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"])
            .validate()
            .err()
            .map(|e| e.to_string());
        assert!(cbc.is_some_and(|e| e.contains("not supported by raftkv")));
        let tls13_only = TlsPolicy {
            min_version: Some(TlsVersion::Tls13),
            ..suites(&["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"])
        };
        assert!(tls13_only.validate().is_err());
    }
}
