//! `kchaos run`'s engine: a planned matrix run through a session into one locked
//! results directory, resumable after an interruption.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::lock::ResultsLock;
use super::progress::Progress;
use super::recorder::{was_interrupted, Recorder};
use super::scheduler::{self, Ended, Flow};
use super::session::{random_seed, Job, Session};
use super::timings::Timings;
use super::{RunError, RunOutcome};
use crate::analysis::known::{triage_cell, Day, KnownIssues, Triage, TriageSummary};
use crate::plan::{self, CellKey, Planned, Shard};
use crate::results::sources;
use crate::results::{HostInfo, PlanInfo, RunResults};
use crate::scenario::{self, LoadedScenario};
use kchaos_model::topology::Topology;

/// What to run and where to record it.
#[derive(Debug, Clone)]
pub struct MatrixOptions {
    pub scenarios: Vec<PathBuf>,
    /// Kernel specs, in matrix order (names and sets already expanded).
    pub kernels: Vec<String>,
    /// `--topology`: every scenario on each of these; empty: each scenario's own
    /// (`[vm] cpus`, a list of several being an axis of its own).
    pub topologies: Vec<Topology>,
    /// Cells per scenario × kernel.
    pub repeat: u32,
    pub shard: Option<Shard>,
    /// `out` holds an interrupted run: keep its finished cells, run the rest.
    pub resume: bool,
    pub out: PathBuf,
    /// A database shared across runs instead of `out/results.db`.
    pub db: Option<PathBuf>,
    pub seed: Option<u64>,
    /// Every repeat uses `seed` itself rather than one derived per repeat (replaying a
    /// bundle: the same run again and again).
    pub same_seed: bool,
    /// Known issues: failures they describe are recorded as known.
    pub known: Option<Arc<KnownIssues>>,
    /// The outcome the run looks for (a replay: the bundle's failure): a signature that
    /// decides it ends the cell at once. `None` for `kchaos run`.
    pub until: Option<crate::analysis::reproduction::Target>,
}

impl MatrixOptions {
    /// Every scenario on every kernel once, recorded in `out`: each scenario's own
    /// topologies, the whole matrix (no shard), a fresh directory and database, a
    /// random seed per cell, no known issues, every cell run its course. Callers
    /// change what their command asks for.
    pub fn new(scenarios: Vec<PathBuf>, kernels: Vec<String>, out: PathBuf) -> MatrixOptions {
        MatrixOptions {
            scenarios,
            kernels,
            topologies: Vec::new(),
            repeat: 1,
            shard: None,
            resume: false,
            out,
            db: None,
            seed: None,
            same_seed: false,
            known: None,
            until: None,
        }
    }
}

/// The matrix of `opts`, as lines for `kchaos run --plan` (scenario, kernel, topology
/// or `-` off any axis, repeat).
pub fn plan_lines(opts: &MatrixOptions) -> Result<Vec<String>, RunError> {
    let loaded = scenario::load_all(&opts.scenarios).map_err(RunError::Scenarios)?;
    let columns = columns(&loaded, &opts.topologies)?;
    let axes: Vec<usize> = columns.iter().map(Vec::len).collect();
    Ok(
        plan::plan(&axes, opts.kernels.len(), opts.repeat, opts.shard)
            .into_iter()
            .map(|p| {
                let (topology, _) = &columns[p.scenario][p.topology];
                format!(
                    "{}\t{}\t{}\t{}",
                    loaded[p.scenario].model.name,
                    opts.kernels[p.kernel],
                    topology.map_or_else(|| "-".to_owned(), |t| t.label()),
                    p.repeat
                )
            })
            .collect(),
    )
}

/// One column of a scenario's topology axis: the topology (`None` off any axis) and the
/// scenario on it.
type Column = (Option<Topology>, Arc<LoadedScenario>);

/// Per scenario, its topology axis ([`plan::topology_axis`]) with the scenario on each.
fn columns(
    loaded: &[Arc<LoadedScenario>],
    asked: &[Topology],
) -> Result<Vec<Vec<Column>>, RunError> {
    loaded
        .iter()
        .map(|s| {
            plan::topology_axis(asked, &s.model.vm.topologies)
                .into_iter()
                .map(|t| match t {
                    None => Ok((None, Arc::clone(s))),
                    Some(t) => s
                        .with_topology(t)
                        .map(|v| (Some(t), Arc::new(v)))
                        .map_err(|why| RunError::Topology {
                            scenario: s.model.name.clone(),
                            why,
                        }),
                })
                .collect()
        })
        .collect()
}

/// Reads the plan of an earlier run in `dir`, for `--resume`.
pub fn stored_plan(dir: &Path) -> Result<(PlanInfo, RunResults), RunError> {
    let err = |why: String| RunError::Resume {
        path: dir.display().to_string(),
        why,
    };
    if !dir.is_dir() {
        return Err(err("no such results directory".to_owned()));
    }
    let loaded = sources::load_dir(dir).map_err(|e| err(kchaos_model::error_chain(&e)))?;
    let plan = loaded.results.plan.clone().ok_or_else(|| {
        err("its results.json records no plan (written by an older kchaos)".to_owned())
    })?;
    Ok((plan, loaded.results))
}

/// Runs the matrix. Errors only for what stops a run before any cell (bad scenarios,
/// a directory in use or holding earlier results); everything after is recorded.
pub async fn run(session: &Arc<Session>, opts: &MatrixOptions) -> Result<RunOutcome, RunError> {
    let loaded = scenario::load_all(&opts.scenarios).map_err(RunError::Scenarios)?;
    let lock = ResultsLock::acquire(&opts.out)?;
    if !opts.resume && RunResults::path(&opts.out).exists() {
        return Err(RunError::Exists {
            dir: opts.out.display().to_string(),
        });
    }
    let columns = columns(&loaded, &opts.topologies)?;
    let axes: Vec<usize> = columns.iter().map(Vec::len).collect();
    let planned = plan::plan(&axes, opts.kernels.len(), opts.repeat, opts.shard);
    let key = |p: &Planned| CellKey {
        scenario: loaded[p.scenario].model.name.clone(),
        kernel: opts.kernels[p.kernel].clone(),
        topology: columns[p.scenario][p.topology].0.map(|t| t.label()),
        repeat: p.repeat,
    };
    let order: HashMap<CellKey, usize> = planned
        .iter()
        .enumerate()
        .map(|(i, p)| (key(p), i))
        .collect();
    let plan_info = PlanInfo {
        scenarios: opts
            .scenarios
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        kernels: opts.kernels.clone(),
        repeat: opts.repeat,
        shard: opts.shard,
        seed: opts.seed,
        topologies: opts.topologies.iter().map(|t| t.label()).collect(),
    };
    let mut results = RunResults::starting(host_info(session), plan_info.clone());
    if opts.resume {
        let (_, earlier) = stored_plan(&opts.out)?;
        results.started_at = earlier.started_at;
        results.cells = earlier
            .cells
            .into_iter()
            .filter(|c| !was_interrupted(c) && order.contains_key(&c.key()))
            .collect();
    }
    let finished: HashSet<CellKey> = results.cells.iter().map(|c| c.key()).collect();
    let mut todo: Vec<Planned> = planned
        .iter()
        .copied()
        .filter(|p| !finished.contains(&key(p)))
        .collect();
    // Longest cells first, by what they took here before, else the scenario's own
    // duration cap (a pessimistic guess puts an unknown scenario early).
    let mut timings = Timings::load(&session.opts.cache);
    plan::longest_first(&mut todo, |p| {
        let model = &loaded[p.scenario].model;
        timings.estimate(&model.name).unwrap_or(model.duration)
    });
    let plan_json = serde_json::to_string(&plan_info).unwrap_or_default();
    let mut rec = Recorder::open(&opts.out, opts.db.as_deref(), results, &plan_json, order);

    let progress = Arc::new(Progress::new(todo.len()));
    if opts.resume {
        progress.info(&format!(
            "resuming {}: {} cells finished, {} to run",
            opts.out.display(),
            finished.len(),
            todo.len()
        ));
    }
    let jobs = todo.into_iter().map(|p| job(&columns, opts, p));
    let ended = scheduler::drive(
        session,
        session.opts.jobs,
        jobs,
        &opts.out,
        &progress,
        |cell| {
            rec.push(cell);
            Flow::Continue
        },
    )
    .await;
    progress.finish();
    let interrupted = ended == Ended::Interrupted;
    rec.finish(interrupted);
    timings.learn(&rec.results.cells);
    timings.save();
    drop(lock);
    Ok(RunOutcome {
        write_failures: rec.failures().to_vec(),
        dir: rec.dir().to_path_buf(),
        results: rec.results,
        interrupted,
    })
}

/// Triages every cell (kept ones of a resumed run included) and summarises the entries.
pub fn triage_all(
    known: &KnownIssues,
    cells: &mut [crate::results::CellResult],
    today: Day,
) -> TriageSummary {
    let mut triaged = Vec::with_capacity(cells.len());
    for cell in cells.iter_mut() {
        let t = triage_cell(known, cell, today);
        cell.known = match &t {
            Triage::Known(m) => Some(m.clone()),
            _ => None,
        };
        triaged.push(t);
    }
    TriageSummary::of(known, &triaged)
}

/// A planned cell as a job: its scenario (on its topology), kernel and seed.
fn job(columns: &[Vec<Column>], opts: &MatrixOptions, p: Planned) -> Job {
    let (topology, scenario) = &columns[p.scenario][p.topology];
    let scenario = Arc::clone(scenario);
    let seed_repeat = if opts.same_seed { 0 } else { p.repeat };
    let seed = plan::cell_seed(opts.seed.or(scenario.model.seed), seed_repeat, random_seed);
    Job {
        scenario,
        kernel: opts.kernels[p.kernel].clone(),
        topology: *topology,
        repeat: p.repeat,
        repeats: opts.repeat,
        seed,
        until: opts.until.clone(),
    }
}

/// What the session knows of the host, for the results.
pub fn host_info(session: &Session) -> HostInfo {
    match session.infra() {
        Ok(i) => HostInfo {
            qemu: Some(i.qemu.version.clone()),
            accel: Some(i.accel.accel.as_str().to_owned()),
            accel_reason: Some(i.accel.reason.clone()),
            jobs: Some(session.opts.jobs),
            harness_peak_rss_kib: None,
        },
        Err(_) => HostInfo {
            jobs: Some(session.opts.jobs),
            ..HostInfo::default()
        },
    }
}
