//! The auth store in etcd's buckets (`auth/store.go`), both ways:
//! - `auth`: `authEnabled` (one byte, 1 or 0) and `authRevision` (u64 BE);
//! - `authUsers`: name -> `authpb.User` (its bcrypt hash as Go writes it, `$2a$`, which
//!   our bcrypt reads and writes alike; sorted roles; `no_password`);
//! - `authRoles`: name -> `authpb.Role` (permissions sorted by key).

use raftkv_core::auth::{AuthState, PasswordHash, Permission, PermissionType, Role, User};

use super::wire::{EtcdPermission, EtcdRole, EtcdUser, EtcdUserAddOptions, corrupt};
use crate::error::Result;

/// A bucket's entries, sorted by key.
pub(crate) type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// The three buckets of `state`: (`auth`, `authUsers`, `authRoles`).
pub(crate) fn to_buckets(state: &AuthState) -> (Pairs, Pairs, Pairs) {
    let meta = vec![
        (b"authEnabled".to_vec(), vec![u8::from(state.enabled)]),
        (b"authRevision".to_vec(), state.revision.to_be_bytes().to_vec()),
    ];
    let users = state
        .users
        .iter()
        .map(|(name, user)| {
            let wire = EtcdUser {
                name: name.as_bytes().to_vec(),
                password: user.password.0.clone(),
                roles: user.roles.clone(),
                options: Some(EtcdUserAddOptions {
                    no_password: user.no_password,
                }),
            };
            (name.as_bytes().to_vec(), prost::Message::encode_to_vec(&wire))
        })
        .collect();
    let roles = state
        .roles
        .iter()
        .map(|(name, role)| {
            let wire = EtcdRole {
                name: name.as_bytes().to_vec(),
                key_permission: role
                    .permissions
                    .iter()
                    .map(|p| EtcdPermission {
                        perm_type: p.perm_type.to_wire(),
                        key: p.key.clone(),
                        range_end: p.range_end.clone(),
                    })
                    .collect(),
            };
            (name.as_bytes().to_vec(), prost::Message::encode_to_vec(&wire))
        })
        .collect();
    (meta, users, roles)
}

/// Reads etcd's buckets back into an auth store (entries in any order).
#[derive(Default)]
pub(crate) struct AuthReader {
    state: AuthState,
}

impl AuthReader {
    pub(crate) fn new() -> Self {
        Self {
            state: AuthState::new(),
        }
    }

    /// One entry of the `auth` bucket.
    pub(crate) fn meta(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        match key {
            b"authEnabled" => self.state.enabled = value == [1],
            b"authRevision" => {
                let bytes: [u8; 8] = value
                    .try_into()
                    .map_err(|_| corrupt("authRevision is not 8 bytes"))?;
                // 0 would make every caller look credential-less; the top would overflow.
                self.state.revision = u64::from_be_bytes(bytes).clamp(1, u64::MAX / 2);
            }
            _ => {}
        }
        Ok(())
    }

    /// One entry of the `authUsers` bucket.
    pub(crate) fn user(&mut self, value: &[u8]) -> Result<()> {
        let wire = <EtcdUser as prost::Message>::decode(value).map_err(|e| corrupt(format!("User: {e}")))?;
        let name = String::from_utf8(wire.name).map_err(|_| corrupt("a user name is not UTF-8"))?;
        let mut roles = wire.roles;
        roles.sort();
        roles.dedup();
        self.state.users.insert(
            name,
            User {
                password: PasswordHash(wire.password),
                roles,
                no_password: wire.options.is_some_and(|o| o.no_password),
            },
        );
        Ok(())
    }

    /// One entry of the `authRoles` bucket.
    pub(crate) fn role(&mut self, value: &[u8]) -> Result<()> {
        let wire = <EtcdRole as prost::Message>::decode(value).map_err(|e| corrupt(format!("Role: {e}")))?;
        let name = String::from_utf8(wire.name).map_err(|_| corrupt("a role name is not UTF-8"))?;
        let mut permissions = Vec::with_capacity(wire.key_permission.len());
        for p in wire.key_permission {
            let perm_type = PermissionType::from_wire(p.perm_type)
                .ok_or_else(|| corrupt(format!("permission type {}", p.perm_type)))?;
            permissions.push(Permission {
                perm_type,
                key: p.key,
                range_end: p.range_end,
            });
        }
        permissions.sort_by(|a, b| a.key.cmp(&b.key));
        self.state.roles.insert(name, Role { permissions });
        Ok(())
    }

    /// The store read, unless the buckets held nothing (no users, auth off).
    pub(crate) fn finish(self) -> Option<AuthState> {
        (self.state.enabled || !self.state.users.is_empty() || !self.state.roles.is_empty())
            .then_some(self.state)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use raftkv_core::auth::AuthCommand;

    #[test]
    fn the_buckets_read_back_into_the_same_store() {
        let mut state = AuthState::new();
        for (i, c) in [
            AuthCommand::UserAdd {
                name: "root".into(),
                password: PasswordHash(b"$2a$04$abcdefghijklmnopqrstuv".to_vec()),
                no_password: false,
            },
            AuthCommand::UserAdd {
                name: "svc".into(),
                password: PasswordHash::default(),
                no_password: true,
            },
            AuthCommand::RoleAdd { name: "root".into() },
            AuthCommand::RoleAdd { name: "r".into() },
            AuthCommand::RoleGrantPermission {
                name: "r".into(),
                perm: Permission {
                    perm_type: PermissionType::Write,
                    key: b"k".to_vec(),
                    range_end: vec![0],
                },
            },
            AuthCommand::UserGrantRole {
                user: "root".into(),
                role: "root".into(),
            },
            AuthCommand::UserGrantRole {
                user: "svc".into(),
                role: "r".into(),
            },
            AuthCommand::Enable,
        ]
        .iter()
        .enumerate()
        {
            state.apply(c, i as u64 + 1).unwrap();
        }
        let (meta, users, roles) = to_buckets(&state);
        let mut reader = AuthReader::new();
        for (k, v) in &meta {
            reader.meta(k, v).unwrap();
        }
        for (_, v) in users.iter().rev() {
            reader.user(v).unwrap();
        }
        for (_, v) in &roles {
            reader.role(v).unwrap();
        }
        assert_eq!(reader.finish(), Some(state));
        assert_eq!(AuthReader::new().finish(), None);
    }
}
