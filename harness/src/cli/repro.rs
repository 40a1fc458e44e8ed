//! `kchaos repro` and `replay`: trials of one scenario on one kernel at a time, all
//! through one session (each kernel resolved once, the runner located once, slots
//! refilled as cells finish), with terminal output around `analysis::reproduction`. `bisect`
//! (`cli/bisect.rs`) runs its steps the same way.

use std::path::PathBuf;

use kchaos_harness::analysis::reproduction::{Target, Trials};
use kchaos_harness::report::table::trials_summary;
use kchaos_harness::results::bundle;
use kchaos_harness::run::matrix::{self, MatrixOptions};
use kchaos_harness::run::trials::{run_trials, TrialOptions};
use kchaos_harness::run::{RunOutcome, DEFAULT_KERNEL};
use kchaos_images::Cache;
use kchaos_model::error_chain;
use kchaos_model::stats;
use kchaos_model::verdict::Verdict;

use super::args::{default_out, AccelArg, KernelListArgs, RecordArgs, VmArgs};
use super::exit::{CliError, Exit};
use super::{run_error, sweep, with_session};

#[derive(Debug, clap::Args)]
pub struct ReproArgs {
    #[arg(value_name = "SCENARIO")]
    pub scenario: PathBuf,
    #[arg(short, long, value_name = "SPEC|NAME", default_value = DEFAULT_KERNEL)]
    pub kernel: String,
    #[command(flatten)]
    pub list: KernelListArgs,
    /// fail, crash, hang, any (fail, crash or hang), or text found in a reason, a
    /// kernel-log signature or the fingerprint.
    #[arg(long, default_value = "any")]
    pub until: String,
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100000))]
    pub max_runs: u32,
    /// Spend the whole budget instead of stopping at the first hit (a better estimate
    /// of the probability).
    #[arg(long)]
    pub all: bool,
    /// Sweep a scenario parameter: PATH=V1,V2,... (e.g. workload.0.concurrency=8,16,32);
    /// repeatable, all combinations are tried.
    #[arg(long = "set", value_name = "PATH=VALUES")]
    pub sets: Vec<String>,
    #[command(flatten)]
    pub trial: TrialArgs,
}

/// Where trials are recorded and with which seed.
#[derive(Debug, clap::Args)]
pub struct TrialArgs {
    /// Results directory [default: results/<command>-<timestamp>].
    #[arg(short, long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// A fixed seed: every run uses exactly it (default: a new seed per run, recorded).
    #[arg(long)]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub vm: VmArgs,
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    #[arg(value_name = "BUNDLE")]
    pub bundle: PathBuf,
    /// How many times (all with the bundle's seed): how often does it recur?
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub runs: u32,
    #[command(flatten)]
    pub list: KernelListArgs,
    #[command(flatten)]
    pub record: RecordArgs,
}

/// Results that could not be written fail the command like they fail a run.
fn wrote_everything(t: &Trials) -> bool {
    for f in &t.write_failures {
        eprintln!("kchaos: error: results not written: {f}");
    }
    t.write_failures.is_empty()
}

pub fn repro(args: ReproArgs, cache: Cache) -> Result<Exit, CliError> {
    let kernel = args.list.expand_one(&args.kernel)?;
    kchaos_harness::scenario::load_all(std::slice::from_ref(&args.scenario))
        .map_err(CliError::Scenarios)?;
    let target = Target::parse(&args.until);
    let out = args
        .trial
        .out
        .clone()
        .unwrap_or_else(|| default_out(Some("repro")));
    let variants = sweep::variants(&args.scenario, &args.sets, &out).map_err(CliError::Usage)?;
    with_session(args.trial.vm.session(&cache), |rt, session| {
        let mut results: Vec<(String, Trials)> = Vec::new();
        let mut wrote = true;
        for (label, file) in &variants {
            // One results directory per variant, named like its scenario file.
            let dir = match file.file_stem() {
                Some(stem) if variants.len() > 1 => out.join(stem),
                _ => out.clone(),
            };
            let opts = TrialOptions {
                stop_at_first: !args.all,
                seed: args.trial.seed,
                ..TrialOptions::new(
                    file.clone(),
                    kernel.clone(),
                    target.clone(),
                    args.max_runs,
                    dir,
                )
            };
            let trials = rt.block_on(run_trials(session, &opts)).map_err(run_error)?;
            wrote &= wrote_everything(&trials);
            let name = if variants.len() == 1 {
                args.scenario.display().to_string()
            } else {
                format!("{} [{label}]", args.scenario.display())
            };
            print!("{}", trials_summary(&name, &kernel, &target, &trials));
            let stop = trials.interrupted;
            results.push((label.clone(), trials));
            if stop {
                return Ok(Exit::Interrupted);
            }
        }
        if results.len() > 1 {
            print_sweep(&results);
        }
        let judged = results.iter().any(|(_, t)| t.runs > 0);
        let hit = results.iter().any(|(_, t)| t.hits > 0);
        Ok(if !wrote {
            Exit::Infrastructure
        } else if hit {
            Exit::Failures
        } else if judged {
            Exit::Ok
        } else {
            Exit::CannotTest
        })
    })
}

fn print_sweep(results: &[(String, Trials)]) {
    println!("sweep: expected time to a hit per configuration (mean run time / probability)");
    let mut best: Option<(&str, f64)> = None;
    for (label, t) in results {
        let (p, lo, hi) = t.probability();
        let eta = t.expected_time_to_hit().map(|d| d.as_secs_f64());
        println!(
            "  {label}: {}/{} hits, p {p:.2} [{lo:.2}-{hi:.2}], {}",
            t.hits,
            t.runs,
            eta.map_or_else(|| "never hit".to_owned(), |s| format!("{s:.0}s to a hit"))
        );
        if let Some(s) = eta {
            if best.is_none_or(|(_, b)| s < b) {
                best = Some((label, s));
            }
        }
    }
    match best {
        Some((label, s)) => {
            println!("cheapest configuration that reproduces: {label} (~{s:.0}s to a hit)");
        }
        None => println!("no configuration reproduced"),
    }
}

pub fn replay(args: ReplayArgs, cache: Cache) -> Result<Exit, CliError> {
    let out = args
        .record
        .out
        .clone()
        .unwrap_or_else(|| default_out(Some("replay")));
    let (manifest, scenario) = bundle::open(&args.bundle, &out.join("bundle"))
        .map_err(|e| CliError::usage(error_chain(&e)))?;
    let kernel = args.list.expand_one(manifest.kernel_spec())?;
    let runs = args.runs;
    let mut vm = args.record.vm.clone();
    // The same accelerator, unless the user says otherwise: timing bugs depend on it.
    if matches!(vm.accel, AccelArg::Auto) {
        vm.accel = match manifest.accel.as_deref() {
            Some("tcg") => AccelArg::Tcg,
            Some("kvm") => AccelArg::Kvm,
            _ => AccelArg::Auto,
        };
    }
    // The bundle's scenario is the one as run: its `[vm] cpus` is the cell's topology
    // (no topology axis); a replay asks whether the failure recurs, known or not (no
    // known issues).
    let opts = MatrixOptions {
        repeat: runs,
        seed: Some(manifest.seed),
        same_seed: true,
        // The bundle's failure, seen again, ends a run at once (a signature that makes
        // it `fail` needs no more of the scenario's duration).
        until: manifest
            .verdict
            .is_failure()
            .then_some(Target::Verdict(manifest.verdict)),
        ..MatrixOptions::new(vec![scenario], vec![kernel.clone()], out.clone())
    };
    println!(
        "replaying {} ({}: {}) on {}, seed {}, {} run{}",
        manifest.cell,
        manifest.verdict,
        manifest.reasons.first().map_or("", String::as_str),
        kernel,
        manifest.seed,
        runs,
        if runs == 1 { "" } else { "s" }
    );
    if manifest.kchaos_version != kchaos_model::VERSION {
        println!(
            "note: recorded with kchaos {}, replayed with {}",
            manifest.kchaos_version,
            kchaos_model::VERSION
        );
    }
    with_session(vm.session(&cache), |rt, session| {
        let outcome = rt.block_on(matrix::run(session, &opts))?;
        Ok(replayed(&manifest, &outcome))
    })
}

/// Prints each replayed cell against the bundle and how often the failure recurred;
/// the exit says whether it did.
fn replayed(manifest: &bundle::Manifest, outcome: &RunOutcome) -> Exit {
    let mut recurred = 0u32;
    let mut judged = 0u32;
    for cell in &outcome.results.cells {
        let same_fp = match (&manifest.fingerprint, &cell.fingerprint) {
            (Some(want), Some(got)) => *want == got.id,
            (Some(_), None) => false,
            (None, _) => true,
        };
        let again = cell.verdict == manifest.verdict && same_fp;
        if cell.verdict != Verdict::Error {
            judged += 1;
        }
        recurred += u32::from(again);
        let cmdline = std::fs::read_to_string(
            outcome
                .dir
                .join(cell.artifacts.dir.as_deref().unwrap_or(""))
                .join("qemu.cmdline"),
        )
        .ok()
        .and_then(|c| bundle::kernel_cmdline(c.trim()));
        let same_cmdline = match (&manifest.kernel_cmdline, &cmdline) {
            (Some(a), Some(b)) => {
                if bundle::comparable_cmdline(a) == bundle::comparable_cmdline(b) {
                    "same kernel command line"
                } else {
                    "DIFFERENT kernel command line"
                }
            }
            _ => "kernel command line not compared",
        };
        let release = cell.kernel.release.as_deref().unwrap_or("?");
        println!(
            "  {}: {}{} (seed {}, uname -r {release}, {same_cmdline}){}",
            cell.id,
            cell.verdict,
            cell.fingerprint
                .as_ref()
                .map(|f| format!(" {}", f.id))
                .unwrap_or_default(),
            cell.seed,
            if again { " - recurred" } else { "" }
        );
        if manifest
            .kernel
            .release
            .as_deref()
            .is_some_and(|r| r != release)
        {
            println!(
                "  warning: the bundle ran on {}",
                manifest.kernel.release.as_deref().unwrap_or("?")
            );
        }
    }
    let (lo, hi) = stats::wilson(u64::from(recurred), u64::from(judged), stats::Z95);
    println!(
        "recurred {recurred}/{judged} (95% Wilson interval {lo:.2}-{hi:.2}); results: {}",
        outcome.dir.display()
    );
    for f in &outcome.write_failures {
        eprintln!("kchaos: error: results not written: {f}");
    }
    if outcome.interrupted {
        Exit::Interrupted
    } else if !outcome.write_failures.is_empty() {
        Exit::Infrastructure
    } else if recurred > 0 {
        Exit::Failures
    } else if judged > 0 {
        Exit::Ok
    } else {
        Exit::CannotTest
    }
}
