//! gRPC calls as go-grpc-prometheus counts them for etcd: started, handled by code, messages
//! received and sent, and (with `--metrics extensive`) the handling time, per method; and the
//! bytes of every message, etcd's `etcd_network_client_grpc_*_bytes_total`.
//!
//! The client port counts at the HTTP layer ([`count_grpc`]): request and response bodies are
//! wrapped and their gRPC frames (a flag byte and a 4-byte length before each message) counted
//! as they pass, and the call's code read from the response headers or trailers. The JSON
//! gateway counts its calls through a [`CallTally`] directly.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http_body::Frame;
use prometheus::{Histogram, IntCounter};

use super::{Builder, METRICS};

/// One gRPC method, as go-grpc-prometheus labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrpcMethod {
    pub service: &'static str,
    pub method: &'static str,
    pub kind: &'static str,
    /// Its row in [`GRPC_METHODS`], where its counters are.
    index: usize,
}

const UNARY: &str = "unary";
const BIDI: &str = "bidi_stream";
const SERVER_STREAM: &str = "server_stream";

/// Every etcd RPC with its kind. Only these are counted, so a client sending made-up paths
/// cannot grow the label sets without bound.
const GRPC_METHODS: [(&str, &str, &str); 48] = [
    ("etcdserverpb.KV", "Range", UNARY),
    ("etcdserverpb.KV", "Put", UNARY),
    ("etcdserverpb.KV", "DeleteRange", UNARY),
    ("etcdserverpb.KV", "Txn", UNARY),
    ("etcdserverpb.KV", "Compact", UNARY),
    ("etcdserverpb.Watch", "Watch", BIDI),
    ("etcdserverpb.Lease", "LeaseGrant", UNARY),
    ("etcdserverpb.Lease", "LeaseRevoke", UNARY),
    ("etcdserverpb.Lease", "LeaseKeepAlive", BIDI),
    ("etcdserverpb.Lease", "LeaseTimeToLive", UNARY),
    ("etcdserverpb.Lease", "LeaseLeases", UNARY),
    ("etcdserverpb.Cluster", "MemberAdd", UNARY),
    ("etcdserverpb.Cluster", "MemberRemove", UNARY),
    ("etcdserverpb.Cluster", "MemberUpdate", UNARY),
    ("etcdserverpb.Cluster", "MemberList", UNARY),
    ("etcdserverpb.Cluster", "MemberPromote", UNARY),
    ("etcdserverpb.Maintenance", "Alarm", UNARY),
    ("etcdserverpb.Maintenance", "Status", UNARY),
    ("etcdserverpb.Maintenance", "Defragment", UNARY),
    ("etcdserverpb.Maintenance", "Hash", UNARY),
    ("etcdserverpb.Maintenance", "HashKV", UNARY),
    ("etcdserverpb.Maintenance", "Snapshot", SERVER_STREAM),
    ("etcdserverpb.Maintenance", "MoveLeader", UNARY),
    ("etcdserverpb.Maintenance", "Downgrade", UNARY),
    ("etcdserverpb.Auth", "AuthEnable", UNARY),
    ("etcdserverpb.Auth", "AuthDisable", UNARY),
    ("etcdserverpb.Auth", "AuthStatus", UNARY),
    ("etcdserverpb.Auth", "Authenticate", UNARY),
    ("etcdserverpb.Auth", "UserAdd", UNARY),
    ("etcdserverpb.Auth", "UserGet", UNARY),
    ("etcdserverpb.Auth", "UserList", UNARY),
    ("etcdserverpb.Auth", "UserDelete", UNARY),
    ("etcdserverpb.Auth", "UserChangePassword", UNARY),
    ("etcdserverpb.Auth", "UserGrantRole", UNARY),
    ("etcdserverpb.Auth", "UserRevokeRole", UNARY),
    ("etcdserverpb.Auth", "RoleAdd", UNARY),
    ("etcdserverpb.Auth", "RoleGet", UNARY),
    ("etcdserverpb.Auth", "RoleList", UNARY),
    ("etcdserverpb.Auth", "RoleDelete", UNARY),
    ("etcdserverpb.Auth", "RoleGrantPermission", UNARY),
    ("etcdserverpb.Auth", "RoleRevokePermission", UNARY),
    ("v3lockpb.Lock", "Lock", UNARY),
    ("v3lockpb.Lock", "Unlock", UNARY),
    ("v3electionpb.Election", "Campaign", UNARY),
    ("v3electionpb.Election", "Proclaim", UNARY),
    ("v3electionpb.Election", "Leader", UNARY),
    ("v3electionpb.Election", "Observe", SERVER_STREAM),
    ("v3electionpb.Election", "Resign", UNARY),
];

/// gRPC has 17 status codes.
const CODES: usize = 17;

impl GrpcMethod {
    /// The method named by a gRPC path (`/etcdserverpb.KV/Range`), if it is one of etcd's.
    pub fn from_path(path: &str) -> Option<GrpcMethod> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        Self::get(service, method)
    }

    pub fn get(service: &str, method: &str) -> Option<GrpcMethod> {
        let index = GRPC_METHODS
            .iter()
            .position(|(s, m, _)| *m == method && *s == service)?;
        let (service, method, kind) = GRPC_METHODS[index];
        Some(GrpcMethod {
            service,
            method,
            kind,
            index,
        })
    }
}

/// gRPC status codes by number, with go-grpc-prometheus's names.
const CODE_NAMES: [&str; CODES] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// Every method's instruments, looked up once.
#[derive(Debug)]
pub(crate) struct GrpcMetrics {
    rows: Vec<MethodCounters>,
    /// `--metrics extensive`: the handling-time histograms are exported.
    extensive: AtomicBool,
}

#[derive(Debug)]
struct MethodCounters {
    started: IntCounter,
    handled: [IntCounter; CODES],
    received: IntCounter,
    sent: IntCounter,
    handling: Histogram,
}

/// The handling-time family, exported only with `--metrics extensive`, as etcd does.
pub(crate) const HANDLING_SECONDS: &str = "grpc_server_handling_seconds";

impl GrpcMetrics {
    /// Every method's series starts at zero, as go-grpc-prometheus pre-registers them, so
    /// a dashboard's rate() has a baseline before the first call.
    pub(super) fn new(b: &Builder) -> GrpcMetrics {
        let labels = ["grpc_service", "grpc_method", "grpc_type"];
        let started = b.counter_vec(
            "grpc_server_started_total",
            "Total number of RPCs started on the server.",
            &labels,
        );
        let handled = b.counter_vec(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            &["grpc_service", "grpc_method", "grpc_type", "grpc_code"],
        );
        let received = b.counter_vec(
            "grpc_server_msg_received_total",
            "Total number of RPC stream messages received on the server.",
            &labels,
        );
        let sent = b.counter_vec(
            "grpc_server_msg_sent_total",
            "Total number of gRPC stream messages sent by the server.",
            &labels,
        );
        // go-grpc-prometheus's default buckets (Prometheus' DefBuckets).
        let handling = b.histogram_vec(
            HANDLING_SECONDS,
            "Histogram of response latency (seconds) of gRPC that had been application-level \
             handled by the server.",
            &labels,
            &prometheus::DEFAULT_BUCKETS[..],
        );
        let rows = GRPC_METHODS
            .iter()
            .map(|(service, method, kind)| {
                let l = [*service, *method, *kind];
                MethodCounters {
                    started: started.with_label_values(&l),
                    handled: std::array::from_fn(|code| {
                        handled.with_label_values(&[service, method, kind, CODE_NAMES[code]])
                    }),
                    received: received.with_label_values(&l),
                    sent: sent.with_label_values(&l),
                    handling: handling.with_label_values(&l),
                }
            })
            .collect();
        GrpcMetrics {
            rows,
            extensive: AtomicBool::new(false),
        }
    }

    /// `--metrics`: `extensive` also exports the handling-time histograms.
    pub fn set_extensive(&self, on: bool) {
        self.extensive.store(on, Ordering::Relaxed);
    }

    pub(crate) fn extensive(&self) -> bool {
        self.extensive.load(Ordering::Relaxed)
    }
}

/// One call, from its start to its code. Dropped without a code, it counts as `Canceled`
/// (the client went away).
#[derive(Debug)]
pub struct CallTally {
    row: &'static MethodCounters,
    started: Instant,
    finished: bool,
}

impl CallTally {
    pub fn start(method: GrpcMethod) -> CallTally {
        let row = &METRICS.grpc.rows[method.index];
        row.started.inc();
        CallTally {
            row,
            started: Instant::now(),
            finished: false,
        }
    }

    /// Messages (and their bytes) received from the client.
    pub fn received(&self, messages: u64, bytes: u64) {
        received(self.row, messages, bytes);
    }

    /// Messages (and their bytes) sent to the client.
    pub fn sent(&self, messages: u64, bytes: u64) {
        self.row.sent.inc_by(messages);
        METRICS.client_sent_bytes.inc_by(bytes);
    }

    /// The call ended with `code`; later codes are ignored.
    pub fn finish(&mut self, code: i32) {
        if self.finished {
            return;
        }
        self.finished = true;
        let code = usize::try_from(code)
            .ok()
            .filter(|c| *c < CODES)
            .unwrap_or(2); // Unknown
        self.row.handled[code].inc();
        self.row
            .handling
            .observe(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for CallTally {
    fn drop(&mut self) {
        self.finish(tonic::Code::Cancelled as i32);
    }
}

fn received(row: &MethodCounters, messages: u64, bytes: u64) {
    row.received.inc_by(messages);
    METRICS.client_received_bytes.inc_by(bytes);
}

/// Counts a call answered with `code` before its handler ran: started and handled at once.
pub fn grpc_refused(method: GrpcMethod, code: i32) {
    CallTally::start(method).finish(code);
}

/// The etcd RPC a request calls, if it is a gRPC call of one.
pub fn grpc_call(request: &Request) -> Option<GrpcMethod> {
    let is_grpc = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if !is_grpc {
        return None;
    }
    GrpcMethod::from_path(request.uri().path())
}

/// Runs a gRPC call through `handler`, counting it: started now; each message of the
/// request and of the response as its frame passes; handled with the code from the
/// response headers (a trailers-only answer) or from the trailers at the end of the body.
/// A body dropped before its trailers counts as `Canceled`.
pub async fn count_grpc<F>(
    method: GrpcMethod,
    request: Request,
    handler: impl FnOnce(Request) -> F,
) -> Response
where
    F: std::future::Future<Output = Response>,
{
    let mut tally = CallTally::start(method);
    let row = tally.row;
    let request = request.map(|inner| {
        Body::new(FramedBody {
            inner,
            frames: Frames::default(),
            counted: Counted::Received(row),
        })
    });
    let response = handler(request).await;
    if let Some(code) = grpc_status(response.headers()) {
        tally.finish(code);
        return response;
    }
    response.map(|inner| {
        Body::new(FramedBody {
            inner,
            frames: Frames::default(),
            counted: Counted::Sent(tally),
        })
    })
}

fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Follows gRPC's length-prefixed framing across body chunks: each message is a compression
/// flag, a big-endian 4-byte length, then that many bytes.
#[derive(Debug, Default)]
struct Frames {
    prefix: [u8; 5],
    filled: usize,
    /// Bytes of the current message still to pass.
    rest: u64,
}

impl Frames {
    /// Feeds one chunk; returns the messages that began in it and their lengths' sum.
    fn feed(&mut self, mut chunk: &[u8]) -> (u64, u64) {
        let (mut messages, mut bytes) = (0, 0);
        while !chunk.is_empty() {
            if self.rest > 0 {
                let n = chunk
                    .len()
                    .min(usize::try_from(self.rest).unwrap_or(usize::MAX));
                chunk = &chunk[n..];
                self.rest -= n as u64;
                continue;
            }
            let n = chunk.len().min(5 - self.filled);
            self.prefix[self.filled..self.filled + n].copy_from_slice(&chunk[..n]);
            self.filled += n;
            chunk = &chunk[n..];
            if self.filled == 5 {
                let len = u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]);
                messages += 1;
                bytes += u64::from(len);
                self.rest = u64::from(len);
                self.filled = 0;
            }
        }
        (messages, bytes)
    }
}

/// Who a body's messages are counted for.
enum Counted {
    /// A request's: messages received.
    Received(&'static MethodCounters),
    /// A response's: messages sent, and the call's code from its trailers.
    Sent(CallTally),
}

/// A request or response body whose gRPC messages are counted as they pass.
struct FramedBody {
    inner: Body,
    frames: Frames,
    counted: Counted,
}

impl FramedBody {
    /// The response ended with `code` (requests have no code).
    fn finish(&mut self, code: i32) {
        if let Counted::Sent(tally) = &mut self.counted {
            tally.finish(code);
        }
    }
}

impl http_body::Body for FramedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let (messages, bytes) = self.frames.feed(data);
                    match &self.counted {
                        Counted::Received(row) => received(row, messages, bytes),
                        Counted::Sent(tally) => tally.sent(messages, bytes),
                    }
                }
                if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                    self.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => self.finish(tonic::Code::Internal as i32),
            Poll::Ready(None) => self.finish(tonic::Code::Unknown as i32),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_etcds_methods_are_labels() {
        let m = GrpcMethod::from_path("/etcdserverpb.Watch/Watch").expect("known");
        assert_eq!(m.kind, "bidi_stream");
        assert!(GrpcMethod::from_path("/etcdserverpb.KV/Made-Up").is_none());
        assert!(GrpcMethod::from_path("/nope").is_none());
        assert_eq!(CODE_NAMES[5], "NotFound");
    }

    #[test]
    fn frames_are_counted_across_chunks() {
        let mut wire = vec![0, 0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 0, 0];
        wire.extend([0, 0, 0, 1, 4, 1, 2]);
        let mut f = Frames::default();
        // Split everywhere: the totals do not depend on where chunks end.
        let mut total = (0, 0);
        for chunk in wire.chunks(2) {
            let (m, b) = f.feed(chunk);
            total = (total.0 + m, total.1 + b);
        }
        // Three messages began (the last is still arriving), of 3, 0 and 260 bytes.
        assert_eq!(total, (3, 263));
        assert_eq!(Frames::default().feed(&wire), (3, 263));
    }
}
