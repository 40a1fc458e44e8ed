//! What a bisection runs, from its arguments or its record: the points (a kernel list,
//! or the commits between two revisions, which two recorded runs may name), the plan,
//! the builder and the scenario file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kchaos_harness::analysis::bisect::{
    self as record, short, BisectRecord, PlanOptionsRecord, Point, SourceRange, StepRecord, Totals,
};
use kchaos_harness::analysis::reproduction::Target;
use kchaos_harness::results::sources::{self, LoadedRun};
use kchaos_harness::results::{now_rfc3339, CellResult, RunResults};
use kchaos_harness::run::bisect::{ListBuilder, PointBuilder, TreeBuilder};
use kchaos_harness::run::session::Session;
use kchaos_images::tree::{BuildSpace, Commit, Repo};
use kchaos_images::Cache;
use kchaos_model::bisect::plan::{PlanOptions, Planner};
use kchaos_model::error_chain;

use super::BisectArgs;
use crate::cli::exit::CliError;
use crate::cli::sweep;

/// What a bisection runs: its record (new or resumed), plan, points and scenario.
pub(super) struct Setup {
    pub(super) record: BisectRecord,
    pub(super) planner: Planner,
    pub(super) builder: Box<dyn PointBuilder>,
    pub(super) scenario: PathBuf,
    pub(super) target: Target,
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

pub(super) fn fresh(
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

pub(super) fn resumed(
    out: &Path,
    cache: &Cache,
    session: &Arc<Session>,
) -> Result<Setup, CliError> {
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
