//! The `cairn` binary: parse flags, set up logging, run a member until SIGINT or SIGTERM.

use std::process::ExitCode;

use cairn::config::Config;
use cairn::server::Server;
use clap::Parser;
use clap::error::{ContextKind, ContextValue, ErrorKind};

/// mimalloc instead of glibc's allocator: the request path allocates many small, short-lived
/// buffers (gRPC frames, keys, values), where glibc malloc cost ~10% of CPU under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process. mimalloc asks for huge pages on its
/// arenas and gives memory back in 64 KiB pieces a second after it is freed; with huge pages
/// each fault after that zeroes a whole 2 MiB page. Under watch fan-out (large response
/// buffers allocated and freed all the time) that zeroing took 80% of the member's CPU and
/// its puts waited seconds (docs/benchmarks.md, "Watch fan-out"). Small pages cost nothing
/// measurable elsewhere. A kernel that refuses (no THP support) leaves nothing to turn off.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        eprintln!("cairn: could not turn transparent huge pages off ({e}); continuing");
    }
}

fn main() -> ExitCode {
    disable_transparent_huge_pages();
    // `--config-file` settings join the command line, below its flags and variables.
    let applied = match cairn::config_file::apply(std::env::args_os().collect(), &|name| {
        std::env::var(name).ok()
    }) {
        Ok(applied) => applied,
        Err(e) => {
            eprintln!("cairn: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = match Config::try_parse_from(&applied.args) {
        Ok(config) => config,
        Err(error) => {
            let hint = match (error.kind(), error.get(ContextKind::InvalidArg)) {
                (ErrorKind::UnknownArgument, Some(ContextValue::String(flag))) => {
                    cairn::config_file::etcd_flag_hint(flag)
                }
                _ => None,
            };
            let _ = error.print();
            if let Some(hint) = hint {
                eprintln!("\n{hint}");
            }
            return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
        }
    };
    // etcd's panic and fatal levels log errors only.
    let level = match config.log_level.as_str() {
        "panic" | "fatal" => "error",
        level => level,
    };
    if let Err(e) = cairn::logging::init(level, config.log_format, &config.log_outputs) {
        eprintln!("cairn: {e}");
        return ExitCode::FAILURE;
    }
    if !applied.ignored.is_empty() {
        tracing::warn!(
            keys = applied.ignored.join(", "),
            "the config file's settings for these etcd flags are ignored: Cairn does not take \
             them (see docs/compatibility.md)"
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cairn: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), cairn::server::ServerError> {
    let mut server = Server::start(config).await?;
    let result = tokio::select! {
        r = server.wait() => r,
        _ = shutdown_signal() => {
            tracing::info!("received shutdown signal; stopping");
            Ok(())
        }
    };
    server.shutdown().await;
    tracing::info!("stopped");
    result
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
