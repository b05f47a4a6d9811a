//! Cairn's plugin registry service (`cairn.plugin.v1.Plugin`): every change is a Raft command
//! (see `plugin/registry.rs`); List and Get read the registry after a linearizable read point.
//! With authentication on, the whole service is root's: changes are checked in apply, reads
//! here.

use cairn_proto::cairn_plugin as pb;
use cairn_proto::cairn_plugin::plugin_server::Plugin;
use tonic::{Request, Response, Status};

use super::{Context, status};
use crate::plugin::registry::{DEFAULT_REACTOR_DEPTH, ReactorOptions, hex};
use crate::plugin::{
    Binding, BindingStats, FailurePolicy, Kind, PluginCommand, PluginOutcome, PluginRecord,
    Registry,
};
use crate::state_machine::{Command, CommandResponse};

pub struct PluginService {
    ctx: Context,
}

impl PluginService {
    pub fn new(ctx: Context) -> Self {
        PluginService { ctx }
    }

    async fn change(
        &self,
        caller: crate::auth::Caller,
        command: PluginCommand,
    ) -> Result<(PluginOutcome, i64), Status> {
        let change = describe(&command);
        let who = caller.clone();
        match self
            .ctx
            .propose_as(caller, Command::Plugin(command))
            .await?
        {
            CommandResponse::Plugin(Ok(outcome), revision) => {
                // An upload is audited once, when its last chunk installs the plugin.
                let done = !matches!(
                    outcome,
                    PluginOutcome::Install {
                        installed: false,
                        ..
                    }
                );
                if let (Some(change), true) = (change, done) {
                    super::audit(&who, &change, revision);
                }
                Ok((outcome, revision))
            }
            CommandResponse::Plugin(Err(e), _) => Err(status::plugin_error(&e)),
            other => Err(status::unexpected_response("a plugin command", &other)),
        }
    }

    async fn registry(&self) -> Result<(Registry, i64), Status> {
        self.ctx
            .read(false, |view| {
                let rev = view.rev;
                Registry::load(view.storage)
                    .map(|r| (r, rev))
                    .map_err(crate::mvcc::Error::from)
            })
            .await
    }
}

fn kind_from(k: i32) -> Result<Kind, Status> {
    match pb::Kind::try_from(k) {
        Ok(pb::Kind::Guard) => Ok(Kind::Guard),
        Ok(pb::Kind::Compare) => Ok(Kind::Compare),
        Ok(pb::Kind::Policy) => Ok(Kind::Policy),
        Ok(pb::Kind::WatchFilter) => Ok(Kind::WatchFilter),
        Ok(pb::Kind::Reactor) => Ok(Kind::Reactor),
        _ => Err(status::invalid_argument(format!(
            "cairn: binding kind must be GUARD, COMPARE, POLICY, WATCH_FILTER or REACTOR (got {k})"
        ))),
    }
}

fn binding_to_pb(b: &Binding, registry: &Registry) -> pb::Binding {
    let reactor = registry.reactors.get(&b.name);
    pb::Binding {
        reactor_options: reactor.map(|r| pb::ReactorOptions {
            retrigger: r.options.retrigger,
            max_depth: r.options.max_depth,
        }),
        reactor_status: reactor.map(|r| pb::ReactorStatus {
            cursor: r.cursor,
            steps: r.steps,
            writes: r.writes,
            failures: r.failures,
            paused: r.paused,
            last_error: r.last_error.clone(),
        }),
        name: b.name.clone(),
        plugin: b.plugin.clone(),
        kind: match b.kind {
            Kind::Guard => pb::Kind::Guard,
            Kind::Compare => pb::Kind::Compare,
            Kind::Policy => pb::Kind::Policy,
            Kind::WatchFilter => pb::Kind::WatchFilter,
            Kind::Reactor => pb::Kind::Reactor,
        } as i32,
        key: b.key.clone(),
        range_end: b.range_end.clone(),
        config: b.config.clone(),
        fuel: b.fuel,
        memory_bytes: b.memory_bytes,
        failure_policy: match b.failure_policy {
            FailurePolicy::FailClosed => pb::FailurePolicy::FailClosed,
            FailurePolicy::Ignore => pb::FailurePolicy::Ignore,
        } as i32,
        sha256: b.sha256.clone(),
        stats: Some(pb::BindingStats {
            calls: b.stats.calls,
            denials: b.stats.denials,
            failures: b.stats.failures,
            fuel_used: b.stats.fuel_used,
            decisions_hash: hex(&b.stats.decisions_hash),
        }),
    }
}

/// A registry change made through the API, for the audit log (`None` for the leader's own
/// reactor bookkeeping, which never comes through here).
fn describe(command: &PluginCommand) -> Option<String> {
    let binding = |b: &Binding| {
        let range = super::audit_range(&b.key, &b.range_end);
        format!(
            "plugin bind {} --plugin {} --kind {:?} {range}",
            b.name, b.plugin, b.kind
        )
    };
    match command {
        PluginCommand::Install { name, sha256, .. } => {
            Some(format!("plugin install {name} sha256:{sha256}"))
        }
        PluginCommand::Bind(b) => Some(binding(b)),
        PluginCommand::BindReactor { binding: b, .. } => Some(binding(b)),
        PluginCommand::Unbind { name } => Some(format!("plugin unbind {name}")),
        PluginCommand::Remove { name } => Some(format!("plugin remove {name}")),
        PluginCommand::ReactorStep { .. } | PluginCommand::ReactorFailed { .. } => None,
    }
}

fn plugin_to_pb(p: &PluginRecord) -> pb::PluginInfo {
    pb::PluginInfo {
        name: p.name.clone(),
        sha256: p.sha256.clone(),
        size: p.size,
        exports: p.exports.clone(),
    }
}

#[tonic::async_trait]
impl Plugin for PluginService {
    async fn install(
        &self,
        request: Request<pb::InstallRequest>,
    ) -> Result<Response<pb::InstallResponse>, Status> {
        let caller = self.ctx.caller(&request)?;
        let r = request.into_inner();
        self.ctx.check_size(r.data.len())?;
        let (outcome, revision) = self
            .change(
                caller,
                PluginCommand::Install {
                    name: r.name,
                    sha256: r.sha256,
                    size: r.size,
                    offset: r.offset,
                    data: r.data,
                },
            )
            .await?;
        let (received, installed) = match outcome {
            PluginOutcome::Install {
                received,
                installed,
            } => (received, installed),
            PluginOutcome::Done => (0, false),
        };
        Ok(Response::new(pb::InstallResponse {
            header: self.ctx.header(revision),
            received,
            installed,
        }))
    }

    async fn bind(
        &self,
        request: Request<pb::BindRequest>,
    ) -> Result<Response<pb::BindResponse>, Status> {
        let caller = self.ctx.caller(&request)?;
        let Some(b) = request.into_inner().binding else {
            return Err(status::invalid_argument(
                "cairn: BindRequest needs a binding",
            ));
        };
        self.ctx
            .check_size(b.config.len() + b.key.len() + b.range_end.len())?;
        let failure_policy = match pb::FailurePolicy::try_from(b.failure_policy) {
            Ok(pb::FailurePolicy::FailClosed) => FailurePolicy::FailClosed,
            Ok(pb::FailurePolicy::Ignore) => FailurePolicy::Ignore,
            Err(_) => {
                return Err(status::invalid_argument(format!(
                    "cairn: unknown failure policy {}",
                    b.failure_policy
                )));
            }
        };
        let spec = Binding {
            name: b.name,
            plugin: b.plugin,
            kind: kind_from(b.kind)?,
            key: b.key,
            range_end: b.range_end,
            config: b.config,
            fuel: b.fuel,
            memory_bytes: b.memory_bytes,
            failure_policy,
            sha256: String::new(),
            stats: BindingStats::default(),
        };
        let command = match (spec.kind, b.reactor_options) {
            (Kind::Reactor, Some(o)) => PluginCommand::BindReactor {
                binding: spec,
                options: ReactorOptions {
                    retrigger: o.retrigger,
                    max_depth: if o.max_depth == 0 {
                        DEFAULT_REACTOR_DEPTH
                    } else {
                        o.max_depth
                    },
                },
            },
            (_, Some(_)) => {
                return Err(status::invalid_argument(
                    "cairn: reactor options are for REACTOR bindings",
                ));
            }
            (_, None) => PluginCommand::Bind(spec),
        };
        let (_, revision) = self.change(caller, command).await?;
        Ok(Response::new(pb::BindResponse {
            header: self.ctx.header(revision),
        }))
    }

    async fn unbind(
        &self,
        request: Request<pb::UnbindRequest>,
    ) -> Result<Response<pb::UnbindResponse>, Status> {
        let caller = self.ctx.caller(&request)?;
        let name = request.into_inner().name;
        let (_, revision) = self.change(caller, PluginCommand::Unbind { name }).await?;
        Ok(Response::new(pb::UnbindResponse {
            header: self.ctx.header(revision),
        }))
    }

    async fn remove(
        &self,
        request: Request<pb::RemoveRequest>,
    ) -> Result<Response<pb::RemoveResponse>, Status> {
        let caller = self.ctx.caller(&request)?;
        let name = request.into_inner().name;
        let (_, revision) = self.change(caller, PluginCommand::Remove { name }).await?;
        Ok(Response::new(pb::RemoveResponse {
            header: self.ctx.header(revision),
        }))
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        self.ctx.check_admin(&self.ctx.caller(&request)?)?;
        let (registry, revision) = self.registry().await?;
        Ok(Response::new(pb::ListResponse {
            header: self.ctx.header(revision),
            plugins: registry.plugins.values().map(plugin_to_pb).collect(),
            bindings: registry
                .bindings
                .values()
                .map(|b| binding_to_pb(b, &registry))
                .collect(),
        }))
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        self.ctx.check_admin(&self.ctx.caller(&request)?)?;
        let name = request.into_inner().name;
        let (registry, revision) = self.registry().await?;
        let Some(plugin) = registry.plugins.get(&name) else {
            return Err(status::plugin_error(
                &crate::plugin::PluginError::PluginNotFound(name),
            ));
        };
        Ok(Response::new(pb::GetResponse {
            header: self.ctx.header(revision),
            plugin: Some(plugin_to_pb(plugin)),
            bindings: registry
                .bindings
                .values()
                .filter(|b| b.plugin == name)
                .map(|b| binding_to_pb(b, &registry))
                .collect(),
        }))
    }

    type LogsStream = futures::stream::BoxStream<'static, Result<pb::LogLine, Status>>;

    async fn logs(
        &self,
        request: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        use futures::StreamExt;
        use tokio::sync::broadcast::error::RecvError;
        self.ctx.check_admin(&self.ctx.caller(&request)?)?;
        let wanted = request.into_inner().binding;
        let lines = self.ctx.raft.plugin_logs().follow();
        let member_id = self.ctx.member_id;
        let mut stopping = self.ctx.stopping.clone();
        let stopped = async move {
            let _ = stopping.wait_for(|s| *s).await;
        };
        let followed = futures::stream::unfold(lines, move |mut lines| {
            let wanted = wanted.clone();
            async move {
                let mut missed = 0;
                loop {
                    match lines.recv().await {
                        Ok(line) if wanted.is_empty() || line.binding == wanted => {
                            let line = pb::LogLine {
                                member_id,
                                binding: line.binding,
                                level: line.level.to_string(),
                                message: line.message,
                                unix_ms: line.unix_ms,
                                missed,
                            };
                            return Some((Ok(line), lines));
                        }
                        Ok(_) => {}
                        Err(RecvError::Lagged(n)) => missed += n,
                        Err(RecvError::Closed) => return None,
                    }
                }
            }
        })
        .take_until(stopped);
        Ok(Response::new(followed.boxed()))
    }
}
