//! Authentication as etcd's clients do it: with [`ClientOptions::credentials`](crate::ClientOptions::credentials)
//! (`crate::ClientOptions`), the client calls `Authenticate` once, caches the simple
//! token it gets (valid on every member of the cluster) and sends it as the `token`
//! metadata of every call and watch. When a server answers "invalid auth token" (the
//! token expired or the member restarted) or "revision of auth store is old" (the auth
//! store changed while the call was in flight; nothing was applied), the client drops the
//! token, authenticates again and retries that call once, as etcd's `clientv3` does.

use std::time::Duration;

use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::auth_client::AuthClient;
use tonic::Status;
use tonic::transport::Channel;

use crate::endpoints::MAX_RESPONSE_BYTES;

/// A user name and password. Debug never prints the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user.
    pub user: String,
    /// Its password.
    pub password: String,
}

impl Credentials {
    /// `user` with `password`.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            password: password.into(),
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// The token of a client's credentials, shared by its clones. Debug never prints it.
#[derive(Default)]
pub(crate) struct TokenCache {
    token: parking_lot::Mutex<Option<String>>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("authenticated", &self.token.lock().is_some())
            .finish()
    }
}

impl TokenCache {
    /// The cached token, or a new one from the server on `channel` (within `timeout`).
    pub(crate) async fn get(
        &self,
        credentials: &Credentials,
        channel: Channel,
        timeout: Duration,
    ) -> Result<String, Status> {
        if let Some(token) = self.token.lock().clone() {
            return Ok(token);
        }
        let mut request = tonic::Request::new(pb::AuthenticateRequest {
            name: credentials.user.clone(),
            password: credentials.password.clone(),
        });
        request.set_timeout(timeout);
        let answer = tokio::time::timeout(
            timeout,
            AuthClient::new(channel)
                .max_decoding_message_size(MAX_RESPONSE_BYTES)
                .authenticate(request),
        )
        .await
        .map_err(|_| Status::deadline_exceeded("no answer to Authenticate in time"))??;
        let token = answer.into_inner().token;
        *self.token.lock() = Some(token.clone());
        Ok(token)
    }

    /// Forget `stale` (if it is still the cached one): the next call authenticates.
    pub(crate) fn forget(&self, stale: &str) {
        let mut token = self.token.lock();
        if token.as_deref() == Some(stale) {
            *token = None;
        }
    }
}

/// Whether a server refused a call for its token alone: authenticating again and
/// retrying is safe (nothing was applied) and may succeed.
pub(crate) fn token_refused(status: &Status) -> bool {
    matches!(
        status.message(),
        "etcdserver: invalid auth token" | "etcdserver: revision of auth store is old"
    ) || status.message().contains("desc = etcdserver: invalid auth token")
}

/// Put `token` in `request`'s metadata.
pub(crate) fn attach<T>(request: &mut tonic::Request<T>, token: &str) -> Result<(), Status> {
    let value = token
        .parse()
        .map_err(|_| Status::internal("the server's token is not valid metadata"))?;
    request.metadata_mut().insert("token", value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_password() {
        let shown = format!("{:?}", Credentials::new("alice", "s3cret"));
        assert!(shown.contains("alice") && !shown.contains("s3cret"), "{shown}");
        assert!(token_refused(&Status::unauthenticated(
            "etcdserver: invalid auth token"
        )));
        assert!(!token_refused(&Status::permission_denied(
            "etcdserver: permission denied"
        )));
    }
}
