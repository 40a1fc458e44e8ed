//! `kchaos run`: plan the scenario × kernel matrix, prepare kernels and images, run every
//! cell, record results as they come.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kchaos_images::{Cache, Kernel};
use kchaos_model::verdict::Verdict;
use tokio::sync::watch;

use crate::cell::{self, error_chain, CellEnv, CellSpec, DumpPolicy, LoadedScenario};
use crate::matrix::{self, CellKey, Planned, Shard};
use crate::progress::Progress;
use crate::qemu::accel::AccelChoice;
use crate::qemu::{self, Qemu};
use crate::results::{
    now_rfc3339, write_json, Artifacts, CellResult, HostInfo, KernelInfo, PlanInfo, ResultsError,
    RunResults,
};
use crate::store::{Store, StoreError};
use crate::{images, requirements, runner_bin, scenarios};

pub const DEFAULT_KERNEL: &str = "debian:6.1-cloud";

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub scenarios: Vec<PathBuf>,
    /// Kernel specs, in matrix order (names and sets already expanded).
    pub kernels: Vec<String>,
    /// Cells per scenario × kernel.
    pub repeat: u32,
    /// VMs at once.
    pub jobs: usize,
    pub shard: Option<Shard>,
    /// `out` holds an interrupted run: keep its finished cells, run the rest.
    pub resume: bool,
    pub out: PathBuf,
    /// A database shared across runs instead of `out/results.db`.
    pub db: Option<PathBuf>,
    pub accel: AccelChoice,
    pub runner: Option<PathBuf>,
    pub seed: Option<u64>,
    /// Every repeat uses `seed` itself rather than one derived per repeat (replaying a
    /// bundle, or `repro --seed`: the same run again and again).
    pub same_seed: bool,
    pub guest_log: Option<String>,
    pub boot_timeout: Option<std::time::Duration>,
    /// Dump guest memory of crashed or hung guests (`--dump-memory`).
    pub dump: Option<DumpPolicy>,
    pub cache: Cache,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("Invalid scenarios")]
    Scenarios(Vec<String>),
    #[error("Cannot create the results directory {path}")]
    Output {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot resume {path}: {why}")]
    Resume { path: String, why: String },
    #[error(transparent)]
    Results(#[from] ResultsError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug)]
pub struct RunOutcome {
    pub results: RunResults,
    pub dir: PathBuf,
    pub interrupted: bool,
}

/// Keeps `results.json` and the database current after every cell.
struct Recorder {
    dir: PathBuf,
    results: RunResults,
    store: Store,
    run_id: i64,
    /// Canonical position of each cell, to keep `results.json` in matrix order.
    order: HashMap<CellKey, usize>,
}

impl Recorder {
    fn push(&mut self, mut cell: CellResult) -> Result<(), RunError> {
        if cell.verdict != Verdict::Pass && !was_interrupted(&cell) {
            self.bundle(&mut cell);
        }
        self.store.record_cell(self.run_id, &cell)?;
        self.results.cells.push(cell);
        let order = &self.order;
        self.results
            .cells
            .sort_by_key(|c| order.get(&key_of(c)).copied().unwrap_or(usize::MAX));
        write_json(&RunResults::path(&self.dir), &self.results)?;
        Ok(())
    }
}

impl Recorder {
    /// Leaves a replay bundle in the cell's directory; a failure to write it is logged
    /// and the cell recorded anyway.
    fn bundle(&self, cell: &mut CellResult) {
        let Some(rel) = cell.artifacts.dir.clone() else {
            return;
        };
        let dir = self.dir.join(&rel);
        // Only cells that booted have a scenario as run to replay.
        if !dir.join("scenario.toml").exists() {
            return;
        }
        match crate::bundle::write(&dir, cell, self.results.host.qemu.as_deref()) {
            Ok(_) => {
                cell.artifacts.bundle = Some(format!("{rel}/{}", crate::bundle::FILE));
                // cell.json names its bundle too.
                let _ = write_json(&dir.join("cell.json"), &*cell);
            }
            Err(e) => tracing::warn!("{}", error_chain(&e)),
        }
    }
}

/// The identity of a recorded cell.
pub fn key_of(cell: &CellResult) -> CellKey {
    CellKey {
        scenario: cell.scenario.clone(),
        kernel: cell.kernel.spec.clone(),
        repeat: cell.repeat,
    }
}

/// A cell the run must not keep when resuming: it was cut short by the interrupt.
fn was_interrupted(cell: &CellResult) -> bool {
    cell.verdict == Verdict::Error && cell.reasons.iter().any(|r| r == "interrupted")
}

/// The matrix of `opts`, as lines for `kchaos run --plan`.
pub fn plan_lines(opts: &RunOptions) -> Result<Vec<String>, RunError> {
    let loaded = scenarios::load_all(&opts.scenarios).map_err(RunError::Scenarios)?;
    Ok(
        matrix::plan(loaded.len(), opts.kernels.len(), opts.repeat, opts.shard)
            .into_iter()
            .map(|p| {
                format!(
                    "{}\t{}\t{}",
                    loaded[p.scenario].model.name, opts.kernels[p.kernel], p.repeat
                )
            })
            .collect(),
    )
}

/// Reads the plan of an earlier run in `dir`, for `--resume`.
pub fn stored_plan(dir: &Path) -> Result<(PlanInfo, RunResults), RunError> {
    let path = RunResults::path(dir);
    let err = |why: String| RunError::Resume {
        path: dir.display().to_string(),
        why,
    };
    let bytes = std::fs::read(&path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    let results: RunResults = serde_json::from_slice(&bytes).map_err(|e| {
        err(format!(
            "{} is not a kchaos results file: {e}",
            path.display()
        ))
    })?;
    let plan = results.plan.clone().ok_or_else(|| {
        err("its results.json records no plan (written by an older kchaos)".to_owned())
    })?;
    Ok((plan, results))
}

/// Everything the cells of a run share.
struct RunCtx {
    opts: RunOptions,
    dir: PathBuf,
    loaded: Vec<Arc<LoadedScenario>>,
    infra: Result<Infra, String>,
    runner: LazyRunner,
    kernels: Vec<tokio::sync::OnceCell<Result<Arc<Kernel>, String>>>,
    progress: Progress,
    /// One image build at a time: two cells wanting the same new image build it once.
    image_lock: tokio::sync::Mutex<()>,
    cancel: watch::Receiver<bool>,
}

pub async fn run(opts: RunOptions) -> Result<RunOutcome, RunError> {
    let loaded = scenarios::load_all(&opts.scenarios).map_err(RunError::Scenarios)?;
    std::fs::create_dir_all(&opts.out).map_err(|source| RunError::Output {
        path: opts.out.display().to_string(),
        source,
    })?;
    let planned = matrix::plan(loaded.len(), opts.kernels.len(), opts.repeat, opts.shard);
    let key = |p: &Planned| CellKey {
        scenario: loaded[p.scenario].model.name.clone(),
        kernel: opts.kernels[p.kernel].clone(),
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
    };
    let mut results = RunResults {
        kchaos_version: kchaos_model::VERSION.to_owned(),
        started_at: now_rfc3339(),
        finished_at: None,
        host: HostInfo::default(),
        plan: Some(plan_info.clone()),
        cells: Vec::new(),
    };
    if opts.resume {
        let (_, earlier) = stored_plan(&opts.out)?;
        results.started_at = earlier.started_at;
        results.cells = earlier
            .cells
            .into_iter()
            .filter(|c| !was_interrupted(c) && order.contains_key(&key_of(c)))
            .collect();
    }
    let finished: HashSet<CellKey> = results.cells.iter().map(key_of).collect();
    let todo: Vec<Planned> = planned
        .iter()
        .copied()
        .filter(|p| !finished.contains(&key(p)))
        .collect();

    let db_path = opts.db.clone().unwrap_or_else(|| Store::path_in(&opts.out));
    let mut store = Store::open(&db_path)?;
    let plan_json = serde_json::to_string(&plan_info).unwrap_or_default();
    let run_id = store.begin_run(&opts.out, &results, &plan_json)?;
    // A resumed run's database is rebuilt from what is kept, so it never holds a
    // cell the interrupt cut short.
    for cell in &results.cells {
        store.record_cell(run_id, cell)?;
    }
    let mut rec = Recorder {
        dir: opts.out.clone(),
        results,
        store,
        run_id,
        order,
    };
    write_json(&RunResults::path(&rec.dir), &rec.results)?;
    let progress = Progress::new(todo.len());
    if opts.resume {
        progress.info(&format!(
            "resuming {}: {} cells finished, {} to run",
            opts.out.display(),
            finished.len(),
            todo.len()
        ));
    }
    let cancel = interrupt_signal();

    // Infrastructure that every cell needs; a failure here is recorded on every cell.
    let infra = prepare_infra(&opts).await;
    if let Ok((q, decision)) = &infra {
        rec.results.host = HostInfo {
            qemu: Some(q.version.clone()),
            accel: Some(decision.accel.as_str().to_owned()),
            accel_reason: Some(decision.reason.clone()),
            jobs: Some(opts.jobs),
            harness_peak_rss_kib: None,
        };
        progress.info(&format!(
            "QEMU {} with {} ({}), {} VM{} at once",
            q.version,
            decision.accel.as_str(),
            decision.reason,
            opts.jobs,
            if opts.jobs == 1 { "" } else { "s" }
        ));
    }

    let ctx = Arc::new(RunCtx {
        kernels: opts
            .kernels
            .iter()
            .map(|_| tokio::sync::OnceCell::new())
            .collect(),
        runner: LazyRunner::new(opts.runner.clone()),
        dir: rec.dir.clone(),
        loaded,
        infra,
        progress,
        image_lock: tokio::sync::Mutex::new(()),
        cancel: cancel.clone(),
        opts,
    });
    let slots = Arc::new(tokio::sync::Semaphore::new(ctx.opts.jobs.max(1)));
    let mut tasks: tokio::task::JoinSet<CellResult> = tokio::task::JoinSet::new();
    let mut cancel_wait = cancel.clone();
    for planned in todo {
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => permit,
            _ = cancel_wait.wait_for(|c| *c) => break,
        };
        let Ok(permit) = permit else { break };
        if *cancel.borrow() {
            break;
        }
        let ctx = Arc::clone(&ctx);
        tasks.spawn(async move {
            let result = run_planned(&ctx, planned).await;
            drop(permit);
            result
        });
        while let Some(done) = tasks.try_join_next() {
            record(&mut rec, done)?;
        }
    }
    while let Some(done) = tasks.join_next().await {
        record(&mut rec, done)?;
    }
    let interrupted = *cancel.borrow();
    ctx.progress.finish();
    rec.results.finished_at = Some(now_rfc3339());
    rec.results.host.harness_peak_rss_kib = crate::process::peak_rss_kib();
    write_json(&RunResults::path(&rec.dir), &rec.results)?;
    if !interrupted {
        rec.store.finish_run(
            rec.run_id,
            rec.results.finished_at.as_deref().unwrap_or_default(),
        )?;
    }
    Ok(RunOutcome {
        results: rec.results,
        dir: rec.dir,
        interrupted,
    })
}

fn record(
    rec: &mut Recorder,
    done: Result<CellResult, tokio::task::JoinError>,
) -> Result<(), RunError> {
    match done {
        Ok(cell) => rec.push(cell),
        // A cell task cannot panic by design; if one did, its cell stays unrecorded and
        // `--resume` runs it again.
        Err(e) => {
            tracing::error!("a cell task failed: {e}");
            Ok(())
        }
    }
}

/// One planned cell: its kernel (prepared once for all its cells), then the cell.
async fn run_planned(ctx: &RunCtx, planned: Planned) -> CellResult {
    let scenario = &ctx.loaded[planned.scenario];
    let spec = &ctx.opts.kernels[planned.kernel];
    let repeat = if ctx.opts.same_seed {
        0
    } else {
        planned.repeat
    };
    let seed = cell_seed(ctx.opts.seed.or(scenario.model.seed), repeat);
    let kernel = match &ctx.infra {
        Ok(_) => ctx.kernels[planned.kernel]
            .get_or_init(|| prepare_kernel(&ctx.opts.cache, spec, &ctx.progress))
            .await
            .clone(),
        Err(reason) => Err(reason.clone()),
    };
    match (&kernel, &ctx.infra) {
        (Ok(kernel), Ok((qemu, decision))) => {
            let env = CellEnv {
                qemu: qemu.clone(),
                accel: decision.accel,
                cancel: ctx.cancel.clone(),
                guest_log: ctx.opts.guest_log.clone(),
                boot_timeout: ctx.opts.boot_timeout,
                dump: ctx.opts.dump,
            };
            run_one(ctx, scenario, kernel, planned.repeat, seed, &env).await
        }
        (Err(reason), _) | (_, Err(reason)) => {
            let label = sanitize(spec);
            let result = Preboot {
                dir: &ctx.dir,
                scenario,
                spec,
                kernel: None,
                label: &label,
                seed,
                repeat: planned.repeat,
                repeats: ctx.opts.repeat,
            }
            .result(Verdict::Error, reason.clone());
            ctx.decided(result)
        }
    }
}

async fn prepare_kernel(
    cache: &Cache,
    spec: &str,
    progress: &Progress,
) -> Result<Arc<Kernel>, String> {
    progress.info(&format!("preparing kernel {spec}"));
    let cache = cache.clone();
    let spec_owned = spec.to_owned();
    match tokio::task::spawn_blocking(move || kchaos_images::resolve(&cache, &spec_owned)).await {
        Ok(Ok(k)) => {
            progress.info(&format!("kernel {spec} is {} ({})", k.resolved, k.release));
            Ok(Arc::new(k))
        }
        Ok(Err(e)) => Err(error_chain(&e)),
        Err(e) => Err(format!("kernel preparation panicked: {e}")),
    }
}

/// The seed of a cell: the fixed one (`--seed`, else the scenario's) for the first
/// repeat and one derived from it for the others, so repeats differ but a rerun of the
/// matrix is the same; random when nothing is fixed. Always recorded.
fn cell_seed(fixed: Option<u64>, repeat: u32) -> u64 {
    match fixed {
        Some(seed) if repeat == 0 => seed,
        Some(seed) => kchaos_model::derive_seed(seed, &format!("repeat-{repeat}")),
        None => random_seed(),
    }
}

type Infra = (Qemu, qemu::accel::AccelDecision);

async fn prepare_infra(opts: &RunOptions) -> Result<Infra, String> {
    let q = Qemu::find().map_err(|e| error_chain(&e))?;
    let accel_dir = opts.cache.dir("accel").map_err(|e| error_chain(&e))?;
    let decision = qemu::detect_accel(&q, opts.accel, &accel_dir).await;
    Ok((q, decision))
}

/// The guest runner, located (or built) when the first cell needs to boot: a run whose
/// cells are all skipped or lack a kernel never waits for a build.
struct LazyRunner {
    explicit: Option<PathBuf>,
    cell: tokio::sync::OnceCell<Result<Arc<runner_bin::RunnerBinary>, String>>,
}

impl LazyRunner {
    fn new(explicit: Option<PathBuf>) -> LazyRunner {
        LazyRunner {
            explicit,
            cell: tokio::sync::OnceCell::new(),
        }
    }

    async fn get(&self, progress: &Progress) -> Result<Arc<runner_bin::RunnerBinary>, String> {
        self.cell
            .get_or_init(|| async {
                progress.info("preparing the guest runner");
                let explicit = self.explicit.clone();
                tokio::task::spawn_blocking(move || runner_bin::locate(explicit.as_deref()))
                    .await
                    .map_err(|e| format!("runner build panicked: {e}"))?
                    .map(Arc::new)
                    .map_err(|e| error_chain(&e))
            })
            .await
            .clone()
    }
}

async fn run_one(
    ctx: &RunCtx,
    scenario: &Arc<LoadedScenario>,
    kernel: &Arc<Kernel>,
    repeat: u32,
    seed: u64,
    env: &CellEnv,
) -> CellResult {
    let label = kernel.label();
    let id = matrix::cell_id(&scenario.model.name, &label, repeat, ctx.opts.repeat);
    let pre = Preboot {
        dir: &ctx.dir,
        scenario,
        spec: &kernel.spec,
        kernel: Some(kernel),
        label: &label,
        seed,
        repeat,
        repeats: ctx.opts.repeat,
    };
    let mut notes = match requirements::check(&scenario.model, kernel) {
        Ok(notes) => notes,
        Err(reason) => return ctx.decided(pre.result(Verdict::Skip, reason)),
    };
    // Cells that break the guest on purpose say so, whatever their verdict.
    for w in &scenario.model.workloads {
        if let kchaos_model::scenario::WorkloadSpec::Selftest(t) = &w.spec {
            notes.push(t.describe());
        }
    }
    let runner = match ctx.runner.get(&ctx.progress).await {
        Ok(r) => r,
        Err(reason) => return ctx.decided(pre.result(Verdict::Error, reason)),
    };
    let kind = scenario.model.vm.image;
    let (cache, k, bytes, s) = (
        ctx.opts.cache.clone(),
        Arc::clone(kernel),
        runner.bytes.clone(),
        Arc::clone(scenario),
    );
    let built = {
        let _one_build_at_a_time = ctx.image_lock.lock().await;
        tokio::task::spawn_blocking(move || images::image_for(&cache, &k, &bytes, &s.model)).await
    };
    let image = match built {
        Ok(Ok(image)) => image,
        Ok(Err(e)) => {
            return ctx.decided(pre.result(
                Verdict::Error,
                format!("building the {kind} image: {}", error_chain(&e)),
            ))
        }
        Err(e) => {
            return ctx.decided(pre.result(
                Verdict::Error,
                format!("building the {kind} image panicked: {e}"),
            ))
        }
    };
    let spec = CellSpec {
        id: id.clone(),
        scenario: Arc::clone(scenario),
        kernel: Arc::clone(kernel),
        image,
        seed,
        repeat,
        results_dir: ctx.dir.clone(),
        dir: ctx.dir.join(&id),
    };
    let cell_progress = ctx.progress.cell(&id, &id);
    let mut result = cell::run(&spec, env, &|u| cell_progress.update(&u)).await;
    result.notes.splice(0..0, notes);
    cell_progress.done(&result);
    result
}

impl RunCtx {
    /// A cell decided without booting: shown and counted like the others.
    fn decided(&self, result: CellResult) -> CellResult {
        self.progress.cell(&result.id, &result.id).done(&result);
        result
    }
}

/// A cell decided without booting (a skip, or an infrastructure error before QEMU).
struct Preboot<'a> {
    dir: &'a Path,
    scenario: &'a LoadedScenario,
    spec: &'a str,
    kernel: Option<&'a Kernel>,
    label: &'a str,
    seed: u64,
    repeat: u32,
    repeats: u32,
}

impl Preboot<'_> {
    fn result(&self, verdict: Verdict, reason: String) -> CellResult {
        let (dir, kernel) = (self.dir, self.kernel);
        let id = matrix::cell_id(
            &self.scenario.model.name,
            self.label,
            self.repeat,
            self.repeats,
        );
        let cell_dir = dir.join(&id);
        let result = CellResult {
            reasons: vec![reason],
            artifacts: Artifacts {
                dir: cell_dir
                    .strip_prefix(dir)
                    .ok()
                    .map(|p| p.display().to_string()),
                ..Artifacts::default()
            },
            ..CellResult::new(
                id,
                self.scenario,
                KernelInfo::of(self.spec, kernel),
                self.seed,
                self.repeat,
                verdict,
            )
        };
        if std::fs::create_dir_all(&cell_dir).is_ok() {
            let _ = write_json(&cell_dir.join("cell.json"), &result);
        }
        result
    }
}

fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// A seed for runs that did not fix one (recorded in the results, so replayable).
fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut bytes);
    }
    u64::from_le_bytes(bytes) >> 1
}

/// Ctrl-C or SIGTERM flips the returned flag; running cells abort their VM and record
/// `error: interrupted`, finished cells stay recorded.
fn interrupt_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("kchaos: interrupted; stopping the running cell and keeping finished results");
        let _ = tx.send(true);
    });
    rx
}

/// Exit code for a finished run (documented in docs/results.md).
pub fn exit_code(results: &RunResults, interrupted: bool) -> u8 {
    if interrupted {
        return 130;
    }
    let verdicts: Vec<Verdict> = results.cells.iter().map(|c| c.verdict).collect();
    if verdicts.iter().any(|v| v.is_failure()) {
        1
    } else if verdicts.contains(&Verdict::Error) {
        3
    } else {
        0
    }
}

/// The terminal summary table.
pub fn summary_table(results: &RunResults) -> String {
    let mut rows = vec![[
        "SCENARIO".to_owned(),
        "KERNEL".to_owned(),
        "VERDICT".to_owned(),
        "BOOT".to_owned(),
        "TIME".to_owned(),
        "WHY".to_owned(),
    ]];
    for c in &results.cells {
        let secs = |ms: u64| format!("{:.1}s", ms as f64 / 1000.0);
        rows.push([
            c.scenario.clone(),
            {
                let k = c
                    .kernel
                    .resolved
                    .clone()
                    .unwrap_or_else(|| c.kernel.spec.clone());
                // Repeats are told apart by their number.
                if results.plan.as_ref().is_some_and(|p| p.repeat > 1) {
                    format!("{k} #{}", c.repeat)
                } else {
                    k
                }
            },
            c.verdict.to_string(),
            c.boot_ms.map(secs).unwrap_or_else(|| "-".to_owned()),
            secs(c.duration_ms),
            c.reasons.first().cloned().unwrap_or_default(),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < 5 {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            } else {
                let mut why: String = cell.chars().take(120).collect();
                if cell.chars().count() > 120 {
                    why.push('…');
                }
                out.push_str(&why);
            }
        }
        out.push('\n');
    }
    out
}
