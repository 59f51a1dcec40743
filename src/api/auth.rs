//! etcd's auth on the node: who a request comes from ([`raftkv_net::AuthGate`]), the
//! `Auth` service's calls ([`raftkv_net::AuthBackend`]), and the embedded API's auth
//! changes.
//!
//! - Changes (users, roles, permissions, enable/disable) go through the log as
//!   [`Command::Auth`]; a password is hashed with bcrypt (etcd's `$2a$` format, cost
//!   [`AuthOptions::bcrypt_cost`]) off the async workers before the proposal, so no
//!   password reaches the log, a snapshot or a log line.
//! - `Authenticate` checks the password here against this member's applied auth store
//!   (after a linearizable read barrier, as etcd), then proposes a token prefix; every
//!   member assigns the token when it applies the entry. The entry names the auth
//!   revision of the check; if the store moved on, apply refuses it and the check is
//!   redone, as etcd does.
//! - A client write goes into the log wrapped with its caller ([`Command::AsUser`]) and
//!   is checked when applied, if auth is enabled by then; reads, watches and the admin
//!   calls are checked against this member's applied store (a linearizable read after
//!   its read barrier, as etcd).
//! - The embedded API is trusted: its calls are the process's own (which holds the data
//!   directory anyway), so they carry no caller and are never refused by auth. Programs
//!   that want checks for their own users connect over gRPC with credentials.

use std::sync::Arc;

use raftkv_core::auth::{
    AuthChange, AuthCommand, AuthError, AuthState, Caller, PasswordHash, Permission, TokenPrefix,
    parse_token_index,
};
use raftkv_core::kv::ResponseHeader;
use raftkv_core::{Command, Error, RequestError, Response, Result};
use raftkv_net::{AuthBackend, AuthGate, Credentials, Need};

use crate::node::Node;

fn auth_error(e: AuthError) -> Error {
    Error::Request(RequestError::Auth(e))
}

/// 16 random letters, etcd's simple-token prefix.
fn token_prefix() -> Result<String> {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| Error::Internal(format!("no randomness for a token: {e}")))?;
    // 256 is not a multiple of 52: the first 4 letters are 1/256 likelier; the token
    // only has to be unguessable, not uniform.
    Ok(bytes
        .iter()
        .map(|b| LETTERS[usize::from(*b) % LETTERS.len()] as char)
        .collect())
}

impl Node {
    /// The auth store as this member has applied it.
    pub fn auth_state(&self) -> Arc<AuthState> {
        self.inner.shared.auth_state()
    }

    /// `command` as `caller` made it: wrapped for the check at apply (`None`: the
    /// embedded API, as is). Wrapped whether or not this member has seen auth enabled:
    /// it may lag a cluster where auth is on, and apply decides by the store it has.
    pub(crate) fn as_caller(&self, caller: Option<Caller>, command: Command) -> Command {
        match caller {
            Some(caller) => Command::AsUser {
                caller,
                command: Box::new(command),
            },
            None => command,
        }
    }

    /// Make an auth change (the embedded API: trusted, see the module doc).
    pub async fn auth_change(&self, change: AuthChange) -> Result<ResponseHeader> {
        self.auth_change_as(None, change).await
    }

    async fn auth_change_as(&self, caller: Option<Caller>, change: AuthChange) -> Result<ResponseHeader> {
        // Refuse a non-root caller before hashing (bcrypt is the expensive part); apply
        // checks again against the store it has.
        if let Some(caller) = &caller {
            self.auth_state().check_admin(caller).map_err(auth_error)?;
        }
        let command = self.hashed(change).await?;
        tracing::info!(change = command.name(), "auth change requested");
        match self
            .propose_command(self.as_caller(caller, Command::Auth(command)))
            .await?
        {
            (Response::Done { revision }, term) => Ok(self.header_at(revision, term)),
            (Response::Rejected(e), _) => Err(e.into()),
            (other, _) => Err(crate::api::kv::unexpected(other)),
        }
    }

    /// The change with its password hashed (bcrypt, off the async workers).
    async fn hashed(&self, change: AuthChange) -> Result<AuthCommand> {
        let cost = self.inner.auth.bcrypt_cost;
        let hash = |password: String| {
            crate::blocking::off_workers("password hashing", move || {
                let parts = bcrypt::hash_with_result(password, cost).map_err(|e| {
                    Error::Request(RequestError::Unsupported(format!("password hashing: {e}")))
                })?;
                Ok(PasswordHash(
                    parts.format_for_version(bcrypt::Version::TwoA).into_bytes(),
                ))
            })
        };
        Ok(match change {
            AuthChange::Command(command) => command,
            AuthChange::UserAdd {
                name,
                password,
                no_password,
            } => AuthCommand::UserAdd {
                password: if no_password || name.is_empty() {
                    PasswordHash::default()
                } else {
                    hash(password).await?
                },
                name,
                no_password,
            },
            AuthChange::UserChangePassword { name, password } => AuthCommand::UserChangePassword {
                password: hash(password).await?,
                name,
            },
        })
    }

    /// Check `name`'s password and have every member assign it a new simple token.
    #[tracing::instrument(level = "debug", skip(self, password))]
    pub async fn authenticate(&self, name: &str, password: &str) -> Result<(ResponseHeader, String)> {
        // A change of the auth store between the check and the proposal (etcd loops on
        // it without bound; a few rounds are plenty).
        for _ in 0..8 {
            self.read_barrier().await?;
            let state = self.auth_state();
            let hash = state.password_of(name).map_err(auth_error)?.clone();
            let (password, checked) = (password.to_owned(), state.revision);
            let matches = crate::blocking::off_workers("password check", move || {
                Ok(bcrypt::verify(password, &String::from_utf8_lossy(&hash.0)).unwrap_or(false))
            })
            .await?;
            if !matches {
                return Err(auth_error(AuthError::AuthFailed));
            }
            // Applied only if the store is still at the revision the password was
            // checked at, on every member alike (else checked again).
            let command = Command::Auth(AuthCommand::Authenticate {
                name: name.to_owned(),
                token_prefix: TokenPrefix(token_prefix()?),
                checked_revision: checked,
            });
            return match self.propose_command(command).await? {
                (Response::Authenticated { token, revision }, term) => {
                    Ok((self.header_at(revision, term), token))
                }
                (Response::Rejected(RequestError::Auth(AuthError::AuthOldRevision)), _) => continue,
                (Response::Rejected(e), _) => Err(e.into()),
                (other, _) => Err(crate::api::kv::unexpected(other)),
            };
        }
        Err(Error::Timeout(
            "the auth store kept changing during authentication".into(),
        ))
    }

    fn header_at(&self, revision: i64, term: u64) -> ResponseHeader {
        let mut header = self.response_header();
        header.revision = revision;
        header.raft_term = term;
        header
    }

    /// The applied store after a linearizable barrier, for the auth reads (etcd serves
    /// them through its log).
    async fn auth_read(
        &self,
        check: impl FnOnce(&AuthState) -> std::result::Result<(), AuthError>,
    ) -> Result<Arc<AuthState>> {
        self.read_barrier().await?;
        let state = self.auth_state();
        check(&state).map_err(auth_error)?;
        Ok(state)
    }
}

impl AuthGate for Node {
    async fn identify(&self, credentials: Credentials) -> Result<Caller> {
        let invalid = || auth_error(AuthError::InvalidAuthToken);
        if let Some(token) = credentials.token {
            // The entry that assigned it may not be applied here yet: wait for it.
            let index = parse_token_index(&token).ok_or_else(invalid)?;
            self.applied()
                .wait_for_timeout(index, self.inner.request_timeout)
                .await
                .map_err(|_| invalid())?;
            let user = self.inner.shared.tokens().user_of(&token).ok_or_else(invalid)?;
            return Ok(Caller {
                user,
                auth_revision: self.auth_state().revision,
            });
        }
        if self.inner.auth.client_cert_auth
            && let Some(user) = credentials.common_name()
        {
            return Ok(Caller {
                user,
                auth_revision: self.auth_state().revision,
            });
        }
        Ok(Caller::anonymous())
    }

    fn authorize(&self, caller: &Caller, need: Need<'_>) -> Result<()> {
        let state = self.auth_state();
        let checked = match need {
            Need::Read(key, end) => state.check_access(caller, raftkv_core::auth::Access::Read, key, end),
            Need::Write(key, end) => state.check_access(caller, raftkv_core::auth::Access::Write, key, end),
            Need::Admin => state.check_admin(caller),
            Need::LeaseKeys(_) if !state.enabled => Ok(()),
            Need::LeaseKeys(id) => {
                let keys = self
                    .inner
                    .reader
                    .lease_keys(id)
                    .map_err(|e| Error::Storage(e.to_string()))?;
                keys.iter().try_for_each(|key| {
                    state.check_access(caller, raftkv_core::auth::Access::Write, key, &[])
                })
            }
        };
        checked.map_err(auth_error)
    }
}

impl AuthBackend for Node {
    async fn authenticate(&self, name: String, password: String) -> Result<(ResponseHeader, String)> {
        Node::authenticate(self, &name, &password).await
    }

    async fn auth_change(&self, caller: Caller, change: AuthChange) -> Result<ResponseHeader> {
        self.auth_change_as(Some(caller), change).await
    }

    async fn user_get(&self, caller: Caller, name: String) -> Result<(ResponseHeader, Vec<String>)> {
        // etcd: root, or the user asking about itself.
        let state = self
            .auth_read(|s| match s.check_admin(&caller) {
                Err(e) if name != caller.user => Err(e),
                _ => Ok(()),
            })
            .await?;
        let user = state
            .users
            .get(&name)
            .ok_or_else(|| auth_error(AuthError::UserNotFound))?;
        Ok((self.response_header(), user.roles.clone()))
    }

    async fn user_list(&self, caller: Caller) -> Result<(ResponseHeader, Vec<String>)> {
        let state = self.auth_read(|s| s.check_admin(&caller)).await?;
        Ok((self.response_header(), state.users.keys().cloned().collect()))
    }

    async fn role_get(&self, caller: Caller, role: String) -> Result<(ResponseHeader, Vec<Permission>)> {
        // etcd: root, or a user holding the role.
        let state = self
            .auth_read(|s| match s.check_admin(&caller) {
                Err(e) if !s.has_role(&caller.user, &role) => Err(e),
                _ => Ok(()),
            })
            .await?;
        let found = state
            .roles
            .get(&role)
            .ok_or_else(|| auth_error(AuthError::RoleNotFound))?;
        Ok((self.response_header(), found.permissions.clone()))
    }

    async fn role_list(&self, caller: Caller) -> Result<(ResponseHeader, Vec<String>)> {
        let state = self.auth_read(|s| s.check_admin(&caller)).await?;
        Ok((self.response_header(), state.roles.keys().cloned().collect()))
    }
}
