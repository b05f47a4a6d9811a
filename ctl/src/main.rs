//! `cairnctl`: parses flags, runs one command on a single-threaded runtime, and reports an
//! error as etcdctl does (`Error: <message>` on stderr, exit status 1). Nothing else.

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

use clap::Parser;

use cairnctl::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    let flushed = out.flush();
    match result
        .map_err(|error| error.to_string())
        .and(flushed.map_err(|e| e.to_string()))
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => fail(&message),
    }
}

fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("Error: {error}");
    ExitCode::from(1)
}
