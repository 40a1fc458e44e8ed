//! Trials through a session: fresh VMs of one scenario on one kernel, slots refilled as
//! cells finish, until the wanted outcome shows up or the budget is spent. Every run is
//! an ordinary recorded cell of one results directory (replayable, reportable); the
//! kernel and the runner come from the session, prepared once for every trial series
//! (each configuration of a sweep, each step of a bisection).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use super::lock::ResultsLock;
use super::matrix::host_info;
use super::progress::Progress;
use super::recorder::Recorder;
use super::scheduler::{self, Ended, Flow};
use super::session::{random_seed, Job, Session};
use super::RunError;
use crate::analysis::reproduction::{Target, Trials};
use crate::plan::{self, CellKey};
use crate::results::{PlanInfo, RunResults};
use crate::scenario;

#[derive(Debug, Clone)]
pub struct TrialOptions {
    pub scenario: PathBuf,
    /// The kernel spec (names already expanded).
    pub kernel: String,
    pub target: Target,
    pub max_runs: u32,
    /// Stop at the first hit (false: spend the whole budget, for a probability).
    pub stop_at_first: bool,
    pub out: PathBuf,
    /// A fixed seed: every run uses exactly it (`repro --seed`, `replay`).
    pub seed: Option<u64>,
    /// The database to record into [default: `out/results.db`]; a bisection keeps
    /// every step's cells in one.
    pub db: Option<PathBuf>,
    /// A run whose kernel never reached the runner judges nothing (`bisect`).
    pub require_boot: bool,
}

impl TrialOptions {
    /// Up to `max_runs` runs of `scenario` on `kernel` until `target` shows up, recorded
    /// in `out`, stopping at the first hit: a new seed per run, the directory's own
    /// database, a run whose kernel never booted judged like any other.
    pub fn new(
        scenario: PathBuf,
        kernel: String,
        target: Target,
        max_runs: u32,
        out: PathBuf,
    ) -> TrialOptions {
        TrialOptions {
            scenario,
            kernel,
            target,
            max_runs,
            stop_at_first: true,
            out,
            seed: None,
            db: None,
            require_boot: false,
        }
    }
}

pub async fn run_trials(session: &Arc<Session>, opts: &TrialOptions) -> Result<Trials, RunError> {
    let loaded =
        scenario::load_all(std::slice::from_ref(&opts.scenario)).map_err(RunError::Scenarios)?;
    if loaded.len() != 1 {
        return Err(RunError::NotOneScenario {
            path: opts.scenario.display().to_string(),
            count: loaded.len(),
        });
    }
    let Some(scenario) = loaded.into_iter().next() else {
        return Err(RunError::NotOneScenario {
            path: opts.scenario.display().to_string(),
            count: 0,
        });
    };
    let lock = ResultsLock::acquire(&opts.out)?;
    if RunResults::path(&opts.out).exists() {
        return Err(RunError::Exists {
            dir: opts.out.display().to_string(),
        });
    }
    let plan_info = PlanInfo {
        scenarios: vec![opts.scenario.display().to_string()],
        kernels: vec![opts.kernel.clone()],
        repeat: opts.max_runs,
        shard: None,
        seed: opts.seed,
        topologies: Vec::new(),
    };
    let order: HashMap<CellKey, usize> = (0..opts.max_runs)
        .map(|repeat| {
            (
                CellKey {
                    scenario: scenario.model.name.clone(),
                    kernel: opts.kernel.clone(),
                    topology: None,
                    repeat,
                },
                repeat as usize,
            )
        })
        .collect();
    let results = RunResults::starting(host_info(session), plan_info.clone());
    let plan_json = serde_json::to_string(&plan_info).unwrap_or_default();
    let mut rec = Recorder::open(&opts.out, opts.db.as_deref(), results, &plan_json, order);

    let start = Instant::now();
    let mut trials = Trials::new(opts.out.clone());
    if opts.require_boot {
        trials = trials.requiring_boot();
    }
    let slots = session.opts.jobs;
    let progress = Arc::new(Progress::new(opts.max_runs as usize));
    let fixed = opts.seed.or(scenario.model.seed);
    let jobs = (0..opts.max_runs).map(|repeat| Job {
        scenario: Arc::clone(&scenario),
        kernel: opts.kernel.clone(),
        topology: None,
        repeat,
        repeats: opts.max_runs,
        // A fixed seed means exactly that run, again and again.
        seed: match opts.seed {
            Some(seed) => seed,
            None => plan::cell_seed(fixed, repeat, random_seed),
        },
        // A cell whose signature already makes it a hit ends at once: seconds, not the
        // scenario's duration, per hit.
        until: Some(opts.target.clone()),
    });
    let slots_u32 = u32::try_from(slots).unwrap_or(u32::MAX);
    let ended = scheduler::drive(session, slots, jobs, &opts.out, &progress, |cell| {
        trials.record(&cell, &opts.target, start.elapsed());
        rec.push(cell);
        if trials.should_stop(opts.stop_at_first, slots_u32) {
            Flow::Stop
        } else {
            Flow::Continue
        }
    })
    .await;
    progress.finish();
    trials.interrupted = ended == Ended::Interrupted;
    rec.finish(trials.interrupted);
    drop(lock);
    trials.write_failures = rec.failures().to_vec();
    Ok(trials)
}
