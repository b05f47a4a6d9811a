//! Runs one parsed command: reads its local inputs (stdin, files) first, so that a typo fails
//! before any network traffic and the command timeout covers only the server's work, then dials
//! and calls.

use std::fs::File;
use std::io::{BufRead, Read, Write};
use std::path::Path;

use cairn_proto::cairn_plugin::{
    BindRequest, Binding, FailurePolicy, GetRequest, InstallResponse, Kind, ListRequest,
    ReactorOptions, RemoveRequest, UnbindRequest,
};

use crate::cli::{
    BindArgs, Cli, Command, FailurePolicyArg, GlobalArgs, InstallArgs, KindArg, PluginCommand,
};
use crate::endpoint::Connection;
use crate::error::Error;
use crate::key_range::prefix_range_end;
use crate::module::{self, MAX_MODULE_BYTES, Module};
use crate::output;
use crate::print::{Printer, WriteOut};
use crate::txn_parse;

/// The largest `--config-file`: a binding travels in one request, under gRPC's 4 MiB.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// One command's global settings: how to dial and how to print.
pub struct Session {
    pub global: GlobalArgs,
    pub printer: Printer,
}

impl Session {
    pub fn new(global: GlobalArgs) -> Self {
        let printer = Printer::new(global.write_out, global.hex);
        Session { global, printer }
    }

    /// Connects to the first endpoint that answers, authenticated with `--user` if given.
    pub async fn dial(&self) -> Result<Connection, Error> {
        dial(&self.global, &self.global.endpoints).await
    }

    /// Connects to `endpoint` alone (commands that report per endpoint).
    pub async fn dial_one(&self, endpoint: &str) -> Result<Connection, Error> {
        dial(&self.global, &[endpoint.to_owned()]).await
    }
}

/// Runs `cli`, reading a txn or a value from `input` and printing to `out`.
pub async fn run(cli: Cli, input: &mut dyn BufRead, out: &mut dyn Write) -> Result<(), Error> {
    if cli.global.debug {
        debug_flags(&cli.global);
    }
    let session = Session::new(cli.global);
    let global = &session.global;
    match cli.command {
        Command::Get(args) => crate::keys::get(&session, args, out).await?,
        Command::Put(args) => crate::keys::put(&session, args, input, out).await?,
        Command::Del(args) => crate::keys::del(&session, args, out).await?,
        Command::Compaction(args) => crate::keys::compaction(&session, args, out).await?,
        Command::Lease(command) => crate::lease::lease(&session, command, out).await?,
        Command::Member(command) => crate::cluster::member(&session, command, out).await?,
        Command::Endpoint(command) => crate::cluster::endpoint(&session, command, out).await?,
        Command::Alarm(command) => crate::cluster::alarm(&session, command, out).await?,
        Command::Defrag(args) => crate::cluster::defrag(&session, args, out).await?,
        Command::MoveLeader { transferee } => {
            crate::cluster::move_leader(&session, transferee, out).await?;
        }
        Command::Lock(args) => crate::recipes::lock(&session, args, out).await?,
        Command::Elect(args) => crate::recipes::elect(&session, args, out).await?,
        Command::MakeMirror(args) => crate::mirror::make_mirror(&session, args, out).await?,
        Command::Check(command) => crate::check::check(&session, command, out).await?,
        Command::Bench(args) => crate::bench::bench(&session, args, out).await?,
        Command::Version => {
            writeln!(out, "cairnctl version: {}", env!("CARGO_PKG_VERSION"))?;
            writeln!(out, "API version: 3.4")?;
        }
        Command::Completion { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "cairnctl", out);
        }
        Command::Txn(args) => {
            let prompts: Option<&mut dyn Write> = if args.interactive {
                Some(&mut *out)
            } else {
                None
            };
            let request = txn_parse::read_txn(input, prompts)?;
            let connection = session.dial().await?;
            let response = connection
                .deadline(connection.kv().txn(connection.request(request)))
                .await?;
            session.printer.print(out, &response)?;
        }
        Command::Watch(args) => crate::watch::watch(&session, args, input, out).await?,
        Command::Snapshot(command) => {
            crate::snapshot::snapshot(command, || session.dial(), global.write_out, out).await?;
        }
        Command::User(command) => {
            crate::auth::user(&session.dial().await?, command, session.printer, input, out).await?;
        }
        Command::Role(command) => {
            crate::auth::role(&session.dial().await?, command, session.printer, out).await?;
        }
        Command::Auth(command) => {
            crate::auth::auth(&session.dial().await?, command, session.printer, out).await?;
        }
        Command::Plugin(command) => plugin(&session, command, out).await?,
    }
    out.flush()?;
    Ok(())
}

/// etcdctl's `--debug`: every global flag as the environment variable that would set it.
fn debug_flags(global: &GlobalArgs) {
    eprintln!("ETCDCTL_ENDPOINTS=[{}]", global.endpoints.join(" "));
    eprintln!("ETCDCTL_WRITE_OUT={}", global.write_out.name());
    eprintln!("ETCDCTL_HEX={}", global.hex);
    eprintln!("ETCDCTL_DIAL_TIMEOUT={:?}", global.dial_timeout);
    eprintln!("ETCDCTL_COMMAND_TIMEOUT={:?}", global.command_timeout);
    eprintln!("ETCDCTL_KEEPALIVE_TIME={:?}", global.keepalive_time);
    eprintln!("ETCDCTL_KEEPALIVE_TIMEOUT={:?}", global.keepalive_timeout);
    eprintln!(
        "ETCDCTL_INSECURE_SKIP_TLS_VERIFY={}",
        global.insecure_skip_tls_verify
    );
}

/// Cairn's plugin registry commands. Their JSON is the response as proto3 JSON (Cairn's own
/// API: no etcdctl output to match).
async fn plugin(
    session: &Session,
    command: PluginCommand,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let global = &session.global;
    let write_out = match global.write_out {
        WriteOut::Simple | WriteOut::Json => global.write_out,
        other => {
            return Err(Error::Unsupported(format!(
                "{} not supported as output format",
                other.name()
            )));
        }
    };
    match command {
        PluginCommand::New(args) => {
            let dir = args.dir.unwrap_or_else(|| args.name.clone().into());
            let sdk = args.sdk.unwrap_or_else(crate::scaffold::default_sdk);
            for line in crate::scaffold::create(args.kind, &args.name, &dir, &sdk)? {
                writeln!(out, "{line}")?;
            }
        }
        // Blocking work (compiling and running the plugin) on cairnctl's one-command runtime,
        // where nothing else waits.
        PluginCommand::Test(args) => crate::sandbox::run(&args, out)?,
        PluginCommand::Logs { binding } => {
            crate::plugin_logs::follow(session, binding, write_out, out).await?;
        }
        PluginCommand::Install(args) => install(global, write_out, args, out).await?,
        PluginCommand::Bind(args) => bind(global, write_out, args, out).await?,
        PluginCommand::Unbind { binding } => {
            let connection = dial(global, &global.endpoints).await?;
            let request = connection.request(UnbindRequest {
                name: binding.clone(),
            });
            let response = connection
                .deadline(connection.plugin().unbind(request))
                .await?;
            match write_out {
                WriteOut::Json => output::json(out, &response)?,
                _ => writeln!(out, "unbound {binding}")?,
            }
        }
        PluginCommand::Remove { name } => {
            let connection = dial(global, &global.endpoints).await?;
            let request = connection.request(RemoveRequest { name: name.clone() });
            let response = connection
                .deadline(connection.plugin().remove(request))
                .await?;
            match write_out {
                WriteOut::Json => output::json(out, &response)?,
                _ => writeln!(out, "removed {name}")?,
            }
        }
        PluginCommand::List => {
            let connection = dial(global, &global.endpoints).await?;
            let request = connection.request(ListRequest {});
            let response = connection
                .deadline(connection.plugin().list(request))
                .await?;
            match write_out {
                WriteOut::Json => output::json(out, &response)?,
                _ => output::plugin_list(out, &response)?,
            }
        }
        PluginCommand::Get { name } => {
            let connection = dial(global, &global.endpoints).await?;
            let request = connection.request(GetRequest { name });
            let response = connection
                .deadline(connection.plugin().get(request))
                .await?;
            match write_out {
                WriteOut::Json => output::json(out, &response)?,
                _ => output::plugin_get(out, &response)?,
            }
        }
    }
    Ok(())
}

/// Connects to the first of `endpoints` that answers, and with `--user` authenticates as
/// etcdctl does: the token then goes with every request; a cluster with authentication off
/// is used without one.
async fn dial(global: &GlobalArgs, endpoints: &[String]) -> Result<Connection, Error> {
    let tls = crate::tls::TlsArgs {
        cacert: global.cacert.clone(),
        cert: global.cert.clone(),
        key: global.key.clone(),
        insecure_skip_verify: global.insecure_skip_tls_verify,
    };
    let connection = Connection::dial_with(
        endpoints,
        &tls,
        global.dial_timeout,
        global.command_timeout,
        Some((global.keepalive_time, global.keepalive_timeout)),
    )
    .await?;
    let Some(user) = &global.user else {
        return Ok(connection);
    };
    let (name, password) = match (user.split_once(':'), &global.password) {
        (_, Some(password)) => (user.clone(), password.clone()),
        (Some((name, password)), None) => (name.to_owned(), password.to_owned()),
        (None, None) => (
            user.clone(),
            rpassword::prompt_password("Password: ").map_err(Error::Password)?,
        ),
    };
    connection.authenticate(name, password).await
}

/// `plugin install`: the chunks go one unary call each, in order; each answer must count the
/// bytes sent so far, and the last must say the plugin is installed. A server that already
/// has these bytes may say so early, which ends the upload.
async fn install(
    global: &GlobalArgs,
    write_out: WriteOut,
    args: InstallArgs,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let chunk_bytes = usize::try_from(args.chunk_size)
        .ok()
        .filter(|&bytes| bytes > 0)
        .ok_or_else(|| Error::Usage("--chunk-size must be between 1 byte and 4GiB".to_owned()))?;
    let path = args.file.display().to_string();
    let bytes = read_file(&args.file, MAX_MODULE_BYTES)?;
    let module = module::prepare(&path, bytes)?;
    let connection = dial(global, &global.endpoints).await?;
    let response = send_chunks(&connection, &args.name, &module, chunk_bytes).await?;
    match write_out {
        WriteOut::Json => output::json(out, &response)?,
        _ => writeln!(
            out,
            "installed {} sha256:{} ({} bytes)",
            args.name,
            module.sha256,
            module.bytes.len()
        )?,
    }
    Ok(())
}

async fn send_chunks(
    connection: &Connection,
    name: &str,
    module: &Module,
    chunk_bytes: usize,
) -> Result<InstallResponse, Error> {
    let mut client = connection.plugin();
    let mut last = None;
    for request in module::install_requests(name, module, chunk_bytes) {
        let sent = request.offset + request.data.len() as u64;
        let response = connection
            .deadline(client.install(connection.request(request)))
            .await?;
        if response.installed {
            return Ok(response);
        }
        if response.received != sent {
            return Err(Error::Protocol(format!(
                "after {sent} bytes sent the server reports {} received",
                response.received
            )));
        }
        last = Some(response);
    }
    Err(Error::Protocol(format!(
        "the server received all {} bytes but did not install the plugin (last answer: {last:?})",
        module.bytes.len()
    )))
}

/// `plugin bind`: one Bind request with the binding as the flags describe it.
async fn bind(
    global: &GlobalArgs,
    write_out: WriteOut,
    args: BindArgs,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let config = match (args.config, &args.config_file) {
        (Some(text), _) => text.into_bytes(),
        (None, Some(path)) => read_file(path, MAX_CONFIG_BYTES)?,
        (None, None) => Vec::new(),
    };
    if config.len() > MAX_CONFIG_BYTES {
        return Err(Error::Usage(format!(
            "the config is {} bytes; a binding carries at most {MAX_CONFIG_BYTES}",
            config.len()
        )));
    }
    let key = args.key.into_bytes();
    let range_end = if args.prefix {
        prefix_range_end(&key)
    } else {
        args.range_end.map(String::into_bytes).unwrap_or_default()
    };
    let binding = Binding {
        name: args.binding.clone(),
        plugin: args.plugin,
        kind: match args.kind {
            KindArg::Guard => Kind::Guard,
            KindArg::Compare => Kind::Compare,
            KindArg::Policy => Kind::Policy,
            KindArg::WatchFilter => Kind::WatchFilter,
            KindArg::Reactor => Kind::Reactor,
        } as i32,
        reactor_options: match (args.kind, args.retrigger, args.max_depth) {
            (KindArg::Reactor, retrigger, depth) => Some(ReactorOptions {
                retrigger,
                max_depth: depth.unwrap_or(0),
            }),
            (_, false, None) => None,
            _ => {
                return Err(Error::Usage(
                    "--retrigger and --max-depth are for --kind reactor".to_owned(),
                ));
            }
        },
        key,
        range_end,
        config,
        fuel: args.fuel,
        memory_bytes: args.memory,
        failure_policy: match args.failure_policy {
            FailurePolicyArg::FailClosed => FailurePolicy::FailClosed,
            FailurePolicyArg::Ignore => FailurePolicy::Ignore,
        } as i32,
        ..Binding::default()
    };
    let connection = dial(global, &global.endpoints).await?;
    let request = connection.request(BindRequest {
        binding: Some(binding),
    });
    let response = connection
        .deadline(connection.plugin().bind(request))
        .await?;
    match write_out {
        WriteOut::Json => output::json(out, &response)?,
        _ => writeln!(out, "bound {}", args.binding)?,
    }
    Ok(())
}

/// A whole file, or `limit + 1` bytes of it so that the caller sees it is too large.
fn read_file(path: &Path, limit: usize) -> Result<Vec<u8>, Error> {
    let read_error = |source| Error::ReadFile {
        path: path.display().to_string(),
        source,
    };
    let file = File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    Ok(bytes)
}
