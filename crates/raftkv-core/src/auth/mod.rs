//! etcd's authentication and authorization (its v3 auth store), as data and rules.
//!
//! Users hold roles, roles hold permissions on key ranges (read, write or both), and the
//! user `root` with the role `root` administers the rest. Every client write carries a
//! [`Caller`] (the user its token or certificate names, and the auth revision the member
//! saw when it accepted the request); while auth is enabled the state machine checks it
//! against the [`AuthState`] it has applied so far, so every member decides alike and a
//! permission revoked before the request is applied is honoured.
//!
//! What lives here:
//! - [`AuthCommand`]: the changes replicated through the log. A password travels only as
//!   a bcrypt hash computed before proposing ([`PasswordHash`], never printed).
//! - [`AuthState`] (`state.rs`): users, roles, the enabled flag and the auth revision,
//!   with etcd 3.4's rules for every change (root user/role, empty names, what bumps the
//!   revision) and its checks (`perms.rs`: range permissions with etcd's interval
//!   conventions; `requests.rs`: which permissions each client request needs).
//! - [`TokenTable`] (`tokens.rs`): etcd's simple tokens, `<16 letters>.<log index>`,
//!   assigned by applying `Authenticate` on every member, so a token is valid on each one
//!   once it has applied that index; each expires after a TTL without use.
//! - [`AuthError`]: etcd's auth errors; the gRPC layer adds "etcdserver: " and the code.

mod perms;
mod requests;
mod state;
mod tokens;

use serde::{Deserialize, Serialize};

pub use perms::Access;
pub use requests::{LeaseKeys, NoLeaseKeys, leases_named};
pub use state::{AuthEffect, AuthState, Role, User};
pub use tokens::{DEFAULT_TOKEN_TTL, TokenTable, parse_token_index};

/// The name of the administrator user and of its role.
pub const ROOT: &str = "root";

/// etcd's `authpb.Permission.Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PermissionType {
    /// Read (range, watch, compare).
    Read,
    /// Write (put, delete).
    Write,
    /// Both.
    ReadWrite,
}

impl PermissionType {
    /// The type of etcd's wire number (0 READ, 1 WRITE, 2 READWRITE).
    pub fn from_wire(value: i32) -> Option<Self> {
        match value {
            0 => Some(PermissionType::Read),
            1 => Some(PermissionType::Write),
            2 => Some(PermissionType::ReadWrite),
            _ => None,
        }
    }

    /// etcd's wire number.
    pub fn to_wire(self) -> i32 {
        match self {
            PermissionType::Read => 0,
            PermissionType::Write => 1,
            PermissionType::ReadWrite => 2,
        }
    }
}

/// A permission on a key range, with etcd's conventions: an empty `range_end` is the
/// single key, `[0]` every key from `key` on, anything else `[key, range_end)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    /// What it allows.
    pub perm_type: PermissionType,
    /// First key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// End of the range (see above).
    #[serde(with = "serde_bytes")]
    pub range_end: Vec<u8>,
}

/// A bcrypt hash in etcd's format (`$2a$<cost>$...`, as Go's `x/crypto/bcrypt` writes).
/// Debug never prints it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PasswordHash(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

/// The random part of a simple token. Debug never prints it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TokenPrefix(pub String);

impl std::fmt::Debug for TokenPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenPrefix(..)")
    }
}

/// Who made a request, as the member that accepted it saw it (etcd's `AuthInfo`). An
/// empty user with revision 0 is a request without credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Caller {
    /// The user name.
    pub user: String,
    /// The auth revision the accepting member had applied.
    pub auth_revision: u64,
}

impl Caller {
    /// A request without credentials.
    pub fn anonymous() -> Self {
        Self::default()
    }
}

/// A change to the auth state, replicated through the log (etcd's auth requests).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthCommand {
    /// Turn auth on (needs the root user with the root role).
    Enable,
    /// Turn auth off.
    Disable,
    /// Assign a simple token to a user whose password the proposing member checked:
    /// the token is `<prefix>.<log index of this entry>`. Refused if the auth store is
    /// no longer at the revision the password was checked at (the password may have
    /// changed since): the proposing member checks again.
    Authenticate {
        /// The user.
        name: String,
        /// 16 random letters chosen by the proposing member (with the index, the token:
        /// never printed).
        token_prefix: TokenPrefix,
        /// The auth revision the password was checked at.
        checked_revision: u64,
    },
    /// Add a user.
    UserAdd {
        /// The user.
        name: String,
        /// Its password's hash (empty for a user without password).
        password: PasswordHash,
        /// etcd's `UserAddOptions.no_password`: the user cannot authenticate by password.
        no_password: bool,
    },
    /// Delete a user.
    UserDelete {
        /// The user.
        name: String,
    },
    /// Change a user's password.
    UserChangePassword {
        /// The user.
        name: String,
        /// The new password's hash.
        password: PasswordHash,
    },
    /// Grant a role to a user.
    UserGrantRole {
        /// The user.
        user: String,
        /// The role.
        role: String,
    },
    /// Revoke a role from a user.
    UserRevokeRole {
        /// The user.
        name: String,
        /// The role.
        role: String,
    },
    /// Add a role.
    RoleAdd {
        /// The role.
        name: String,
    },
    /// Delete a role (and revoke it from every user).
    RoleDelete {
        /// The role.
        role: String,
    },
    /// Grant (or change the type of) a permission on a range to a role.
    RoleGrantPermission {
        /// The role.
        name: String,
        /// The permission.
        perm: Permission,
    },
    /// Revoke the permission on exactly `[key, range_end)` from a role.
    RoleRevokePermission {
        /// The role.
        role: String,
        /// Its key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// Its range end.
        #[serde(with = "serde_bytes")]
        range_end: Vec<u8>,
    },
}

impl AuthCommand {
    /// etcd's `needAdminPermission`: everything but `Authenticate` needs root (while auth
    /// is enabled).
    pub fn needs_admin(&self) -> bool {
        !matches!(self, AuthCommand::Authenticate { .. })
    }

    /// A short name for logs (never a password hash).
    pub fn name(&self) -> &'static str {
        match self {
            AuthCommand::Enable => "auth-enable",
            AuthCommand::Disable => "auth-disable",
            AuthCommand::Authenticate { .. } => "authenticate",
            AuthCommand::UserAdd { .. } => "user-add",
            AuthCommand::UserDelete { .. } => "user-delete",
            AuthCommand::UserChangePassword { .. } => "user-change-password",
            AuthCommand::UserGrantRole { .. } => "user-grant-role",
            AuthCommand::UserRevokeRole { .. } => "user-revoke-role",
            AuthCommand::RoleAdd { .. } => "role-add",
            AuthCommand::RoleDelete { .. } => "role-delete",
            AuthCommand::RoleGrantPermission { .. } => "role-grant-permission",
            AuthCommand::RoleRevokePermission { .. } => "role-revoke-permission",
        }
    }
}

/// An auth change as a client asks for it: [`AuthCommand`]s, except that a new password
/// is still plain text (the member hashes it before proposing). Debug never prints a
/// password.
#[derive(Clone, PartialEq, Eq)]
pub enum AuthChange {
    /// A change that carries no password.
    Command(AuthCommand),
    /// Add a user with a password (`no_password`: without one; `password` is ignored).
    UserAdd {
        /// The user.
        name: String,
        /// Its password.
        password: String,
        /// etcd's `UserAddOptions.no_password`.
        no_password: bool,
    },
    /// Change a user's password.
    UserChangePassword {
        /// The user.
        name: String,
        /// The new password.
        password: String,
    },
}

impl std::fmt::Debug for AuthChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthChange::Command(c) => c.fmt(f),
            AuthChange::UserAdd {
                name, no_password, ..
            } => f
                .debug_struct("UserAdd")
                .field("name", name)
                .field("no_password", no_password)
                .finish_non_exhaustive(),
            AuthChange::UserChangePassword { name, .. } => f
                .debug_struct("UserChangePassword")
                .field("name", name)
                .finish_non_exhaustive(),
        }
    }
}

/// etcd's auth errors. The texts are etcd's after its "etcdserver: " prefix (the gRPC
/// layer adds it and etcd's status code); etcd clients decide by them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum AuthError {
    /// `auth enable` without a root user.
    #[error("root user does not exist")]
    RootUserNotExist,
    /// `auth enable` while root lacks the root role (etcdctl then adds it).
    #[error("root user does not have root role")]
    RootRoleNotExist,
    /// The user exists already.
    #[error("user name already exists")]
    UserAlreadyExist,
    /// No user name given, or a request without credentials while auth is enabled.
    #[error("user name is empty")]
    UserEmpty,
    /// No such user.
    #[error("user name not found")]
    UserNotFound,
    /// The role exists already.
    #[error("role name already exists")]
    RoleAlreadyExist,
    /// No such role.
    #[error("role name not found")]
    RoleNotFound,
    /// No role name given.
    #[error("role name is empty")]
    RoleEmpty,
    /// Wrong user or password.
    #[error("authentication failed, invalid user ID or password")]
    AuthFailed,
    /// A password was given for a user added without one (etcd answers it unmapped:
    /// code Unknown, its own "auth: " text).
    #[error("authentication failed, password was given for no password user")]
    NoPasswordUser,
    /// The user may not do this.
    #[error("permission denied")]
    PermissionDenied,
    /// Revoking a role the user does not hold.
    #[error("role is not granted to the user")]
    RoleNotGranted,
    /// Revoking a permission the role does not hold.
    #[error("permission is not granted to the role")]
    PermissionNotGranted,
    /// An auth call that needs auth enabled.
    #[error("authentication is not enabled")]
    AuthNotEnabled,
    /// The token is unknown here, expired or malformed.
    #[error("invalid auth token")]
    InvalidAuthToken,
    /// Deleting root, its role, or revoking root from root while auth is enabled.
    #[error("invalid auth management")]
    InvalidAuthMgmt,
    /// The auth state changed between accepting the request and applying it.
    #[error("revision of auth store is old")]
    AuthOldRevision,
}
