//! The replicated state machine: `apply(Command) → CommandResponse`, in log order, on every
//! member.
//!
//! Deterministic by construction: a command's effect depends only on the command and the state
//! before it (no clock, no randomness, no unordered iteration). Each command commits in one
//! fjall batch together with the applied-log marker the Raft layer hands in, so the state and
//! "how far the log has been applied" can never disagree after a crash (etcd 3.5's
//! data-inconsistency bug broke exactly this). An etcd error is part of the response; a
//! storage error is returned as `Err` and stops the node.
//!
//! This module does not name openraft types: `raft/state_machine.rs` adapts it.

use std::collections::BTreeSet;
use std::fmt;

use fjall::Readable;
use serde::{Deserialize, Serialize};

use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::watch;

use crate::alarm::{self, AlarmAction, AlarmKind, AlarmMember, Alarms, SharedAlarms};
use crate::auth::needs::{self, Need};
use crate::auth::{AuthCommand, AuthError, AuthStore, Caller};
use crate::lease::{self, Leases};
use crate::mvcc::{
    self, ApplyBatch, Fault, Mvcc, MvccError, Revisions, WriteRequest, WriteResponse,
};
use crate::plugin::carry::{self, Carried};
use crate::plugin::engine::{PolicyOperation, Target, View};
use crate::plugin::hooks::Hooks;
use crate::plugin::{Engine, PluginCommand, PluginError, PluginOutcome, Registry, policy};
use crate::storage::{MEMBERSHIP, Storage};

/// What the Raft log carries. Variants are only ever appended: the log on disk and the
/// snapshots of older members decode by variant index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A KV write: Put, DeleteRange, Txn or Compact.
    Kv(WriteRequest),
    /// Creates a lease (the proposer chose the id and applied the minimum TTL).
    LeaseGrant { id: i64, ttl_secs: i64 },
    /// Deletes a lease and every key it holds (a client's revoke, or the leader's expiry).
    LeaseRevoke { id: i64 },
    /// Records the leader's remaining TTLs (`Some(secs)`), or forgets one after a keepalive
    /// (`None`), so a new leader continues countdowns instead of restarting them.
    LeaseCheckpoint {
        checkpoints: Vec<(i64, Option<i64>)>,
    },
    /// A plugin registry change (install chunk, bind, unbind, remove).
    Plugin(PluginCommand),
    /// A change to users, roles or permissions.
    Auth(AuthCommand),
    /// A client's command and the caller it runs as. Apply first checks that the caller may
    /// do it, against the auth store at this point of the log (so a permission revoked just
    /// before is honoured identically on every member), and answers
    /// [`CommandResponse::Refused`] if not. The API wraps every command a client asks for;
    /// a command not wrapped is a member's own duty (lease expiry and checkpoints) and is
    /// never refused, even with authentication on (etcd #13975).
    Request {
        caller: Caller,
        command: Box<Command>,
    },
    /// A command and the time the leader proposed it, in milliseconds since the Unix epoch:
    /// what plugins running in apply get from the clock import, the same on every member.
    /// The leader stamps every command it proposes (`raft::RaftNode::write_local`); leaders'
    /// clocks are not compared, so the stamps of consecutive entries may go back across a
    /// leader change.
    Stamped { unix_ms: i64, command: Box<Command> },
    /// A command and the verdicts of its guards and policy hooks as its proposer evaluated
    /// them (see `plugin/carry.rs`): apply takes each one that still holds instead of running
    /// the plugin again. Only a leader makes these, inside [`Command::Stamped`] (the verdicts
    /// were reached with its stamp) and around the [`Command::Request`].
    Vetted {
        calls: Vec<Carried>,
        command: Box<Command>,
    },
    /// Raises or clears a member's alarm (`alarm.rs`): a member over its quota raises
    /// NOSPACE itself; root raises or clears any through Maintenance.Alarm.
    Alarm {
        action: AlarmAction,
        member: u64,
        kind: AlarmKind,
    },
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Kv(WriteRequest::Put(_)) => f.write_str("put"),
            Command::Kv(WriteRequest::DeleteRange(_)) => f.write_str("delete_range"),
            Command::Kv(WriteRequest::Txn(_)) => f.write_str("txn"),
            Command::Kv(WriteRequest::Compact(c)) => write!(f, "compact({})", c.revision),
            Command::LeaseGrant { id, ttl_secs } => write!(f, "lease_grant({id:x}, {ttl_secs}s)"),
            Command::LeaseRevoke { id } => write!(f, "lease_revoke({id:x})"),
            Command::LeaseCheckpoint { checkpoints } => {
                write!(f, "lease_checkpoint({} leases)", checkpoints.len())
            }
            Command::Plugin(PluginCommand::Install { name, offset, .. }) => {
                write!(f, "plugin_install({name}, @{offset})")
            }
            Command::Plugin(PluginCommand::Bind(b)) => write!(f, "plugin_bind({})", b.name),
            Command::Plugin(PluginCommand::Unbind { name }) => write!(f, "plugin_unbind({name})"),
            Command::Plugin(PluginCommand::Remove { name }) => write!(f, "plugin_remove({name})"),
            Command::Plugin(PluginCommand::BindReactor { binding, .. }) => {
                write!(f, "plugin_bind_reactor({})", binding.name)
            }
            Command::Plugin(PluginCommand::ReactorStep {
                name,
                revision,
                ops,
                ..
            }) => write!(f, "reactor_step({name}, @{revision}, {} ops)", ops.len()),
            Command::Plugin(PluginCommand::ReactorFailed { name, .. }) => {
                write!(f, "reactor_failed({name})")
            }
            // Never the password hash.
            Command::Auth(c) => f.write_str(auth_command_name(c)),
            Command::Request { caller, command } => match caller.user() {
                Some(user) => write!(f, "{command} as {user:?}"),
                None => write!(f, "{command}"),
            },
            Command::Stamped { command, .. } | Command::Vetted { command, .. } => {
                write!(f, "{command}")
            }
            Command::Alarm {
                action,
                member,
                kind,
            } => write!(f, "alarm({action:?} {} for {member:x})", kind.name()),
        }
    }
}

/// The result of applying one log entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResponse {
    /// For entries that carry no command (blank and membership entries).
    #[default]
    Empty,
    Kv(Result<WriteResponse, MvccError>),
    /// A lease command: the store revision after it, or an etcd error.
    Lease(Result<mvcc::Revision, MvccError>),
    /// A plugin registry command, and the store revision it was applied at.
    Plugin(Result<PluginOutcome, PluginError>, mvcc::Revision),
    /// An auth command: whether it changed the store, or etcd's error; and the store
    /// revision it was applied at.
    Auth(Result<bool, AuthError>, mvcc::Revision),
    /// A client's command its caller may not run (see [`Command::Request`]).
    Refused(AuthError),
    /// An alarm change: the alarm it activated or deactivated (none if there was nothing to
    /// deactivate), and the store revision it was applied at.
    Alarm(Option<AlarmMember>, mvcc::Revision),
}

/// What an auth command is, for logs.
fn auth_command_name(c: &AuthCommand) -> &'static str {
    match c {
        AuthCommand::UserAdd { .. } => "auth_user_add",
        AuthCommand::UserDelete { .. } => "auth_user_delete",
        AuthCommand::UserChangePassword { .. } => "auth_user_change_password",
        AuthCommand::UserGrantRole { .. } => "auth_user_grant_role",
        AuthCommand::UserRevokeRole { .. } => "auth_user_revoke_role",
        AuthCommand::RoleAdd { .. } => "auth_role_add",
        AuthCommand::RoleDelete { .. } => "auth_role_delete",
        AuthCommand::RoleGrantPermission { .. } => "auth_role_grant_permission",
        AuthCommand::RoleRevokePermission { .. } => "auth_role_revoke_permission",
        AuthCommand::Enable { .. } => "auth_enable",
        AuthCommand::Disable => "auth_disable",
    }
}

/// What applying one command may touch besides the state machine itself; `'c` is the
/// command's own lifetime.
struct Applying<'a, 'b, 'c> {
    batch: &'a mut ApplyBatch<'b>,
    registry: &'a mut Registry,
    /// Bindings whose statistics changed in this batch (see [`StateMachine::apply`]).
    touched: &'a mut BTreeSet<String>,
    /// The time stamped on the entry (see [`Command::Stamped`]); 0 when it has none.
    now_ms: i64,
    /// The verdicts the entry carries (see [`Command::Vetted`]).
    carried: &'c [Carried],
}

/// The applied-log marker, opaque to this module.
#[derive(Clone, Debug, Default)]
pub struct AppliedMarker {
    pub applied: Vec<u8>,
    pub membership: Option<Vec<u8>>,
}

/// The state machine over the state keyspaces of one [`Storage`].
#[derive(Clone, Debug)]
pub struct StateMachine {
    storage: Storage,
    /// The MVCC counters, kept here because apply is their only writer.
    revisions: Arc<Mutex<Revisions>>,
    /// The counters as of the last commit, for watchers. Publishing never waits for them.
    committed: Arc<watch::Sender<Revisions>>,
    /// The plugin registry as applied (apply is its only writer), and this member's engine.
    registry: Arc<Mutex<Registry>>,
    engine: Engine,
    /// The registry's summary for the API (see [`crate::plugin::registry::Published`]).
    published: Arc<crate::plugin::registry::Published>,
    /// A second engine for what runs outside apply (policy checks of reads, reactors on the
    /// leader), so they never take the instance slots apply needs: apply stops on an engine
    /// error, a read may only fail.
    side_engine: Engine,
    /// Users and roles as applied (apply is the only writer; the API reads it to check
    /// reads and to verify tokens).
    auth: SharedAuth,
    /// The active alarms as applied (apply is the only writer).
    alarms: SharedAlarms,
    /// Where this member's plugins write their log lines.
    plugin_logs: crate::plugin::logs::PluginLogs,
}

/// The auth store as applied, shared between apply (its only writer) and the API.
pub type SharedAuth = Arc<RwLock<AuthStore>>;

impl StateMachine {
    pub fn new(storage: Storage) -> Result<Self, Fault> {
        let revisions = Mvcc::revisions(&storage).map_err(mvcc::into_fault)?;
        let (committed, _) = watch::channel(revisions);
        let plugin_logs = crate::plugin::logs::PluginLogs::default();
        let engine = Engine::new(plugin_logs.clone()).map_err(|e| Fault::PluginHost {
            binding: "(engine start)".into(),
            reason: e.to_string(),
        })?;
        let side_engine = Engine::new(plugin_logs.clone()).map_err(|e| Fault::PluginHost {
            binding: "(side engine start)".into(),
            reason: e.to_string(),
        })?;
        let registry = Registry::load(&storage)?;
        let auth = AuthStore::load(&storage)?;
        let alarms = Alarms::load(&storage)?;
        let published = Arc::new(crate::plugin::registry::Published::default());
        published.publish(&registry);
        let machine = StateMachine {
            published,
            side_engine,
            auth: Arc::new(RwLock::new(auth)),
            alarms: Arc::new(RwLock::new(alarms)),
            committed: Arc::new(committed),
            storage,
            revisions: Arc::new(Mutex::new(revisions)),
            registry: Arc::new(Mutex::new(registry)),
            engine,
            plugin_logs,
        };
        machine.prepare_modules()?;
        Ok(machine)
    }

    /// Starts compiling every installed module in the background.
    fn prepare_modules(&self) -> Result<(), Fault> {
        let plugins: Vec<String> = self
            .registry()
            .plugins
            .values()
            .map(|p| p.sha256.clone())
            .collect();
        for sha in plugins {
            if let Some(bytes) = Registry::module(&self.storage, &sha)? {
                self.engine.prepare(&sha, &bytes);
            }
        }
        Ok(())
    }

    /// The plugin registry as applied so far.
    pub fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().expect("registry lock poisoned")
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The auth store as applied so far, shared.
    pub fn auth(&self) -> SharedAuth {
        self.auth.clone()
    }

    /// Whether an alarm of `kind` is active at this point of the log.
    fn alarmed(&self, kind: AlarmKind) -> bool {
        self.alarms.read().expect("alarms lock poisoned").has(kind)
    }

    /// The active alarms as applied so far, shared.
    pub fn alarms(&self) -> SharedAlarms {
        self.alarms.clone()
    }

    /// Where this member's plugins write their log lines (`Plugin.Logs` follows them).
    pub fn plugin_logs(&self) -> crate::plugin::logs::PluginLogs {
        self.plugin_logs.clone()
    }

    /// The watch filters of this member, over its registry.
    pub fn watch_filters(&self) -> Result<crate::plugin::filter::Filters, Fault> {
        let engine = crate::plugin::filter::FilterEngine::new(
            self.storage.clone(),
            self.plugin_logs.clone(),
        )
        .map_err(|e| Fault::PluginHost {
            binding: "(watch filter engine start)".into(),
            reason: e.to_string(),
        })?;
        Ok(crate::plugin::filter::Filters::new(
            self.registry.clone(),
            self.published.clone(),
            engine,
        ))
    }

    /// What the leader runs reactors with: this member's registry and side engine.
    pub fn reactors(&self) -> crate::plugin::reactor::Reactors {
        crate::plugin::reactor::Reactors::new(self.registry.clone(), self.side_engine.clone())
    }

    /// The read side of policy hooks, over this member's registry and side engine.
    pub fn policy_reads(&self) -> policy::Reads {
        policy::Reads::new(
            self.registry.clone(),
            self.published.clone(),
            self.side_engine.clone(),
            self.storage.clone(),
        )
    }

    /// What evaluates a write's guards and policy hooks before the leader proposes it
    /// (`plugin/vet.rs`), on apply's engine.
    pub fn vetter(&self) -> crate::plugin::vet::Vetter {
        crate::plugin::vet::Vetter::new(
            self.registry.clone(),
            self.published.clone(),
            self.auth.clone(),
            self.engine.clone(),
            self.storage.clone(),
            self.committed.subscribe(),
        )
    }

    /// Applies consecutive log entries, each a command (or none) and its marker. They commit
    /// together, in one fjall batch, with the marker of the last one; the state on disk never
    /// holds an entry's effects without its marker (see [`ApplyBatch`]).
    pub fn apply<'c>(
        &self,
        entries: impl IntoIterator<Item = (Option<&'c Command>, &'c AppliedMarker)>,
    ) -> Result<Vec<CommandResponse>, Fault> {
        let mut revs = self.revisions.lock().expect("revisions lock poisoned");
        let mut registry = self.registry.lock().expect("registry lock poisoned");
        let mut batch = ApplyBatch::new(&self.storage, *revs);
        let mut responses = Vec::new();
        // Bindings whose statistics changed in this batch, written once before the batch
        // commits (or before a registry command, which may rewrite or remove them).
        let mut touched = BTreeSet::new();
        for (command, marker) in entries {
            responses.push(match command {
                None => CommandResponse::Empty,
                Some(command) => {
                    let mut apply = Applying {
                        batch: &mut batch,
                        registry: &mut registry,
                        touched: &mut touched,
                        now_ms: 0,
                        carried: &[],
                    };
                    // Timed for etcd's slow-apply counter only; nothing applied depends on it.
                    let started = std::time::Instant::now();
                    let response = self.apply_command(&mut apply, command)?;
                    if started.elapsed() > crate::metrics::SLOW_APPLY {
                        crate::metrics::METRICS.slow_apply.inc();
                    }
                    response
                }
            });
            batch.set_position(&marker.applied);
            if let Some(m) = &marker.membership {
                batch.side().set_membership(m);
            }
        }
        for name in touched {
            registry.persist_binding(&mut batch, &name);
        }
        let started = std::time::Instant::now();
        *revs = batch.commit()?;
        crate::metrics::METRICS
            .backend_commit
            .observe(started.elapsed().as_secs_f64());
        if registry.generation != self.published.generation() {
            self.published.publish(&registry);
        }
        self.committed.send_replace(*revs);
        Ok(responses)
    }

    /// Applies one client's or member's command.
    fn apply_command<'c>(
        &self,
        apply: &mut Applying<'_, '_, 'c>,
        command: &'c Command,
    ) -> Result<CommandResponse, Fault> {
        let batch = &mut *apply.batch;
        Ok(match command {
            Command::Kv(_) if self.alarmed(AlarmKind::Corrupt) => {
                CommandResponse::Kv(Err(MvccError::Corrupt))
            }
            Command::Kv(req) if alarm::cost(req) > 0 && self.alarmed(AlarmKind::NoSpace) => {
                CommandResponse::Kv(Err(MvccError::NoSpace))
            }
            Command::LeaseGrant { .. } | Command::LeaseRevoke { .. }
                if self.alarmed(AlarmKind::Corrupt) =>
            {
                CommandResponse::Lease(Err(MvccError::Corrupt))
            }
            Command::LeaseGrant { .. } if self.alarmed(AlarmKind::NoSpace) => {
                CommandResponse::Lease(Err(MvccError::NoSpace))
            }
            Command::Alarm {
                action,
                member,
                kind,
            } => {
                let changed = self.alarms.write().expect("alarms lock poisoned").apply(
                    &mut batch.side(),
                    *action,
                    *member,
                    *kind,
                );
                CommandResponse::Alarm(changed, batch.revisions().current)
            }
            Command::Kv(req) => {
                let mut hooks =
                    Hooks::new(apply.registry, &self.engine, apply.now_ms).carrying(apply.carried);
                // A plugin host fault is not a decision: it comes back as a `Fault`, which
                // stops apply rather than answer differently from the other members.
                let applied = batch.apply_with(req, &Leases(&self.storage), &mut hooks)?;
                apply.touched.append(&mut hooks.touched);
                CommandResponse::Kv(applied)
            }
            Command::Plugin(PluginCommand::ReactorStep {
                name,
                cursor,
                revision,
                depth,
                ops,
            }) => {
                for name in std::mem::take(apply.touched) {
                    apply.registry.persist_binding(batch, &name);
                }
                self.reactor_step(apply, name, *cursor, *revision, *depth, ops)?
            }
            Command::Plugin(cmd) => {
                for name in std::mem::take(apply.touched) {
                    apply.registry.persist_binding(batch, &name);
                }
                let engine = &self.engine;
                let outcome = apply
                    .registry
                    .apply(batch, cmd, &mut |sha, bytes| engine.prepare(sha, bytes));
                CommandResponse::Plugin(outcome, batch.revisions().current)
            }
            Command::LeaseGrant { id, ttl_secs } => CommandResponse::Lease(
                lease::grant(batch, &self.storage, *id, *ttl_secs)?
                    .map(|()| batch.revisions().current),
            ),
            Command::LeaseRevoke { id } => {
                CommandResponse::Lease(lease::revoke(batch, &self.storage, *id)?)
            }
            Command::Auth(cmd) => {
                let outcome = self
                    .auth
                    .write()
                    .expect("auth store lock poisoned")
                    .apply(batch, cmd);
                CommandResponse::Auth(outcome, batch.revisions().current)
            }
            Command::LeaseCheckpoint { checkpoints } => {
                lease::checkpoint(batch, &self.storage, checkpoints)?;
                CommandResponse::Lease(Ok(batch.revisions().current))
            }
            Command::Request { caller, command } => match self.authorize(apply, caller, command)? {
                Ok(()) => self.apply_command(apply, command)?,
                Err(refused) => CommandResponse::Refused(refused),
            },
            Command::Stamped { unix_ms, command } => {
                apply.now_ms = *unix_ms;
                self.apply_command(apply, command)?
            }
            Command::Vetted { calls, command } => {
                apply.carried = calls;
                self.apply_command(apply, command)?
            }
        })
    }

    /// A reactor's step (see [`PluginCommand::ReactorStep`]): its writes as one txn, through
    /// the guards like any write, and its cursor moved, only if the cursor is where the step
    /// expects it. A refused txn (a guard's denial, a duplicate key) is the reactor's failure.
    fn reactor_step(
        &self,
        apply: &mut Applying<'_, '_, '_>,
        name: &str,
        cursor: i64,
        revision: i64,
        depth: u32,
        ops: &[mvcc::RequestOp],
    ) -> Result<CommandResponse, Fault> {
        let at = |apply: &Applying<'_, '_, '_>| apply.batch.revisions().current;
        if let Err(e) = apply.registry.reactor_at(name, cursor) {
            return Ok(CommandResponse::Plugin(Err(e), at(apply)));
        }
        if revision < cursor {
            let e = PluginError::BadBinding {
                name: name.to_string(),
                reason: format!("a step back from revision {cursor} to {revision}"),
            };
            return Ok(CommandResponse::Plugin(Err(e), at(apply)));
        }
        let outcome = if ops.is_empty() {
            Ok(None)
        } else {
            let txn = WriteRequest::Txn(mvcc::TxnRequest {
                compare: Vec::new(),
                success: ops.to_vec(),
                failure: Vec::new(),
            });
            let before = at(apply);
            let mut hooks = Hooks::new(apply.registry, &self.engine, apply.now_ms);
            let applied = apply
                .batch
                .apply_with(&txn, &Leases(&self.storage), &mut hooks)?;
            apply.touched.append(&mut hooks.touched);
            let after = at(apply);
            match applied {
                Ok(_) if after > before => Ok(Some(crate::plugin::registry::ReactorWrite {
                    at: after,
                    depth,
                    ops: ops.len() as u64,
                    ranges: ops
                        .iter()
                        .filter_map(crate::plugin::engine::reactor_written)
                        .map(|(key, end)| (key.to_vec(), end.to_vec()))
                        .collect(),
                })),
                Ok(_) => Ok(None),
                Err(e) => Err(format!("its writes were refused: {e}")),
            }
        };
        let failed = outcome.as_ref().err().cloned();
        apply
            .registry
            .reactor_stepped(apply.batch, name, revision, outcome);
        // A refused step is the reactor's failure: recorded above, and answered as one so
        // the leader backs off.
        let answer = match failed {
            None => Ok(PluginOutcome::Done),
            Some(reason) => Err(PluginError::ReactorFailed {
                name: name.to_string(),
                reason,
            }),
        };
        Ok(CommandResponse::Plugin(answer, at(apply)))
    }

    /// Whether `caller` may run `command` at this point of the log, as etcd decides: KV
    /// writes by their keys (see `auth/needs.rs`); a put that attaches a lease also needs
    /// WRITE on the keys the lease already holds, and a lease revoke WRITE on all of them
    /// (whoever cannot revoke a lease may not extend it to new keys); compaction, the plugin
    /// registry and every auth change need root; a lease grant needs a user (any), and a
    /// checkpoint (never a client's) nothing. etcd 3.4.23 left compaction, lease grants, nested
    /// txns and a txn's prev_kv and leases unchecked; later 3.4 releases check them as here.
    /// KV writes and lease revokes are also put to the policy hooks bound to their keys.
    fn authorize(
        &self,
        apply: &mut Applying<'_, '_, '_>,
        caller: &Caller,
        command: &Command,
    ) -> Result<Result<(), AuthError>, Fault> {
        let auth = self.auth.read().expect("auth store lock poisoned");
        if !auth.enabled {
            return Ok(Ok(()));
        }
        Ok(match command {
            Command::Kv(req) => match needs::of_write(req) {
                None => auth.check_admin(caller),
                Some(mut needs) => {
                    let leased = needs::leased_keys(req, |id| apply.batch.lease_keys(id))?;
                    needs.extend(leased.iter().map(|k| Need::write(k, &[])));
                    let operation = policy::operation_of(req);
                    self.decide(apply, &auth, caller, operation, &needs)?
                }
            },
            Command::LeaseRevoke { id } => {
                let keys = apply.batch.lease_keys(*id)?;
                let needs: Vec<Need<'_>> = keys.iter().map(|k| Need::write(k, &[])).collect();
                self.decide(apply, &auth, caller, PolicyOperation::LeaseRevoke, &needs)?
            }
            // Any authenticated user may grant a lease.
            Command::LeaseGrant { .. } => auth.permissions(caller).map(|_| ()),
            Command::LeaseCheckpoint { .. } => Ok(()),
            // (With authentication off, `check_admin` lets anyone turn it on, as in etcd.)
            Command::Auth(_) | Command::Plugin(_) | Command::Alarm { .. } => {
                auth.check_admin(caller)
            }
            // The API never nests requests, and stamps outside them.
            Command::Request { .. } | Command::Stamped { .. } | Command::Vetted { .. } => {
                Err(AuthError::PermissionDenied)
            }
        })
    }

    /// The roles' and the policy hooks' decision on a write (`plugin/policy.rs`), run here in
    /// apply on the store before the write and with the entry's time, so every member
    /// decides the same; each call is recorded in its binding's statistics, as guards' are.
    fn decide(
        &self,
        apply: &mut Applying<'_, '_, '_>,
        auth: &AuthStore,
        caller: &Caller,
        operation: PolicyOperation,
        needs: &[Need<'_>],
    ) -> Result<Result<(), AuthError>, Fault> {
        let subject = match policy::Subject::of(auth, caller) {
            Ok(subject) => subject,
            Err(e) => return Ok(Err(e)),
        };
        let (batch, now_ms, carried) = (&*apply.batch, apply.now_ms, apply.carried);
        let mut view = None;
        let mut calls = Vec::new();
        let decided = policy::decide(
            &subject,
            &apply.registry.bindings,
            operation,
            needs,
            &mut |binding, question| {
                let view = view.get_or_insert_with(|| View::of(&batch.before()));
                let input = || carry::policy_input(question);
                let taken = carry::accept(carried, binding, input, &view.read(), |a| match a {
                    carry::Answer::Policy(answer) => Some(answer.clone()),
                    carry::Answer::Guard(_) => None,
                })?;
                let call = match taken {
                    Some(call) => call,
                    None => {
                        self.engine
                            .policy(&Target::of(binding, now_ms), view.clone(), question)?
                    }
                };
                calls.push((binding.name.clone(), policy::words(&call), call.fuel));
                Ok(call)
            },
        )
        .map_err(|fault| Fault::PluginHost {
            binding: "(policy)".into(),
            reason: fault.to_string(),
        })?;
        for (name, (words, denied, failed), fuel) in calls {
            if let Some(b) = apply.registry.bindings.get_mut(&name) {
                b.stats.record(&words, fuel, denied, failed);
            }
            apply.touched.insert(name);
        }
        if let Err(AuthError::PolicyDenied { binding, reason }) = &decided {
            tracing::info!(%binding, user = caller.user().unwrap_or(""), %reason, "a policy hook denied a write");
        }
        Ok(decided)
    }

    /// Follows the revisions of committed state: a receiver sees each commit's counters (or a
    /// later one's; intermediate values may be skipped, history has them all).
    pub fn subscribe(&self) -> watch::Receiver<Revisions> {
        self.committed.subscribe()
    }

    /// The marker of the last applied entry, as the Raft layer stored it.
    pub fn applied_marker(&self) -> Result<AppliedMarker, Fault> {
        self.view().marker()
    }

    /// A consistent, pinned view of the whole state, taken in O(1). It reads the same data
    /// however far apply moves on, until dropped (it holds back fjall's garbage collection of
    /// what changes meanwhile, so callers keep one, not many).
    pub fn view(&self) -> StateView {
        StateView::of(&self.storage)
    }

    /// Replaces all state with a [`StateView::export`]ed image, atomically and durably.
    pub fn import(&self, input: &mut impl std::io::Read) -> Result<(), std::io::Error> {
        let to_io = |e: fjall::Error| std::io::Error::other(e.to_string());
        let mut batch = self
            .storage
            .db
            .batch()
            .durability(Some(fjall::PersistMode::SyncAll));
        for name in crate::storage::STATE_KEYSPACES {
            let ks = self
                .storage
                .state_keyspace(name)
                .expect("listed state keyspace");
            for guard in ks.iter() {
                batch.remove(ks, guard.key().map_err(to_io)?);
            }
        }
        loop {
            let mut idx = [0u8; 1];
            match input.read_exact(&mut idx) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e),
            }
            let name = crate::storage::STATE_KEYSPACES
                .get(idx[0] as usize)
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "unknown keyspace in snapshot",
                    )
                })?;
            let ks = self
                .storage
                .state_keyspace(name)
                .expect("listed state keyspace");
            let key = read_chunk(input)?;
            let value = read_chunk(input)?;
            batch.insert(ks, key, value);
        }
        batch.commit().map_err(to_io)?;
        {
            let mut registry = self.registry.lock().expect("registry lock poisoned");
            let generation = registry.generation + 1;
            *registry = Registry::load(&self.storage).map_err(std::io::Error::other)?;
            registry.generation = generation;
            self.published.publish(&registry);
        }
        *self.auth.write().expect("auth store lock poisoned") =
            AuthStore::load(&self.storage).map_err(std::io::Error::other)?;
        *self.alarms.write().expect("alarms lock poisoned") =
            Alarms::load(&self.storage).map_err(std::io::Error::other)?;
        self.prepare_modules().map_err(std::io::Error::other)?;
        let revisions = Mvcc::revisions(&self.storage).map_err(std::io::Error::other)?;
        *self.revisions.lock().expect("revisions lock poisoned") = revisions;
        self.committed.send_replace(revisions);
        Ok(())
    }

    /// Makes everything applied so far durable (before a snapshot lets the log be purged).
    pub fn persist(&self) -> Result<(), Fault> {
        self.storage.db.persist(fjall::PersistMode::SyncAll)?;
        Ok(())
    }
}

/// A pinned view of the state machine (see [`StateMachine::view`]).
#[derive(Clone)]
pub struct StateView {
    storage: Storage,
    snap: fjall::Snapshot,
}

impl fmt::Debug for StateView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateView").finish_non_exhaustive()
    }
}

impl StateView {
    /// Pins the state of `storage` as it is now (see [`StateMachine::view`]).
    pub fn of(storage: &Storage) -> StateView {
        StateView {
            storage: storage.clone(),
            snap: storage.db.snapshot(),
        }
    }

    /// The applied-log marker this view was taken at.
    pub fn marker(&self) -> Result<AppliedMarker, Fault> {
        let applied =
            Mvcc::applied_position(&self.snap, &self.storage).map_err(mvcc::into_fault)?;
        let membership = self
            .snap
            .get(&self.storage.meta, MEMBERSHIP)?
            .map(|v| v.to_vec());
        Ok(AppliedMarker {
            applied,
            membership,
        })
    }

    /// The store's revisions as of this view.
    pub fn revisions(&self) -> Result<Revisions, Fault> {
        mvcc::revisions_in(&self.snap, &self.storage).map_err(mvcc::into_fault)
    }

    /// Calls `each` with every record of every state keyspace: the keyspace's index in
    /// `storage::STATE_KEYSPACES`, the key and the value, keyspace by keyspace in key order.
    pub fn for_each_record(
        &self,
        mut each: impl FnMut(u8, &[u8], &[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        for (idx, ks) in self.keyspaces() {
            for guard in self.snap.iter(ks) {
                let (k, v) = guard.into_inner().map_err(fjall_to_io)?;
                each(idx, &k, &v)?;
            }
        }
        Ok(())
    }

    /// Calls `each` with the key and value lengths of every record, in the order of
    /// [`StateView::for_each_record`], without loading values that are stored apart from
    /// their keys (history's values): one walk reads the keys, a second, in step over the same
    /// pinned view, reads only the values' sizes.
    pub fn for_each_size(&self, mut each: impl FnMut(usize, usize)) -> std::io::Result<()> {
        for (_, ks) in self.keyspaces() {
            for (key, size) in self.snap.iter(ks).zip(self.snap.iter(ks)) {
                let key = key.key().map_err(fjall_to_io)?;
                let size = size.size().map_err(fjall_to_io)?;
                each(key.len(), size as usize);
            }
        }
        Ok(())
    }

    fn keyspaces(&self) -> impl Iterator<Item = (u8, &fjall::Keyspace)> {
        crate::storage::STATE_KEYSPACES
            .iter()
            .enumerate()
            .map(|(idx, name)| {
                let ks = self
                    .storage
                    .state_keyspace(name)
                    .expect("every listed state keyspace has a handle");
                // At most a few dozen keyspaces: the list is a short constant.
                (idx as u8, ks)
            })
    }

    /// Writes every state keyspace of the view to `out`. Format: records of `(keyspace index
    /// u8, key len u32, key, value len u32, value)`, big-endian lengths, keyspaces as in
    /// `storage::STATE_KEYSPACES`.
    pub fn export(&self, out: &mut impl std::io::Write) -> Result<(), std::io::Error> {
        self.for_each_record(|idx, k, v| write_record(out, idx, k, v))
    }
}

/// One record of [`StateView::export`]'s format.
pub fn write_record(
    out: &mut impl std::io::Write,
    keyspace: u8,
    key: &[u8],
    value: &[u8],
) -> std::io::Result<()> {
    out.write_all(&[keyspace])?;
    out.write_all(&(key.len() as u32).to_be_bytes())?;
    out.write_all(key)?;
    out.write_all(&(value.len() as u32).to_be_bytes())?;
    out.write_all(value)
}

fn fjall_to_io(e: fjall::Error) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

fn read_chunk(input: &mut impl std::io::Read) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len)?;
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    input.read_exact(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
#[path = "state_machine_test.rs"]
mod tests;

#[cfg(test)]
#[path = "apply_fuzz_test.rs"]
mod apply_fuzz_test;
