//! The command line: one `Cli` with a subcommand per job, shared argument groups
//! ([`args`]), one module per command family, and the exit contract ([`exit`]). Handlers
//! stay thin: they turn arguments into the library's options, call it, print.

pub mod args;
pub mod bisect;
pub mod cache;
pub mod detect;
pub mod exit;
pub mod gate;
pub mod repro;
pub mod results;
pub mod run;
pub mod setup;
pub mod sweep;

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use kchaos_harness::run::scope;
use kchaos_harness::run::session::{Session, SessionOptions};
use kchaos_harness::run::RunError;
use kchaos_images::Cache;
use kchaos_model::error_chain;

use self::args::{CompareArgs, KernelListArgs};
use self::exit::{CliError, Exit};

#[derive(Debug, Parser)]
#[command(
    name = "kchaos",
    version,
    about = "Reproduce kernel and systemd churn defects in disposable VMs, on any kernel."
)]
pub struct Cli {
    /// More log output (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Cache directory for kernels and images [default: $KCHAOS_CACHE or ~/.cache/kchaos].
    #[arg(long, global = true, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run scenarios on kernels; one disposable VM per cell.
    Run(Box<run::RunArgs>),
    /// Check scenario files; prints FILE:LINE:COL: key: message for every problem.
    Validate {
        #[arg(required = true, value_name = "SCENARIO|DIR")]
        files: Vec<PathBuf>,
    },
    /// Download and unpack kernels into the cache, or build guest images
    /// (`image:systemd`, `image:systemd-defects`), for offline runs and CI warm-up.
    Fetch {
        #[arg(required = true, value_name = "SPEC|NAME|@SET|image:KIND")]
        kernels: Vec<String>,
        #[command(flatten)]
        list: KernelListArgs,
    },
    /// Run the `crash` utility on a cell's memory dump (bt -a, runq -g, log) and keep
    /// the output in the cell's directory as analysis.txt.
    Analyze {
        #[arg(value_name = "CELL_DIR")]
        dir: PathBuf,
        /// Debug vmlinux to use (default: Debian's -dbg package for the cell's kernel, or
        /// the vmlinux next to a local build's bzImage).
        #[arg(long, value_name = "PATH")]
        vmlinux: Option<PathBuf>,
    },
    /// Build the static guest runner and print its path.
    BuildRunner,
    /// Install what kchaos needs on a Debian/Ubuntu host (QEMU, dpkg tools, debootstrap);
    /// prints apt's plan (what it would install, upgrade or remove) first.
    Setup {
        /// Print the plan and the commands instead of running them.
        #[arg(long)]
        dry_run: bool,
        /// Proceed without asking (CI). Without it, a terminal is asked; anything else
        /// is refused.
        #[arg(short, long)]
        yes: bool,
    },
    /// Report what this host offers: QEMU, KVM, apt, the runner.
    Doctor,
    /// Show what the cache holds and how much space it takes; prune it.
    Cache {
        #[command(subcommand)]
        action: Option<cache::CacheAction>,
    },
    /// Write report.html (self-contained) and junit.xml for results directories or
    /// databases; `kchaos run` writes both at the end of every run. With --kcidb, also
    /// the results as KCIDB I/O JSON for KernelCI.
    Report(Box<results::ReportArgs>),
    /// Compare a candidate kernel (or run) against a baseline; exit 1 on a regression.
    Compare {
        /// Results directories or databases holding both kernels (not needed when
        /// --baseline and --candidate are themselves results).
        #[arg(value_name = "DIR|DB")]
        sources: Vec<PathBuf>,
        #[command(flatten)]
        compare: CompareArgs,
        #[command(flatten)]
        list: KernelListArgs,
        /// Show unchanged metrics too.
        #[arg(long)]
        all: bool,
        /// Also write report.html and junit.xml with the comparison into DIR.
        #[arg(long, value_name = "DIR")]
        report: Option<PathBuf>,
        /// Also write the comparison as JSON.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// The gate for CI: classify every scenario of a candidate against a baseline
    /// (regression, fixed, unstable, persistent failure, new, missing, known); exit 0
    /// nothing new, 1 a regression or untriaged failure, 3 cells missing or in error.
    Gate(Box<gate::GateArgs>),
    /// Run one scenario on one kernel in fresh VMs until the outcome appears or the
    /// budget is spent; exit 1 when reproduced, 0 when not, 125 when no run could be
    /// judged (usable as `git bisect run`).
    Repro(Box<repro::ReproArgs>),
    /// Rerun the cell a replay bundle (replay.tar.gz) describes, exactly.
    Replay(Box<repro::ReplayArgs>),
    /// Find the first bad kernel of an ordered list (--kernel), or the first bad commit
    /// of a git tree (--source, each commit built incrementally), given a good and a bad
    /// one; writes bisect.json and report.html after every step (--resume continues).
    Bisect(Box<bisect::BisectArgs>),
    /// The kill matrix: every scenario on each defect it is declared to catch
    /// (vm-images/defects.toml) until it names the mechanism, and on the defect
    /// kernel without the defect (and --stock-kernel), where it must pass; writes
    /// detection.json and detection.html; exit 1 on an escape or a false alarm.
    Detect(Box<detect::DetectArgs>),
    /// Merge results directories (e.g. the shards of a matrix) into a new one, with
    /// one database, report and JUnit file.
    Merge {
        #[arg(required = true, value_name = "DIR")]
        dirs: Vec<PathBuf>,
        #[arg(short, long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// Runs the command; the edge maps the result to an exit code.
pub fn dispatch(command: Command, cache: Cache) -> Result<Exit, CliError> {
    match command {
        Command::Validate { files } => Ok(run::validate(&files)),
        Command::Run(args) => run::run(*args, cache),
        Command::Fetch { kernels, list } => cache::fetch(&kernels, &list, &cache),
        Command::Analyze { dir, vmlinux } => results::analyze(&dir, vmlinux.as_deref(), &cache),
        Command::BuildRunner => cache::build_runner(),
        Command::Setup { dry_run, yes } => setup::setup(dry_run, yes),
        Command::Doctor => setup::doctor(&cache),
        Command::Cache { action } => cache::cache(action, &cache),
        Command::Report(args) => results::report(*args),
        Command::Compare {
            sources,
            compare,
            list,
            all,
            report,
            json,
        } => results::compare(&sources, &compare, &list, all, report, json),
        Command::Merge { dirs, out } => results::merge(&dirs, &out),
        Command::Gate(args) => gate::gate(&args),
        Command::Repro(args) => repro::repro(*args, cache),
        Command::Replay(args) => repro::replay(*args, cache),
        Command::Bisect(args) => bisect::bisect(*args, cache),
        Command::Detect(args) => detect::detect(&args, &cache),
    }
}

/// The one async runtime a command needs (several threads: cells run in parallel).
pub fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    scope::runtime().map_err(runtime_error)
}

/// Runs `body` in a session opened with `opts` (described first), then waits for the
/// VMs kept for debugging, whatever `body` returned: every command that boots runs
/// through here ([`scope::with_session`]).
pub fn with_session<T>(
    opts: SessionOptions,
    body: impl FnOnce(&tokio::runtime::Runtime, &Arc<Session>) -> Result<T, CliError>,
) -> Result<T, CliError> {
    scope::with_session(opts, body).map_err(runtime_error)?
}

fn runtime_error(e: scope::RuntimeError) -> CliError {
    CliError::Infrastructure(anyhow::Error::new(e))
}

/// A run that could not start: usage errors are the user's, the rest the host's.
pub fn run_error(e: RunError) -> CliError {
    match e {
        RunError::Scenarios(errors) => CliError::Scenarios(errors),
        e if e.is_usage() => CliError::Usage(error_chain(&e)),
        e => CliError::Infrastructure(anyhow::anyhow!(error_chain(&e))),
    }
}
