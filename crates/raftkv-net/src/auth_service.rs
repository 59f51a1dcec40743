//! [`AuthService`]: etcd's `Auth` gRPC service over an [`AuthBackend`]. It translates
//! messages and errors; the rules (who may change what, etcd's texts) are the backend's
//! and `raftkv_core::auth`'s.

use std::future::Future;
use std::sync::Arc;

use raftkv_core::Error;
use raftkv_core::auth::{AuthChange, AuthCommand, Caller, Permission, PermissionType};
use raftkv_core::kv::ResponseHeader;
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::status::to_status;
use raftkv_proto::{authpb, etcdserverpb::auth_server::Auth};
use tonic::{Request, Response, Status};

use crate::gate::{AuthGate, credentials_of};

/// What serves the auth calls (the node).
pub trait AuthBackend: AuthGate {
    /// Check `name`'s password and assign it a token (through the log).
    fn authenticate(
        &self,
        name: String,
        password: String,
    ) -> impl Future<Output = Result<(ResponseHeader, String), Error>> + Send;
    /// Make an auth change as `caller` (through the log; root only while auth is on).
    fn auth_change(
        &self,
        caller: Caller,
        change: AuthChange,
    ) -> impl Future<Output = Result<ResponseHeader, Error>> + Send;
    /// A user's roles (root, or the user itself).
    fn user_get(
        &self,
        caller: Caller,
        name: String,
    ) -> impl Future<Output = Result<(ResponseHeader, Vec<String>), Error>> + Send;
    /// Every user's name (root only).
    fn user_list(
        &self,
        caller: Caller,
    ) -> impl Future<Output = Result<(ResponseHeader, Vec<String>), Error>> + Send;
    /// A role's permissions (root, or a user holding the role).
    fn role_get(
        &self,
        caller: Caller,
        role: String,
    ) -> impl Future<Output = Result<(ResponseHeader, Vec<Permission>), Error>> + Send;
    /// Every role's name (root only).
    fn role_list(
        &self,
        caller: Caller,
    ) -> impl Future<Output = Result<(ResponseHeader, Vec<String>), Error>> + Send;
}

/// The etcd Auth gRPC service.
pub struct AuthService<B> {
    backend: Arc<B>,
}

impl<B: AuthBackend> AuthService<B> {
    /// Serve `backend`.
    pub fn new(backend: Arc<B>) -> Self {
        Self { backend }
    }

    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        self.backend
            .identify(credentials_of(request))
            .await
            .map_err(|e| to_status(&e))
    }

    async fn change<T>(
        &self,
        request: Request<T>,
        change: impl FnOnce(T) -> AuthChange,
    ) -> Result<ResponseHeader, Status> {
        let caller = self.caller(&request).await?;
        let change = change(request.into_inner());
        self.backend
            .auth_change(caller, change)
            .await
            .map_err(|e| to_status(&e))
    }
}

fn header(h: ResponseHeader) -> Option<pb::ResponseHeader> {
    Some(h.into())
}

fn permission_to_wire(p: Permission) -> authpb::Permission {
    authpb::Permission {
        perm_type: p.perm_type.to_wire(),
        key: p.key,
        range_end: p.range_end,
    }
}

macro_rules! answer {
    ($response:ident, $header:expr) => {
        Ok(Response::new(pb::$response {
            header: header($header),
        }))
    };
}

#[tonic::async_trait]
impl<B: AuthBackend> Auth for AuthService<B> {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn auth_enable(
        &self,
        request: Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthEnableResponse>, Status> {
        let h = self
            .change(request, |_| AuthChange::Command(AuthCommand::Enable))
            .await?;
        answer!(AuthEnableResponse, h)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn auth_disable(
        &self,
        request: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthDisableResponse>, Status> {
        let h = self
            .change(request, |_| AuthChange::Command(AuthCommand::Disable))
            .await?;
        answer!(AuthDisableResponse, h)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user = %request.get_ref().name))]
    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let req = request.into_inner();
        let (h, token) = self
            .backend
            .authenticate(req.name, req.password)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::AuthenticateResponse {
            header: header(h),
            token,
        }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user = %request.get_ref().name))]
    async fn user_add(
        &self,
        request: Request<pb::AuthUserAddRequest>,
    ) -> Result<Response<pb::AuthUserAddResponse>, Status> {
        let h = self
            .change(request, |r| AuthChange::UserAdd {
                name: r.name,
                password: r.password,
                no_password: r.options.is_some_and(|o| o.no_password),
            })
            .await?;
        answer!(AuthUserAddResponse, h)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn user_get(
        &self,
        request: Request<pb::AuthUserGetRequest>,
    ) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        let caller = self.caller(&request).await?;
        let (h, roles) = self
            .backend
            .user_get(caller, request.into_inner().name)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::AuthUserGetResponse {
            header: header(h),
            roles,
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn user_list(
        &self,
        request: Request<pb::AuthUserListRequest>,
    ) -> Result<Response<pb::AuthUserListResponse>, Status> {
        let caller = self.caller(&request).await?;
        let (h, users) = self.backend.user_list(caller).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::AuthUserListResponse {
            header: header(h),
            users,
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn user_delete(
        &self,
        request: Request<pb::AuthUserDeleteRequest>,
    ) -> Result<Response<pb::AuthUserDeleteResponse>, Status> {
        let h = self
            .change(request, |r| {
                AuthChange::Command(AuthCommand::UserDelete { name: r.name })
            })
            .await?;
        answer!(AuthUserDeleteResponse, h)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn user_change_password(
        &self,
        request: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthUserChangePasswordResponse>, Status> {
        let h = self
            .change(request, |r| AuthChange::UserChangePassword {
                name: r.name,
                password: r.password,
            })
            .await?;
        answer!(AuthUserChangePasswordResponse, h)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn user_grant_role(
        &self,
        request: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthUserGrantRoleResponse>, Status> {
        let h = self
            .change(request, |r| {
                AuthChange::Command(AuthCommand::UserGrantRole {
                    user: r.user,
                    role: r.role,
                })
            })
            .await?;
        answer!(AuthUserGrantRoleResponse, h)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn user_revoke_role(
        &self,
        request: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthUserRevokeRoleResponse>, Status> {
        let h = self
            .change(request, |r| {
                AuthChange::Command(AuthCommand::UserRevokeRole {
                    name: r.name,
                    role: r.role,
                })
            })
            .await?;
        answer!(AuthUserRevokeRoleResponse, h)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn role_add(
        &self,
        request: Request<pb::AuthRoleAddRequest>,
    ) -> Result<Response<pb::AuthRoleAddResponse>, Status> {
        let h = self
            .change(request, |r| {
                AuthChange::Command(AuthCommand::RoleAdd { name: r.name })
            })
            .await?;
        answer!(AuthRoleAddResponse, h)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn role_get(
        &self,
        request: Request<pb::AuthRoleGetRequest>,
    ) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        let caller = self.caller(&request).await?;
        let (h, perms) = self
            .backend
            .role_get(caller, request.into_inner().role)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::AuthRoleGetResponse {
            header: header(h),
            perm: perms.into_iter().map(permission_to_wire).collect(),
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn role_list(
        &self,
        request: Request<pb::AuthRoleListRequest>,
    ) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        let caller = self.caller(&request).await?;
        let (h, roles) = self.backend.role_list(caller).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::AuthRoleListResponse {
            header: header(h),
            roles,
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn role_delete(
        &self,
        request: Request<pb::AuthRoleDeleteRequest>,
    ) -> Result<Response<pb::AuthRoleDeleteResponse>, Status> {
        let h = self
            .change(request, |r| {
                AuthChange::Command(AuthCommand::RoleDelete { role: r.role })
            })
            .await?;
        answer!(AuthRoleDeleteResponse, h)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn role_grant_permission(
        &self,
        request: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        // etcd takes an absent permission as the zero one (READ on the empty key) and
        // an unknown type as given; raftkv refuses both rather than store them.
        let perm = req
            .perm
            .ok_or_else(|| Status::invalid_argument("etcdserver: permission not given"))?;
        let perm_type = PermissionType::from_wire(perm.perm_type).ok_or_else(|| {
            Status::invalid_argument(format!("etcdserver: invalid permission type {}", perm.perm_type))
        })?;
        let change = AuthChange::Command(AuthCommand::RoleGrantPermission {
            name: req.name,
            perm: Permission {
                perm_type,
                key: perm.key,
                range_end: perm.range_end,
            },
        });
        let h = self
            .backend
            .auth_change(caller, change)
            .await
            .map_err(|e| to_status(&e))?;
        answer!(AuthRoleGrantPermissionResponse, h)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn role_revoke_permission(
        &self,
        request: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        let h = self
            .change(request, |r| {
                AuthChange::Command(AuthCommand::RoleRevokePermission {
                    role: r.role,
                    key: r.key,
                    range_end: r.range_end,
                })
            })
            .await?;
        answer!(AuthRoleRevokePermissionResponse, h)
    }
}
