//! [`AuthState`]: users, roles, the enabled flag and the auth revision, and applying an
//! [`AuthCommand`] to them with etcd 3.4's rules (`auth/store.go`).
//!
//! The revision counts changes: every change that succeeds bumps it (a grant of a role
//! the user already holds does not, nor does enabling auth or authenticating), and a
//! request accepted at an older revision is refused when applied
//! ([`AuthError::AuthOldRevision`]), as in etcd.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::perms::{self, Access};
use super::{AuthCommand, AuthError, Caller, PasswordHash, Permission, ROOT};

/// A user (etcd's `authpb.User`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Its password's bcrypt hash (empty without password).
    pub password: PasswordHash,
    /// Its roles, sorted.
    pub roles: Vec<String>,
    /// Added with `no_password`: it cannot authenticate by password.
    pub no_password: bool,
}

impl User {
    fn has_root_role(&self) -> bool {
        self.roles.binary_search_by(|r| r.as_str().cmp(ROOT)).is_ok()
    }
}

/// A role (etcd's `authpb.Role`): its permissions, sorted by key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Role {
    /// The permissions.
    pub permissions: Vec<Permission>,
}

/// What applying a command did beyond the state itself: the token bookkeeping that each
/// member does in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthEffect {
    /// Nothing beyond the state.
    None,
    /// Assign this token to this user.
    Assign {
        /// The user.
        user: String,
        /// The token.
        token: String,
    },
    /// Drop every token of this user (deleted, or its password changed).
    Invalidate(String),
    /// Drop every token (auth disabled).
    DropAll,
}

/// The auth store. Serialized whole as one record of the state tree and of snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AuthState {
    /// Whether auth is enabled.
    pub enabled: bool,
    /// The auth revision.
    pub revision: u64,
    /// Users by name.
    pub users: BTreeMap<String, User>,
    /// Roles by name.
    pub roles: BTreeMap<String, Role>,
}

impl AuthState {
    /// etcd starts its auth store at revision 1.
    pub fn new() -> Self {
        Self {
            revision: 1,
            ..Self::default()
        }
    }

    /// Apply `command` (its admin check already passed); `index` is its log index (it
    /// names simple tokens).
    pub fn apply(&mut self, command: &AuthCommand, index: u64) -> Result<AuthEffect, AuthError> {
        let effect = match command {
            AuthCommand::Enable => {
                if self.enabled {
                    return Ok(AuthEffect::None);
                }
                let root = self.users.get(ROOT).ok_or(AuthError::RootUserNotExist)?;
                if !root.has_root_role() {
                    return Err(AuthError::RootRoleNotExist);
                }
                self.enabled = true;
                return Ok(AuthEffect::None);
            }
            AuthCommand::Disable => {
                if !self.enabled {
                    return Ok(AuthEffect::None);
                }
                self.enabled = false;
                AuthEffect::DropAll
            }
            AuthCommand::Authenticate {
                name,
                token_prefix,
                checked_revision,
            } => {
                if !self.enabled {
                    return Err(AuthError::AuthNotEnabled);
                }
                if *checked_revision != self.revision {
                    return Err(AuthError::AuthOldRevision);
                }
                let user = self.users.get(name).ok_or(AuthError::AuthFailed)?;
                if user.no_password {
                    return Err(AuthError::AuthFailed);
                }
                return Ok(AuthEffect::Assign {
                    user: name.clone(),
                    token: format!("{}.{index}", token_prefix.0),
                });
            }
            AuthCommand::UserAdd {
                name,
                password,
                no_password,
            } => {
                if name.is_empty() {
                    return Err(AuthError::UserEmpty);
                }
                if self.users.contains_key(name) {
                    return Err(AuthError::UserAlreadyExist);
                }
                self.users.insert(
                    name.clone(),
                    User {
                        password: password.clone(),
                        roles: Vec::new(),
                        no_password: *no_password,
                    },
                );
                AuthEffect::None
            }
            AuthCommand::UserDelete { name } => {
                if self.enabled && name == ROOT {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                self.users.remove(name).ok_or(AuthError::UserNotFound)?;
                AuthEffect::Invalidate(name.clone())
            }
            AuthCommand::UserChangePassword { name, password } => {
                let user = self.users.get_mut(name).ok_or(AuthError::UserNotFound)?;
                user.password = password.clone();
                AuthEffect::Invalidate(name.clone())
            }
            AuthCommand::UserGrantRole { user, role } => {
                if role != ROOT && !self.roles.contains_key(role) {
                    if !self.users.contains_key(user) {
                        return Err(AuthError::UserNotFound);
                    }
                    return Err(AuthError::RoleNotFound);
                }
                let entry = self.users.get_mut(user).ok_or(AuthError::UserNotFound)?;
                match entry.roles.binary_search(role) {
                    Ok(_) => return Ok(AuthEffect::None),
                    Err(at) => entry.roles.insert(at, role.clone()),
                }
                AuthEffect::None
            }
            AuthCommand::UserRevokeRole { name, role } => {
                if self.enabled && name == ROOT && role == ROOT {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                let user = self.users.get_mut(name).ok_or(AuthError::UserNotFound)?;
                let before = user.roles.len();
                user.roles.retain(|r| r != role);
                if user.roles.len() == before {
                    return Err(AuthError::RoleNotGranted);
                }
                AuthEffect::None
            }
            AuthCommand::RoleAdd { name } => {
                if name.is_empty() {
                    return Err(AuthError::RoleEmpty);
                }
                if self.roles.contains_key(name) {
                    return Err(AuthError::RoleAlreadyExist);
                }
                self.roles.insert(name.clone(), Role::default());
                AuthEffect::None
            }
            AuthCommand::RoleDelete { role } => {
                if self.enabled && role == ROOT {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                self.roles.remove(role).ok_or(AuthError::RoleNotFound)?;
                for user in self.users.values_mut() {
                    user.roles.retain(|r| r != role);
                }
                AuthEffect::None
            }
            AuthCommand::RoleGrantPermission { name, perm } => {
                let role = self.roles.get_mut(name).ok_or(AuthError::RoleNotFound)?;
                // etcd updates the type of the permission on the same range, else adds
                // one and keeps them sorted by key (a stable sort: equal keys keep order).
                let at = role.permissions.partition_point(|p| p.key < perm.key);
                match role.permissions.get_mut(at) {
                    Some(p) if p.key == perm.key && p.range_end == perm.range_end => {
                        p.perm_type = perm.perm_type
                    }
                    _ => {
                        role.permissions.push(perm.clone());
                        role.permissions.sort_by(|a, b| a.key.cmp(&b.key));
                    }
                }
                AuthEffect::None
            }
            AuthCommand::RoleRevokePermission { role, key, range_end } => {
                let entry = self.roles.get_mut(role).ok_or(AuthError::RoleNotFound)?;
                let before = entry.permissions.len();
                entry
                    .permissions
                    .retain(|p| !(p.key == *key && p.range_end == *range_end));
                if entry.permissions.len() == before {
                    return Err(AuthError::PermissionNotGranted);
                }
                AuthEffect::None
            }
        };
        self.revision = self.revision.saturating_add(1);
        Ok(effect)
    }

    /// etcd's `IsAdminPermitted`.
    pub fn check_admin(&self, caller: &Caller) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        if caller.user.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        let user = self.users.get(&caller.user).ok_or(AuthError::UserNotFound)?;
        if !user.has_root_role() {
            return Err(AuthError::PermissionDenied);
        }
        Ok(())
    }

    /// etcd's `isOpPermitted`: may `caller` have `access` to `[key, range_end)`.
    pub fn check_access(
        &self,
        caller: &Caller,
        access: Access,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        if caller.auth_revision == 0 {
            return Err(AuthError::UserEmpty);
        }
        if caller.auth_revision < self.revision {
            return Err(AuthError::AuthOldRevision);
        }
        let user = self.users.get(&caller.user).ok_or(AuthError::PermissionDenied)?;
        if user.has_root_role() {
            return Ok(());
        }
        let perms = user
            .roles
            .iter()
            .filter_map(|name| self.roles.get(name))
            .flat_map(|role| role.permissions.iter());
        if perms::allowed(perms, access, key, range_end) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// etcd's `HasRole`.
    pub fn has_role(&self, user: &str, role: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|u| u.roles.iter().any(|r| r == role))
    }

    /// The user a password check is for, if it may authenticate by password: the
    /// errors of etcd's `CheckPassword` before the hash is compared.
    pub fn password_of(&self, name: &str) -> Result<&PasswordHash, AuthError> {
        if !self.enabled {
            return Err(AuthError::AuthNotEnabled);
        }
        let user = self.users.get(name).ok_or(AuthError::AuthFailed)?;
        if user.no_password {
            return Err(AuthError::NoPasswordUser);
        }
        Ok(&user.password)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::auth::PermissionType;

    fn cmd_user(name: &str) -> AuthCommand {
        AuthCommand::UserAdd {
            name: name.into(),
            password: PasswordHash(b"$2a$04$x".to_vec()),
            no_password: false,
        }
    }

    #[test]
    fn enable_needs_root_with_the_root_role() {
        let mut s = AuthState::new();
        assert_eq!(s.apply(&AuthCommand::Enable, 1), Err(AuthError::RootUserNotExist));
        s.apply(&cmd_user("root"), 2).unwrap();
        assert_eq!(s.apply(&AuthCommand::Enable, 3), Err(AuthError::RootRoleNotExist));
        // The root role need not exist to be granted.
        s.apply(
            &AuthCommand::UserGrantRole {
                user: "root".into(),
                role: "root".into(),
            },
            4,
        )
        .unwrap();
        let rev = s.revision;
        s.apply(&AuthCommand::Enable, 5).unwrap();
        assert!(s.enabled);
        assert_eq!(s.revision, rev, "enabling does not bump the revision");
        let del = AuthCommand::UserDelete { name: "root".into() };
        assert_eq!(s.apply(&del, 6), Err(AuthError::InvalidAuthMgmt));
        assert_eq!(s.apply(&AuthCommand::Disable, 7), Ok(AuthEffect::DropAll));
        assert_eq!(s.apply(&del, 8), Ok(AuthEffect::Invalidate("root".into())));
    }

    #[test]
    fn permissions_and_revisions() {
        let mut s = AuthState::new();
        for (i, c) in [
            cmd_user("root"),
            AuthCommand::UserGrantRole {
                user: "root".into(),
                role: "root".into(),
            },
            cmd_user("alice"),
            AuthCommand::RoleAdd { name: "r".into() },
            AuthCommand::RoleGrantPermission {
                name: "r".into(),
                perm: Permission {
                    perm_type: PermissionType::Read,
                    key: b"foo".to_vec(),
                    range_end: b"fop".to_vec(),
                },
            },
            AuthCommand::UserGrantRole {
                user: "alice".into(),
                role: "r".into(),
            },
            AuthCommand::Enable,
        ]
        .iter()
        .enumerate()
        {
            s.apply(c, i as u64 + 1).unwrap();
        }
        let alice = Caller {
            user: "alice".into(),
            auth_revision: s.revision,
        };
        assert_eq!(s.check_access(&alice, Access::Read, b"foo1", b""), Ok(()));
        assert_eq!(
            s.check_access(&alice, Access::Write, b"foo1", b""),
            Err(AuthError::PermissionDenied)
        );
        assert_eq!(s.check_admin(&alice), Err(AuthError::PermissionDenied));
        assert_eq!(
            s.check_access(&Caller::anonymous(), Access::Read, b"foo1", b""),
            Err(AuthError::UserEmpty)
        );
        // Upgrading the permission bumps the revision: the old caller is stale.
        s.apply(
            &AuthCommand::RoleGrantPermission {
                name: "r".into(),
                perm: Permission {
                    perm_type: PermissionType::ReadWrite,
                    key: b"foo".to_vec(),
                    range_end: b"fop".to_vec(),
                },
            },
            9,
        )
        .unwrap();
        assert_eq!(s.roles["r"].permissions.len(), 1);
        assert_eq!(
            s.check_access(&alice, Access::Write, b"foo1", b""),
            Err(AuthError::AuthOldRevision)
        );
        let fresh = Caller {
            user: "alice".into(),
            auth_revision: s.revision,
        };
        assert_eq!(s.check_access(&fresh, Access::Write, b"foo1", b""), Ok(()));
        // Deleting the role revokes it from its users.
        s.apply(&AuthCommand::RoleDelete { role: "r".into() }, 10)
            .unwrap();
        assert!(s.users["alice"].roles.is_empty());
        assert_eq!(
            s.apply(&AuthCommand::RoleDelete { role: "root".into() }, 11),
            Err(AuthError::InvalidAuthMgmt)
        );
    }

    #[test]
    fn authenticate_names_the_token_by_index() {
        let mut s = AuthState::new();
        let auth = |checked_revision| AuthCommand::Authenticate {
            name: "root".into(),
            token_prefix: crate::auth::TokenPrefix("abc".into()),
            checked_revision,
        };
        assert_eq!(s.apply(&auth(1), 7), Err(AuthError::AuthNotEnabled));
        s.apply(&cmd_user("root"), 1).unwrap();
        s.apply(
            &AuthCommand::UserGrantRole {
                user: "root".into(),
                role: "root".into(),
            },
            2,
        )
        .unwrap();
        s.apply(&AuthCommand::Enable, 3).unwrap();
        assert_eq!(s.apply(&auth(1), 7), Err(AuthError::AuthOldRevision));
        assert_eq!(
            s.apply(&auth(s.revision), 7),
            Ok(AuthEffect::Assign {
                user: "root".into(),
                token: "abc.7".into()
            })
        );
    }
}
