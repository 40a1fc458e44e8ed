//! `kchaos repro`, `replay` and `bisect`: trials of one scenario on one kernel at a
//! time, all through one session (each kernel resolved once, the runner located once,
//! slots refilled as cells finish), with terminal output around `analysis::trials`.

use std::path::PathBuf;
use std::sync::Arc;

use kchaos_harness::analysis::trials::{summary, Target, Trials};
use kchaos_harness::results::bundle;
use kchaos_harness::run::matrix::{self, MatrixOptions};
use kchaos_harness::run::session::Session;
use kchaos_harness::run::trials::{run_trials, TrialOptions};
use kchaos_harness::run::DEFAULT_KERNEL;
use kchaos_images::Cache;
use kchaos_model::bisect::{runs_needed, Bisection};
use kchaos_model::error_chain;
use kchaos_model::stats;
use kchaos_model::verdict::Verdict;

use super::args::{default_out, AccelArg, KernelListArgs, VmArgs};
use super::exit::{CliError, Exit};
use super::{describe_session, run_error, runtime, sweep};

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
    /// Results directory [default: results/replay-<timestamp>].
    #[arg(short, long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub vm: VmArgs,
}

#[derive(Debug, clap::Args)]
pub struct BisectArgs {
    #[arg(value_name = "SCENARIO")]
    pub scenario: PathBuf,
    /// The ordered kernels (specs, names, @set), oldest first.
    #[arg(short, long = "kernel", value_name = "SPEC|NAME|@SET", required = true)]
    pub kernels: Vec<String>,
    #[command(flatten)]
    pub list: KernelListArgs,
    /// A kernel of the list known good.
    #[arg(long, value_name = "KERNEL")]
    pub good: String,
    /// A kernel of the list known bad (reproduces).
    #[arg(long, value_name = "KERNEL")]
    pub bad: String,
    /// Outcome that makes a kernel bad: fail, crash, hang, any, or text of a reason,
    /// signature or fingerprint.
    #[arg(long, default_value = "any")]
    pub until: String,
    /// Runs per step [default: from the reproduction probability measured on the
    /// bad kernel and --confidence].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub runs: Option<u32>,
    /// Runs on the bad kernel to measure its reproduction probability.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub calibrate: u32,
    /// Wanted confidence in each good verdict.
    #[arg(long, default_value_t = 0.95)]
    pub confidence: f64,
    #[command(flatten)]
    pub trial: TrialArgs,
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
    let rt = runtime()?;
    let session = rt.block_on(Session::open(args.trial.vm.session(&cache)));
    let session = Arc::new(session);
    describe_session(&session);
    let mut results: Vec<(String, Trials)> = Vec::new();
    let mut wrote = true;
    for (label, file) in &variants {
        // One results directory per variant, named like its scenario file.
        let dir = match file.file_stem() {
            Some(stem) if variants.len() > 1 => out.join(stem),
            _ => out.clone(),
        };
        let opts = TrialOptions {
            scenario: file.clone(),
            kernel: kernel.clone(),
            target: target.clone(),
            max_runs: args.max_runs,
            stop_at_first: !args.all,
            out: dir,
            seed: args.trial.seed,
        };
        let trials = rt
            .block_on(run_trials(&session, &opts))
            .map_err(run_error)?;
        wrote &= wrote_everything(&trials);
        let name = if variants.len() == 1 {
            args.scenario.display().to_string()
        } else {
            format!("{} [{label}]", args.scenario.display())
        };
        print!("{}", summary(&name, &kernel, &target, &trials));
        let stop = trials.interrupted;
        results.push((label.clone(), trials));
        if stop {
            return Ok(Exit::Interrupted);
        }
    }
    if results.len() > 1 {
        print_sweep(&results);
    }
    rt.block_on(session.wait_kept());
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
        .out
        .clone()
        .unwrap_or_else(|| default_out(Some("replay")));
    let (manifest, scenario) = bundle::open(&args.bundle, &out.join("bundle"))
        .map_err(|e| CliError::usage(error_chain(&e)))?;
    let kernel = args.list.expand_one(manifest.kernel_spec())?;
    let runs = args.runs;
    let mut vm = args.vm.clone();
    // The same accelerator, unless the user says otherwise: timing bugs depend on it.
    if matches!(vm.accel, AccelArg::Auto) {
        vm.accel = match manifest.accel.as_deref() {
            Some("tcg") => AccelArg::Tcg,
            Some("kvm") => AccelArg::Kvm,
            _ => AccelArg::Auto,
        };
    }
    let opts = MatrixOptions {
        scenarios: vec![scenario],
        kernels: vec![kernel.clone()],
        // The bundle's scenario is the one as run: its `[vm] cpus` is the cell's topology.
        topologies: Vec::new(),
        repeat: runs,
        shard: None,
        resume: false,
        out: out.clone(),
        db: None,
        seed: Some(manifest.seed),
        same_seed: true,
        // A replay asks whether the failure recurs, known or not.
        known: None,
        // The bundle's failure, seen again, ends a run at once (a signature that makes
        // it `fail` needs no more of the scenario's duration).
        until: manifest
            .verdict
            .is_failure()
            .then_some(Target::Verdict(manifest.verdict)),
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
    let rt = runtime()?;
    let (session, outcome) = rt.block_on(async {
        let session = Arc::new(Session::open(vm.session(&cache)).await);
        describe_session(&session);
        let outcome = matrix::run(&session, &opts).await;
        (session, outcome)
    });
    let outcome = outcome?;
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
    rt.block_on(session.wait_kept());
    Ok(if outcome.interrupted {
        Exit::Interrupted
    } else if !outcome.write_failures.is_empty() {
        Exit::Infrastructure
    } else if recurred > 0 {
        Exit::Failures
    } else if judged > 0 {
        Exit::Ok
    } else {
        Exit::CannotTest
    })
}

pub fn bisect(args: BisectArgs, cache: Cache) -> Result<Exit, CliError> {
    let kernels = args.list.expand(&args.kernels)?;
    let find = |k: &str| -> Result<usize, CliError> {
        let spec = args.list.expand_one(k)?;
        kernels.iter().position(|s| *s == spec).ok_or_else(|| {
            CliError::usage(format!(
                "`{k}` is not in the kernel list given: {}",
                kernels.join(", ")
            ))
        })
    };
    let (good, bad) = (find(&args.good)?, find(&args.bad)?);
    let mut state = Bisection::new(good, bad).map_err(|e| CliError::usage(e.to_string()))?;
    if !(args.confidence > 0.0 && args.confidence < 1.0) {
        return Err(CliError::usage("--confidence must be between 0 and 1"));
    }
    kchaos_harness::scenario::load_all(std::slice::from_ref(&args.scenario))
        .map_err(CliError::Scenarios)?;
    let target = Target::parse(&args.until);
    let out = args
        .trial
        .out
        .clone()
        .unwrap_or_else(|| default_out(Some("bisect")));
    let rt = runtime()?;
    let session = Arc::new(rt.block_on(Session::open(args.trial.vm.session(&cache))));
    describe_session(&session);
    let mut wrote = true;
    let mut trial = |index: usize, runs: u32, stop_at_first: bool, tag: &str| {
        let opts = TrialOptions {
            scenario: args.scenario.clone(),
            kernel: kernels[index].clone(),
            target: target.clone(),
            max_runs: runs,
            stop_at_first,
            out: out.join(format!("{tag}-{index}")),
            seed: args.trial.seed,
        };
        let t = rt
            .block_on(run_trials(&session, &opts))
            .map_err(run_error)?;
        wrote &= wrote_everything(&t);
        if t.interrupted {
            return Err(CliError::Interrupted);
        }
        Ok(t)
    };
    println!(
        "bisecting {} over {} kernels: good {} (#{good}), bad {} (#{bad}), until {}",
        args.scenario.display(),
        kernels.len(),
        kernels[good],
        kernels[bad],
        target.describe()
    );
    let outcome = (|| -> Result<Exit, CliError> {
        // The probability on the bad end sets the runs per step.
        let cal = trial(bad, args.calibrate, false, "calibrate")?;
        let (p, lo, hi) = cal.probability();
        println!(
            "calibration on {}: {}/{} hits, p {p:.2} (95% interval {lo:.2}-{hi:.2})",
            kernels[bad], cal.hits, cal.runs
        );
        if cal.hits == 0 {
            println!(
                "the bad kernel did not reproduce in {} runs: nothing to bisect",
                cal.runs
            );
            return Ok(Exit::CannotTest);
        }
        // Plan with the pessimistic end of the interval: fewer hits than measured must
        // still be caught.
        let runs = match args.runs {
            Some(r) => r,
            None => runs_needed(lo.max(1e-6), args.confidence).ok_or_else(|| {
                CliError::usage("the reproduction probability is too low to plan runs")
            })?,
        };
        println!(
            "{runs} runs per step: a bad kernel with p >= {lo:.2} shows no hit in {runs} runs with probability <= {:.3}",
            kchaos_model::bisect::miss_probability(lo, runs)
        );
        let good_check = trial(good, runs, true, "good")?;
        if good_check.hits > 0 {
            println!(
                "the good kernel {} reproduces too: not a regression in this list",
                kernels[good]
            );
            return Ok(Exit::CannotTest);
        }
        println!("  {} good: 0/{} hits", kernels[good], good_check.runs);
        while let Some(i) = state.next() {
            let t = trial(i, runs, true, "step")?;
            if t.runs == 0 {
                println!(
                    "  {}: could not be judged ({}); stopping",
                    kernels[i],
                    t.skipped.as_deref().unwrap_or("errors")
                );
                return Ok(Exit::CannotTest);
            }
            state.record(i, t.runs, t.hits);
            println!(
                "  {}: {} ({}/{} hits)",
                kernels[i],
                if t.hits > 0 { "bad" } else { "good" },
                t.hits,
                t.runs
            );
        }
        let first = state.first_bad().unwrap_or(bad);
        println!(
            "first bad kernel: {} (last good: {}); confidence >= {:.3} at p = {lo:.2}; results: {}",
            kernels[first],
            kernels[state.last_good()],
            state.confidence(lo),
            out.display()
        );
        Ok(Exit::Ok)
    })();
    rt.block_on(session.wait_kept());
    match outcome {
        Ok(_) if !wrote => Ok(Exit::Infrastructure),
        other => other,
    }
}
