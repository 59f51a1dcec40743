//! Managing users, roles and permissions, and turning auth on and off, as `etcdctl user`,
//! `etcdctl role` and `etcdctl auth` do (etcd's Auth service). Every change goes through
//! the Raft log on the server; with auth enabled only `root` (or a user with the root
//! role) may make one, and the server refuses others with etcd's "permission denied".
//!
//! Changes are writes: retried only on proof that nothing was applied (an error that
//! leaves the outcome unknown is returned as such). Lists and gets are reads.

use raftkv_core::auth::{Permission, PermissionType};
use raftkv_core::kv::ResponseHeader;
use raftkv_proto::authpb;
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::auth_client::AuthClient;
use tonic::transport::Channel;

use crate::client::Client;
use crate::endpoints::MAX_RESPONSE_BYTES;
use crate::error::{ClientError, Result};
use crate::retry::Mutability;

/// The Auth service's stub on `channel`.
fn auth(channel: Channel) -> AuthClient<Channel> {
    AuthClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES)
}

fn header(h: Option<pb::ResponseHeader>) -> ResponseHeader {
    h.map(Into::into).unwrap_or_default()
}

impl Client {
    /// Turn authentication on (etcd requires the `root` user, with the root role, first).
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn auth_enable(&self) -> Result<ResponseHeader> {
        let resp = self
            .call(Mutability::Write, pb::AuthEnableRequest {}, |ch, r| async move {
                auth(ch).auth_enable(r).await
            })
            .await?;
        Ok(header(resp.header))
    }

    /// Turn authentication off (as root while it is on).
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn auth_disable(&self) -> Result<ResponseHeader> {
        let resp = self
            .call(Mutability::Write, pb::AuthDisableRequest {}, |ch, r| async move {
                auth(ch).auth_disable(r).await
            })
            .await?;
        Ok(header(resp.header))
    }

    /// Add user `name` with `password` (the server keeps only its bcrypt hash).
    #[tracing::instrument(level = "debug", skip_all, fields(user = %name))]
    pub async fn user_add(&self, name: &str, password: &str) -> Result<ResponseHeader> {
        let req = pb::AuthUserAddRequest {
            name: name.to_string(),
            password: password.to_string(),
            ..Default::default()
        };
        let resp = self
            .call(Mutability::Write, req, |ch, r| async move {
                auth(ch).user_add(r).await
            })
            .await?;
        Ok(header(resp.header))
    }

    /// Delete user `name`.
    #[tracing::instrument(level = "debug", skip_all, fields(user = %name))]
    pub async fn user_delete(&self, name: &str) -> Result<ResponseHeader> {
        let req = pb::AuthUserDeleteRequest {
            name: name.to_string(),
        };
        let resp = self
            .call(Mutability::Write, req, |ch, r| async move {
                auth(ch).user_delete(r).await
            })
            .await?;
        Ok(header(resp.header))
    }

    /// Change the password of user `name`.
    #[tracing::instrument(level = "debug", skip_all, fields(user = %name))]
    pub async fn user_change_password(&self, name: &str, password: &str) -> Result<ResponseHeader> {
        let req = pb::AuthUserChangePasswordRequest {
            name: name.to_string(),
            password: password.to_string(),
        };
        let resp = self
            .call(Mutability::Write, req, |ch, r| async move {
                auth(ch).user_change_password(r).await
            })
            .await?;
        Ok(header(resp.header))
    }

    /// Grant role `role` to user `user`.
    #[tracing::instrument(level = "debug", skip_all, fields(user = %user, role = %role))]
    pub async fn user_grant_role(&self, user: &str, role: &str) -> Result<ResponseHeader> {
        let req = pb::AuthUserGrantRoleRequest {
            user: user.to_string(),
            role: role.to_string(),
        };
        let resp = self
            .call(Mutability::Write, req, |ch, r| async move {
                auth(ch).user_grant_role(r).await
            })
            .await?;
        Ok(header(resp.header))
    }

    /// Revoke role `role` from user `user`.
    #[tracing::instrument(level = "debug", skip_all, fields(user = %user, role = %role))]
    pub async fn user_revoke_role(&self, user: &str, role: &str) -> Result<ResponseHeader> {
        let req = pb::AuthUserRevokeRoleRequest {
            name: user.to_string(),
            role: role.to_string(),
        };
        let resp = self
            .call(Mutability::Write, req, |ch, r| async move {
                auth(ch).user_revoke_role(r).await
            })
            .await?;
        Ok(header(resp.header))
    }

    /// The roles of user `name`, sorted.
    #[tracing::instrument(level = "debug", skip_all, fields(user = %name))]
    pub async fn user_get(&self, name: &str) -> Result<Vec<String>> {
        let req = pb::AuthUserGetRequest {
            name: name.to_string(),
        };
        let resp = self
            .call(Mutability::Read, req, |ch, r| async move {
                auth(ch).user_get(r).await
            })
            .await?;
        Ok(resp.roles)
    }

    /// Every user, sorted.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn user_list(&self) -> Result<Vec<String>> {
        let resp = self
            .call(Mutability::Read, pb::AuthUserListRequest {}, |ch, r| async move {
                auth(ch).user_list(r).await
            })
            .await?;
        Ok(resp.users)
    }

    /// Add role `name` (no permissions yet).
    #[tracing::instrument(level = "debug", skip_all, fields(role = %name))]
    pub async fn role_add(&self, name: &str) -> Result<ResponseHeader> {
        let req = pb::AuthRoleAddRequest {
            name: name.to_string(),
        };
        let resp = self
            .call(Mutability::Write, req, |ch, r| async move {
                auth(ch).role_add(r).await
            })
            .await?;
        Ok(header(resp.header))
    }

    /// Delete role `name` (users that had it lose it).
    #[tracing::instrument(level = "debug", skip_all, fields(role = %name))]
    pub async fn role_delete(&self, name: &str) -> Result<ResponseHeader> {
        let req = pb::AuthRoleDeleteRequest {
            role: name.to_string(),
        };
        let resp = self
            .call(Mutability::Write, req, |ch, r| async move {
                auth(ch).role_delete(r).await
            })
            .await?;
        Ok(header(resp.header))
    }

    /// Grant `permission` (a key, a range `[key, range_end)`, or every key from `key` on
    /// with `range_end` = `[0]`) to role `role`.
    #[tracing::instrument(level = "debug", skip_all, fields(role = %role))]
    pub async fn role_grant_permission(&self, role: &str, permission: Permission) -> Result<ResponseHeader> {
        let req = pb::AuthRoleGrantPermissionRequest {
            name: role.to_string(),
            perm: Some(authpb::Permission {
                perm_type: permission.perm_type.to_wire(),
                key: permission.key,
                range_end: permission.range_end,
            }),
        };
        let resp = self
            .call(Mutability::Write, req, |ch, r| async move {
                auth(ch).role_grant_permission(r).await
            })
            .await?;
        Ok(header(resp.header))
    }

    /// Revoke role `role`'s permission on exactly `key` .. `range_end` (as granted).
    #[tracing::instrument(level = "debug", skip_all, fields(role = %role))]
    pub async fn role_revoke_permission(
        &self,
        role: &str,
        key: impl Into<Vec<u8>>,
        range_end: impl Into<Vec<u8>>,
    ) -> Result<ResponseHeader> {
        let req = pb::AuthRoleRevokePermissionRequest {
            role: role.to_string(),
            key: key.into(),
            range_end: range_end.into(),
        };
        let resp = self
            .call(Mutability::Write, req, |ch, r| async move {
                auth(ch).role_revoke_permission(r).await
            })
            .await?;
        Ok(header(resp.header))
    }

    /// The permissions of role `name`, in the server's order (by key).
    #[tracing::instrument(level = "debug", skip_all, fields(role = %name))]
    pub async fn role_get(&self, name: &str) -> Result<Vec<Permission>> {
        let req = pb::AuthRoleGetRequest {
            role: name.to_string(),
        };
        let resp = self
            .call(Mutability::Read, req, |ch, r| async move {
                auth(ch).role_get(r).await
            })
            .await?;
        resp.perm
            .into_iter()
            .map(|p| {
                let perm_type = PermissionType::from_wire(p.perm_type).ok_or_else(|| {
                    ClientError::InvalidResponse(format!("unknown permission type {}", p.perm_type))
                })?;
                Ok(Permission {
                    perm_type,
                    key: p.key,
                    range_end: p.range_end,
                })
            })
            .collect()
    }

    /// Every role, sorted.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn role_list(&self) -> Result<Vec<String>> {
        let resp = self
            .call(Mutability::Read, pb::AuthRoleListRequest {}, |ch, r| async move {
                auth(ch).role_list(r).await
            })
            .await?;
        Ok(resp.roles)
    }
}
