//! `cairnctl plugin test`: runs a plugin on a sample request here, without a server.
//!
//! The run is the host's own: a state machine over a store in a temporary directory, in which
//! the plugin is installed and bound (to every key, or by name for compares and named watch
//! filters) exactly as a member would apply those commands. The store first gets the
//! `--given` keys; then the request runs through the code a member runs:
//!
//! - a guard: the writes are applied (one write alone, several as one txn), so the guard runs
//!   inside apply and the answer is the write's revision or etcd's error;
//! - a compare: the plugin engine computes the argument's value on the store;
//! - a policy hook: the engine is asked about the accesses (`--get`, `--put`, `--delete`) as
//!   the API asks it, with the roles' own verdict "not allowed";
//! - a reactor: the writes are applied and the engine shown their events, as the leader
//!   shows it each revision; the answer is the writes it asks for;
//! - a watch filter: the writes are applied and each event passed through a filter opened
//!   for `--caller`, `--role` and `--argument`, as a member serving a watcher does.
//!
//! Every command is stamped with the current time, which is what the plugin's clock reads.

use std::io::Write;

use cairn::mvcc::{
    DeleteRangeRequest, Event, EventKind, Mvcc, PutRequest, RequestOp, TxnRequest, WriteRequest,
    WriteResponse,
};
use cairn::plugin::engine::{
    Computed, Outcome, PolicyAccess, PolicyAnswer, PolicyOperation, PolicyQuestion, Target, View,
};
use cairn::plugin::logs::LogLine;
use cairn::plugin::{Binding, Engine, FailurePolicy, Kind, PluginCommand, Registry};
use cairn::state_machine::{AppliedMarker, Command, CommandResponse, StateMachine};
use cairn::storage::Storage;

use crate::cli::{KindArg, TestArgs};
use crate::error::Error;
use crate::module;

/// Install chunks, as `plugin install` sends them.
const CHUNK_BYTES: usize = 1 << 20;

/// A member's state machine over a throwaway store.
struct Sandbox {
    /// The plugin's and its binding's name: the file's stem, as the messages a client would
    /// get name the binding.
    name: String,
    storage: Storage,
    machine: StateMachine,
    /// The lines the plugin logs, printed after its answer.
    logs: tokio::sync::broadcast::Receiver<LogLine>,
    applied: u64,
    now_ms: i64,
    /// Dropped last: the store's files live here.
    _dir: tempfile::TempDir,
}

fn failed(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Failed(format!("{what}: {e}"))
}

impl Sandbox {
    fn new(name: String) -> Result<Sandbox, Error> {
        let dir = tempfile::tempdir().map_err(|e| failed("a temporary store", e))?;
        let storage = Storage::open(dir.path()).map_err(|e| failed("opening the store", e))?;
        let machine =
            StateMachine::new(storage.clone()).map_err(|e| failed("the state machine", e))?;
        let logs = machine.plugin_logs().follow();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Ok(Sandbox {
            name,
            storage,
            machine,
            logs,
            applied: 0,
            now_ms,
            _dir: dir,
        })
    }

    /// Applies one command as the next log entry, stamped with the current time.
    fn apply(&mut self, command: Command) -> Result<CommandResponse, Error> {
        self.applied += 1;
        let marker = AppliedMarker {
            applied: self.applied.to_be_bytes().to_vec(),
            membership: None,
        };
        let stamped = Command::Stamped {
            unix_ms: self.now_ms,
            command: Box::new(command),
        };
        let mut answers = self
            .machine
            .apply([(Some(&stamped), &marker)])
            .map_err(|e| failed("applying", e))?;
        Ok(answers.pop().unwrap_or_default())
    }

    /// Applies a registry command; its refusal is the run's error.
    fn registry(&mut self, command: PluginCommand) -> Result<(), Error> {
        match self.apply(Command::Plugin(command))? {
            CommandResponse::Plugin(Ok(_), _) => Ok(()),
            CommandResponse::Plugin(Err(e), _) => Err(Error::Failed(e.to_string())),
            other => Err(Error::Protocol(format!("{other:?}"))),
        }
    }

    /// Applies a write; etcd's error if it failed.
    fn write(&mut self, request: WriteRequest) -> Result<Result<WriteResponse, String>, Error> {
        match self.apply(Command::Kv(request))? {
            CommandResponse::Kv(answer) => Ok(answer.map_err(|e| e.to_string())),
            other => Err(Error::Protocol(format!("{other:?}"))),
        }
    }

    /// The binding as the registry holds it.
    fn binding(&self) -> Result<Binding, Error> {
        let registry = Registry::load(&self.storage).map_err(|e| failed("the registry", e))?;
        registry
            .bindings
            .get(&self.name)
            .cloned()
            .ok_or_else(|| Error::Protocol("the binding vanished".into()))
    }

    /// The store's current state, as the engine reads it.
    fn view(&self) -> Result<View, Error> {
        let view = Mvcc::read_view(&self.storage).map_err(|e| failed("reading the store", e))?;
        Ok(View::of(&view))
    }
}

fn split_pair(pair: &str) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let (key, value) = pair
        .split_once('=')
        .ok_or_else(|| Error::Usage(format!("{pair:?}: expected KEY=VALUE")))?;
    Ok((key.as_bytes().to_vec(), value.as_bytes().to_vec()))
}

fn put(key: Vec<u8>, value: Vec<u8>) -> PutRequest {
    PutRequest {
        key,
        value,
        prev_kv: true,
        ..PutRequest::default()
    }
}

fn delete(key: &str) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: key.as_bytes().to_vec(),
        range_end: Vec::new(),
        prev_kv: true,
    }
}

/// The request's writes: puts, then deletes.
fn writes(args: &TestArgs) -> Result<Vec<RequestOp>, Error> {
    let mut ops = Vec::new();
    for pair in &args.puts {
        let (key, value) = split_pair(pair)?;
        ops.push(RequestOp::Put(put(key, value)));
    }
    ops.extend(
        args.deletes
            .iter()
            .map(|k| RequestOp::DeleteRange(delete(k))),
    );
    Ok(ops)
}

/// One write alone, several as one txn that always takes its success branch.
fn as_request(mut ops: Vec<RequestOp>) -> Option<WriteRequest> {
    match ops.len() {
        0 => None,
        1 => Some(match ops.remove(0) {
            RequestOp::Put(p) => WriteRequest::Put(p),
            RequestOp::DeleteRange(d) => WriteRequest::DeleteRange(d),
            RequestOp::Txn(t) => WriteRequest::Txn(t),
            RequestOp::Range(_) => return None,
        }),
        _ => Some(WriteRequest::Txn(TxnRequest {
            compare: Vec::new(),
            success: ops,
            failure: Vec::new(),
        })),
    }
}

fn kind_of(kind: KindArg) -> Kind {
    match kind {
        KindArg::Guard => Kind::Guard,
        KindArg::Compare => Kind::Compare,
        KindArg::Policy => Kind::Policy,
        KindArg::WatchFilter => Kind::WatchFilter,
        KindArg::Reactor => Kind::Reactor,
    }
}

/// Bytes as text where they are UTF-8, else Go-quoted.
fn shown(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => crate::print::go_quote(bytes),
    }
}

/// Runs `plugin test`, printing the plugin's answer.
pub fn run(args: &TestArgs, out: &mut dyn Write) -> Result<(), Error> {
    let path = args.file.display().to_string();
    let bytes = std::fs::read(&args.file).map_err(|source| Error::ReadFile {
        path: path.clone(),
        source,
    })?;
    let module = module::prepare(&path, bytes)?;
    let name = args
        .file
        .file_stem()
        .map_or_else(|| "plugin".into(), |s| s.to_string_lossy().into_owned());
    let mut sandbox = Sandbox::new(name)?;
    let size = module.bytes.len() as u64;
    for (i, chunk) in module.bytes.chunks(CHUNK_BYTES).enumerate() {
        sandbox.registry(PluginCommand::Install {
            name: sandbox.name.clone(),
            sha256: module.sha256.clone(),
            size,
            offset: (i * CHUNK_BYTES) as u64,
            data: chunk.to_vec(),
        })?;
    }
    for pair in &args.given {
        let (key, value) = split_pair(pair)?;
        if let Err(e) = sandbox.write(WriteRequest::Put(put(key, value)))? {
            return Err(Error::Failed(format!("--given {pair}: {e}")));
        }
    }
    // Guards, policies and reactors cover every key; compares are named by txns, and the
    // watch filter is named by the watcher, so neither has a range.
    let ranged = matches!(
        args.kind,
        KindArg::Guard | KindArg::Policy | KindArg::Reactor
    );
    let every = if ranged { vec![0] } else { Vec::new() };
    sandbox.registry(PluginCommand::Bind(Binding {
        name: sandbox.name.clone(),
        plugin: sandbox.name.clone(),
        kind: kind_of(args.kind),
        key: every.clone(),
        range_end: every,
        config: args.config.as_bytes().to_vec(),
        fuel: args.fuel,
        memory_bytes: 0,
        failure_policy: FailurePolicy::FailClosed,
        sha256: String::new(),
        stats: Default::default(),
    }))?;
    let ran = match args.kind {
        KindArg::Guard => guard(&mut sandbox, args, out),
        KindArg::Compare => compare(&sandbox, args, out),
        KindArg::Policy => policy(&sandbox, args, out),
        KindArg::Reactor => reactor(&mut sandbox, args, out),
        KindArg::WatchFilter => watch_filter(&mut sandbox, args, out),
    };
    // What the plugin logged while it ran (the last KEPT_LINES of it).
    while let Ok(line) = sandbox.logs.try_recv() {
        writeln!(out, "log {}: {}", line.level, line.message)?;
    }
    ran
}

fn no_writes() -> Error {
    Error::Usage("give the request's writes with --put KEY=VALUE or --delete KEY".into())
}

fn guard(sandbox: &mut Sandbox, args: &TestArgs, out: &mut dyn Write) -> Result<(), Error> {
    let request = as_request(writes(args)?).ok_or_else(no_writes)?;
    match sandbox.write(request)? {
        Ok(answer) => writeln!(out, "allowed: applied at revision {}", answer.revision())?,
        Err(e) => writeln!(out, "denied: {e}")?,
    }
    Ok(())
}

fn engine(sandbox: &Sandbox) -> Result<Engine, Error> {
    Engine::new(sandbox.machine.plugin_logs()).map_err(|e| failed("the plugin engine", e))
}

/// The outcome of a call: its answer, or why it failed (printed as the host logs it).
fn answered<T>(outcome: Outcome<T>, out: &mut dyn Write) -> Result<Option<T>, Error> {
    match outcome {
        Outcome::Answered(answer) => Ok(Some(answer)),
        Outcome::Failed(reason) => {
            writeln!(out, "failed: {reason}")?;
            Ok(None)
        }
    }
}

fn compare(sandbox: &Sandbox, args: &TestArgs, out: &mut dyn Write) -> Result<(), Error> {
    let binding = sandbox.binding()?;
    let call = engine(sandbox)?
        .compare(
            &Target::of(&binding, sandbox.now_ms),
            sandbox.view()?,
            args.argument.as_bytes(),
        )
        .map_err(|e| failed("the compare", e))?;
    match answered(call.outcome, out)? {
        Some(Computed::Int(n)) => writeln!(out, "int: {n}")?,
        Some(Computed::Bytes(b)) => writeln!(out, "bytes: {}", shown(&b))?,
        Some(Computed::Error(e)) => writeln!(out, "error: {e} (the compare is false)")?,
        None => {}
    }
    writeln!(out, "fuel: {}", call.fuel)?;
    Ok(())
}

fn policy(sandbox: &Sandbox, args: &TestArgs, out: &mut dyn Write) -> Result<(), Error> {
    let mut accesses: Vec<PolicyAccess> = args
        .gets
        .iter()
        .map(|key| PolicyAccess {
            write: false,
            key: key.as_bytes().to_vec(),
            range_end: Vec::new(),
            value: None,
            lease: 0,
            allowed_by_roles: false,
        })
        .collect();
    for op in writes(args)? {
        let (key, value) = match op {
            RequestOp::Put(p) => (p.key, Some(p.value)),
            RequestOp::DeleteRange(d) => (d.key, None),
            RequestOp::Range(_) | RequestOp::Txn(_) => continue,
        };
        accesses.push(PolicyAccess {
            write: true,
            key,
            range_end: Vec::new(),
            value,
            lease: 0,
            allowed_by_roles: false,
        });
    }
    let operation = match (args.gets.len(), args.puts.len(), args.deletes.len()) {
        (0, 0, 0) => {
            return Err(Error::Usage(
                "give the request's accesses with --get KEY, --put KEY=VALUE or --delete KEY"
                    .into(),
            ));
        }
        (1, 0, 0) => PolicyOperation::Range,
        (0, 1, 0) => PolicyOperation::Put,
        (0, 0, 1) => PolicyOperation::DeleteRange,
        _ => PolicyOperation::Txn,
    };
    let mut roles = args.roles.clone();
    roles.sort();
    let question = PolicyQuestion {
        user: args.caller.clone(),
        roles,
        operation,
        accesses,
    };
    let binding = sandbox.binding()?;
    let call = engine(sandbox)?
        .policy(
            &Target::of(&binding, sandbox.now_ms),
            sandbox.view()?,
            &question,
        )
        .map_err(|e| failed("the policy hook", e))?;
    match answered(call.outcome, out)? {
        Some(PolicyAnswer::Allow) => writeln!(out, "allow")?,
        Some(PolicyAnswer::Deny(reason)) => writeln!(out, "deny: {reason}")?,
        Some(PolicyAnswer::Defer) => writeln!(out, "defer: the roles decide")?,
        None => {}
    }
    Ok(())
}

/// Applies the request's writes one by one; returns their events and the last revision.
fn events(sandbox: &mut Sandbox, args: &TestArgs) -> Result<(Vec<Event>, i64), Error> {
    let ops = writes(args)?;
    if ops.is_empty() {
        return Err(no_writes());
    }
    let (mut events, mut revision) = (Vec::new(), 0);
    for op in ops {
        let (request, key) = match op {
            RequestOp::Put(p) => (WriteRequest::Put(p.clone()), p.key),
            RequestOp::DeleteRange(d) => (WriteRequest::DeleteRange(d.clone()), d.key),
            RequestOp::Range(_) | RequestOp::Txn(_) => continue,
        };
        let answer = sandbox.write(request)?.map_err(Error::Failed)?;
        revision = answer.revision();
        let now = Mvcc::read_view(&sandbox.storage)
            .and_then(|view| view.get(&key))
            .map_err(|e| failed("reading the store", e))?;
        let prev_kv = match &answer {
            WriteResponse::Put(p) => p.prev_kv.clone(),
            WriteResponse::DeleteRange(d) => d.prev_kvs.first().cloned(),
            _ => None,
        };
        events.push(match now {
            Some(kv) => Event {
                kind: EventKind::Put,
                kv,
                prev_kv,
            },
            None => Event {
                kind: EventKind::Delete,
                kv: cairn::mvcc::KeyValue {
                    key,
                    mod_revision: revision,
                    ..Default::default()
                },
                prev_kv,
            },
        });
    }
    Ok((events, revision))
}

fn reactor(sandbox: &mut Sandbox, args: &TestArgs, out: &mut dyn Write) -> Result<(), Error> {
    let (events, revision) = events(sandbox, args)?;
    let binding = sandbox.binding()?;
    let call = engine(sandbox)?
        .react(
            &Target::of(&binding, sandbox.now_ms),
            sandbox.view()?,
            revision,
            &events,
        )
        .map_err(|e| failed("the reactor", e))?;
    if let Some(ops) = answered(call.outcome, out)? {
        if ops.is_empty() {
            writeln!(out, "no writes")?;
        }
        for op in ops {
            match op {
                RequestOp::Put(p) => writeln!(out, "put {} {}", shown(&p.key), shown(&p.value))?,
                RequestOp::DeleteRange(d) if d.range_end.is_empty() => {
                    writeln!(out, "delete {}", shown(&d.key))?;
                }
                RequestOp::DeleteRange(d) => {
                    writeln!(out, "delete {} {}", shown(&d.key), shown(&d.range_end))?;
                }
                RequestOp::Range(_) | RequestOp::Txn(_) => {}
            }
        }
    }
    Ok(())
}

fn watch_filter(sandbox: &mut Sandbox, args: &TestArgs, out: &mut dyn Write) -> Result<(), Error> {
    let (events, _) = events(sandbox, args)?;
    let binding = sandbox.binding()?;
    let filters = cairn::plugin::filter::FilterEngine::new(
        sandbox.storage.clone(),
        sandbox.machine.plugin_logs(),
    )
    .map_err(|e| failed("the filter engine", e))?;
    let mut roles = args.roles.clone();
    roles.sort();
    let watcher = cairn::plugin::filter::Watcher {
        user: args.caller.clone(),
        roles,
        argument: args.argument.as_bytes().to_vec(),
    };
    let mut filter = match filters
        .open(&binding, true, &watcher)
        .map_err(|e| failed("opening the filter", e))?
    {
        Ok(filter) => filter,
        Err(reason) => {
            writeln!(out, "refused: {reason}")?;
            return Ok(());
        }
    };
    for event in events {
        let kind = match event.kind {
            EventKind::Put => "PUT",
            EventKind::Delete => "DELETE",
        };
        let key = shown(&event.kv.key);
        let (value, before) = (event.kv.value.clone(), event.kv.clone());
        match filter.apply(event) {
            Ok(None) => writeln!(out, "{kind} {key}: drop")?,
            Ok(Some(sent)) if sent.kv.value == value && sent.kv == before => {
                writeln!(out, "{kind} {key}: pass")?;
            }
            Ok(Some(sent)) => writeln!(out, "{kind} {key}: rewrite {}", shown(&sent.kv.value))?,
            Err(reason) => writeln!(out, "{kind} {key}: failed: {reason}")?,
        }
    }
    Ok(())
}
