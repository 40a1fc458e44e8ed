//! `kchaos bisect`: the first bad point between a good and a bad one, over an ordered
//! kernel list (`--kernel`) or the commits of a git tree (`--source`), each commit
//! built incrementally. The loop is `run::bisect`; this module turns arguments into
//! the points, the plan and the builder, prints the steps, and writes `bisect.json`
//! and `report.html` after every step.

mod print;
mod setup;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kchaos_harness::analysis::bisect::{self as record, BisectRecord};
use kchaos_harness::results::sources::{self, LoadedRun};
use kchaos_harness::results::write_json;
use kchaos_harness::run::bisect::{drive, BisectRunError, Ended, SessionRunner};
use kchaos_harness::run::lock::ResultsLock;
use kchaos_harness::run::session::Session;
use kchaos_harness::run::RunError;
use kchaos_images::Cache;
use kchaos_model::bisect::plan::Outcome;
use kchaos_model::error_chain;

use self::print::{print_header, secs, Printer};
use self::setup::{fresh, resumed, Setup};
use super::args::{default_out, KernelListArgs};
use super::exit::{CliError, Exit};
use super::repro::TrialArgs;
use super::with_session;

#[derive(Debug, clap::Args)]
pub struct BisectArgs {
    #[arg(value_name = "SCENARIO", required_unless_present = "resume")]
    pub scenario: Option<PathBuf>,
    /// The ordered kernels (specs, names, @set), oldest first.
    #[arg(
        short,
        long = "kernel",
        value_name = "SPEC|NAME|@SET",
        conflicts_with = "source"
    )]
    pub kernels: Vec<String>,
    /// A git tree: bisect its commits between --good and --bad, each built with the
    /// kernel recipe (vm-images/recipes/kernel/build.sh) in a worktree of kchaos's own,
    /// incrementally (one build directory, ccache).
    #[arg(long, value_name = "DIR")]
    pub source: Option<PathBuf>,
    /// A config fragment after kchaos.config for --source builds (repeatable):
    /// defects.config, debuginfo.config, debug.config, or a file.
    #[arg(long = "fragment", value_name = "NAME|FILE", requires = "source")]
    pub fragments: Vec<String>,
    /// Build without ccache (each step still reuses the build directory).
    #[arg(long, requires = "source")]
    pub no_ccache: bool,
    #[command(flatten)]
    pub list: KernelListArgs,
    /// The good end: a kernel of the list; with --source a revision, or a recorded run
    /// (results directory, cell directory or database) whose passing cell's kernel
    /// records its commit.
    #[arg(
        long,
        value_name = "KERNEL|REV|RUN",
        required_unless_present = "resume"
    )]
    pub good: Option<String>,
    /// The bad end (it reproduces): as --good, a failing cell for a recorded run.
    #[arg(
        long,
        value_name = "KERNEL|REV|RUN",
        required_unless_present = "resume"
    )]
    pub bad: Option<String>,
    /// Outcome that makes a point bad: fail, crash, hang, any, or text of a reason,
    /// signature or fingerprint [default: any].
    #[arg(long, conflicts_with = "resume")]
    pub until: Option<String>,
    /// Runs per step [default: from the reproduction probability measured on the bad
    /// end and --confidence].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10000), conflicts_with = "resume")]
    pub runs: Option<u32>,
    /// Runs on the bad end to measure its reproduction probability [default: 10].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10000), conflicts_with = "resume")]
    pub calibrate: Option<u32>,
    /// Wanted confidence in each good verdict [default: 0.95].
    #[arg(long, conflicts_with = "resume")]
    pub confidence: Option<f64>,
    /// A scenario value for every run: PATH=VALUE (repeatable; one value each).
    #[arg(long = "set", value_name = "PATH=VALUE", conflicts_with = "resume")]
    pub sets: Vec<String>,
    /// Continue the bisection recorded in --out DIR (its bisect.json): steps already
    /// recorded are not run again.
    #[arg(long, requires = "out", conflicts_with_all = ["scenario", "kernels", "source", "good", "bad", "fragments"])]
    pub resume: bool,
    #[command(flatten)]
    pub trial: TrialArgs,
}

pub fn bisect(args: BisectArgs, cache: Cache) -> Result<Exit, CliError> {
    let out = match &args.trial.out {
        Some(o) => o.clone(),
        None => default_out(Some("bisect")),
    };
    let created = !out.exists();
    let lock = ResultsLock::acquire(&out).map_err(|e| super::run_error(RunError::Lock(e)))?;
    // The inner error: the bisection never started (its setup failed).
    let ran = with_session(args.trial.vm.session(&cache), |rt, session| {
        Ok(match setup(&args, &out, &cache, session) {
            Ok(setup) => Ok(run(setup, &out, rt, session)?),
            Err(e) => Err(e),
        })
    })?;
    match ran {
        Ok(exit) => {
            drop(lock);
            Ok(exit)
        }
        Err(e) => {
            // A bisection that never started leaves nothing behind.
            drop(lock);
            if created {
                let _ = std::fs::remove_dir_all(&out);
            }
            Err(e)
        }
    }
}

/// The bisection to run: the one recorded in `out` (`--resume`), or a new one; never
/// a new one over a recorded one.
fn setup(
    args: &BisectArgs,
    out: &Path,
    cache: &Cache,
    session: &Arc<Session>,
) -> Result<Setup, CliError> {
    if args.resume {
        resumed(out, cache, session)
    } else if out.join(record::FILE).exists() {
        Err(CliError::usage(format!(
            "{} already holds a bisection; continue it with --resume --out {0}, or choose another --out",
            out.display()
        )))
    } else {
        fresh(args, out, cache, session)
    }
}

/// Runs the bisection `setup` describes to its end, printing each step; the exit says
/// how it ended.
fn run(
    setup: Setup,
    out: &Path,
    rt: &tokio::runtime::Runtime,
    session: &Arc<Session>,
) -> Result<Exit, CliError> {
    let Setup {
        mut record,
        mut planner,
        mut builder,
        scenario,
        target,
    } = setup;
    print_header(&record, &target);
    let mut runner = SessionRunner {
        rt,
        session,
        scenario,
        target,
        seed: record.options.seed,
        out: out.to_path_buf(),
        write_failures: Vec::new(),
    };
    let mut failures: Vec<String> = Vec::new();
    let mut journal = |r: &BisectRecord| {
        failures.extend(save(r, out));
        Ok(())
    };
    let mut printer = Printer {
        step: record.steps.len(),
    };
    let ended = drive(
        &mut planner,
        &mut record,
        builder.as_mut(),
        &mut runner,
        &mut journal,
        &mut |e| printer.event(&e),
    );
    failures.extend(runner.write_failures.iter().cloned());
    for f in &failures {
        eprintln!("kchaos: error: results not written: {f}");
    }
    let ended = match ended {
        Ok(e) => e,
        Err(BisectRunError::Plan(e)) => return Err(CliError::usage(e.to_string())),
        Err(e) => return Err(CliError::Infrastructure(anyhow::anyhow!(error_chain(&e)))),
    };
    println!(
        "bisect.json: {}; report: {}",
        out.join(record::FILE).display(),
        out.join("report.html").display()
    );
    Ok(match ended {
        Ended::Interrupted => {
            println!(
                "interrupted after {} steps; continue with: kchaos bisect --resume --out {}",
                record.steps.len(),
                out.display()
            );
            Exit::Interrupted
        }
        _ if !failures.is_empty() => Exit::Infrastructure,
        Ended::Finished(outcome) => {
            if let Some(o) = &record.outcome {
                println!("{}", o.message);
            }
            println!(
                "{} steps, {} builds ({} building, {} running, {} in all)",
                record.totals.steps,
                record.totals.builds,
                secs(record.totals.build_seconds),
                secs(record.totals.run_seconds),
                secs(record.totals.wall_seconds)
            );
            match outcome {
                Outcome::Found { .. } | Outcome::Ambiguous { .. } => Exit::Ok,
                _ => Exit::CannotTest,
            }
        }
    })
}

/// Writes `bisect.json`, then the report of every step so far; returns what failed.
fn save(r: &BisectRecord, out: &Path) -> Vec<String> {
    let mut failed = Vec::new();
    if let Err(e) = write_json(&out.join(record::FILE), r) {
        failed.push(error_chain(&e));
    }
    let runs: Vec<LoadedRun> = r
        .steps
        .iter()
        .filter_map(|s| s.results.as_ref())
        .filter_map(|d| sources::load_dir(&out.join(d)).ok())
        .collect();
    let names = kchaos_harness::report::KernelNames::from_default_list();
    let written = kchaos_harness::report::write_bisection(&runs, r, out, &names);
    failed.extend(written.errors().map(|e| error_chain(e)));
    failed
}
