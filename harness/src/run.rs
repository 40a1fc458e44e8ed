//! `kchaos run`: plan the scenario × kernel matrix, prepare kernels and images, run every
//! cell, record results as they come.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kchaos_images::{Cache, Kernel};
use kchaos_model::verdict::Verdict;
use tokio::sync::watch;

use crate::cell::{self, error_chain, CellEnv, CellSpec, DumpPolicy, LoadedScenario};
use crate::progress::Progress;
use crate::qemu::accel::AccelChoice;
use crate::qemu::{self, Qemu};
use crate::results::{
    now_rfc3339, write_json, Artifacts, CellResult, HostInfo, KernelInfo, ResultsError, RunResults,
};
use crate::{images, requirements, runner_bin, scenarios};

pub const DEFAULT_KERNEL: &str = "debian:6.1-cloud";

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub scenarios: Vec<PathBuf>,
    pub kernels: Vec<String>,
    pub out: PathBuf,
    pub accel: AccelChoice,
    pub runner: Option<PathBuf>,
    pub seed: Option<u64>,
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
    #[error(transparent)]
    Results(#[from] ResultsError),
}

#[derive(Debug)]
pub struct RunOutcome {
    pub results: RunResults,
    pub dir: PathBuf,
    pub interrupted: bool,
}

/// Keeps `results.json` current after every cell.
struct Recorder {
    dir: PathBuf,
    results: RunResults,
}

impl Recorder {
    fn push(&mut self, cell: CellResult) -> Result<(), ResultsError> {
        self.results.cells.push(cell);
        write_json(&RunResults::path(&self.dir), &self.results)
    }
}

pub async fn run(opts: RunOptions) -> Result<RunOutcome, RunError> {
    let loaded = scenarios::load_all(&opts.scenarios).map_err(RunError::Scenarios)?;
    std::fs::create_dir_all(&opts.out).map_err(|source| RunError::Output {
        path: opts.out.display().to_string(),
        source,
    })?;
    let total = loaded.len() * opts.kernels.len();
    let progress = Progress::new(total);
    let mut rec = Recorder {
        dir: opts.out.clone(),
        results: RunResults {
            kchaos_version: kchaos_model::VERSION.to_owned(),
            started_at: now_rfc3339(),
            finished_at: None,
            host: HostInfo::default(),
            cells: Vec::new(),
        },
    };
    write_json(&RunResults::path(&rec.dir), &rec.results)?;
    let cancel = interrupt_signal();

    // Infrastructure that every cell needs; a failure here is recorded on every cell.
    let infra = prepare_infra(&opts).await;
    if let Ok((q, decision)) = &infra {
        rec.results.host = HostInfo {
            qemu: Some(q.version.clone()),
            accel: Some(decision.accel.as_str().to_owned()),
            accel_reason: Some(decision.reason.clone()),
        };
        progress.info(&format!(
            "QEMU {} with {} ({})",
            q.version,
            decision.accel.as_str(),
            decision.reason
        ));
    }

    let runner = LazyRunner::new(opts.runner.clone());
    let mut interrupted = false;
    'kernels: for spec in &opts.kernels {
        let kernel = match &infra {
            Ok(_) => {
                progress.info(&format!("preparing kernel {spec}"));
                let cache = opts.cache.clone();
                let spec_owned = spec.clone();
                match tokio::task::spawn_blocking(move || {
                    kchaos_images::resolve(&cache, &spec_owned)
                })
                .await
                {
                    Ok(Ok(k)) => {
                        progress.info(&format!("kernel {spec} is {} ({})", k.resolved, k.release));
                        Ok(Arc::new(k))
                    }
                    Ok(Err(e)) => Err(error_chain(&e)),
                    Err(e) => Err(format!("kernel preparation panicked: {e}")),
                }
            }
            Err(reason) => Err(reason.clone()),
        };
        for scenario in &loaded {
            if *cancel.borrow() {
                interrupted = true;
                break 'kernels;
            }
            let result = match (&kernel, &infra) {
                (Ok(kernel), Ok((qemu, decision))) => {
                    let env = CellEnv {
                        qemu: qemu.clone(),
                        accel: decision.accel,
                        cancel: cancel.clone(),
                        guest_log: opts.guest_log.clone(),
                        boot_timeout: opts.boot_timeout,
                        dump: opts.dump,
                    };
                    run_one(&opts, &rec.dir, scenario, kernel, &runner, &env, &progress).await
                }
                (Err(reason), _) | (_, Err(reason)) => {
                    let label = sanitize(spec);
                    let seed = opts.seed.or(scenario.model.seed).unwrap_or(0);
                    Preboot {
                        dir: &rec.dir,
                        scenario,
                        spec,
                        kernel: None,
                        label: &label,
                        seed,
                    }
                    .result(Verdict::Error, reason.clone())
                }
            };
            let was_interrupted = result.reasons.iter().any(|r| r == "interrupted");
            rec.push(result)?;
            if was_interrupted {
                interrupted = true;
                break 'kernels;
            }
        }
    }
    progress.finish();
    rec.results.finished_at = Some(now_rfc3339());
    write_json(&RunResults::path(&rec.dir), &rec.results)?;
    Ok(RunOutcome {
        results: rec.results,
        dir: rec.dir,
        interrupted,
    })
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
    opts: &RunOptions,
    dir: &Path,
    scenario: &Arc<LoadedScenario>,
    kernel: &Arc<Kernel>,
    runner: &LazyRunner,
    env: &CellEnv,
    progress: &Progress,
) -> CellResult {
    let seed = opts
        .seed
        .or(scenario.model.seed)
        .unwrap_or_else(random_seed);
    let label = kernel.label();
    let id = format!("{}/{label}", scenario.model.name);
    let pre = Preboot {
        dir,
        scenario,
        spec: &kernel.spec,
        kernel: Some(kernel),
        label: &label,
        seed,
    };
    let mut notes = match requirements::check(&scenario.model, kernel) {
        Ok(notes) => notes,
        Err(reason) => return pre.result(Verdict::Skip, reason),
    };
    // Cells that break the guest on purpose say so, whatever their verdict.
    for w in &scenario.model.workloads {
        if let kchaos_model::scenario::WorkloadSpec::Selftest(t) = &w.spec {
            notes.push(t.describe());
        }
    }
    let runner = match runner.get(progress).await {
        Ok(r) => r,
        Err(reason) => return pre.result(Verdict::Error, reason),
    };
    let kind = scenario.model.vm.image;
    let (cache, k, bytes, s) = (
        opts.cache.clone(),
        Arc::clone(kernel),
        runner.bytes.clone(),
        Arc::clone(scenario),
    );
    let image =
        match tokio::task::spawn_blocking(move || images::image_for(&cache, &k, &bytes, &s.model))
            .await
        {
            Ok(Ok(image)) => image,
            Ok(Err(e)) => {
                return pre.result(
                    Verdict::Error,
                    format!("building the {kind} image: {}", error_chain(&e)),
                )
            }
            Err(e) => {
                return pre.result(
                    Verdict::Error,
                    format!("building the {kind} image panicked: {e}"),
                )
            }
        };
    let spec = CellSpec {
        id: id.clone(),
        scenario: Arc::clone(scenario),
        kernel: Arc::clone(kernel),
        image,
        seed,
        repeat: 0,
        results_dir: dir.to_path_buf(),
        dir: dir.join(&scenario.model.name).join(&label),
    };
    let cell_progress = progress.cell(&id, &id);
    let mut result = cell::run(&spec, env, &|u| cell_progress.update(&u)).await;
    result.notes.splice(0..0, notes);
    cell_progress.done(&result);
    result
}

/// A cell decided without booting (a skip, or an infrastructure error before QEMU).
struct Preboot<'a> {
    dir: &'a Path,
    scenario: &'a LoadedScenario,
    spec: &'a str,
    kernel: Option<&'a Kernel>,
    label: &'a str,
    seed: u64,
}

impl Preboot<'_> {
    fn result(&self, verdict: Verdict, reason: String) -> CellResult {
        let (dir, kernel) = (self.dir, self.kernel);
        let id = format!("{}/{}", self.scenario.model.name, self.label);
        let cell_dir = dir.join(&self.scenario.model.name).join(self.label);
        let result = CellResult {
            id,
            scenario: self.scenario.model.name.clone(),
            scenario_file: self.scenario.path.display().to_string(),
            kernel: KernelInfo {
                spec: self.spec.to_owned(),
                resolved: kernel.map(|k| k.resolved.clone()),
                release: kernel.map(|k| k.release.clone()),
                package: kernel.and_then(|k| k.package.clone()),
            },
            accel: None,
            image: None,
            seed: self.seed,
            repeat: 0,
            verdict,
            reasons: vec![reason],
            fingerprint: None,
            boot_ms: None,
            guest_ready_ms: None,
            duration_ms: 0,
            metrics: Default::default(),
            signatures: Vec::new(),
            notes: Vec::new(),
            artifacts: Artifacts {
                dir: cell_dir
                    .strip_prefix(dir)
                    .ok()
                    .map(|p| p.display().to_string()),
                ..Artifacts::default()
            },
            started_at: now_rfc3339(),
        };
        if std::fs::create_dir_all(&cell_dir).is_ok() {
            let _ = write_json(&cell_dir.join("cell.json"), &result);
        }
        eprintln!(
            "kchaos: {}: {}: {}",
            result.id,
            result.verdict,
            result.reasons.join("; ")
        );
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
            c.kernel
                .resolved
                .clone()
                .unwrap_or_else(|| c.kernel.spec.clone()),
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
