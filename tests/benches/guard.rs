//! `cargo bench -p cairn-tests --bench guard`: what a guard costs where it runs, in the state
//! machine's apply, without Raft, network or other members in the way.
//!
//! - **per call**: `Engine::guard` alone (instantiate from the pre-instantiated component with
//!   the pooling allocator, copy the request in, run, copy the decision out), p50 and p99;
//! - **per put applied**: `StateMachine::apply` of puts with no guard, then with the guard
//!   bound to every key, one put per apply (as under light load) and 64 per apply (as under
//!   heavy load), and the ratio; and with the guard's verdict carried in each entry, as a
//!   leader's `Vetter` makes them (what every member's apply costs with evaluate-once), with
//!   the time vetting a put costs the leader.
//!
//! The guard is the JSON-schema example (`plugins/json-schema-guard`), so the plugins must be
//! built first: `./scripts/build-plugins.sh` (the README's test command does it). To measure
//! another guard, point `CAIRN_BENCH_GUARD` at its core `.wasm`; it is bound with the config
//! `{"type":"string"}` and must allow a put of a JSON string. The cluster
//! numbers (`cairn-bench --plugin`) and how they relate to these are in `docs/benchmarks.md`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cairn::mvcc::{Mvcc, PutRequest, WriteRequest};
use cairn::plugin::engine::{GuardOp, Target, View};
use cairn::plugin::{Binding, Engine, FailurePolicy, Kind, PluginCommand};
use cairn::state_machine::{AppliedMarker, Command, CommandResponse, StateMachine};
use cairn::storage::Storage;

const SCHEMA: &[u8] = br#"{"type":"string"}"#;
const CALLS: usize = 20_000;
const PUTS: usize = 20_000;

fn guard_module() -> (Vec<u8>, String) {
    let path = std::env::var_os("CAIRN_BENCH_GUARD")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/wasm32-unknown-unknown/release/json_schema_guard.wasm")
        });
    let core = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the example plugins first: ./scripts/build-plugins.sh",
            path.display()
        )
    });
    let module = cairnctl::module::prepare(&path.display().to_string(), core)
        .unwrap_or_else(|e| panic!("componentizing the guard: {e}"));
    (module.bytes, module.sha256)
}

/// Applies `commands` as one apply call (one chunk of log entries).
fn apply(sm: &StateMachine, index: &mut u64, commands: &[Command]) -> Vec<CommandResponse> {
    let markers: Vec<AppliedMarker> = commands
        .iter()
        .map(|_| {
            *index += 1;
            AppliedMarker {
                applied: index.to_be_bytes().to_vec(),
                membership: None,
            }
        })
        .collect();
    sm.apply(commands.iter().map(Some).zip(&markers))
        .expect("apply on a healthy store")
}

/// A put of a 256-byte JSON string, as `cairn-bench --plugin` sends.
fn put(n: usize) -> Command {
    let mut value = format!("\"{n:0>254}");
    value.truncate(255);
    value.push('"');
    Command::Kv(WriteRequest::Put(PutRequest {
        key: format!("bench/{:08}", n % 10_000).into_bytes(),
        value: value.into_bytes(),
        lease: 0,
        prev_kv: false,
        ignore_value: false,
        ignore_lease: false,
    }))
}

/// Mean time per put of applying `PUTS` puts, `chunk` per apply call.
fn per_put(sm: &StateMachine, index: &mut u64, chunk: usize) -> Duration {
    let commands: Vec<Command> = (0..PUTS).map(put).collect();
    per_command(sm, index, chunk, &commands)
}

/// Mean time per command of applying `commands`, `chunk` per apply call.
fn per_command(sm: &StateMachine, index: &mut u64, chunk: usize, commands: &[Command]) -> Duration {
    // Warm up (compiles nothing: the module was compiled at bind), then measure.
    for c in commands[..chunk * 8].chunks(chunk) {
        apply(sm, index, c);
    }
    let started = Instant::now();
    for c in commands.chunks(chunk) {
        for response in apply(sm, index, c) {
            assert!(
                matches!(response, CommandResponse::Kv(Ok(_))),
                "a put failed: {response:?}"
            );
        }
    }
    started.elapsed() / commands.len() as u32
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = Storage::open(dir.path()).expect("open storage");
    let sm = StateMachine::new(storage.clone()).expect("state machine");
    let (module, sha256) = guard_module();
    let mut index = 0;

    // Per put applied: plain first, then guarded, on the same store (the guard installed in
    // between, through apply as a client's install would be).
    let plain: Vec<(usize, Duration)> = [1, 64]
        .into_iter()
        .map(|chunk| (chunk, per_put(&sm, &mut index, chunk)))
        .collect();
    let install = Command::Plugin(PluginCommand::Install {
        name: "json-schema".into(),
        sha256: sha256.clone(),
        size: module.len() as u64,
        offset: 0,
        data: module,
    });
    let bind = Command::Plugin(PluginCommand::Bind(Binding {
        name: "every-key".into(),
        plugin: "json-schema".into(),
        kind: Kind::Guard,
        key: vec![0],
        range_end: vec![0],
        config: SCHEMA.to_vec(),
        fuel: cairn::plugin::DEFAULT_FUEL,
        memory_bytes: cairn::plugin::DEFAULT_MEMORY_BYTES,
        failure_policy: FailurePolicy::FailClosed,
        sha256: String::new(),
        stats: Default::default(),
    }));
    for response in apply(&sm, &mut index, &[install, bind]) {
        assert!(
            matches!(response, CommandResponse::Plugin(Ok(_), _)),
            "installing and binding the guard: {response:?}"
        );
    }
    // Per call, on an engine of its own.
    let engine = Engine::new(Default::default()).expect("engine");
    let ops = [GuardOp::Put {
        key: b"bench/1".to_vec(),
        value: format!("\"{}\"", "x".repeat(254)).into_bytes(),
        lease: 0,
        ignore_value: false,
        ignore_lease: false,
    }];
    // The first call compiles the module, from the store: it is in the warm-up.
    let view = View::of(&Mvcc::read_view(&storage).expect("read view"));
    let mut calls = Vec::with_capacity(CALLS);
    for i in 0..CALLS + 500 {
        let started = Instant::now();
        let target = Target {
            binding: "bench",
            sha256: &sha256,
            config: SCHEMA,
            fuel: 10_000_000,
            memory_bytes: 16 << 20,
            now_ms: 0,
            record: false,
        };
        let call = engine
            .guard(&target, view.clone(), &ops)
            .expect("no host fault");
        let took = started.elapsed();
        assert!(
            matches!(call.outcome, cairn::plugin::engine::Outcome::Answered(_)),
            "the guard did not answer: {:?}",
            call.outcome
        );
        if i >= 500 {
            calls.push(took);
        }
    }
    calls.sort();
    let mean = calls.iter().sum::<Duration>() / CALLS as u32;
    println!(
        "guard call (instantiate + call), {CALLS} calls: mean {:.1} µs, p50 {:.1} µs, p99 {:.1} µs",
        mean.as_secs_f64() * 1e6,
        percentile(&calls, 0.50).as_secs_f64() * 1e6,
        percentile(&calls, 0.99).as_secs_f64() * 1e6
    );

    // The leader's side of evaluate-once: vetting each put (the guard runs once, its
    // verdict is carried), and then what apply costs with the verdict carried.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let vetter = sm.vetter();
    // The install compiles the module in the background; vetting waits for it.
    let compiling = Instant::now();
    while rt.block_on(vetter.vet(&put(0), 1)).is_empty() {
        assert!(
            compiling.elapsed() < Duration::from_secs(60),
            "never compiled"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let started = Instant::now();
    let vetted: Vec<Command> = (0..PUTS)
        .map(|n| {
            let command = put(n);
            let calls = rt.block_on(vetter.vet(&command, 1));
            assert_eq!(calls.len(), 1, "the guard's verdict is carried");
            Command::Stamped {
                unix_ms: 1,
                command: Box::new(Command::Vetted {
                    calls,
                    command: Box::new(command),
                }),
            }
        })
        .collect();
    let vet = started.elapsed() / PUTS as u32;
    println!(
        "vetting a put on the leader: {:.1} µs",
        vet.as_secs_f64() * 1e6
    );

    println!(
        "| puts per apply | plain µs/put | guarded µs/put | carried verdict µs/put | plain/guarded | plain/carried |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for (chunk, plain) in plain {
        let guarded = per_put(&sm, &mut index, chunk);
        let carried = per_command(&sm, &mut index, chunk, &vetted);
        println!(
            "| {chunk} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} |",
            plain.as_secs_f64() * 1e6,
            guarded.as_secs_f64() * 1e6,
            carried.as_secs_f64() * 1e6,
            plain.as_secs_f64() / guarded.as_secs_f64(),
            plain.as_secs_f64() / carried.as_secs_f64()
        );
    }
}
