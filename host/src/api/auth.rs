//! etcd's Auth service (`etcdserverpb.Auth`): users, roles and permissions.
//!
//! Every change is a Raft command applied by `auth/store.rs`; reads (UserGet, RoleList, …)
//! answer from the store after a linearizable read point. A password is hashed with bcrypt
//! here, on the member that received it, before proposing, so apply stays cheap and every
//! member stores the same hash.
//!
//! Not built yet, and so `Unimplemented`: AuthEnable (turning authentication on needs the
//! tokens and the permission checks on every request, which come with it). Until then
//! authentication is off, as in an etcd that never ran `auth enable`: AuthDisable changes
//! nothing and Authenticate answers etcd's "authentication is not enabled".

use cairn_proto::authpb;
use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::auth_server::Auth;
use tonic::{Request, Response, Status};

use super::{Context, WithHeader, status};
use crate::auth::{AuthCommand, AuthStore, PermKind, Permission};
use crate::state_machine::{Command, CommandResponse};

pub struct AuthService {
    ctx: Context,
}

impl AuthService {
    pub fn new(ctx: Context) -> Self {
        AuthService { ctx }
    }

    /// Proposes `command`; answers with a response of type `T` whose header carries the store
    /// revision the command was applied at (every change answers with a header alone).
    async fn change<T: WithHeader + Default>(
        &self,
        command: AuthCommand,
    ) -> Result<Response<T>, Status> {
        let revision = match self.ctx.propose(Command::Auth(command)).await? {
            CommandResponse::Auth(Ok(_), revision) => revision,
            CommandResponse::Auth(Err(e), _) => return Err(status::auth_error(&e)),
            other => return Err(status::unexpected_response("an auth command", &other)),
        };
        let mut out = T::default();
        *out.header_mut() = self.ctx.header(revision);
        Ok(Response::new(out))
    }

    /// The store after a linearizable read point, and the store revision it was read at.
    async fn store(&self) -> Result<(AuthStore, i64), Status> {
        self.ctx
            .read(false, |view| {
                let rev = view.rev;
                AuthStore::load(view.storage)
                    .map(|s| (s, rev))
                    .map_err(crate::mvcc::Error::from)
            })
            .await
    }

    /// The bcrypt hash of `password`, computed off the async threads (bcrypt's cost is the
    /// point of it).
    async fn hash(&self, password: String) -> Result<String, Status> {
        let cost = self.ctx.limits.bcrypt_cost;
        tokio::task::spawn_blocking(move || bcrypt::hash(password, cost))
            .await
            .map_err(|e| status::internal("password hashing task failed", e))?
            .map_err(|e| status::internal("hashing the password", e))
    }

    /// The hash a UserAdd or UserChangePassword stores: the client's own bcrypt hash if it
    /// sent one (etcd 3.5's `hashedPassword`), else ours of its password.
    async fn password_hash(&self, password: String, hashed: String) -> Result<String, Status> {
        if hashed.is_empty() {
            self.hash(password).await
        } else {
            Ok(hashed)
        }
    }
}

fn perm_kind(t: i32) -> PermKind {
    match authpb::permission::Type::try_from(t) {
        Ok(authpb::permission::Type::Write) => PermKind::Write,
        Ok(authpb::permission::Type::Readwrite) => PermKind::ReadWrite,
        // etcd stores whatever number it is sent; READ is 0, the proto3 default.
        _ => PermKind::Read,
    }
}

fn perm_to_pb(p: &Permission) -> authpb::Permission {
    let t = match p.kind {
        PermKind::Read => authpb::permission::Type::Read,
        PermKind::Write => authpb::permission::Type::Write,
        PermKind::ReadWrite => authpb::permission::Type::Readwrite,
    };
    authpb::Permission {
        perm_type: t as i32,
        key: p.key.clone(),
        range_end: p.range_end.clone(),
    }
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(
        &self,
        _: Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthEnableResponse>, Status> {
        Err(status::unimplemented("Auth.AuthEnable"))
    }

    async fn auth_disable(
        &self,
        _: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthDisableResponse>, Status> {
        // Disabling what is off changes nothing, as in etcd. (Nothing can turn it on yet.)
        let (store, rev) = self.store().await?;
        if store.enabled {
            return Err(status::unimplemented("Auth.AuthDisable"));
        }
        Ok(Response::new(pb::AuthDisableResponse {
            header: self.ctx.header(rev),
        }))
    }

    async fn auth_status(
        &self,
        _: Request<pb::AuthStatusRequest>,
    ) -> Result<Response<pb::AuthStatusResponse>, Status> {
        let (store, rev) = self.store().await?;
        Ok(Response::new(pb::AuthStatusResponse {
            header: self.ctx.header(rev),
            enabled: store.enabled,
            auth_revision: store.revision,
        }))
    }

    async fn authenticate(
        &self,
        _: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let (store, _) = self.store().await?;
        if !store.enabled {
            return Err(status::auth_not_enabled());
        }
        Err(status::unimplemented("Auth.Authenticate"))
    }

    async fn user_add(
        &self,
        request: Request<pb::AuthUserAddRequest>,
    ) -> Result<Response<pb::AuthUserAddResponse>, Status> {
        let r = request.into_inner();
        let no_password = r.options.is_some_and(|o| o.no_password);
        let password_hash = if no_password {
            String::new()
        } else {
            self.password_hash(r.password, r.hashed_password).await?
        };
        self.change(AuthCommand::UserAdd {
            name: r.name,
            password_hash,
            no_password,
        })
        .await
    }

    async fn user_get(
        &self,
        request: Request<pb::AuthUserGetRequest>,
    ) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        let name = request.into_inner().name;
        let (store, rev) = self.store().await?;
        let user = store
            .users
            .get(&name)
            .ok_or_else(|| status::auth_error(&crate::auth::AuthError::UserNotFound))?;
        Ok(Response::new(pb::AuthUserGetResponse {
            header: self.ctx.header(rev),
            roles: user.roles.clone(),
        }))
    }

    async fn user_list(
        &self,
        _: Request<pb::AuthUserListRequest>,
    ) -> Result<Response<pb::AuthUserListResponse>, Status> {
        let (store, rev) = self.store().await?;
        Ok(Response::new(pb::AuthUserListResponse {
            header: self.ctx.header(rev),
            users: store.users.into_keys().collect(),
        }))
    }

    async fn user_delete(
        &self,
        request: Request<pb::AuthUserDeleteRequest>,
    ) -> Result<Response<pb::AuthUserDeleteResponse>, Status> {
        let name = request.into_inner().name;
        self.change(AuthCommand::UserDelete { name }).await
    }

    async fn user_change_password(
        &self,
        request: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthUserChangePasswordResponse>, Status> {
        let r = request.into_inner();
        let password_hash = self.password_hash(r.password, r.hashed_password).await?;
        self.change(AuthCommand::UserChangePassword {
            name: r.name,
            password_hash,
        })
        .await
    }

    async fn user_grant_role(
        &self,
        request: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthUserGrantRoleResponse>, Status> {
        let r = request.into_inner();
        self.change(AuthCommand::UserGrantRole {
            user: r.user,
            role: r.role,
        })
        .await
    }

    async fn user_revoke_role(
        &self,
        request: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthUserRevokeRoleResponse>, Status> {
        let r = request.into_inner();
        self.change(AuthCommand::UserRevokeRole {
            user: r.name,
            role: r.role,
        })
        .await
    }

    async fn role_add(
        &self,
        request: Request<pb::AuthRoleAddRequest>,
    ) -> Result<Response<pb::AuthRoleAddResponse>, Status> {
        let name = request.into_inner().name;
        self.change(AuthCommand::RoleAdd { name }).await
    }

    async fn role_get(
        &self,
        request: Request<pb::AuthRoleGetRequest>,
    ) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        let name = request.into_inner().role;
        let (store, rev) = self.store().await?;
        let role = store
            .roles
            .get(&name)
            .ok_or_else(|| status::auth_error(&crate::auth::AuthError::RoleNotFound))?;
        Ok(Response::new(pb::AuthRoleGetResponse {
            header: self.ctx.header(rev),
            perm: role.permissions.iter().map(perm_to_pb).collect(),
        }))
    }

    async fn role_list(
        &self,
        _: Request<pb::AuthRoleListRequest>,
    ) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        let (store, rev) = self.store().await?;
        Ok(Response::new(pb::AuthRoleListResponse {
            header: self.ctx.header(rev),
            roles: store.roles.into_keys().collect(),
        }))
    }

    async fn role_delete(
        &self,
        request: Request<pb::AuthRoleDeleteRequest>,
    ) -> Result<Response<pb::AuthRoleDeleteResponse>, Status> {
        let name = request.into_inner().role;
        self.change(AuthCommand::RoleDelete { name }).await
    }

    async fn role_grant_permission(
        &self,
        request: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        let r = request.into_inner();
        let perm = r.perm.ok_or_else(status::permission_not_given)?;
        self.change(AuthCommand::RoleGrantPermission {
            role: r.name,
            permission: Permission {
                kind: perm_kind(perm.perm_type),
                key: perm.key,
                range_end: perm.range_end,
            },
        })
        .await
    }

    async fn role_revoke_permission(
        &self,
        request: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        let r = request.into_inner();
        self.change(AuthCommand::RoleRevokePermission {
            role: r.role,
            key: r.key,
            range_end: r.range_end,
        })
        .await
    }
}
