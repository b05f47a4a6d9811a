//! The client API: one file per etcd service, plus conversions and the error mapping.
//!
//! Each handler validates and converts its request, then either proposes a
//! `state_machine::Command` through Raft (writes) or waits for a
//! linearizable read point and reads the local MVCC store (reads). Only this module knows
//! protobuf types; only [`status`] builds `tonic::Status`.

pub mod auth;
pub mod cluster;
pub mod concurrency;
pub mod convert;
pub mod election;
pub mod gateway;
pub mod http;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod plugin;
pub mod router;
pub mod status;
mod txn_depth;
pub mod watch;
pub mod watch_wire;

use std::sync::Arc;
use std::time::Duration;

use cairn_proto::etcdserverpb::{self as pb, ResponseHeader};
use tonic::{Response, Status};

use crate::auth::needs::Need;
use crate::auth::{Caller, Tokens};
use crate::mvcc::{self, Mvcc, ReadView};
use crate::plugin::engine::PolicyOperation;
use crate::raft::RaftNode;
use crate::state_machine::{Command, CommandResponse};
use crate::storage::Storage;

/// gRPC accepts this much more than `--max-request-bytes`, as etcd does, so that an oversized
/// request reaches the handler and gets etcd's "request is too large" rather than a transport
/// error. etcd also fragments watch responses (when asked) at the limit plus this.
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Request limits, from the server's flags.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    /// How long a request may wait for Raft before it fails with "request timed out".
    pub request_timeout: Duration,
    /// Shorter lease TTLs are raised to this (etcd: 1.5 election timeouts, rounded up).
    pub min_lease_ttl_secs: i64,
    /// Period of progress notifications to watchers that asked for them.
    pub watch_progress_notify_interval: Duration,
    /// `--election-timeout`.
    pub election_timeout: Duration,
    /// `--bcrypt-cost`: the cost of the password hashes this member computes.
    pub bcrypt_cost: u32,
}

/// A response message that carries etcd's `ResponseHeader`.
pub trait WithHeader {
    fn header_mut(&mut self) -> &mut Option<ResponseHeader>;
}

macro_rules! with_header {
    ($($t:ty),* $(,)?) => {
        $(impl WithHeader for $t {
            fn header_mut(&mut self) -> &mut Option<ResponseHeader> {
                &mut self.header
            }
        })*
    };
}

with_header!(
    pb::RangeResponse,
    pb::PutResponse,
    pb::DeleteRangeResponse,
    pb::TxnResponse,
    pb::AuthEnableResponse,
    pb::AuthDisableResponse,
    pb::AuthUserAddResponse,
    pb::AuthUserDeleteResponse,
    pb::AuthUserChangePasswordResponse,
    pb::AuthUserGrantRoleResponse,
    pb::AuthUserRevokeRoleResponse,
    pb::AuthRoleAddResponse,
    pb::AuthRoleDeleteResponse,
    pb::AuthRoleGrantPermissionResponse,
    pb::AuthRoleRevokePermissionResponse,
);

/// What every service handler needs. Shared behind an `Arc`.
pub struct ApiContext {
    pub raft: RaftNode,
    pub storage: Storage,
    pub cluster_id: u64,
    pub member_id: u64,
    /// `--initial-cluster-token`: part of every member ID (see `identity::member_id`).
    pub cluster_token: String,
    pub limits: Limits,
    /// Becomes true when the member shuts down; long-lived streams end on it.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// Lease deadlines (meaningful on the leader).
    pub lessor: Arc<crate::lease::Lessor>,
    /// Recent events shared by every watch stream.
    pub hub: crate::watch::EventHub,
    /// The auth store as this member applied it: tokens and reads are checked against it.
    pub auth: crate::state_machine::SharedAuth,
    /// How this member issues and checks tokens (`--auth-token`).
    pub tokens: Tokens,
    /// `--client-cert-auth`: a verified client certificate's common name is the user of a
    /// request without a token.
    pub client_cert_auth: bool,
    /// Policy hooks' decisions on reads and watches (`plugin/policy.rs`).
    pub policy_reads: crate::plugin::policy::Reads,
    /// Watch filters (`plugin/filter.rs`).
    pub watch_filters: crate::plugin::filter::Filters,
    /// The active alarms as this member applied them.
    pub alarms: crate::alarm::SharedAlarms,
    /// `--quota-backend-bytes` and the member's last measurement of its database and disk.
    pub quota: Arc<crate::alarm::Quota>,
    /// Bounds the bcrypt work running at once (password checks and hashes), so a burst of
    /// Authenticate calls with wrong passwords cannot take every core from other requests.
    pub bcrypt_slots: Arc<tokio::sync::Semaphore>,
}

pub type Context = Arc<ApiContext>;

/// One audit line for a change to users, roles, authentication or the plugin registry, on
/// the member that received it: who asked (the authenticated user), what changed, and the
/// revision it was applied at. Target `cairn::audit`, so `RUST_LOG` can route or silence it.
pub(crate) fn audit(caller: &crate::auth::Caller, change: &str, revision: i64) {
    tracing::info!(
        target: "cairn::audit",
        user = caller.user().unwrap_or("(anonymous)"),
        change,
        revision,
        "audit"
    );
}

/// A key range in an audit line: the key alone, or `[key, end)`, bytes outside printable
/// ASCII escaped.
pub(crate) fn audit_range(key: &[u8], end: &[u8]) -> String {
    match end {
        [] => key.escape_ascii().to_string(),
        end => format!("[{}, {})", key.escape_ascii(), end.escape_ascii()),
    }
}

/// Runs `work`, which may block for a while (a plugin call), letting a multi-threaded runtime
/// move its other tasks off this thread meanwhile (a current-thread runtime, as some tests
/// use, cannot: there it just runs).
pub(crate) fn blocking_in_place<T>(work: impl FnOnce() -> T) -> T {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_thread {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}

/// True if the client sent gRPC metadata `hasleader: true` (etcd clientv3's
/// `WithRequireLeader`): the call must fail rather than wait while there is no leader.
pub fn requires_leader<T>(request: &tonic::Request<T>) -> bool {
    asks_for_leader(request.metadata().get(HASLEADER).map(|v| v.as_bytes()))
}

/// The metadata key of clientv3's `WithRequireLeader` (an HTTP/2 header of a gRPC call).
const HASLEADER: &str = "hasleader";

/// The one reading of a `hasleader` value, wherever it arrives (gRPC metadata, or the
/// gateway's `Grpc-Metadata-Hasleader` header).
pub(crate) fn asks_for_leader(value: Option<&[u8]>) -> bool {
    value == Some(b"true")
}

/// etcd's interceptor rule for unary calls: one that requires a leader fails with
/// `no leader` while this member has none, instead of waiting for one. The gRPC interceptor
/// and the HTTP gateway both apply it.
pub(crate) fn refuse_without_leader(ctx: &Context, requires_leader: bool) -> Result<(), Status> {
    if requires_leader && ctx.raft.status().leader.is_none() {
        return Err(status::propose_error(&crate::raft::ProposeError::NoLeader));
    }
    Ok(())
}

/// etcd's gRPC interceptor, on the client port: counts every call by method and code for
/// `/metrics`, and fails a unary call with metadata `hasleader: true` with `no leader` while
/// this member has none, instead of letting it wait for one. (Streams check that metadata
/// themselves, see `watch.rs` and `lease.rs`.)
pub async fn intercept_grpc(
    axum::extract::State(ctx): axum::extract::State<Context>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let method = match crate::metrics::grpc_call(&request) {
        Some(m) => m,
        None => return next.run(request).await,
    };
    let wants_leader = asks_for_leader(request.headers().get(HASLEADER).map(|v| v.as_bytes()));
    // A call refused here, before its handler, is still counted as etcd counts it.
    let refuse = |refused: Status| {
        crate::metrics::grpc_refused(method, refused.code() as i32);
        refused.into_http()
    };
    if method.kind == "unary"
        && let Err(refused) = refuse_without_leader(&ctx, wants_leader)
    {
        return refuse(refused);
    }
    let request = if (method.service, method.method) == ("etcdserverpb.KV", "Txn") {
        match check_txn_depth(&ctx, request).await {
            Ok(request) => request,
            Err(refused) => return refuse(refused),
        }
    } else {
        request
    };
    let response = crate::metrics::count_grpc(method, request, |r| next.run(r)).await;
    grpc_go_size_error(response)
}

/// Refuses a Txn nested deeper than `--max-txn-ops` allows (etcd's "too many operations")
/// before prost decodes it: Cairn's prost has no recursion limit (etcd accepts txns nested up
/// to the op limit, past prost's default of 100 messages), so this bound is what keeps a
/// deeply nested request from exhausting the stack (see `txn_depth.rs`). The body is read
/// whole here, within gRPC's message limit (a larger one is refused as grpc-go refuses it),
/// and handed on unchanged.
async fn check_txn_depth(
    ctx: &Context,
    request: axum::extract::Request,
) -> Result<axum::extract::Request, Status> {
    let (parts, mut body) = request.into_parts();
    // One gRPC message: a 5-byte prefix (compression flag, length) and the message.
    let max_message = ctx.limits.max_request_bytes + GRPC_OVERHEAD_BYTES;
    let mut bytes: Vec<u8> = Vec::new();
    loop {
        if let Some(prefix) = bytes.get(..5) {
            let declared =
                u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
            if declared > max_message {
                return Err(status::message_too_large(declared, max_message));
            }
            if bytes.len() > 5 + max_message {
                break; // more than one message: tonic refuses that itself
            }
        }
        let frame = std::future::poll_fn(|cx| {
            http_body::Body::poll_frame(std::pin::Pin::new(&mut body), cx)
        })
        .await;
        match frame {
            None => break,
            Some(Err(e)) => return Err(status::request_stream_broken(e)),
            // Trailers: a gRPC request carries none that matter.
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
        }
    }
    if let Some(message) = bytes.get(5..)
        && bytes[0] == 0
        && let Some(depth) = txn_depth::txn_depth(message)
        && depth > ctx.limits.max_txn_ops
    {
        return Err(status::invalid_request(
            &crate::mvcc::validate::InvalidRequest::TooManyOps,
        ));
    }
    Ok(axum::extract::Request::from_parts(
        parts,
        axum::body::Body::from(bytes),
    ))
}

/// Rewrites tonic's answer to an over-limit request message (`OutOfRange`) into grpc-go's
/// (`ResourceExhausted`), which etcd's clients see. tonic refuses before any handler runs,
/// so the status is in the response headers; any other response passes after one header
/// comparison.
fn grpc_go_size_error(response: axum::response::Response) -> axum::response::Response {
    let out_of_range = response
        .headers()
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"11");
    if !out_of_range {
        return response;
    }
    match Status::from_header_map(response.headers())
        .and_then(|s| status::as_grpc_go_size_error(&s))
    {
        Some(status) => status.into_http(),
        None => response,
    }
}

/// The gRPC metadata key of the auth token (the gateway copies `Authorization` into it).
pub const TOKEN: &str = "token";

/// What a request says about who sends it: its auth token (metadata `token`, else
/// `authorization`, as etcd reads them) and its connection's verified client certificate
/// common name. Kept as it arrived by a stream, which checks it at each watcher's creation.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    pub token: Option<Vec<u8>>,
    pub common_name: Option<String>,
}

impl Credentials {
    pub fn of<T>(request: &tonic::Request<T>) -> Credentials {
        let metadata = request.metadata();
        Credentials {
            token: metadata
                .get(TOKEN)
                .or_else(|| metadata.get("authorization"))
                .map(|v| v.as_bytes().to_vec()),
            common_name: request
                .extensions()
                .get::<crate::net::tls::TlsInfo>()
                .and_then(|info| info.common_name.clone()),
        }
    }

    /// A gateway request's: its `Authorization` header, as is. (The gateway never uses a
    /// client certificate's name, as etcd's does not.)
    pub fn from_token(token: Option<&[u8]>) -> Credentials {
        Credentials {
            token: token.map(<[u8]>::to_vec),
            common_name: None,
        }
    }
}

impl ApiContext {
    /// Who is calling: the user named by the request's token, checked against this member's
    /// auth store (etcd's `invalid auth token` if it names nobody any more, is expired or was
    /// not signed by this cluster). With authentication off every caller is anonymous and a
    /// token is ignored, as in etcd.
    pub fn caller<T>(&self, request: &tonic::Request<T>) -> Result<Caller, Status> {
        self.caller_from(&Credentials::of(request))
    }

    /// [`Self::caller`] from credentials as they arrived.
    pub fn caller_from(&self, credentials: &Credentials) -> Result<Caller, Status> {
        if credentials.token.is_none()
            && self.client_cert_auth
            && let Some(cn) = &credentials.common_name
        {
            // As etcd: with `--client-cert-auth` and no token, the verified certificate's
            // common name is the user.
            return Ok(Caller::Certificate { user: cn.clone() });
        }
        self.caller_from_token(credentials.token.as_deref())
    }

    fn caller_from_token(&self, token: Option<&[u8]>) -> Result<Caller, Status> {
        let auth = self.auth.read().expect("auth store lock poisoned");
        if !auth.enabled {
            return Ok(Caller::Anonymous);
        }
        let Some(token) = token else {
            return Ok(Caller::Anonymous);
        };
        let token = std::str::from_utf8(token)
            .map_err(|_| status::auth_error(&crate::auth::AuthError::InvalidAuthToken))?;
        self.tokens
            .verify(&auth, token)
            .map_err(|e| status::auth_error(&e))
    }

    /// etcd's permission check of a read, against the auth store as applied here (call it
    /// after the read point, so the store is at least as new as the read), refined by the
    /// policy hooks bound to the keys read (`plugin/policy.rs`).
    pub fn check_read<'a>(
        &self,
        caller: &Caller,
        operation: PolicyOperation,
        needs: impl IntoIterator<Item = Need<'a>>,
    ) -> Result<(), Status> {
        // Who asks, from the auth store at this moment; its lock is released before any
        // hook runs (and before the registry is locked: no two locks are ever held here).
        // (`permissions` is everything while authentication is off.)
        let (subject, auth_revision) = {
            let auth = self.auth.read().expect("auth store lock poisoned");
            let subject = crate::plugin::policy::Subject::of(&auth, caller)
                .map_err(|e| status::auth_error(&e))?;
            (subject, auth.revision)
        };
        if subject.is_root() {
            return Ok(());
        }
        let policies = self.policy_reads.snapshot();
        let decided = if policies.is_empty() {
            subject.check_roles(needs)
        } else {
            let needs: Vec<Need<'a>> = needs.into_iter().collect();
            // Hooks run under fuel, not a clock: let the runtime move its other tasks off
            // this thread meanwhile.
            let decide = || {
                self.policy_reads
                    .decide(&policies, &subject, auth_revision, operation, &needs)
            };
            let outcome = blocking_in_place(decide);
            outcome.map_err(|fault| {
                // A fault of this member (its store could not be read), not a decision.
                tracing::warn!(error = %fault, "deciding a read's policy");
                Status::unavailable(format!("cairn: {fault}"))
            })?
        };
        decided.map_err(|e| status::auth_error(&e))
    }

    /// Whether `caller` names a current user (anyone, with authentication off).
    pub fn check_user(&self, caller: &Caller) -> Result<(), Status> {
        let auth = self.auth.read().expect("auth store lock poisoned");
        auth.permissions(caller)
            .map(|_| ())
            .map_err(|e| status::auth_error(&e))
    }

    /// etcd's check of what only root may do (anyone, with authentication off).
    pub fn check_admin(&self, caller: &Caller) -> Result<(), Status> {
        let auth = self.auth.read().expect("auth store lock poisoned");
        auth.check_admin(caller).map_err(|e| status::auth_error(&e))
    }

    /// Proposes a client's `command` as `caller`: apply checks the permission at its point
    /// of the log (see `Command::Request`).
    pub async fn propose_as(
        &self,
        caller: Caller,
        command: Command,
    ) -> Result<CommandResponse, Status> {
        self.check_quota(&command).await?;
        self.propose(Command::Request {
            caller,
            command: Box::new(command),
        })
        .await
    }

    /// etcd's quota check, before a client's command is proposed: a command that would grow
    /// the store past `--quota-backend-bytes` (or onto a nearly full disk) raises this
    /// member's NOSPACE alarm through Raft and is refused with `database space exceeded`.
    async fn check_quota(&self, command: &Command) -> Result<(), Status> {
        let cost = match command {
            Command::Kv(request) => crate::alarm::cost(request),
            Command::LeaseGrant { .. } => crate::alarm::LEASE_COST,
            _ => 0,
        };
        if !self.quota.refuses(cost) {
            return Ok(());
        }
        let raise = Command::Alarm {
            action: crate::alarm::AlarmAction::Activate,
            member: self.member_id,
            kind: crate::alarm::AlarmKind::NoSpace,
        };
        if let Err(e) = self.propose(raise).await {
            tracing::warn!(error = %e.message(), "could not raise the NOSPACE alarm");
        }
        Err(status::mvcc_error(&mvcc::MvccError::NoSpace))
    }

    /// Fills the identity fields of a response header; the revision stays as the handler set it.
    pub fn fill(&self, header: &mut Option<ResponseHeader>) {
        let h = header.get_or_insert_with(ResponseHeader::default);
        h.cluster_id = self.cluster_id;
        h.member_id = self.member_id;
        h.raft_term = self.raft.status().term;
    }

    /// Wraps a response whose header revision is set, filling in the identity fields.
    pub fn respond<T: WithHeader>(&self, mut out: T) -> Response<T> {
        self.fill(out.header_mut());
        Response::new(out)
    }

    /// A full header at `revision`.
    pub fn header(&self, revision: mvcc::Revision) -> Option<ResponseHeader> {
        let mut h = Some(ResponseHeader {
            revision,
            ..Default::default()
        });
        self.fill(&mut h);
        h
    }

    /// Rejects a write whose encoding is over `--max-request-bytes`, as etcd does before
    /// proposing it.
    pub fn check_size(&self, encoded_len: usize) -> Result<(), Status> {
        if encoded_len > self.limits.max_request_bytes {
            return Err(status::request_too_large());
        }
        Ok(())
    }

    /// Proposes `command` and waits for its response (bounded by the request timeout).
    pub async fn propose(&self, command: Command) -> Result<CommandResponse, Status> {
        if self.raft.status().is_learner {
            return Err(status::not_supported_for_learner());
        }
        let metrics = &crate::metrics::METRICS;
        let _pending = crate::metrics::GaugeGuard::new(&metrics.proposals_pending);
        let outcome =
            match tokio::time::timeout(self.limits.request_timeout, self.raft.write(command)).await
            {
                Ok(Ok(CommandResponse::Refused(e))) => Err(status::auth_error(&e)),
                Ok(Ok(resp)) => Ok(resp),
                Ok(Err(e)) => Err(status::propose_error(&e)),
                Err(_) => Err(status::timed_out()),
            };
        if outcome.is_err() {
            metrics.proposals_failed.inc();
        }
        outcome
    }

    /// Waits for a ReadIndex point (bounded by the request timeout): local reads after it are
    /// linearizable.
    pub async fn read_barrier(&self) -> Result<(), Status> {
        if self.raft.status().is_learner {
            return Err(status::not_supported_for_learner());
        }
        match tokio::time::timeout(self.limits.request_timeout, self.raft.read_barrier()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(status::propose_error(&e)),
            Err(_) => Err(status::timed_out()),
        }
    }

    /// Runs `read` against the local store; first waits for a ReadIndex point unless the
    /// client asked for a serializable read.
    pub async fn read<T: Send + 'static>(
        &self,
        serializable: bool,
        read: impl FnOnce(&ReadView<'_>) -> Result<T, mvcc::Error> + Send + 'static,
    ) -> Result<T, Status> {
        if !serializable {
            self.read_barrier().await?;
        }
        let storage = self.storage.clone();
        tokio::task::spawn_blocking(move || {
            let view = Mvcc::read_view(&storage)?;
            read(&view)
        })
        .await
        .map_err(|e| status::internal("read task failed", e))?
        .map_err(|e| status::storage_error(&e))
    }

    /// [`Self::read`] for a read of one key: a bounded amount of work, done on the calling
    /// task instead of the blocking pool (whose hand-off costs two thread wake-ups, a large
    /// share of a point read's latency).
    pub async fn read_point<T>(
        &self,
        serializable: bool,
        read: impl FnOnce(&ReadView<'_>) -> Result<T, mvcc::Error>,
    ) -> Result<T, Status> {
        if !serializable {
            self.read_barrier().await?;
        }
        Mvcc::read_view(&self.storage)
            .and_then(|view| read(&view))
            .map_err(|e| status::storage_error(&e))
    }
}
