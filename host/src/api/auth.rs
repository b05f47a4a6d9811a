//! etcd's Auth service (`etcdserverpb.Auth`): users, roles and permissions.
//!
//! Every change is a Raft command applied by `auth/store.rs`, which also decides in apply
//! whether the caller may make it (root only, as in etcd); reads (UserGet, RoleList, …) answer
//! from the store after a linearizable read point, with etcd's rules for who may read what
//! (root; or a user its own record and the roles it holds). A password is hashed with bcrypt
//! here, on the member that received it, before proposing, so apply stays cheap and every
//! member stores the same hash. Authenticate checks the password here too and signs a token
//! (see `auth/token.rs`); it writes nothing to the log.

use cairn_proto::authpb;
use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::auth_server::Auth;
use tonic::{Request, Response, Status};

use super::{Context, WithHeader, status};
use crate::auth::{AuthCommand, AuthError, AuthStore, Caller, PermKind, Permission};
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
        caller: Caller,
        command: AuthCommand,
    ) -> Result<Response<T>, Status> {
        let change = describe(&command);
        let who = caller.clone();
        let revision = match self.ctx.propose_as(caller, Command::Auth(command)).await? {
            CommandResponse::Auth(Ok(_), revision) => revision,
            CommandResponse::Auth(Err(e), _) => return Err(status::auth_error(&e)),
            other => return Err(status::unexpected_response("an auth command", &other)),
        };
        super::audit(&who, &change, revision);
        let mut out = T::default();
        *out.header_mut() = self.ctx.header(revision);
        Ok(Response::new(out))
    }

    /// The store after a linearizable read point (the copy apply keeps in memory, not a
    /// read of the keyspace), and the store revision for the response header.
    async fn store(&self) -> Result<(AuthStore, i64), Status> {
        self.ctx.read_barrier().await?;
        let store = self
            .ctx
            .auth
            .read()
            .expect("auth store lock poisoned")
            .clone();
        let rev = self.ctx.raft.subscribe().borrow().current;
        Ok((store, rev))
    }

    /// Runs bcrypt work off the async threads, in one of the member's few bcrypt slots
    /// (bcrypt's cost is the point of it; the slots keep a burst from taking every core). The
    /// wait for a slot is bounded by the request timeout.
    async fn bcrypt<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Status> {
        let slot = tokio::time::timeout(
            self.ctx.limits.request_timeout,
            self.ctx.bcrypt_slots.clone().acquire_owned(),
        )
        .await
        .map_err(|_| status::timed_out())?
        .map_err(|e| status::internal("bcrypt slots closed", e))?;
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            work()
        })
        .await
        .map_err(|e| status::internal("bcrypt task failed", e))
    }

    /// The bcrypt hash of `password`.
    async fn hash(&self, password: String) -> Result<String, Status> {
        let cost = self.ctx.limits.bcrypt_cost;
        self.bcrypt(move || bcrypt::hash(password, cost))
            .await?
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

/// An auth change in etcdctl's words, for the audit log (never a password or its hash).
fn describe(command: &AuthCommand) -> String {
    let range = super::audit_range;
    match command {
        AuthCommand::UserAdd {
            name, no_password, ..
        } => match no_password {
            true => format!("user add {name} --no-password"),
            false => format!("user add {name}"),
        },
        AuthCommand::UserDelete { name } => format!("user delete {name}"),
        AuthCommand::UserChangePassword { name, .. } => format!("user passwd {name}"),
        AuthCommand::UserGrantRole { user, role } => format!("user grant-role {user} {role}"),
        AuthCommand::UserRevokeRole { user, role } => format!("user revoke-role {user} {role}"),
        AuthCommand::RoleAdd { name } => format!("role add {name}"),
        AuthCommand::RoleDelete { name } => format!("role delete {name}"),
        AuthCommand::RoleGrantPermission { role, permission } => format!(
            "role grant-permission {role} {:?} {}",
            permission.kind,
            range(&permission.key, &permission.range_end)
        ),
        AuthCommand::RoleRevokePermission {
            role,
            key,
            range_end,
        } => format!("role revoke-permission {role} {}", range(key, range_end)),
        AuthCommand::Enable { .. } => "auth enable".to_owned(),
        AuthCommand::Disable => "auth disable".to_owned(),
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
        request: Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthEnableResponse>, Status> {
        let caller = self.ctx.caller(&request)?;
        // The key that will sign simple tokens, if authentication was off (see `token.rs`).
        let token_key: [u8; 32] = rand::random();
        self.change(caller, AuthCommand::Enable { token_key }).await
    }

    async fn auth_disable(
        &self,
        request: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthDisableResponse>, Status> {
        let caller = self.ctx.caller(&request)?;
        self.change(caller, AuthCommand::Disable).await
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
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let r = request.into_inner();
        let (store, rev) = self.store().await?;
        if !store.enabled {
            return Err(status::auth_not_enabled());
        }
        let failed = || status::auth_error(&AuthError::AuthFailed);
        let user = match store.users.get(&r.name) {
            // A user added with no password authenticates only by certificate.
            Some(user) if user.no_password => return Err(status::no_password_user()),
            Some(user) => user.clone(),
            None => return Err(failed()),
        };
        let hash = user.password_hash.clone();
        let matches = self
            .bcrypt(move || bcrypt::verify(r.password, &hash).unwrap_or(false))
            .await?;
        if !matches {
            return Err(failed());
        }
        let token = self
            .ctx
            .tokens
            .issue(&store, &user)
            .map_err(|e| status::auth_error(&e))?;
        Ok(Response::new(pb::AuthenticateResponse {
            header: self.ctx.header(rev),
            token,
        }))
    }

    async fn user_add(
        &self,
        request: Request<pb::AuthUserAddRequest>,
    ) -> Result<Response<pb::AuthUserAddResponse>, Status> {
        let caller = self.ctx.caller(&request)?;
        let r = request.into_inner();
        let no_password = r.options.is_some_and(|o| o.no_password);
        let password_hash = if no_password {
            String::new()
        } else {
            self.password_hash(r.password, r.hashed_password).await?
        };
        self.change(
            caller,
            AuthCommand::UserAdd {
                name: r.name,
                password_hash,
                no_password,
            },
        )
        .await
    }

    async fn user_get(
        &self,
        request: Request<pb::AuthUserGetRequest>,
    ) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        let caller = self.ctx.caller(&request)?;
        let name = request.into_inner().name;
        let (store, rev) = self.store().await?;
        // Root may read any user; a user its own record.
        if caller.user() != Some(name.as_str()) {
            store
                .check_admin(&caller)
                .map_err(|e| status::auth_error(&e))?;
        }
        let user = store
            .users
            .get(&name)
            .ok_or_else(|| status::auth_error(&AuthError::UserNotFound))?;
        Ok(Response::new(pb::AuthUserGetResponse {
            header: self.ctx.header(rev),
            roles: user.roles.clone(),
        }))
    }

    async fn user_list(
        &self,
        request: Request<pb::AuthUserListRequest>,
    ) -> Result<Response<pb::AuthUserListResponse>, Status> {
        let caller = self.ctx.caller(&request)?;
        let (store, rev) = self.store().await?;
        store
            .check_admin(&caller)
            .map_err(|e| status::auth_error(&e))?;
        Ok(Response::new(pb::AuthUserListResponse {
            header: self.ctx.header(rev),
            users: store.users.into_keys().collect(),
        }))
    }

    async fn user_delete(
        &self,
        request: Request<pb::AuthUserDeleteRequest>,
    ) -> Result<Response<pb::AuthUserDeleteResponse>, Status> {
        let caller = self.ctx.caller(&request)?;
        let name = request.into_inner().name;
        self.change(caller, AuthCommand::UserDelete { name }).await
    }

    async fn user_change_password(
        &self,
        request: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthUserChangePasswordResponse>, Status> {
        let caller = self.ctx.caller(&request)?;
        let r = request.into_inner();
        let password_hash = self.password_hash(r.password, r.hashed_password).await?;
        self.change(
            caller,
            AuthCommand::UserChangePassword {
                name: r.name,
                password_hash,
            },
        )
        .await
    }

    async fn user_grant_role(
        &self,
        request: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthUserGrantRoleResponse>, Status> {
        let caller = self.ctx.caller(&request)?;
        let r = request.into_inner();
        self.change(
            caller,
            AuthCommand::UserGrantRole {
                user: r.user,
                role: r.role,
            },
        )
        .await
    }

    async fn user_revoke_role(
        &self,
        request: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthUserRevokeRoleResponse>, Status> {
        let caller = self.ctx.caller(&request)?;
        let r = request.into_inner();
        self.change(
            caller,
            AuthCommand::UserRevokeRole {
                user: r.name,
                role: r.role,
            },
        )
        .await
    }

    async fn role_add(
        &self,
        request: Request<pb::AuthRoleAddRequest>,
    ) -> Result<Response<pb::AuthRoleAddResponse>, Status> {
        let caller = self.ctx.caller(&request)?;
        let name = request.into_inner().name;
        self.change(caller, AuthCommand::RoleAdd { name }).await
    }

    async fn role_get(
        &self,
        request: Request<pb::AuthRoleGetRequest>,
    ) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        let caller = self.ctx.caller(&request)?;
        let name = request.into_inner().role;
        let (store, rev) = self.store().await?;
        // Root may read any role; a user the roles it holds.
        let holds = caller
            .user()
            .and_then(|u| store.users.get(u))
            .is_some_and(|u| u.roles.contains(&name));
        if !holds {
            store
                .check_admin(&caller)
                .map_err(|e| status::auth_error(&e))?;
        }
        let role = store
            .roles
            .get(&name)
            .ok_or_else(|| status::auth_error(&AuthError::RoleNotFound))?;
        Ok(Response::new(pb::AuthRoleGetResponse {
            header: self.ctx.header(rev),
            perm: role.permissions.iter().map(perm_to_pb).collect(),
        }))
    }

    async fn role_list(
        &self,
        request: Request<pb::AuthRoleListRequest>,
    ) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        let caller = self.ctx.caller(&request)?;
        let (store, rev) = self.store().await?;
        store
            .check_admin(&caller)
            .map_err(|e| status::auth_error(&e))?;
        Ok(Response::new(pb::AuthRoleListResponse {
            header: self.ctx.header(rev),
            roles: store.roles.into_keys().collect(),
        }))
    }

    async fn role_delete(
        &self,
        request: Request<pb::AuthRoleDeleteRequest>,
    ) -> Result<Response<pb::AuthRoleDeleteResponse>, Status> {
        let caller = self.ctx.caller(&request)?;
        let name = request.into_inner().role;
        self.change(caller, AuthCommand::RoleDelete { name }).await
    }

    async fn role_grant_permission(
        &self,
        request: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        let caller = self.ctx.caller(&request)?;
        let r = request.into_inner();
        let perm = r.perm.ok_or_else(status::permission_not_given)?;
        self.change(
            caller,
            AuthCommand::RoleGrantPermission {
                role: r.name,
                permission: Permission {
                    kind: perm_kind(perm.perm_type),
                    key: perm.key,
                    range_end: perm.range_end,
                },
            },
        )
        .await
    }

    async fn role_revoke_permission(
        &self,
        request: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        let caller = self.ctx.caller(&request)?;
        let r = request.into_inner();
        self.change(
            caller,
            AuthCommand::RoleRevokePermission {
                role: r.role,
                key: r.key,
                range_end: r.range_end,
            },
        )
        .await
    }
}
