//! `cairnctl`: reads `ETCDCTL_*`/`CAIRNCTL_*` variables, parses flags, runs one command on a single-threaded runtime, and reports an
//! error as etcdctl does (`Error: <message>` on stderr, exit status 1). Nothing else.

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

use clap::Parser;

use cairnctl::cli::Cli;

fn main() -> ExitCode {
    // ETCDCTL_* and CAIRNCTL_* variables become flags first, as etcdctl reads its own.
    let args =
        match cairnctl::env::args_with_env(std::env::args_os().collect(), std::env::vars_os()) {
            Ok((args, warnings)) => {
                for warning in warnings {
                    eprintln!("{warning}");
                }
                args
            }
            Err(error) => return fail(&error),
        };
    let cli = Cli::parse_from(args);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&error),
    };
    let mut input = io::stdin().lock();
    let mut out = BufWriter::new(io::stdout().lock());
    let result = runtime.block_on(cairnctl::run(cli, &mut input, &mut out));
    // What was printed before an error still reaches stdout, ahead of the error.
    let flushed = out.flush().map_err(cairnctl::Error::Output);
    match result.and(flushed) {
        Ok(()) => ExitCode::SUCCESS,
        Err(cairnctl::Error::Silent) => ExitCode::from(1),
        Err(error) => {
            eprintln!("Error: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("Error: {error}");
    ExitCode::from(1)
}
