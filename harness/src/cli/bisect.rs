//! `kchaos bisect`: the first bad point between a good and a bad one, over an ordered
//! kernel list (`--kernel`) or the commits of a git tree (`--source`), each commit
//! built incrementally. The loop is `run::bisect`; this module turns arguments into
//! the points, the plan and the builder, prints the steps, and writes `bisect.json`
//! and `report.html` after every step.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kchaos_harness::analysis::bisect::{
    self as record, short, BisectRecord, PlanOptionsRecord, Point, SourceRange, StepRecord, Totals,
};
use kchaos_harness::analysis::trials::Target;
use kchaos_harness::results::sources::{self, LoadedRun};
use kchaos_harness::results::{now_rfc3339, write_json, CellResult, RunResults};
use kchaos_harness::run::bisect::{
    drive, BisectRunError, Ended, Event, ListBuilder, PointBuilder, Prepared, SessionRunner,
    TreeBuilder,
};
use kchaos_harness::run::lock::ResultsLock;
use kchaos_harness::run::session::Session;
use kchaos_harness::run::RunError;
use kchaos_images::tree::{BuildSpace, Commit, Repo};
use kchaos_images::Cache;
use kchaos_model::bisect::plan::{Outcome, Phase, PlanOptions, Planner};
use kchaos_model::error_chain;

use super::args::{default_out, KernelListArgs};
use super::exit::{CliError, Exit};
use super::repro::TrialArgs;
use super::{describe_session, runtime, sweep};

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

/// What a bisection runs: its record (new or resumed), plan, points and scenario.
struct Setup {
    record: BisectRecord,
    planner: Planner,
    builder: Box<dyn PointBuilder>,
    scenario: PathBuf,
    target: Target,
}

pub fn bisect(args: BisectArgs, cache: Cache) -> Result<Exit, CliError> {
    let out = match &args.trial.out {
        Some(o) => o.clone(),
        None => default_out(Some("bisect")),
    };
    let created = !out.exists();
    let lock = ResultsLock::acquire(&out).map_err(|e| super::run_error(RunError::Lock(e)))?;
    let rt = runtime()?;
    let session = Arc::new(rt.block_on(Session::open(args.trial.vm.session(&cache))));
    let setup = if args.resume {
        resumed(&out, &cache, &session)
    } else if out.join(record::FILE).exists() {
        Err(CliError::usage(format!(
            "{} already holds a bisection; continue it with --resume --out {0}, or choose another --out",
            out.display()
        )))
    } else {
        fresh(&args, &out, &cache, &session)
    };
    let setup = match setup {
        Ok(s) => s,
        Err(e) => {
            // A bisection that never started leaves nothing behind.
            drop(lock);
            if created {
                let _ = std::fs::remove_dir_all(&out);
            }
            return Err(e);
        }
    };
    describe_session(&session);
    let Setup {
        mut record,
        mut planner,
        mut builder,
        scenario,
        target,
    } = setup;
    print_header(&record, &target);
    let mut runner = SessionRunner {
        rt: &rt,
        session: &session,
        scenario,
        target,
        seed: record.options.seed,
        out: out.clone(),
        write_failures: Vec::new(),
    };
    let mut failures: Vec<String> = Vec::new();
    let mut journal = |r: &BisectRecord| {
        failures.extend(save(r, &out));
        Ok(())
    };
    let mut printer = Printer::default();
    let ended = drive(
        &mut planner,
        &mut record,
        builder.as_mut(),
        &mut runner,
        &mut journal,
        &mut |e| printer.event(&e),
    );
    rt.block_on(session.wait_kept());
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

fn plan_options(args: &BisectArgs) -> Result<PlanOptions, CliError> {
    let confidence = args.confidence.unwrap_or(0.95);
    if !(confidence > 0.0 && confidence < 1.0) {
        return Err(CliError::usage("--confidence must be between 0 and 1"));
    }
    Ok(PlanOptions {
        calibrate: args.calibrate.unwrap_or(10),
        runs: args.runs,
        confidence,
    })
}

/// The scenario file the runs use: the one given, or its `--set` variant.
fn scenario_file(scenario: &Path, sets: &[String], out: &Path) -> Result<PathBuf, CliError> {
    if sets
        .iter()
        .any(|s| s.split_once('=').is_some_and(|(_, v)| v.contains(',')))
    {
        return Err(CliError::usage(
            "bisect takes one value per --set (a sweep is for `kchaos repro`)",
        ));
    }
    let variants = sweep::variants(scenario, sets, out).map_err(CliError::Usage)?;
    match variants.as_slice() {
        [(_, file)] => Ok(file.clone()),
        _ => Err(CliError::usage("bisect takes one value per --set")),
    }
}

fn fresh(
    args: &BisectArgs,
    out: &Path,
    cache: &Cache,
    session: &Arc<Session>,
) -> Result<Setup, CliError> {
    let Some(scenario) = args.scenario.clone() else {
        return Err(CliError::usage("name the scenario to bisect with"));
    };
    let loaded = kchaos_harness::scenario::load_all(std::slice::from_ref(&scenario))
        .map_err(CliError::Scenarios)?;
    let name = loaded
        .first()
        .map(|s| s.model.name.clone())
        .unwrap_or_default();
    let opts = plan_options(args)?;
    let until = args.until.clone().unwrap_or_else(|| "any".to_owned());
    let target = Target::parse(&until);
    let (good, bad) = match (&args.good, &args.bad) {
        (Some(g), Some(b)) => (g.clone(), b.clone()),
        _ => return Err(CliError::usage("--good and --bad are needed")),
    };
    std::fs::create_dir_all(out).map_err(|e| CliError::usage(format!("{}: {e}", out.display())))?;
    let file = scenario_file(&scenario, &args.sets, out)?;
    let range = match &args.source {
        Some(dir) => source_range(args, dir, &name, &target, &good, &bad, cache, session)?,
        None => list_range(args, &good, &bad)?,
    };
    let Range {
        points,
        good: good_i,
        bad: bad_i,
        source,
        builder,
    } = range;
    let planner = Planner::new(good_i, bad_i, opts).map_err(|e| CliError::usage(e.to_string()))?;
    let record = BisectRecord {
        kchaos_version: kchaos_model::VERSION.to_owned(),
        started_at: now_rfc3339(),
        finished_at: None,
        scenario: scenario.display().to_string(),
        until,
        sets: args.sets.clone(),
        options: PlanOptionsRecord {
            calibrate: opts.calibrate,
            runs: opts.runs,
            confidence: opts.confidence,
            seed: args.trial.seed,
        },
        source,
        points,
        good: good_i,
        bad: bad_i,
        calibration: None,
        runs_per_step: None,
        steps: Vec::new(),
        outcome: None,
        totals: Totals::default(),
    };
    Ok(Setup {
        record,
        planner,
        builder,
        scenario: file,
        target,
    })
}

/// What is bisected: the points in order, the ends, and how each point is prepared.
struct Range {
    points: Vec<Point>,
    good: usize,
    bad: usize,
    source: Option<SourceRange>,
    builder: Box<dyn PointBuilder>,
}

/// The kernels of a `--kernel` list.
fn list_range(args: &BisectArgs, good: &str, bad: &str) -> Result<Range, CliError> {
    if args.kernels.is_empty() {
        return Err(CliError::usage(
            "give the kernels to bisect (--kernel, oldest first) or a git tree (--source DIR)",
        ));
    }
    let specs = args.list.expand(&args.kernels)?;
    let find = |k: &str| -> Result<usize, CliError> {
        let spec = args.list.expand_one(k)?;
        specs.iter().position(|s| *s == spec).ok_or_else(|| {
            CliError::usage(format!(
                "`{k}` is not in the kernel list given: {}",
                specs.join(", ")
            ))
        })
    };
    let (good, bad) = (find(good)?, find(bad)?);
    let points = specs
        .iter()
        .map(|s| Point {
            id: s.clone(),
            subject: None,
        })
        .collect();
    Ok(Range {
        points,
        good,
        bad,
        source: None,
        builder: Box::new(ListBuilder { specs }),
    })
}

/// The commits between the ends and the builder of a `--source` bisection.
#[allow(clippy::too_many_arguments)]
fn source_range(
    args: &BisectArgs,
    dir: &Path,
    scenario: &str,
    target: &Target,
    good: &str,
    bad: &str,
    cache: &Cache,
    session: &Arc<Session>,
) -> Result<Range, CliError> {
    let tree_err = |e: kchaos_images::tree::TreeError| CliError::usage(error_chain(&e));
    let repo = Repo::open(dir).map_err(tree_err)?;
    let (good_rev, bad_rev) = revisions(scenario, target, good, bad)?;
    let good_hash = repo.resolve(&good_rev).map_err(tree_err)?;
    let bad_hash = repo.resolve(&bad_rev).map_err(tree_err)?;
    if good_hash == bad_hash {
        return Err(CliError::usage(format!(
            "--good and --bad are the same commit ({good_hash}): nothing to bisect"
        )));
    }
    let commits = repo.range(&good_hash, &bad_hash).map_err(tree_err)?;
    let space =
        BuildSpace::open(cache, &repo, &args.fragments, !args.no_ccache).map_err(|e| match e {
            kchaos_images::tree::TreeError::UnknownFragment { .. } => tree_err(e),
            e => CliError::Infrastructure(anyhow::anyhow!(error_chain(&e))),
        })?;
    let source = SourceRange {
        repo: repo.dir.display().to_string(),
        good_rev,
        bad_rev,
        fragments: args.fragments.clone(),
        build_space: space.root().display().to_string(),
        ccache: space.ccache().is_some(),
    };
    let points: Vec<Point> = commits
        .iter()
        .map(|c| Point {
            id: c.hash.clone(),
            subject: Some(c.subject.clone()),
        })
        .collect();
    let bad = points.len() - 1;
    Ok(Range {
        points,
        good: 0,
        bad,
        source: Some(source),
        builder: tree_builder(space, commits, session),
    })
}

fn tree_builder(
    space: BuildSpace,
    commits: Vec<Commit>,
    session: &Arc<Session>,
) -> Box<dyn PointBuilder> {
    let watch = Arc::clone(session);
    Box::new(TreeBuilder {
        space,
        commits,
        cancel: Box::new(move || watch.interrupted()),
    })
}

/// `--good` and `--bad` as revisions: as given, or the commits two recorded runs'
/// kernels were built from (the nightly's last green and first red).
fn revisions(
    scenario: &str,
    target: &Target,
    good: &str,
    bad: &str,
) -> Result<(String, String), CliError> {
    let (good_cells, bad_cells) = (recorded_cells(good)?, recorded_cells(bad)?);
    match (good_cells, bad_cells) {
        (None, None) => Ok((good.to_owned(), bad.to_owned())),
        (Some(g), Some(b)) => {
            let (g, b) = record::range_from_runs(scenario, target, &g, &b)
                .map_err(|e| CliError::usage(e.to_string()))?;
            println!("from the recorded runs: good {g} ({good}), bad {b} ({bad})");
            Ok((g, b))
        }
        _ => Err(CliError::usage(
            "--good and --bad must both be revisions or both be recorded runs",
        )),
    }
}

/// The cells of a recorded run, if `arg` names one: a results directory, a cell's
/// directory (its `cell.json`) or a results database.
fn recorded_cells(arg: &str) -> Result<Option<Vec<CellResult>>, CliError> {
    let path = Path::new(arg);
    let cell_json = path.join("cell.json");
    if cell_json.is_file() {
        let bytes = std::fs::read(&cell_json)
            .map_err(|e| CliError::usage(format!("{}: {e}", cell_json.display())))?;
        let cell: CellResult = serde_json::from_slice(&bytes)
            .map_err(|e| CliError::usage(format!("{}: {e}", cell_json.display())))?;
        return Ok(Some(vec![cell]));
    }
    let is_run = RunResults::path(path).is_file()
        || (path.is_file() && path.extension().is_some_and(|e| e == "db"));
    if !is_run {
        return Ok(None);
    }
    let runs: Vec<LoadedRun> = sources::load(path).map_err(|e| CliError::usage(error_chain(&e)))?;
    Ok(Some(
        runs.into_iter().flat_map(|r| r.results.cells).collect(),
    ))
}

fn resumed(out: &Path, cache: &Cache, session: &Arc<Session>) -> Result<Setup, CliError> {
    let rec =
        BisectRecord::load(out).map_err(|e| CliError::usage(format!("cannot resume: {e}")))?;
    if rec.outcome.is_some() {
        return Err(CliError::usage(format!(
            "the bisection in {} is finished: {}",
            out.display(),
            rec.outcome.as_ref().map_or("", |o| o.message.as_str())
        )));
    }
    let scenario = PathBuf::from(&rec.scenario);
    kchaos_harness::scenario::load_all(std::slice::from_ref(&scenario))
        .map_err(CliError::Scenarios)?;
    let file = scenario_file(&scenario, &rec.sets, out)?;
    let opts = PlanOptions {
        calibrate: rec.options.calibrate,
        runs: rec.options.runs,
        confidence: rec.options.confidence,
    };
    let mut planner =
        Planner::new(rec.good, rec.bad, opts).map_err(|e| CliError::usage(e.to_string()))?;
    planner
        .replay(
            rec.steps
                .iter()
                .map(|s: &StepRecord| (s.phase, s.index, &s.observed)),
        )
        .map_err(|e| CliError::usage(format!("cannot resume {}: {e}", out.display())))?;
    let builder: Box<dyn PointBuilder> = match &rec.source {
        None => Box::new(ListBuilder {
            specs: rec.points.iter().map(|p| p.id.clone()).collect(),
        }),
        Some(src) => {
            let tree_err = |e: kchaos_images::tree::TreeError| CliError::usage(error_chain(&e));
            let repo = Repo::open(Path::new(&src.repo)).map_err(tree_err)?;
            let (good, bad) = (&rec.points[rec.good].id, &rec.points[rec.bad].id);
            let commits = repo.range(good, bad).map_err(tree_err)?;
            let same = commits.len() == rec.points.len()
                && commits.iter().zip(&rec.points).all(|(c, p)| c.hash == p.id);
            if !same {
                return Err(CliError::usage(format!(
                    "cannot resume: the commits between {} and {} in {} are no longer those recorded",
                    short(good),
                    short(bad),
                    src.repo
                )));
            }
            let space = BuildSpace::open(cache, &repo, &src.fragments, src.ccache)
                .map_err(|e| CliError::Infrastructure(anyhow::anyhow!(error_chain(&e))))?;
            tree_builder(space, commits, session)
        }
    };
    println!(
        "resuming {} after {} recorded steps",
        out.display(),
        rec.steps.len()
    );
    let target = Target::parse(&rec.until);
    Ok(Setup {
        record: rec,
        planner,
        builder,
        scenario: file,
        target,
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

fn print_header(r: &BisectRecord, target: &Target) {
    let name = |i: usize| {
        r.points
            .get(i)
            .map_or_else(String::new, |p| match &p.subject {
                Some(s) => format!("{} ({s})", short(&p.id)),
                None => p.id.clone(),
            })
    };
    let what = match &r.source {
        Some(s) => format!("{} commits of {}", r.points.len(), s.repo),
        None => format!("{} kernels", r.points.len()),
    };
    println!(
        "bisecting {} over {what}: good {}, bad {}, until {}",
        r.scenario,
        name(r.good),
        name(r.bad),
        target.describe()
    );
    if let Some(s) = &r.source {
        println!(
            "building in {} ({}; fragments: {})",
            s.build_space,
            if s.ccache {
                "through ccache"
            } else {
                "without ccache"
            },
            if s.fragments.is_empty() {
                "none".to_owned()
            } else {
                s.fragments.join(", ")
            }
        );
    }
}

fn secs(s: f64) -> String {
    if s >= 90.0 {
        format!("{}m{:02}s", (s / 60.0).floor(), (s % 60.0).round())
    } else {
        format!("{s:.0}s")
    }
}

/// Prints each step as it goes: what is built, how long it took, what the runs said.
#[derive(Debug, Default)]
struct Printer {
    step: usize,
}

impl Printer {
    fn event(&mut self, e: &Event<'_>) {
        match e {
            Event::Starting { phase, index, runs } => {
                self.step += 1;
                let what = match phase {
                    Phase::Calibrate => "the bad end, calibrating",
                    Phase::CheckGood => "the good end",
                    Phase::Bisect => "bisecting",
                };
                println!("step {} ({what}): #{index}, up to {runs} runs", self.step);
            }
            Event::Built(p) => print_built(p),
            Event::Done(s) => {
                let point = match &s.subject {
                    Some(sub) => format!("{} {sub}", short(&s.point)),
                    None => s.point.clone(),
                };
                let p = match (s.probability, s.interval95) {
                    (Some(p), Some((lo, hi))) => format!(", p {p:.2} [{lo:.2}-{hi:.2}]"),
                    _ => String::new(),
                };
                let conf = s
                    .confidence
                    .map(|c| format!(", confidence {c:.3}"))
                    .unwrap_or_default();
                let why = s
                    .why
                    .as_ref()
                    .map(|w| format!(" ({w})"))
                    .unwrap_or_default();
                println!(
                    "  {point}: {}{why}, {}/{} runs hit{p}{conf}; boot {}, runs {}",
                    s.verdict,
                    s.hits,
                    s.runs,
                    s.boot_ms
                        .map_or_else(|| "-".to_owned(), |b| format!("{:.1}s", b as f64 / 1000.0)),
                    secs(s.run_seconds)
                );
            }
        }
    }
}

fn print_built(p: &Prepared) {
    let Some(b) = &p.build else { return };
    if b.cached {
        println!("  built earlier: {}", p.kernel.as_deref().unwrap_or(""));
        return;
    }
    let cc = match (b.ccache_hits, b.ccache_misses) {
        (Some(h), Some(m)) => format!("; ccache {h} hits, {m} misses"),
        _ => String::new(),
    };
    match &p.kernel {
        Ok(_) => println!(
            "  built in {} (checkout {}; {} files compiled{cc})",
            secs(b.seconds),
            secs(b.checkout_seconds),
            b.compiled
        ),
        Err(why) => println!("  {why}"),
    }
}
