//! `kchaos`: the command-line edge. Parses arguments, sets up logging, runs the command
//! and maps its outcome to the documented exit codes once (`cli::exit`): 0 pass/skip,
//! 1 fail/crash/hang, 2 usage or scenario errors, 3 infrastructure errors, 125 nothing
//! could be judged, 130 interrupted.

use std::process::ExitCode;

use clap::Parser;
use kchaos_images::Cache;

mod cli;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let level = match args.verbose {
        0 => "warn,kchaos_harness=warn,kchaos_images=info",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("KCHAOS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .without_time()
        .try_init();
    let cache = Cache::new(args.cache.clone().unwrap_or_else(Cache::default_root));
    let exit = match cli::dispatch(args.command, cache) {
        Ok(exit) => exit,
        Err(e) => e.report(),
    };
    exit.into()
}
