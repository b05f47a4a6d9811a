//! A stand-in for a Cairn member: the `cairn.plugin.v1.Plugin` and etcd `KV` services on a
//! loopback port, answering as the protocol says and recording every request, so the CLI tests
//! can assert on what `cairnctl` sent and printed.
//!
//! Canned behaviour: the plugin `acl` and binding `acl-app` exist; names `missing` are not
//! found; plugin `in-use` cannot be removed; `plugin get slow` never answers in time; a txn
//! fails when a compare's key is `fail`; a get of key `none` finds nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cairn_proto::cairn_plugin::{
    BindRequest, BindResponse, Binding, BindingStats, FailurePolicy, GetRequest, GetResponse,
    InstallRequest, InstallResponse, Kind, ListRequest, ListResponse, LogLine, LogsRequest,
    PluginInfo, RemoveRequest, RemoveResponse, UnbindRequest, UnbindResponse,
    plugin_server::{Plugin, PluginServer},
};
use cairn_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, RangeStreamResponse, RequestOp, ResponseHeader,
    ResponseOp, TxnRequest, TxnResponse,
    kv_server::{Kv, KvServer},
    request_op::Request,
    response_op::Response,
};
use cairn_proto::mvccpb::KeyValue;
use tonic::{Status, transport::Server};

/// Everything that reached the server, in arrival order per service call.
#[derive(Debug, Default)]
pub struct Recorded {
    pub installs: Vec<InstallRequest>,
    pub binds: Vec<BindRequest>,
    pub unbinds: Vec<UnbindRequest>,
    pub removes: Vec<RemoveRequest>,
    pub gets: Vec<GetRequest>,
    pub lists: usize,
    pub txns: Vec<TxnRequest>,
    /// The `grpc-timeout` header of every request.
    pub grpc_timeouts: Vec<Option<String>>,
    /// Bytes received per plugin name, as the real registry accumulates chunks.
    uploads: HashMap<String, Vec<u8>>,
}

impl Recorded {
    pub fn calls(&self) -> usize {
        self.installs.len()
            + self.binds.len()
            + self.unbinds.len()
            + self.removes.len()
            + self.gets.len()
            + self.lists
            + self.txns.len()
    }
}

type Shared = Arc<Mutex<Recorded>>;

/// The server; it stops when dropped.
pub struct FakeServer {
    addr: SocketAddr,
    recorded: Shared,
    _runtime: tokio::runtime::Runtime,
}

impl FakeServer {
    pub fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let recorded = Shared::default();
        let router = Server::builder()
            .add_service(PluginServer::new(FakePlugin(recorded.clone())))
            .add_service(KvServer::new(FakeKv(recorded.clone())));
        runtime.spawn(
            router.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        Self {
            addr,
            recorded,
            _runtime: runtime,
        }
    }

    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    pub fn recorded(&self) -> MutexGuard<'_, Recorded> {
        self.recorded.lock().unwrap()
    }
}

fn header() -> Option<ResponseHeader> {
    Some(ResponseHeader {
        cluster_id: 1,
        member_id: 2,
        revision: 7,
        raft_term: 3,
    })
}

/// Records the request's deadline header and returns the message.
fn record<T>(shared: &Shared, request: tonic::Request<T>) -> T {
    let timeout = request
        .metadata()
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    shared.lock().unwrap().grpc_timeouts.push(timeout);
    request.into_inner()
}

pub fn acl_plugin() -> PluginInfo {
    PluginInfo {
        name: "acl".to_owned(),
        sha256: "3f2a9c1b0d4e5f60718293a4b5c6d7e8f90112233445566778899aabbccddeeff".to_owned(),
        size: 48213,
        exports: vec!["cairn:plugin/guard@0.1.0".to_owned()],
    }
}

pub fn acl_binding() -> Binding {
    Binding {
        name: "acl-app".to_owned(),
        plugin: "acl".to_owned(),
        kind: Kind::Guard as i32,
        key: b"/app/".to_vec(),
        range_end: b"/app0".to_vec(),
        failure_policy: FailurePolicy::FailClosed as i32,
        sha256: acl_plugin().sha256,
        stats: Some(BindingStats {
            calls: 12,
            denials: 1,
            failures: 0,
            fuel_used: 93812,
            decisions_hash: "ab12".to_owned(),
        }),
        ..Binding::default()
    }
}

struct FakePlugin(Shared);

#[tonic::async_trait]
impl Plugin for FakePlugin {
    async fn install(
        &self,
        request: tonic::Request<InstallRequest>,
    ) -> Result<tonic::Response<InstallResponse>, Status> {
        let request = record(&self.0, request);
        let mut recorded = self.0.lock().unwrap();
        recorded.installs.push(request.clone());
        let upload = recorded.uploads.entry(request.name.clone()).or_default();
        if request.offset != upload.len() as u64 {
            return Err(Status::invalid_argument(format!(
                "plugin: chunk at offset {}, expected {}",
                request.offset,
                upload.len()
            )));
        }
        upload.extend_from_slice(&request.data);
        let received = upload.len() as u64;
        let installed = received == request.size;
        if installed && cairnctl::module::sha256_hex(upload) != request.sha256 {
            return Err(Status::invalid_argument("plugin: sha256 mismatch"));
        }
        Ok(tonic::Response::new(InstallResponse {
            header: header(),
            received,
            installed,
        }))
    }

    async fn bind(
        &self,
        request: tonic::Request<BindRequest>,
    ) -> Result<tonic::Response<BindResponse>, Status> {
        let request = record(&self.0, request);
        let missing = request
            .binding
            .as_ref()
            .is_some_and(|binding| binding.plugin == "missing");
        self.0.lock().unwrap().binds.push(request);
        if missing {
            return Err(Status::not_found("plugin: plugin \"missing\" not found"));
        }
        Ok(tonic::Response::new(BindResponse { header: header() }))
    }

    async fn unbind(
        &self,
        request: tonic::Request<UnbindRequest>,
    ) -> Result<tonic::Response<UnbindResponse>, Status> {
        let request = record(&self.0, request);
        let missing = request.name == "missing";
        self.0.lock().unwrap().unbinds.push(request);
        if missing {
            return Err(Status::not_found("plugin: binding not found"));
        }
        Ok(tonic::Response::new(UnbindResponse { header: header() }))
    }

    async fn remove(
        &self,
        request: tonic::Request<RemoveRequest>,
    ) -> Result<tonic::Response<RemoveResponse>, Status> {
        let request = record(&self.0, request);
        let in_use = request.name == "in-use";
        self.0.lock().unwrap().removes.push(request);
        if in_use {
            return Err(Status::failed_precondition(
                "plugin: plugin \"in-use\" is used by binding \"b\"",
            ));
        }
        Ok(tonic::Response::new(RemoveResponse { header: header() }))
    }

    async fn list(
        &self,
        request: tonic::Request<ListRequest>,
    ) -> Result<tonic::Response<ListResponse>, Status> {
        record(&self.0, request);
        self.0.lock().unwrap().lists += 1;
        let quota = PluginInfo {
            name: "quota".to_owned(),
            sha256: "0123456789abcdef0123".to_owned(),
            size: 7,
            exports: vec![
                "cairn:plugin/guard@0.1.0".to_owned(),
                "cairn:plugin/compare@0.1.0".to_owned(),
            ],
        };
        let quota_count = Binding {
            name: "quota-count".to_owned(),
            plugin: "quota".to_owned(),
            kind: Kind::Compare as i32,
            key: Vec::new(),
            range_end: vec![0],
            failure_policy: FailurePolicy::Ignore as i32,
            ..Binding::default()
        };
        Ok(tonic::Response::new(ListResponse {
            header: header(),
            plugins: vec![acl_plugin(), quota],
            bindings: vec![acl_binding(), quota_count],
        }))
    }

    type LogsStream = futures::stream::BoxStream<'static, Result<LogLine, Status>>;

    /// Not exercised through the fake: `plugin logs` is tested against real members.
    async fn logs(
        &self,
        _request: tonic::Request<LogsRequest>,
    ) -> Result<tonic::Response<Self::LogsStream>, Status> {
        Err(Status::unimplemented("the fake server has no Plugin.Logs"))
    }

    async fn get(
        &self,
        request: tonic::Request<GetRequest>,
    ) -> Result<tonic::Response<GetResponse>, Status> {
        let request = record(&self.0, request);
        let name = request.name.clone();
        self.0.lock().unwrap().gets.push(request);
        match name.as_str() {
            "acl" => Ok(tonic::Response::new(GetResponse {
                header: header(),
                plugin: Some(acl_plugin()),
                bindings: vec![acl_binding()],
            })),
            "slow" => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Err(Status::internal("too late"))
            }
            _ => Err(Status::not_found("plugin: plugin not found")),
        }
    }
}

struct FakeKv(Shared);

impl FakeKv {
    fn run_op(op: &RequestOp) -> ResponseOp {
        let response = match &op.request {
            Some(Request::RequestPut(_)) => Response::ResponsePut(PutResponse {
                header: header(),
                ..PutResponse::default()
            }),
            Some(Request::RequestRange(range)) if range.key == b"none" => {
                Response::ResponseRange(RangeResponse {
                    header: header(),
                    ..RangeResponse::default()
                })
            }
            Some(Request::RequestRange(range)) => Response::ResponseRange(RangeResponse {
                header: header(),
                kvs: vec![KeyValue {
                    key: range.key.clone(),
                    value: b"v1".to_vec(),
                    create_revision: 5,
                    mod_revision: 6,
                    version: 2,
                    lease: 0,
                }],
                count: 1,
                ..RangeResponse::default()
            }),
            Some(Request::RequestDeleteRange(_)) => {
                Response::ResponseDeleteRange(DeleteRangeResponse {
                    header: header(),
                    deleted: 1,
                    ..DeleteRangeResponse::default()
                })
            }
            other => panic!("unexpected op {other:?}"),
        };
        ResponseOp {
            response: Some(response),
        }
    }
}

#[tonic::async_trait]
impl Kv for FakeKv {
    async fn range(
        &self,
        _: tonic::Request<RangeRequest>,
    ) -> Result<tonic::Response<RangeResponse>, Status> {
        Err(Status::unimplemented("fake: range"))
    }

    type RangeStreamStream = tokio_stream::Empty<Result<RangeStreamResponse, Status>>;

    async fn range_stream(
        &self,
        _: tonic::Request<RangeRequest>,
    ) -> Result<tonic::Response<Self::RangeStreamStream>, Status> {
        Err(Status::unimplemented("fake: range_stream"))
    }

    async fn put(
        &self,
        _: tonic::Request<PutRequest>,
    ) -> Result<tonic::Response<PutResponse>, Status> {
        Err(Status::unimplemented("fake: put"))
    }

    async fn delete_range(
        &self,
        _: tonic::Request<DeleteRangeRequest>,
    ) -> Result<tonic::Response<DeleteRangeResponse>, Status> {
        Err(Status::unimplemented("fake: delete_range"))
    }

    async fn txn(
        &self,
        request: tonic::Request<TxnRequest>,
    ) -> Result<tonic::Response<TxnResponse>, Status> {
        let request = record(&self.0, request);
        let succeeded = !request.compare.iter().any(|compare| compare.key == b"fail");
        let ops = if succeeded {
            &request.success
        } else {
            &request.failure
        };
        let responses = ops.iter().map(Self::run_op).collect();
        self.0.lock().unwrap().txns.push(request);
        Ok(tonic::Response::new(TxnResponse {
            header: header(),
            succeeded,
            responses,
        }))
    }

    async fn compact(
        &self,
        _: tonic::Request<CompactionRequest>,
    ) -> Result<tonic::Response<CompactionResponse>, Status> {
        Err(Status::unimplemented("fake: compact"))
    }
}
