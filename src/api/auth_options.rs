//! [`AuthOptions`]: how a node authenticates clients, set on the builder and held by the
//! running node (apart from `api/auth.rs`, whose calls are methods of that node).

use std::time::Duration;

/// etcd's default `--bcrypt-cost`.
pub const DEFAULT_BCRYPT_COST: u32 = 10;

/// How the node authenticates clients (etcd's `--auth-token simple`,
/// `--auth-token-ttl`, `--bcrypt-cost`, `--client-cert-auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthOptions {
    /// bcrypt cost of new password hashes (4 to 31).
    pub bcrypt_cost: u32,
    /// How long a simple token lives without use.
    pub token_ttl: Duration,
    /// A verified client certificate's common name is the user (when the request
    /// carries no token), as etcd's `--client-cert-auth`.
    pub client_cert_auth: bool,
}

impl Default for AuthOptions {
    fn default() -> Self {
        Self {
            bcrypt_cost: DEFAULT_BCRYPT_COST,
            token_ttl: raftkv_core::auth::DEFAULT_TOKEN_TTL,
            client_cert_auth: false,
        }
    }
}
