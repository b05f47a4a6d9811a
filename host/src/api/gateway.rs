//! The HTTP/JSON gateway: etcd's grpc-gateway paths (`POST /v3/kv/put`, …) on the client port.
//!
//! Each route decodes a JSON body into the gRPC request message, calls the same service
//! handler gRPC calls, and encodes the answer. The JSON is grpc-gateway's proto3 mapping as
//! etcd 3.4 configures it, produced by the pbjson impls generated in `cairn-proto`: proto field
//! names on output (`create_revision`, `ID`), proto or lowerCamel names on input, bytes as
//! base64, 64-bit integers as strings, enums by name, zero values omitted, unknown fields
//! ignored. Errors are `{"error","message","code"}` with grpc-gateway's HTTP status for the
//! gRPC code.
//!
//! Streaming RPCs (`/v3/watch`, `/v3/lease/keepalive`, `/v3/election/observe`,
//! `/v3/maintenance/snapshot`) answer with one `{"result":…}` object per line. Their requests
//! are the JSON objects of the POST body, in order. As with etcd, a watch stays open after
//! the body ends, until the client goes away, and a keepalive stream ends with the body.
//!
//! The gateway enforces gRPC's request size limit on the decoded message, so an oversized
//! request gets the error a gRPC client would get.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::post;
use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::cluster_server::Cluster;
use cairn_proto::etcdserverpb::kv_server::Kv;
use cairn_proto::etcdserverpb::lease_server::Lease;
use cairn_proto::etcdserverpb::maintenance_server::Maintenance;
use cairn_proto::v3electionpb::{self as electionpb, election_server::Election};
use cairn_proto::v3lockpb::{self as lockpb, lock_server::Lock};
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};

use super::cluster::ClusterService;
use super::election::ElectionService;
use super::kv::KvService;
use super::lease::LeaseService;
use super::lock::LockService;
use super::maintenance::MaintenanceService;
use super::{Context, GRPC_OVERHEAD_BYTES, status};
use crate::metrics::{CallTally, GrpcMethod};

/// The path prefixes etcd 3.4 serves the gateway under (`/v3beta` is 3.3's, kept by 3.4).
const PREFIXES: [&str; 2] = ["/v3", "/v3beta"];

/// What every gateway handler shares.
struct Gateway {
    ctx: Context,
    /// gRPC's limit on a decoded request message.
    max_message: usize,
    /// The most JSON a request body may hold: base64 and field names make JSON larger than
    /// the message it carries, but never twice as large plus a little.
    max_body: usize,
}

type Shared = Arc<Gateway>;

/// The gateway's routes, under every prefix.
pub fn routes(ctx: &Context) -> Router {
    let max_message = ctx.limits.max_request_bytes + GRPC_OVERHEAD_BYTES;
    let gw = Arc::new(Gateway {
        ctx: ctx.clone(),
        max_message,
        max_body: max_message * 2 + 64 * 1024,
    });
    let mut v3 = Router::new();
    v3 = kv_routes(v3, &gw);
    v3 = lease_routes(v3, &gw);
    v3 = cluster_routes(v3, &gw);
    v3 = maintenance_routes(v3, &gw);
    v3 = concurrency_routes(v3, &gw);
    v3 = auth_routes(v3, &gw);
    v3 = plugin_routes(v3, &gw);
    let mut router = Router::new();
    for prefix in PREFIXES {
        router = router.nest(prefix, v3.clone());
    }
    router
}

/// Adds `POST path` calling `$svc.$method` with a `$req` decoded from JSON.
macro_rules! unary {
    ($router:ident, $gw:expr, $svc:expr, $path:literal, $method:ident, $req:ty, $grpc:literal) => {{
        let gw = $gw.clone();
        let svc = $svc.clone();
        $router = $router.route(
            $path,
            post(move |headers: HeaderMap, body: Body| {
                let gw = gw.clone();
                let svc = svc.clone();
                async move {
                    unary::<$req, _, _, _>(&gw, $grpc, headers, body, move |req| async move {
                        svc.$method(req).await
                    })
                    .await
                }
            }),
        );
    }};
}

/// Adds `POST path` for a server-streaming RPC: one request decoded from the body, answered
/// with `{"result":…}` lines.
macro_rules! server_stream {
    ($router:ident, $gw:expr, $svc:expr, $path:literal, $method:ident, $req:ty, $grpc:literal) => {{
        let gw = $gw.clone();
        let svc = $svc.clone();
        $router = $router.route(
            $path,
            post(move |headers: HeaderMap, body: Body| {
                let gw = gw.clone();
                let svc = svc.clone();
                async move {
                    let req = match decode::<$req>(&gw, body).await {
                        Ok(req) => req,
                        Err(status) => return error_response(&status),
                    };
                    let opened = svc.$method(grpc_request(&headers, req)).await;
                    streaming(method($grpc), opened.map(|r| r.into_inner().boxed()))
                }
            }),
        );
    }};
}

fn kv_routes(mut r: Router, gw: &Shared) -> Router {
    let kv = Arc::new(KvService::new(gw.ctx.clone()));
    unary! { r, gw, kv, "/kv/range", range, pb::RangeRequest, "etcdserverpb.KV/Range" }
    unary! { r, gw, kv, "/kv/put", put, pb::PutRequest, "etcdserverpb.KV/Put" }
    unary! { r, gw, kv, "/kv/deleterange", delete_range, pb::DeleteRangeRequest, "etcdserverpb.KV/DeleteRange" }
    unary! { r, gw, kv, "/kv/txn", txn, pb::TxnRequest, "etcdserverpb.KV/Txn" }
    unary! { r, gw, kv, "/kv/compaction", compact, pb::CompactionRequest, "etcdserverpb.KV/Compact" }
    let g = gw.clone();
    r.route(
        "/watch",
        post(move |headers: HeaderMap, body: Body| {
            let gw = g.clone();
            async move {
                let inbound =
                    request_stream::<pb::WatchRequest>(body, gw.max_message, BodyEnd::Hold);
                let opened = super::watch::open(
                    &gw.ctx,
                    requires_leader(&headers),
                    super::Credentials::from_token(header_token(&headers)),
                    inbound,
                );
                streaming(
                    method("etcdserverpb.Watch/Watch"),
                    opened.map(|s| {
                        s.map(|r| r.map(super::watch_wire::WatchFrame::into_pb))
                            .boxed()
                    }),
                )
            }
        }),
    )
}

fn lease_routes(mut r: Router, gw: &Shared) -> Router {
    let lease = Arc::new(LeaseService::new(gw.ctx.clone()));
    unary! { r, gw, lease, "/lease/grant", lease_grant, pb::LeaseGrantRequest, "etcdserverpb.Lease/LeaseGrant" }
    // etcd serves revoke, timetolive and leases under /kv/lease too (their 3.3 paths).
    unary! { r, gw, lease, "/lease/revoke", lease_revoke, pb::LeaseRevokeRequest, "etcdserverpb.Lease/LeaseRevoke" }
    unary! { r, gw, lease, "/kv/lease/revoke", lease_revoke, pb::LeaseRevokeRequest, "etcdserverpb.Lease/LeaseRevoke" }
    unary! { r, gw, lease, "/lease/timetolive", lease_time_to_live, pb::LeaseTimeToLiveRequest, "etcdserverpb.Lease/LeaseTimeToLive" }
    unary! { r, gw, lease, "/kv/lease/timetolive", lease_time_to_live, pb::LeaseTimeToLiveRequest, "etcdserverpb.Lease/LeaseTimeToLive" }
    unary! { r, gw, lease, "/lease/leases", lease_leases, pb::LeaseLeasesRequest, "etcdserverpb.Lease/LeaseLeases" }
    unary! { r, gw, lease, "/kv/lease/leases", lease_leases, pb::LeaseLeasesRequest, "etcdserverpb.Lease/LeaseLeases" }
    let g = gw.clone();
    r.route(
        "/lease/keepalive",
        post(move |headers: HeaderMap, body: Body| {
            let gw = g.clone();
            async move {
                let inbound = request_stream::<pb::LeaseKeepAliveRequest>(
                    body,
                    gw.max_message,
                    BodyEnd::Close,
                );
                let opened = gw
                    .ctx
                    .caller_from(&super::Credentials::from_token(header_token(&headers)))
                    .and_then(|caller| {
                        super::lease::keep_alive_stream(
                            &gw.ctx,
                            requires_leader(&headers),
                            &caller,
                            inbound,
                        )
                    });
                streaming(
                    method("etcdserverpb.Lease/LeaseKeepAlive"),
                    opened.map(|s| s.boxed()),
                )
            }
        }),
    )
}

fn cluster_routes(mut r: Router, gw: &Shared) -> Router {
    let c = Arc::new(ClusterService::new(gw.ctx.clone()));
    unary! { r, gw, c, "/cluster/member/add", member_add, pb::MemberAddRequest, "etcdserverpb.Cluster/MemberAdd" }
    unary! { r, gw, c, "/cluster/member/remove", member_remove, pb::MemberRemoveRequest, "etcdserverpb.Cluster/MemberRemove" }
    unary! { r, gw, c, "/cluster/member/update", member_update, pb::MemberUpdateRequest, "etcdserverpb.Cluster/MemberUpdate" }
    unary! { r, gw, c, "/cluster/member/list", member_list, pb::MemberListRequest, "etcdserverpb.Cluster/MemberList" }
    unary! { r, gw, c, "/cluster/member/promote", member_promote, pb::MemberPromoteRequest, "etcdserverpb.Cluster/MemberPromote" }
    r
}

fn maintenance_routes(mut r: Router, gw: &Shared) -> Router {
    let m = Arc::new(MaintenanceService::new(gw.ctx.clone()));
    unary! { r, gw, m, "/maintenance/alarm", alarm, pb::AlarmRequest, "etcdserverpb.Maintenance/Alarm" }
    unary! { r, gw, m, "/maintenance/status", status, pb::StatusRequest, "etcdserverpb.Maintenance/Status" }
    unary! { r, gw, m, "/maintenance/defragment", defragment, pb::DefragmentRequest, "etcdserverpb.Maintenance/Defragment" }
    unary! { r, gw, m, "/maintenance/hash", hash, pb::HashRequest, "etcdserverpb.Maintenance/Hash" }
    // etcd 3.4 has HashKV on `/maintenance/hash` too, where Hash shadows it; 3.5 moved it here.
    unary! { r, gw, m, "/maintenance/hashkv", hash_kv, pb::HashKvRequest, "etcdserverpb.Maintenance/HashKV" }
    unary! { r, gw, m, "/maintenance/transfer-leadership", move_leader, pb::MoveLeaderRequest, "etcdserverpb.Maintenance/MoveLeader" }
    unary! { r, gw, m, "/maintenance/downgrade", downgrade, pb::DowngradeRequest, "etcdserverpb.Maintenance/Downgrade" }
    server_stream! { r, gw, m, "/maintenance/snapshot", snapshot, pb::SnapshotRequest, "etcdserverpb.Maintenance/Snapshot" }
    r
}

fn concurrency_routes(mut r: Router, gw: &Shared) -> Router {
    let lock = Arc::new(LockService::new(gw.ctx.clone()));
    unary! { r, gw, lock, "/lock/lock", lock, lockpb::LockRequest, "v3lockpb.Lock/Lock" }
    unary! { r, gw, lock, "/lock/unlock", unlock, lockpb::UnlockRequest, "v3lockpb.Lock/Unlock" }
    let e = Arc::new(ElectionService::new(gw.ctx.clone()));
    unary! { r, gw, e, "/election/campaign", campaign, electionpb::CampaignRequest, "v3electionpb.Election/Campaign" }
    unary! { r, gw, e, "/election/proclaim", proclaim, electionpb::ProclaimRequest, "v3electionpb.Election/Proclaim" }
    unary! { r, gw, e, "/election/leader", leader, electionpb::LeaderRequest, "v3electionpb.Election/Leader" }
    unary! { r, gw, e, "/election/resign", resign, electionpb::ResignRequest, "v3electionpb.Election/Resign" }
    server_stream! { r, gw, e, "/election/observe", observe, electionpb::LeaderRequest, "v3electionpb.Election/Observe" }
    r
}

/// Cairn's own plugin registry, under `/v3/cairn/plugin/`.
fn plugin_routes(mut r: Router, gw: &Shared) -> Router {
    use cairn_proto::cairn_plugin as pp;
    use cairn_proto::cairn_plugin::plugin_server::Plugin as _;
    let p = Arc::new(super::plugin::PluginService::new(gw.ctx.clone()));
    unary! { r, gw, p, "/cairn/plugin/install", install, pp::InstallRequest, "cairn.plugin.v1.Plugin/Install" }
    unary! { r, gw, p, "/cairn/plugin/bind", bind, pp::BindRequest, "cairn.plugin.v1.Plugin/Bind" }
    unary! { r, gw, p, "/cairn/plugin/unbind", unbind, pp::UnbindRequest, "cairn.plugin.v1.Plugin/Unbind" }
    unary! { r, gw, p, "/cairn/plugin/remove", remove, pp::RemoveRequest, "cairn.plugin.v1.Plugin/Remove" }
    unary! { r, gw, p, "/cairn/plugin/list", list, pp::ListRequest, "cairn.plugin.v1.Plugin/List" }
    unary! { r, gw, p, "/cairn/plugin/get", get, pp::GetRequest, "cairn.plugin.v1.Plugin/Get" }
    r
}

/// etcd's Auth service under `/v3/auth/`.
fn auth_routes(mut r: Router, gw: &Shared) -> Router {
    use cairn_proto::etcdserverpb::auth_server::Auth as _;
    let a = Arc::new(super::auth::AuthService::new(gw.ctx.clone()));
    unary! { r, gw, a, "/auth/enable", auth_enable, pb::AuthEnableRequest, "etcdserverpb.Auth/AuthEnable" }
    unary! { r, gw, a, "/auth/disable", auth_disable, pb::AuthDisableRequest, "etcdserverpb.Auth/AuthDisable" }
    unary! { r, gw, a, "/auth/status", auth_status, pb::AuthStatusRequest, "etcdserverpb.Auth/AuthStatus" }
    unary! { r, gw, a, "/auth/authenticate", authenticate, pb::AuthenticateRequest, "etcdserverpb.Auth/Authenticate" }
    unary! { r, gw, a, "/auth/user/add", user_add, pb::AuthUserAddRequest, "etcdserverpb.Auth/UserAdd" }
    unary! { r, gw, a, "/auth/user/get", user_get, pb::AuthUserGetRequest, "etcdserverpb.Auth/UserGet" }
    unary! { r, gw, a, "/auth/user/list", user_list, pb::AuthUserListRequest, "etcdserverpb.Auth/UserList" }
    unary! { r, gw, a, "/auth/user/delete", user_delete, pb::AuthUserDeleteRequest, "etcdserverpb.Auth/UserDelete" }
    unary! { r, gw, a, "/auth/user/changepw", user_change_password, pb::AuthUserChangePasswordRequest, "etcdserverpb.Auth/UserChangePassword" }
    unary! { r, gw, a, "/auth/user/grant", user_grant_role, pb::AuthUserGrantRoleRequest, "etcdserverpb.Auth/UserGrantRole" }
    unary! { r, gw, a, "/auth/user/revoke", user_revoke_role, pb::AuthUserRevokeRoleRequest, "etcdserverpb.Auth/UserRevokeRole" }
    unary! { r, gw, a, "/auth/role/add", role_add, pb::AuthRoleAddRequest, "etcdserverpb.Auth/RoleAdd" }
    unary! { r, gw, a, "/auth/role/get", role_get, pb::AuthRoleGetRequest, "etcdserverpb.Auth/RoleGet" }
    unary! { r, gw, a, "/auth/role/list", role_list, pb::AuthRoleListRequest, "etcdserverpb.Auth/RoleList" }
    unary! { r, gw, a, "/auth/role/delete", role_delete, pb::AuthRoleDeleteRequest, "etcdserverpb.Auth/RoleDelete" }
    unary! { r, gw, a, "/auth/role/grant", role_grant_permission, pb::AuthRoleGrantPermissionRequest, "etcdserverpb.Auth/RoleGrantPermission" }
    unary! { r, gw, a, "/auth/role/revoke", role_revoke_permission, pb::AuthRoleRevokePermissionRequest, "etcdserverpb.Auth/RoleRevokePermission" }
    r
}

/// The metrics label of a method this file routes (all are in the table).
fn method(full: &str) -> Option<GrpcMethod> {
    GrpcMethod::from_path(&format!("/{full}"))
}

/// Decodes, calls and encodes one unary RPC.
async fn unary<Req, Resp, F, Fut>(
    gw: &Gateway,
    grpc: &str,
    headers: HeaderMap,
    body: Body,
    call: F,
) -> Response
where
    Req: DeserializeOwned + prost::Message + Default,
    Resp: Serialize + prost::Message,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let req = match decode::<Req>(gw, body).await {
        Ok(req) => req,
        Err(status) => return error_response(&status),
    };
    // The gateway's calls count as gRPC calls, as etcd's gateway is a gRPC client of its own
    // server.
    let mut tally = method(grpc).map(CallTally::start);
    if let Some(t) = &tally {
        t.received(1, req.encoded_len() as u64);
    }
    let request = grpc_request(&headers, req);
    let requires_leader = super::requires_leader(&request);
    let result = async {
        super::refuse_without_leader(&gw.ctx, requires_leader)?;
        call(request).await
    }
    .await;
    if let Some(t) = &mut tally {
        match &result {
            Ok(resp) => {
                t.sent(1, resp.get_ref().encoded_len() as u64);
                t.finish(Code::Ok as i32);
            }
            Err(status) => t.finish(status.code() as i32),
        }
    }
    match result {
        Ok(resp) => json_response(StatusCode::OK, &resp.into_inner()),
        Err(status) => error_response(&status),
    }
}

/// Reads and decodes a request body. An empty body is the empty message, as in etcd.
async fn decode<Req>(gw: &Gateway, body: Body) -> Result<Req, Status>
where
    Req: DeserializeOwned + prost::Message + Default,
{
    let bytes = axum::body::to_bytes(body, gw.max_body)
        .await
        .map_err(|_| body_too_large(gw.max_body))?;
    let req: Req = if bytes.iter().all(u8::is_ascii_whitespace) {
        Req::default()
    } else {
        // The first JSON value; anything after it is ignored, as Go's decoder in etcd does.
        let mut value = serde_json::Deserializer::from_slice(&bytes)
            .into_iter::<serde_json::Value>()
            .next()
            .unwrap_or(Ok(serde_json::Value::Null))
            .map_err(|e| bad_json(&e))?;
        drop_nulls(&mut value);
        if value.is_null() {
            Req::default()
        } else {
            Req::deserialize(value).map_err(|e| bad_json(&e))?
        }
    };
    let len = req.encoded_len();
    if len > gw.max_message {
        // What a gRPC client sending the same message gets from etcd.
        return Err(status::message_too_large(len, gw.max_message));
    }
    Ok(req)
}

/// proto3 JSON reads `null` as the field's default, which is what leaving it out means
/// (etcd accepts `{"key":null}`); pbjson refuses `null` for some types, so nulls go first.
fn drop_nulls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

fn bad_json(e: &serde_json::Error) -> Status {
    status::bad_json(&e.to_string())
}

fn body_too_large(max: usize) -> Status {
    status::body_too_large(max)
}

/// The gRPC request a gateway call stands for. As in etcd's gateway, the `Authorization`
/// header carries the auth token, and `Grpc-Metadata-<key>` headers become metadata `<key>`
/// (`Grpc-Metadata-Hasleader: true` is clientv3's `WithRequireLeader`).
fn grpc_request<T>(headers: &HeaderMap, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let metadata = request.metadata_mut();
    if let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| tonic::metadata::MetadataValue::try_from(v.as_bytes()).ok())
    {
        metadata.insert("token", token);
    }
    for (name, value) in headers {
        let Some(key) = name.as_str().strip_prefix("grpc-metadata-") else {
            continue;
        };
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_bytes()),
        ) {
            metadata.insert(key, value);
        }
    }
    request
}

/// Whether the headers carry clientv3's `WithRequireLeader` (`Grpc-Metadata-Hasleader`).
/// The auth token of a gateway request: its `Authorization` header, as is (no "Bearer").
fn header_token(headers: &HeaderMap) -> Option<&[u8]> {
    headers
        .get(http::header::AUTHORIZATION)
        .map(|v| v.as_bytes())
}

fn requires_leader(headers: &HeaderMap) -> bool {
    super::asks_for_leader(headers.get("grpc-metadata-hasleader").map(|v| v.as_bytes()))
}

/// What the request stream of a streaming call does when the POST body ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BodyEnd {
    /// Stay open (pending) until the response side is dropped, so the call lives until the
    /// client disconnects: etcd's watch server ignores the end of the client's stream.
    Hold,
    /// End: etcd's keepalive server ends the call when the client's stream ends.
    Close,
}

/// The request messages of a streaming call: the JSON objects of the body, in order, each
/// under gRPC's message limit. Malformed JSON ends the requests as the end of the body does
/// (etcd's gateway stops reading there too).
fn request_stream<Req>(
    body: Body,
    max_message: usize,
    at_end: BodyEnd,
) -> ReceiverStream<Result<Req, Status>>
where
    Req: DeserializeOwned + Send + 'static,
{
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut data = body.into_data_stream();
        let mut buf: Vec<u8> = Vec::new();
        let mut ready = false;
        loop {
            while ready {
                let mut values = serde_json::Deserializer::from_slice(&buf).into_iter::<Req>();
                match values.next() {
                    Some(Ok(req)) => {
                        let used = values.byte_offset();
                        buf.drain(..used);
                        if tx.send(Ok(req)).await.is_err() {
                            return;
                        }
                    }
                    // Only part of an object so far: wait for more.
                    Some(Err(e)) if e.is_eof() => ready = false,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "malformed JSON in a gateway request stream");
                        break;
                    }
                    None => {
                        buf.clear();
                        ready = false;
                    }
                }
            }
            if ready {
                break; // malformed: stop reading
            }
            match data.next().await {
                Some(Ok(chunk)) => {
                    // Try to decode only once an object may have closed.
                    ready = chunk.contains(&b'}');
                    buf.extend_from_slice(&chunk);
                    if buf.len() > max_message * 2 {
                        let _ = tx.send(Err(body_too_large(max_message * 2))).await;
                        return;
                    }
                }
                Some(Err(_)) => return,
                None => break,
            }
        }
        if at_end == BodyEnd::Hold {
            tx.closed().await;
        }
    });
    ReceiverStream::new(rx)
}

/// Answers a streaming call: one `{"result":…}` line per message; an error after the stream
/// began is a last line `{"error":{…}}`, grpc-gateway's stream error.
fn streaming<Resp>(
    grpc: Option<GrpcMethod>,
    opened: Result<BoxStream<'static, Result<Resp, Status>>, Status>,
) -> Response
where
    Resp: Serialize + prost::Message + Send + 'static,
{
    // Dropped unfinished (the client went away), the tally counts the call `Canceled`.
    let mut tally = grpc.map(CallTally::start);
    let inner = match opened {
        Ok(inner) => inner,
        Err(status) => {
            if let Some(t) = &mut tally {
                t.finish(status.code() as i32);
            }
            return error_response(&status);
        }
    };
    let finish = |tally: &mut Option<CallTally>, code: i32| {
        if let Some(t) = tally {
            t.finish(code);
        }
    };
    let lines = futures::stream::unfold(
        (inner, tally, false),
        move |(mut inner, mut tally, done)| async move {
            if done {
                return None;
            }
            let line = match inner.next().await {
                Some(Ok(msg)) => {
                    if let Some(t) = &tally {
                        t.sent(1, msg.encoded_len() as u64);
                    }
                    let mut line = serde_json::to_vec(&StreamResult { result: &msg })
                        .unwrap_or_else(|e| encode_failure(&e));
                    line.push(b'\n');
                    return Some((
                        Ok::<_, std::convert::Infallible>(Bytes::from(line)),
                        (inner, tally, false),
                    ));
                }
                Some(Err(status)) => {
                    finish(&mut tally, status.code() as i32);
                    stream_error_line(&status)
                }
                None => {
                    finish(&mut tally, Code::Ok as i32);
                    return None;
                }
            };
            Some((Ok(Bytes::from(line)), (inner, tally, true)))
        },
    );
    let mut response = Response::new(Body::from_stream(lines));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[derive(Serialize)]
struct StreamResult<'a, T> {
    result: &'a T,
}

fn stream_error_line(status: &Status) -> Vec<u8> {
    let code = status.code() as i32;
    let http = http_status(status.code());
    let body = serde_json::json!({
        "error": {
            "grpc_code": code,
            "http_code": http.as_u16(),
            "message": status.message(),
            "http_status": http.canonical_reason().unwrap_or(""),
        }
    });
    let mut line = body.to_string().into_bytes();
    line.push(b'\n');
    line
}

/// pbjson encodes every message of etcd's protos; this is reachable only through a bug there.
fn encode_failure(e: &serde_json::Error) -> Vec<u8> {
    stream_error_line(&status::cannot_encode_json(&e.to_string()))
}

fn json_response<T: Serialize>(code: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut response = Response::new(Body::from(bytes));
            *response.status_mut() = code;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(e) => error_response(&status::cannot_encode_json(&e.to_string())),
    }
}

/// etcd 3.4's gateway error body, with grpc-gateway's HTTP status for the code.
pub fn error_response(status: &Status) -> Response {
    #[derive(Serialize)]
    struct ErrorBody<'a> {
        error: &'a str,
        message: &'a str,
        code: i32,
    }
    let body = ErrorBody {
        error: status.message(),
        message: status.message(),
        code: status.code() as i32,
    };
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = http_status(status.code());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// grpc-gateway's `HTTPStatusFromCode` as etcd 3.4 vendors it: `FailedPrecondition` is
/// 412 there (later grpc-gateway releases answer 400).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[test]
    fn json_follows_etcds_gateway() {
        let req: pb::RangeRequest = serde_json::from_str(
            r#"{"key":"Zm9v","rangeEnd":"Zm9w","sort_order":"DESCEND","revision":"7","limit":3,"bogus":1}"#,
        )
        .expect("decodes");
        assert_eq!(req.key, b"foo");
        assert_eq!(req.range_end, b"fop");
        assert_eq!(req.sort_order, pb::range_request::SortOrder::Descend as i32);
        assert_eq!((req.revision, req.limit), (7, 3));
        let mut nulls = serde_json::json!({"key": null, "range_end": "Zm9w", "limit": null});
        drop_nulls(&mut nulls);
        let null = pb::RangeRequest::deserialize(nulls).expect("nulls are defaults");
        assert!(null.key.is_empty());
        assert_eq!(null.range_end, b"fop");

        let resp = pb::LeaseGrantResponse {
            header: Some(pb::ResponseHeader {
                revision: 4,
                ..Default::default()
            }),
            id: 12,
            ttl: 30,
            error: String::new(),
        };
        assert_eq!(
            serde_json::to_string(&resp).expect("encodes"),
            r#"{"header":{"revision":"4"},"ID":"12","TTL":"30"}"#
        );
        let event = cairn_proto::mvccpb::Event {
            r#type: cairn_proto::mvccpb::event::EventType::Delete as i32,
            kv: None,
            prev_kv: None,
        };
        assert_eq!(
            serde_json::to_string(&event).expect("encodes"),
            r#"{"type":"DELETE"}"#
        );
    }

    #[test]
    fn http_status_follows_grpc_gateway() {
        assert_eq!(http_status(Code::OutOfRange), StatusCode::BAD_REQUEST);
        assert_eq!(
            http_status(Code::FailedPrecondition),
            StatusCode::PRECONDITION_FAILED
        );
        assert_eq!(
            http_status(Code::ResourceExhausted),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            http_status(Code::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            http_status(Code::Unimplemented),
            StatusCode::NOT_IMPLEMENTED
        );
    }
}
