//! `user`, `role` and `auth`: etcdctl's commands over etcd's Auth service, with etcdctl's
//! arguments and its output, line for line, in each format etcdctl has for them.

use std::io::{BufRead, Write};

use cairn_proto::authpb::{Permission, UserAddOptions, permission};
use cairn_proto::etcdserverpb as pb;

use crate::cli::{AuthCommand, PermissionRange, RoleCommand, UserCommand};
use crate::endpoint::Connection;
use crate::error::Error;
use crate::key_range::prefix_range_end;
use crate::print::gojson::{GoJson, Obj};
use crate::print::{Lines, Printer, Shown, WriteOut, fields_header, go_quote};

/// An Auth response: its header, and the lists some of them carry.
trait AuthResponse: prost::Message {
    fn header(&self) -> Option<&pb::ResponseHeader>;
}

/// Prints `response` in the printer's format: `simple` writes the simple lines; the fields
/// output is the header (plus what `extra` writes), or none where etcdctl has none.
fn print<T: AuthResponse + GoJson>(
    out: &mut dyn Write,
    printer: Printer,
    response: &T,
    simple: impl Fn(&mut dyn Write) -> std::io::Result<()>,
    fields: Fields<'_>,
) -> Result<(), Error> {
    let header_only = |out: &mut dyn Write| fields_header(out, response.header());
    let with_extra = |out: &mut dyn Write| {
        fields_header(out, response.header())?;
        match fields {
            Fields::Extra(extra) => extra(out),
            _ => Ok(()),
        }
    };
    let fields: Option<Lines<'_>> = match fields {
        Fields::None => None,
        Fields::Header => Some(&header_only),
        Fields::Extra(_) => Some(&with_extra),
    };
    printer.print(
        out,
        &Shown {
            response,
            simple: &simple,
            fields,
            protobuf: true,
        },
    )
}

/// What etcdctl's fields format prints for an Auth response.
#[derive(Clone, Copy)]
enum Fields<'a> {
    /// Not supported (`user get`, `user list`).
    None,
    Header,
    /// The header, then these lines.
    Extra(Lines<'a>),
}

macro_rules! auth_responses {
    ($($response:ident $(, $list:ident)?);* $(;)?) => {$(
        impl AuthResponse for pb::$response {
            fn header(&self) -> Option<&pb::ResponseHeader> {
                self.header.as_ref()
            }
        }

        impl GoJson for pb::$response {
            fn go_json(&self, out: &mut String) {
                let mut obj = Obj::open(out);
                obj.msg("header", self.header.as_ref());
                $(obj.strs(stringify!($list), &self.$list);)?
                obj.close();
            }
        }
    )*};
}

auth_responses!(
    AuthUserAddResponse;
    AuthUserDeleteResponse;
    AuthUserGetResponse, roles;
    AuthUserListResponse, users;
    AuthUserChangePasswordResponse;
    AuthUserGrantRoleResponse;
    AuthUserRevokeRoleResponse;
    AuthRoleAddResponse;
    AuthRoleDeleteResponse;
    AuthRoleListResponse, roles;
    AuthRoleGrantPermissionResponse;
    AuthRoleRevokePermissionResponse;
);

impl AuthResponse for pb::AuthRoleGetResponse {
    fn header(&self) -> Option<&pb::ResponseHeader> {
        self.header.as_ref()
    }
}

impl GoJson for Permission {
    fn go_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.int("permType", self.perm_type)
            .bytes("key", &self.key)
            .bytes("range_end", &self.range_end);
        obj.close();
    }
}

impl GoJson for pb::AuthRoleGetResponse {
    fn go_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.msg("header", self.header.as_ref())
            .list("perm", &self.perm);
        obj.close();
    }
}

impl AuthResponse for pb::AuthStatusResponse {
    fn header(&self) -> Option<&pb::ResponseHeader> {
        self.header.as_ref()
    }
}

impl GoJson for pb::AuthStatusResponse {
    fn go_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.msg("header", self.header.as_ref())
            .bool("enabled", self.enabled)
            .int("authRevision", self.auth_revision);
        obj.close();
    }
}

/// A password the command line did not give: read from the terminal without echo
/// (`--interactive`, etcdctl's default), or as one line of stdin.
fn read_password(
    name: &str,
    interactive: bool,
    confirm: bool,
    input: &mut dyn BufRead,
) -> Result<String, Error> {
    if !interactive {
        let mut line = String::new();
        input.read_line(&mut line).map_err(Error::Password)?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    let first =
        rpassword::prompt_password(format!("Password of {name}: ")).map_err(Error::Password)?;
    if confirm {
        let again = rpassword::prompt_password(format!(
            "Type password of {name} again for confirmation: "
        ))?;
        if again != first {
            return Err(Error::BadArgs("given passwords are different".to_owned()));
        }
    }
    Ok(first)
}

pub async fn user(
    connection: &Connection,
    command: UserCommand,
    printer: Printer,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let mut auth = connection.auth();
    match command {
        UserCommand::Add {
            user,
            new_user_password,
            no_password,
            interactive,
        } => {
            let (name, given) = match user.split_once(':') {
                Some((name, password)) => (name.to_owned(), Some(password.to_owned())),
                None => (user, new_user_password),
            };
            let password = match (no_password, given) {
                (true, _) => String::new(),
                (false, Some(password)) => password,
                (false, None) => read_password(&name, interactive.interactive, true, input)?,
            };
            let request = pb::AuthUserAddRequest {
                name: name.clone(),
                password,
                options: Some(UserAddOptions { no_password }),
                hashed_password: String::new(),
            };
            let response = connection
                .deadline(auth.user_add(connection.request(request)))
                .await?;
            print(
                out,
                printer,
                &response,
                |out| writeln!(out, "User {name} created"),
                Fields::Header,
            )
        }
        UserCommand::Delete { name } => {
            let request = pb::AuthUserDeleteRequest { name: name.clone() };
            let response = connection
                .deadline(auth.user_delete(connection.request(request)))
                .await?;
            print(
                out,
                printer,
                &response,
                |out| writeln!(out, "User {name} deleted"),
                Fields::Header,
            )
        }
        UserCommand::Get { name, detail } => {
            let request = pb::AuthUserGetRequest { name: name.clone() };
            let response = connection
                .deadline(auth.user_get(connection.request(request)))
                .await?;
            if printer.format != WriteOut::Simple {
                return print(out, printer, &response, |_| Ok(()), Fields::None);
            }
            writeln!(out, "User: {name}")?;
            if !detail {
                write!(out, "Roles:")?;
                for role in &response.roles {
                    write!(out, " {role}")?;
                }
                writeln!(out)?;
                return Ok(());
            }
            // etcdctl prints each role as it gets it: a missing one ends the listing there.
            for role in &response.roles {
                writeln!(out)?;
                let request = pb::AuthRoleGetRequest { role: role.clone() };
                let perms = connection
                    .deadline(auth.role_get(connection.request(request)))
                    .await?;
                role_permissions(out, role, &perms.perm)?;
            }
            Ok(())
        }
        UserCommand::List => {
            let response = connection
                .deadline(auth.user_list(connection.request(pb::AuthUserListRequest {})))
                .await?;
            print(
                out,
                printer,
                &response,
                |out| response.users.iter().try_for_each(|u| writeln!(out, "{u}")),
                Fields::None,
            )
        }
        UserCommand::Passwd { name, interactive } => {
            let password = read_password(&name, interactive.interactive, true, input)?;
            let request = pb::AuthUserChangePasswordRequest {
                name,
                password,
                hashed_password: String::new(),
            };
            let response = connection
                .deadline(auth.user_change_password(connection.request(request)))
                .await?;
            print(
                out,
                printer,
                &response,
                |out| writeln!(out, "Password updated"),
                Fields::Header,
            )
        }
        UserCommand::GrantRole { user, role } => {
            let request = pb::AuthUserGrantRoleRequest {
                user: user.clone(),
                role: role.clone(),
            };
            let response = connection
                .deadline(auth.user_grant_role(connection.request(request)))
                .await?;
            print(
                out,
                printer,
                &response,
                |out| writeln!(out, "Role {role} is granted to user {user}"),
                Fields::Header,
            )
        }
        UserCommand::RevokeRole { user, role } => {
            let request = pb::AuthUserRevokeRoleRequest {
                name: user.clone(),
                role: role.clone(),
            };
            let response = connection
                .deadline(auth.user_revoke_role(connection.request(request)))
                .await?;
            print(
                out,
                printer,
                &response,
                |out| writeln!(out, "Role {role} is revoked from user {user}"),
                Fields::Header,
            )
        }
    }
}

/// etcdctl's key and range end for a role's permission.
fn permission_range(range: PermissionRange) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let key = range.key.into_bytes();
    let end = match (range.range_end, range.prefix, range.from_key) {
        (Some(_), true, _) | (Some(_), _, true) => {
            return Err(Error::BadArgs(
                "too many arguments: a range end with --prefix or --from-key".to_owned(),
            ));
        }
        (None, true, true) => {
            return Err(Error::BadArgs(
                "--from-key and --prefix flags are mutually exclusive".to_owned(),
            ));
        }
        (Some(end), false, false) => end.into_bytes(),
        (None, true, false) => prefix_range_end(&key),
        (None, false, true) => vec![0],
        (None, false, false) => Vec::new(),
    };
    Ok((key, end))
}

pub async fn role(
    connection: &Connection,
    command: RoleCommand,
    printer: Printer,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let mut auth = connection.auth();
    match command {
        RoleCommand::Add { name } => {
            let request = pb::AuthRoleAddRequest { name: name.clone() };
            let response = connection
                .deadline(auth.role_add(connection.request(request)))
                .await?;
            print(
                out,
                printer,
                &response,
                |out| writeln!(out, "Role {name} created"),
                Fields::Header,
            )
        }
        RoleCommand::Delete { name } => {
            let request = pb::AuthRoleDeleteRequest { role: name.clone() };
            let response = connection
                .deadline(auth.role_delete(connection.request(request)))
                .await?;
            print(
                out,
                printer,
                &response,
                |out| writeln!(out, "Role {name} deleted"),
                Fields::Header,
            )
        }
        RoleCommand::Get { name } => {
            let request = pb::AuthRoleGetRequest { role: name.clone() };
            let response = connection
                .deadline(auth.role_get(connection.request(request)))
                .await?;
            let perms = |out: &mut dyn Write| {
                for p in &response.perm {
                    let kind = permission::Type::try_from(p.perm_type)
                        .map(|t| t.as_str_name())
                        .unwrap_or("UNKNOWN");
                    // Go's Println puts a space between its two operands.
                    writeln!(out, "\"PermType\" :  {kind}")?;
                    writeln!(out, "\"Key\" : {}", go_quote(&p.key))?;
                    writeln!(out, "\"RangeEnd\" : {}", go_quote(&p.range_end))?;
                }
                Ok(())
            };
            print(
                out,
                printer,
                &response,
                |out| role_permissions(out, &name, &response.perm),
                Fields::Extra(&perms),
            )
        }
        RoleCommand::List => {
            let response = connection
                .deadline(auth.role_list(connection.request(pb::AuthRoleListRequest {})))
                .await?;
            let roles = |out: &mut dyn Write| {
                write!(out, "\"Roles\" :")?;
                for role in &response.roles {
                    write!(out, " {}", go_quote(role.as_bytes()))?;
                }
                writeln!(out)
            };
            print(
                out,
                printer,
                &response,
                |out| response.roles.iter().try_for_each(|r| writeln!(out, "{r}")),
                Fields::Extra(&roles),
            )
        }
        RoleCommand::GrantPermission {
            role,
            permission,
            range,
        } => {
            let perm_type = permission::Type::from_str_name(&permission.to_uppercase())
                .ok_or_else(|| Error::BadArgs(format!("invalid permission type: {permission}")))?;
            let (key, range_end) = permission_range(range)?;
            let request = pb::AuthRoleGrantPermissionRequest {
                name: role.clone(),
                perm: Some(Permission {
                    perm_type: perm_type as i32,
                    key,
                    range_end,
                }),
            };
            let response = connection
                .deadline(auth.role_grant_permission(connection.request(request)))
                .await?;
            print(
                out,
                printer,
                &response,
                |out| writeln!(out, "Role {role} updated"),
                Fields::Header,
            )
        }
        RoleCommand::RevokePermission { role, range } => {
            let (key, range_end) = permission_range(range)?;
            let request = pb::AuthRoleRevokePermissionRequest {
                role: role.clone(),
                key: key.clone(),
                range_end: range_end.clone(),
            };
            let response = connection
                .deadline(auth.role_revoke_permission(connection.request(request)))
                .await?;
            print(
                out,
                printer,
                &response,
                |out| {
                    let key = String::from_utf8_lossy(&key);
                    if range_end.is_empty() {
                        writeln!(out, "Permission of key {key} is revoked from role {role}")
                    } else {
                        let end = String::from_utf8_lossy(&range_end);
                        writeln!(
                            out,
                            "Permission of range [{key}, {end}) is revoked from role {role}"
                        )
                    }
                },
                Fields::Header,
            )
        }
    }
}

/// etcdctl's listing of a role: its read permissions, then its write permissions
/// (READWRITE ones in both).
fn role_permissions(out: &mut dyn Write, role: &str, perms: &[Permission]) -> std::io::Result<()> {
    use permission::Type;
    writeln!(out, "Role {role}")?;
    writeln!(out, "KV Read:")?;
    for p in perms.iter().filter(|p| p.perm_type != Type::Write as i32) {
        permission_line(out, p)?;
    }
    writeln!(out, "KV Write:")?;
    for p in perms.iter().filter(|p| p.perm_type != Type::Read as i32) {
        permission_line(out, p)?;
    }
    Ok(())
}

fn permission_line(out: &mut dyn Write, p: &Permission) -> std::io::Result<()> {
    let key = String::from_utf8_lossy(&p.key);
    match p.range_end.as_slice() {
        [] => writeln!(out, "\t{key}"),
        [0] => writeln!(out, "\t[{key}, <open ended>"),
        end => {
            write!(out, "\t[{key}, {})", String::from_utf8_lossy(end))?;
            if end == prefix_range_end(&p.key).as_slice() {
                write!(out, " (prefix {key})")?;
            }
            writeln!(out)
        }
    }
}

pub async fn auth(
    connection: &Connection,
    command: AuthCommand,
    printer: Printer,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let mut auth = connection.auth();
    match command {
        AuthCommand::Enable => {
            // As etcdctl: a root user without the root role is given it (creating the role),
            // then enabling is tried again.
            let response = loop {
                let enabled = connection
                    .deadline(auth.auth_enable(connection.request(pb::AuthEnableRequest {})))
                    .await;
                match enabled {
                    Err(Error::Status(m)) if m.ends_with("root user does not have root role") => {
                        let add = pb::AuthRoleAddRequest {
                            name: "root".to_owned(),
                        };
                        connection
                            .deadline(auth.role_add(connection.request(add)))
                            .await?;
                        let grant = pb::AuthUserGrantRoleRequest {
                            user: "root".to_owned(),
                            role: "root".to_owned(),
                        };
                        connection
                            .deadline(auth.user_grant_role(connection.request(grant)))
                            .await?;
                    }
                    other => break other?,
                }
            };
            // etcdctl prints this line whatever the output format.
            let _ = (response, printer);
            writeln!(out, "Authentication Enabled")?;
            Ok(())
        }
        AuthCommand::Disable => {
            let response = connection
                .deadline(auth.auth_disable(connection.request(pb::AuthDisableRequest {})))
                .await?;
            let _ = response;
            writeln!(out, "Authentication Disabled")?;
            Ok(())
        }
        AuthCommand::Status => {
            let response = connection
                .deadline(auth.auth_status(connection.request(pb::AuthStatusRequest {})))
                .await?;
            print(
                out,
                printer,
                &response,
                |out| {
                    writeln!(out, "Authentication Status: {}", response.enabled)?;
                    writeln!(out, "AuthRevision: {}", response.auth_revision)
                },
                Fields::Header,
            )
        }
    }
}
