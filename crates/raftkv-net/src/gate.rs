//! Who a client request comes from and what it may do: the services' side of etcd's
//! auth. A service reads the [`Credentials`] a request presents (etcd's `token`
//! metadata; the common name of its verified client certificate), asks the
//! [`AuthGate`] (the node) who that is, and, for the calls etcd checks outside the log
//! (reads, watches, maintenance, locks and elections), whether that caller may make the
//! call. Writes carry the caller into the log and are checked when applied.
//!
//! Which calls look at credentials at all follows etcd 3.4: everything that goes through
//! its log (writes, compactions, lease grants and revokes, alarms, auth changes), reads,
//! watches, the admin maintenance calls, member changes (root only), locks and
//! elections. Keep-alives, lease lookups, `MemberList`, `Status` and `MoveLeader` do
//! not, so a stale token does not break them.

use std::future::Future;
use std::sync::Arc;

use raftkv_core::Error;
use raftkv_core::auth::Caller;
use tonic::Request;
use tonic::transport::CertificateDer;

/// What a request presented.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// etcd's `token` metadata (a simple token from `Authenticate`).
    pub token: Option<String>,
    /// The client's verified certificate chain (TLS listeners only), parsed only when
    /// its common name is asked for.
    pub certificates: Option<Arc<Vec<CertificateDer<'static>>>>,
}

impl Credentials {
    /// The common name of the client's certificate, if it has one.
    pub fn common_name(&self) -> Option<String> {
        self.certificates
            .as_ref()
            .and_then(|chain| chain.first().and_then(|cert| common_name(cert.as_ref())))
    }
}

/// What a call needs, beyond a known caller.
#[derive(Debug, Clone, Copy)]
pub enum Need<'a> {
    /// Read `[key, range_end)` (etcd's conventions).
    Read(&'a [u8], &'a [u8]),
    /// Write `[key, range_end)`.
    Write(&'a [u8], &'a [u8]),
    /// Root.
    Admin,
    /// Write on every key attached to this lease (attaching a key to a lease takes the
    /// right to revoke it, which deletes them all).
    LeaseKeys(i64),
}

/// Identifies callers and checks what they may do (the node).
pub trait AuthGate: Send + Sync + 'static {
    /// Who presented `credentials`: a token unknown here (or expired) is refused with
    /// etcd's "invalid auth token", even while auth is disabled, as etcd does; no
    /// credentials are an anonymous caller.
    fn identify(&self, credentials: Credentials) -> impl Future<Output = Result<Caller, Error>> + Send;

    /// Refuse `need` unless `caller` may (nothing is refused while auth is disabled).
    fn authorize(&self, caller: &Caller, need: Need<'_>) -> Result<(), Error>;
}

/// The credentials `request` presents.
pub fn credentials_of<T>(request: &Request<T>) -> Credentials {
    // etcd reads `token`, else the HTTP gateway's `authorization`.
    let metadata = request.metadata();
    let token = metadata
        .get("token")
        .or_else(|| metadata.get("authorization"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Credentials {
        token,
        certificates: request.peer_certs(),
    }
}

/// The (first) common name of a DER certificate's subject.
fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// Identify the caller of `request` and check `needs` (all of them).
pub async fn admit<G: AuthGate, T>(
    gate: &G,
    request: &Request<T>,
    needs: &[Need<'_>],
) -> Result<Caller, Error> {
    let caller = gate.identify(credentials_of(request)).await?;
    for need in needs {
        gate.authorize(&caller, *need)?;
    }
    Ok(caller)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_token_and_a_certificates_common_name() {
        let mut request = Request::new(());
        request.metadata_mut().insert("token", "abc.7".parse().unwrap());
        assert_eq!(credentials_of(&request).token.as_deref(), Some("abc.7"));
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "alice");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(common_name(cert.der()).as_deref(), Some("alice"));
        assert_eq!(common_name(b"not a certificate"), None);
    }
}
