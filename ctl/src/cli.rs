//! Flags and subcommands, as etcdctl spells them where etcdctl has them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::module::DEFAULT_CHUNK_BYTES;
use crate::print::WriteOut;
use crate::units::{parse_bytes, parse_duration};

/// Cairn's command-line client: every etcdctl v3 command, Cairn's computed compares and watch
/// filters, and the plugin registry.
#[derive(Debug, Parser)]
#[command(name = "cairnctl", version, disable_version_flag = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// etcdctl's global flags.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// gRPC endpoints, comma-separated (host:port or http://host:port); the first that answers
    /// serves the command.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    pub endpoints: Vec<String>,
    /// Output format.
    #[arg(short = 'w', long = "write-out", global = true, value_enum, default_value_t = WriteOut::Simple)]
    pub write_out: WriteOut,
    /// How long to wait for a connection (Go duration: 2s, 500ms).
    #[arg(long, global = true, default_value = "2s", value_parser = parse_duration)]
    pub dial_timeout: Duration,
    /// How long each request may take (Go duration: 5s, 1m).
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    pub command_timeout: Duration,
    // The ids below are the flags' own: subcommands have arguments named `user` and `key`.
    /// Run as this user: `name:password`, or `name` with the password from `--password` or
    /// asked for on the terminal.
    #[arg(long = "user", id = "global_user", global = true)]
    pub user: Option<String>,
    /// The password of `--user` (then `--user` holds only the name, so the password may
    /// contain ':').
    #[arg(long = "password", id = "global_password", global = true)]
    pub password: Option<String>,
    /// Verify `https://` servers with this CA bundle.
    #[arg(long = "cacert", id = "tls_cacert", global = true)]
    pub cacert: Option<std::path::PathBuf>,
    /// Present this client certificate to `https://` servers.
    #[arg(long = "cert", id = "tls_cert", global = true)]
    pub cert: Option<std::path::PathBuf>,
    /// The key of `--cert`. Give it before the command: `plugin bind` has a `--key` of its
    /// own.
    #[arg(long = "key", id = "tls_key")]
    pub key: Option<std::path::PathBuf>,
    /// Accept any server certificate (only for testing, as etcdctl says).
    #[arg(long, global = true, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub insecure_skip_tls_verify: bool,
    /// Print keys and values as hex-escaped bytes (`\x66\x6f\x6f`).
    #[arg(long, global = true, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub hex: bool,
    /// HTTP/2 keepalive ping interval (Go duration).
    #[arg(long, global = true, default_value = "2s", value_parser = parse_duration)]
    pub keepalive_time: Duration,
    /// How long a keepalive ping may go unanswered before the connection is dropped.
    #[arg(long, global = true, default_value = "6s", value_parser = parse_duration)]
    pub keepalive_timeout: Duration,
    /// Accepted for etcdctl's sake: `http://` endpoints and bare `host:port` are plain,
    /// `https://` endpoints use TLS, whatever this says.
    #[arg(long, global = true, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub insecure_transport: bool,
    /// Accepted for etcdctl's sake (DNS discovery is not supported).
    #[arg(long, global = true, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub insecure_discovery: bool,
    /// Print the flags as environment variables on stderr before running (etcdctl's
    /// `--debug`).
    #[arg(long, global = true, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub debug: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Gets the key or a range of keys.
    Get(GetArgs),
    /// Puts the given key into the store (the value from stdin when not given).
    Put(PutArgs),
    /// Removes the specified key or range of keys [key, range_end).
    Del(DelArgs),
    /// Compacts the event history in etcd.
    Compaction(CompactionArgs),
    /// Lease related commands.
    #[command(subcommand)]
    Lease(LeaseCommand),
    /// Membership related commands.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Endpoint related commands.
    #[command(subcommand)]
    Endpoint(EndpointCommand),
    /// Alarm related commands.
    #[command(subcommand)]
    Alarm(AlarmCommand),
    /// Defragments the storage of the etcd members with given endpoints.
    Defrag(DefragArgs),
    /// Transfers leadership to another etcd cluster member.
    MoveLeader {
        /// The new leader's member ID, in hex.
        transferee: Option<String>,
    },
    /// Acquires a named lock (and runs a command while holding it).
    Lock(LockArgs),
    /// Observes and participates in leader election.
    Elect(ElectArgs),
    /// Commands for checking properties of the cluster (etcdctl's `check perf|datascale`).
    #[command(subcommand)]
    Check(CheckCommand),
    /// Makes a mirror of a prefix at the destination cluster.
    MakeMirror(MirrorArgs),
    /// Loads the cluster and reports latencies as etcd's `benchmark` tool does.
    Bench(BenchArgs),
    /// Prints the version of cairnctl.
    Version,
    /// Prints a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion { shell: clap_complete::Shell },
    /// Manage WebAssembly plugins: install modules, bind them to key ranges.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// User related commands (etcdctl's `user`).
    #[command(subcommand)]
    User(UserCommand),
    /// Role related commands (etcdctl's `role`).
    #[command(subcommand)]
    Role(RoleCommand),
    /// Enable or disable authentication (etcdctl's `auth`).
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Run a transaction read from stdin, in etcdctl's txn format (plus computed compares).
    Txn(TxnArgs),
    /// Watch a key or a range and print its events as etcdctl does, optionally through a
    /// watch filter (Cairn's own `--filter`).
    Watch(WatchArgs),
    /// Save a member's snapshot to a file; show a snapshot file's contents; restore one into
    /// a new cluster's data dir (etcdctl's and etcdutl's `snapshot`).
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// The key, and optionally the end of the range [key, range_end).
    pub args: Vec<String>,
    /// Linearizable (l) or Serializable (s).
    #[arg(long, default_value = "l")]
    pub consistency: String,
    /// Order of results: ASCEND or DESCEND (ASCEND by default).
    #[arg(long, default_value = "")]
    pub order: String,
    /// Sort target: CREATE, KEY, MODIFY, VALUE, or VERSION.
    #[arg(long, default_value = "")]
    pub sort_by: String,
    /// Maximum number of results.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub limit: i64,
    /// Get keys with matching prefix.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub prefix: bool,
    /// Get keys that are greater than or equal to the given key using byte compare.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub from_key: bool,
    /// Specify the kv revision.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub rev: i64,
    /// Get only the keys.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub keys_only: bool,
    /// Only write values when using the "simple" output format.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub print_value_only: bool,
}

#[derive(Debug, Args)]
pub struct PutArgs {
    /// The key, and the value (read from stdin when not given).
    pub args: Vec<String>,
    /// Lease ID (in hexadecimal) to attach to the key.
    #[arg(long, default_value = "0")]
    pub lease: String,
    /// Return the previous key-value pair before modification.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub prev_kv: bool,
    /// Updates the key using its current value.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub ignore_value: bool,
    /// Updates the key using its current lease.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub ignore_lease: bool,
}

#[derive(Debug, Args)]
pub struct DelArgs {
    /// The key, and optionally the end of the range [key, range_end).
    pub args: Vec<String>,
    /// Delete keys with matching prefix.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub prefix: bool,
    /// Return deleted key-value pairs.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub prev_kv: bool,
    /// Delete keys that are greater than or equal to the given key using byte compare.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub from_key: bool,
}

#[derive(Debug, Args)]
pub struct CompactionArgs {
    /// The revision to compact up to.
    pub args: Vec<String>,
    /// Wait for the compaction to be physically applied.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub physical: bool,
}

#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// Creates leases.
    Grant { args: Vec<String> },
    /// Revokes leases.
    Revoke { args: Vec<String> },
    /// Gets lease information.
    Timetolive {
        args: Vec<String>,
        /// Get keys attached to this lease.
        #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
        keys: bool,
    },
    /// Lists all active leases.
    List,
    /// Keeps leases alive (renews them).
    KeepAlive {
        args: Vec<String>,
        /// Resets the keep-alive time to its original value and exits immediately.
        #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
        once: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Adds a member into the cluster.
    Add {
        args: Vec<String>,
        /// Comma separated peer URLs for the new member.
        #[arg(long, default_value = "")]
        peer_urls: String,
        /// Indicates if the new member is raft learner.
        #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
        learner: bool,
    },
    /// Removes a member from the cluster.
    Remove { args: Vec<String> },
    /// Updates a member in the cluster.
    Update {
        args: Vec<String>,
        /// Comma separated peer URLs for the updated member.
        #[arg(long, default_value = "")]
        peer_urls: String,
    },
    /// Lists all members in the cluster.
    List,
    /// Promotes a non-voting member in the cluster.
    Promote { args: Vec<String> },
}

#[derive(Debug, Subcommand)]
pub enum EndpointCommand {
    /// Checks the healthiness of endpoints specified in `--endpoints` flag.
    Health(ClusterFlag),
    /// Prints out the status of endpoints specified in `--endpoints` flag.
    Status(ClusterFlag),
    /// Prints the KV history hash for each endpoint in --endpoints.
    Hashkv {
        #[command(flatten)]
        cluster: ClusterFlag,
        /// Maximum revision to hash (default: all revisions).
        #[arg(long, default_value_t = 0)]
        rev: i64,
    },
}

/// `endpoint --cluster`.
#[derive(Debug, Args)]
pub struct ClusterFlag {
    /// Use all endpoints from the cluster member list.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub cluster: bool,
}

#[derive(Debug, Subcommand)]
pub enum AlarmCommand {
    /// Disarms all alarms.
    Disarm,
    /// Lists all alarms.
    List,
}

#[derive(Debug, Args)]
pub struct DefragArgs {
    /// Defragment every member of the cluster (from the member list).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub cluster: bool,
    /// etcdctl's offline defragmentation of a data dir; Cairn members defragment online only.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct MirrorArgs {
    /// The destination cluster's endpoint.
    pub destination: Vec<String>,
    /// Key-value prefix to mirror.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Destination prefix to mirror a prefix to a different prefix in the destination
    /// cluster.
    #[arg(long, default_value = "")]
    pub dest_prefix: String,
    /// Mirror key-values to the root of the destination cluster.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub no_dest_prefix: bool,
    /// TLS certificate for the destination cluster.
    #[arg(long)]
    pub dest_cert: Option<PathBuf>,
    /// TLS key for the destination cluster.
    #[arg(long)]
    pub dest_key: Option<PathBuf>,
    /// CA bundle that verifies the destination cluster's servers.
    #[arg(long)]
    pub dest_cacert: Option<PathBuf>,
    /// Accepted for etcdctl's sake: the destination's scheme decides.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub dest_insecure_transport: bool,
}

#[derive(Debug, Subcommand)]
pub enum CheckCommand {
    /// Checks the performance of the cluster: writes at a fixed rate for 60 s.
    Perf(CheckArgs),
    /// Checks the memory a member uses to hold a given number of keys.
    Datascale(CheckArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The workload: s(mall), m(edium), l(arge), xl (xLarge).
    #[arg(long, default_value = "s")]
    pub load: String,
    /// The prefix the check writes under (default: /etcdctl-check-perf/ or
    /// /etcdctl-check-datascale/).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Compact storage at the last revision after the check.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub auto_compact: bool,
    /// Defragment the endpoints after the check.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub auto_defrag: bool,
}

#[derive(Debug, Args)]
pub struct LockArgs {
    /// The lock's name, then optionally a command to run while holding it.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
    /// Timeout for the lock session, in seconds.
    #[arg(long, default_value_t = 10)]
    pub ttl: i64,
}

#[derive(Debug, Args)]
pub struct ElectArgs {
    /// The election's name, then the proposal.
    pub args: Vec<String>,
    /// Observation mode: print each new leader's proposal.
    #[arg(short = 'l', long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub listen: bool,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Stream the snapshot of the member at the first endpoint that answers into FILE.
    Save { file: PathBuf },
    /// Check a snapshot file whole and print what it holds.
    Status { file: PathBuf },
    /// Write a new member's data dir from a snapshot file (run once per member of the new
    /// cluster, with the same --initial-cluster and token).
    Restore(RestoreArgs),
}

/// etcdctl's `snapshot restore` flags (Cairn's default data dir is `<name>.cairn`).
#[derive(Debug, Args)]
pub struct RestoreArgs {
    pub file: PathBuf,
    /// The new member's name.
    #[arg(long, default_value = "default")]
    pub name: String,
    /// Where to write the data dir (must not exist, or be empty). Default: `<name>.cairn`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The new cluster's members: `name=peerURL,...`.
    #[arg(long, default_value = "default=http://localhost:2380")]
    pub initial_cluster: String,
    /// The new cluster's token (part of every member ID).
    #[arg(long, default_value = "etcd-cluster")]
    pub initial_cluster_token: String,
    /// This member's peer URLs, as listed for it in `--initial-cluster`.
    #[arg(long, value_delimiter = ',', default_value = "http://localhost:2380")]
    pub initial_advertise_peer_urls: Vec<String>,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The key, and optionally the end of the range [key, range_end).
    pub args: Vec<String>,
    /// A command to run for each event (after `--`), with the event in `ETCD_WATCH_*`.
    #[arg(last = true)]
    pub exec: Vec<String>,
    /// Interactive mode: read `watch ...` and `progress` commands from stdin.
    #[arg(short = 'i', long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub interactive: bool,
    /// Watch on a prefix if prefix is set.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub prefix: bool,
    /// Revision to start watching (0: the next one).
    #[arg(long, default_value_t = 0)]
    pub rev: i64,
    /// Get the previous key-value pair before the event happens.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub prev_kv: bool,
    /// A watch-filter binding to run over this watcher's events (Cairn's own).
    #[arg(long, value_name = "BINDING")]
    pub filter: Option<String>,
    /// The argument the filter is opened with.
    #[arg(long, value_name = "ARG", requires = "filter")]
    pub filter_arg: Option<String>,
}

#[derive(Debug, Args)]
pub struct TxnArgs {
    /// Prompt for each section (compares, success ops, failure ops).
    #[arg(short = 'i', long)]
    pub interactive: bool,
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Upload a plugin (a component, or a core module that is made one) under a name.
    Install(InstallArgs),
    /// Create or replace a binding: which plugin runs, where, with what limits.
    Bind(BindArgs),
    /// Delete a binding.
    Unbind {
        /// The binding's name.
        binding: String,
    },
    /// Delete a plugin (refused while a binding uses it).
    Remove {
        /// The plugin's name.
        name: String,
    },
    /// List plugins and bindings.
    List,
    /// Show one plugin and the bindings that use it.
    Get {
        /// The plugin's name.
        name: String,
    },
    /// Write a new plugin crate, ready to build, from the template of one of the five kinds.
    New(NewArgs),
    /// Run a .wasm plugin on a sample request here, without a server: the host's own plugin
    /// engine over a store of its own.
    Test(TestArgs),
    /// Follow the log lines plugins write, on every member, until interrupted.
    Logs {
        /// Only this binding's lines (default: every binding's).
        #[arg(default_value = "")]
        binding: String,
    },
}

#[derive(Debug, Args)]
pub struct NewArgs {
    /// What the plugin does.
    #[arg(value_enum)]
    pub kind: KindArg,
    /// The plugin's crate name (ASCII letters, digits, '-' and '_').
    pub name: String,
    /// The directory to write it into (default: ./NAME).
    #[arg(long, value_name = "PATH")]
    pub dir: Option<PathBuf>,
    /// Cairn's sdk/ directory, which the crate depends on (default: the one this cairnctl was
    /// built from).
    #[arg(long, value_name = "PATH")]
    pub sdk: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// A .wasm file: a component, or a core module built with wit-bindgen.
    pub file: PathBuf,
    /// Which hook to run.
    #[arg(long, value_enum)]
    pub kind: KindArg,
    /// Configuration handed to the plugin.
    #[arg(long, default_value = "")]
    pub config: String,
    /// A key the store holds before the request, KEY=VALUE (repeatable).
    #[arg(long = "given", value_name = "KEY=VALUE")]
    pub given: Vec<String>,
    /// A put: of the request (guard, policy) or an event (reactor, watch filter), KEY=VALUE
    /// (repeatable; puts come before deletes).
    #[arg(long = "put", value_name = "KEY=VALUE")]
    pub puts: Vec<String>,
    /// A delete of one key: of the request, or an event (repeatable).
    #[arg(long = "delete", value_name = "KEY")]
    pub deletes: Vec<String>,
    /// A read of one key, shown to a policy hook (repeatable).
    #[arg(long = "get", value_name = "KEY")]
    pub gets: Vec<String>,
    /// The argument of a compare, or the one a watcher names a filter with.
    #[arg(long, default_value = "")]
    pub argument: String,
    /// The user a policy hook is asked about, or a watch filter is opened for.
    #[arg(long, value_name = "USER", default_value = "alice")]
    pub caller: String,
    /// One of the user's roles (repeatable).
    #[arg(long = "role", value_name = "ROLE")]
    pub roles: Vec<String>,
    /// Fuel per call (0: the server's default).
    #[arg(long, default_value_t = 0)]
    pub fuel: u64,
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// The plugin's name.
    pub name: String,
    /// A .wasm file: a component, or a core module built with wit-bindgen.
    pub file: PathBuf,
    /// Bytes per Install request (e.g. 1048576, 512KiB, 1MiB).
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes, default_value_t = DEFAULT_CHUNK_BYTES)]
    pub chunk_size: u64,
}

#[derive(Debug, Args)]
pub struct BindArgs {
    /// The binding's name.
    pub binding: String,
    /// The plugin it runs.
    #[arg(long)]
    pub plugin: String,
    /// What the plugin does.
    #[arg(long, value_enum)]
    pub kind: KindArg,
    /// A reactor's own writes trigger it again (up to --max-depth).
    #[arg(long)]
    pub retrigger: bool,
    /// How deep a chain of reactor writes may go (0: the server's default, 8).
    #[arg(long, value_name = "N")]
    pub max_depth: Option<u32>,
    /// The key, or the start of the range, the binding applies to.
    #[arg(long, default_value = "")]
    pub key: String,
    /// The end of the range [key, range-end).
    #[arg(long, conflicts_with = "prefix")]
    pub range_end: Option<String>,
    /// Apply to every key that starts with --key (every key if --key is empty).
    #[arg(long)]
    pub prefix: bool,
    /// Configuration handed to the plugin.
    #[arg(long, conflicts_with = "config_file")]
    pub config: Option<String>,
    /// Configuration handed to the plugin, read from a file.
    #[arg(long, value_name = "PATH")]
    pub config_file: Option<PathBuf>,
    /// Fuel per call (0: the server's default).
    #[arg(long, default_value_t = 0)]
    pub fuel: u64,
    /// Memory limit in bytes, e.g. 16MiB (0: the server's default).
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes, default_value_t = 0)]
    pub memory: u64,
    /// What happens when the plugin traps or runs out of fuel.
    #[arg(long, value_enum, default_value_t = FailurePolicyArg::FailClosed)]
    pub failure_policy: FailurePolicyArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    /// A transaction guard: allows or denies writes in the range.
    Guard,
    /// A computed compare, named by Txn compares.
    Compare,
    /// An RBAC policy hook: refines what users' roles decide in the range.
    Policy,
    /// A watch filter: passes, drops or rewrites events of the range's watchers (or, bound
    /// without a range, of the watchers that name it).
    WatchFilter,
    /// A reactor: turns the committed events of the range into writes, on the leader.
    Reactor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailurePolicyArg {
    /// Reject the write (guards), the txn (compares) or the request (policies).
    FailClosed,
    /// Allow the write (guards), make the compare false (compares), or leave the request
    /// to the user's roles (policies).
    Ignore,
}

/// `--interactive[=true]`, as etcdctl spells it: read the password from the terminal
/// (without echo) rather than from stdin.
#[derive(Debug, Args)]
pub struct Interactive {
    /// Read the password from the terminal instead of stdin.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub interactive: bool,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Adds a new user.
    Add {
        /// `name`, or `name:password`.
        user: String,
        /// The password, from the command line.
        #[arg(long)]
        new_user_password: Option<String>,
        /// Create a user without password (it can only authenticate by a client certificate).
        #[arg(long)]
        no_password: bool,
        #[command(flatten)]
        interactive: Interactive,
    },
    /// Deletes a user.
    Delete { name: String },
    /// Gets detailed information of a user.
    Get {
        name: String,
        /// Show the permissions of the user's roles too.
        #[arg(long)]
        detail: bool,
    },
    /// Lists all users.
    List,
    /// Changes the password of a user.
    Passwd {
        name: String,
        #[command(flatten)]
        interactive: Interactive,
    },
    /// Grants a role to a user.
    GrantRole { user: String, role: String },
    /// Revokes a role from a user.
    RevokeRole { user: String, role: String },
}

/// A permission's key range, as etcdctl's role commands take it.
#[derive(Debug, Args)]
pub struct PermissionRange {
    pub key: String,
    /// The end of the range [key, range_end).
    pub range_end: Option<String>,
    /// Every key with the prefix `key`.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub prefix: bool,
    /// Every key from `key` on.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub from_key: bool,
}

#[derive(Debug, Subcommand)]
pub enum RoleCommand {
    /// Adds a new role.
    Add { name: String },
    /// Deletes a role.
    Delete { name: String },
    /// Gets detailed information of a role.
    Get { name: String },
    /// Lists all roles.
    List,
    /// Grants a key to a role: `read`, `write` or `readwrite`.
    GrantPermission {
        role: String,
        permission: String,
        #[command(flatten)]
        range: PermissionRange,
    },
    /// Revokes a key from a role.
    RevokePermission {
        role: String,
        #[command(flatten)]
        range: PermissionRange,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Enables authentication.
    Enable,
    /// Disables authentication.
    Disable,
    /// Whether authentication is on, and the auth revision (etcdctl 3.5's `auth status`).
    Status,
}

/// `bench`: etcd's `benchmark` tool's flags.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// gRPC connections to open.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub conns: u32,
    /// Concurrent clients, spread over the connections.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub clients: u32,
    /// Print durations with full floating-point precision.
    #[arg(long)]
    pub precise: bool,
    #[command(subcommand)]
    pub workload: BenchWorkload,
}

#[derive(Debug, Subcommand)]
pub enum BenchWorkload {
    /// Benchmark put.
    Put(BenchPutArgs),
    /// Benchmark range.
    Range(BenchRangeArgs),
    /// Benchmark txn with puts.
    TxnPut(BenchTxnPutArgs),
}

/// The keys and values the write workloads put.
#[derive(Debug, Args)]
pub struct BenchWrites {
    /// Key size of each put.
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size of each put.
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Maximum possible keys.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub key_space_size: u64,
}

#[derive(Debug, Args)]
pub struct BenchPutArgs {
    #[command(flatten)]
    pub writes: BenchWrites,
    /// Maximum puts per second (0 is no limit).
    #[arg(long, default_value_t = 0)]
    pub rate: u32,
    /// Total number of put requests.
    #[arg(long, default_value_t = 10000)]
    pub total: usize,
    /// Use sequential keys.
    #[arg(long)]
    pub sequential_keys: bool,
}

#[derive(Debug, Args)]
pub struct BenchRangeArgs {
    /// The key, or the start of the range.
    pub key: String,
    /// The end of the range.
    pub end: Option<String>,
    /// Maximum range requests per second (0 is no limit).
    #[arg(long, default_value_t = 0)]
    pub rate: u32,
    /// Total number of range requests.
    #[arg(long, default_value_t = 10000)]
    pub total: usize,
    /// Linearizable (l) or serializable (s).
    #[arg(long, default_value = "l", value_parser = ["l", "s"])]
    pub consistency: String,
}

#[derive(Debug, Args)]
pub struct BenchTxnPutArgs {
    #[command(flatten)]
    pub writes: BenchWrites,
    /// Number of puts per txn.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub txn_ops: u64,
    /// Maximum txns per second (0 is no limit).
    #[arg(long, default_value_t = 0)]
    pub rate: u32,
    /// Total number of txn requests.
    #[arg(long, default_value_t = 10000)]
    pub total: usize,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn the_command_line_is_consistent() {
        // clap's own checks (unique flag names across global and command flags, …), which
        // otherwise run only when a command is parsed.
        Cli::command().debug_assert();
    }
}
