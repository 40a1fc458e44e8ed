//! A bisection's loop: ask the plan ([`Planner`]) what to do, prepare that point (a
//! list's kernel as it is, or a commit built incrementally), run its trials, record the
//! step (`bisect.json` after every one, so `--resume` loses nothing finished), until
//! the plan ends. Preparing and running are traits: the loop is the same for kernel
//! lists and commit ranges, and its tests drive it with a fake builder and fake runs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use kchaos_images::tree::{BuildSpace, Commit, TreeBuild, TreeError};
use kchaos_model::bisect::plan::{Action, Observed, Outcome, Phase, PlanError, Planner};
use kchaos_model::error_chain;

use super::session::Session;
use super::trials::{run_trials, TrialOptions};
use super::RunError;
use crate::analysis::bisect::{self, BisectRecord, Calibration, StepBuild, StepRecord};
use crate::analysis::reproduction::{Target, Trials};
use crate::results::now_rfc3339;

/// A point ready to run, or why it cannot be (a skip).
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// The kernel spec to boot, or why there is none (the commit does not build).
    pub kernel: Result<String, String>,
    pub build: Option<StepBuild>,
}

#[derive(Debug, thiserror::Error)]
pub enum BisectRunError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The host failed (git, the cache's disk), not the commit.
    #[error("{0}")]
    Host(String),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("interrupted")]
    Interrupted,
    #[error("Cannot record the bisection: {0}")]
    Journal(String),
}

/// Makes point `index` ready to boot.
pub trait PointBuilder {
    fn prepare(&mut self, index: usize) -> Result<Prepared, BisectRunError>;
}

/// One step's runs.
#[derive(Debug, Clone)]
pub struct RunRequest<'a> {
    pub phase: Phase,
    pub index: usize,
    pub kernel: &'a str,
    pub runs: u32,
    pub stop_at_first: bool,
    /// The step's results directory name, under the bisection's.
    pub dir: String,
}

/// What a step's runs gave.
#[derive(Debug, Clone)]
pub struct StepRun {
    pub trials: Trials,
    pub boot_ms: Option<u64>,
    pub seconds: f64,
}

/// Runs the scenario on a kernel.
pub trait PointRunner {
    fn run(&mut self, req: &RunRequest<'_>) -> Result<StepRun, BisectRunError>;
}

/// What the loop reports as it goes, for the terminal.
#[derive(Debug)]
pub enum Event<'a> {
    Starting {
        phase: Phase,
        index: usize,
        runs: u32,
    },
    Built(&'a Prepared),
    Done(&'a StepRecord),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Ended {
    Finished(Outcome),
    Interrupted,
}

/// A step's results directory: `calibrate-16`, `good-0`, `step-8`.
pub fn step_dir(phase: Phase, index: usize) -> String {
    let tag = match phase {
        Phase::Calibrate => "calibrate",
        Phase::CheckGood => "good",
        Phase::Bisect => "step",
    };
    format!("{tag}-{index}")
}

/// Runs the bisection to its end (or the user's interrupt), recording every step into
/// `record` and handing it to `journal` after each.
pub fn drive(
    planner: &mut Planner,
    record: &mut BisectRecord,
    builder: &mut dyn PointBuilder,
    runner: &mut dyn PointRunner,
    journal: &mut dyn FnMut(&BisectRecord) -> Result<(), String>,
    on: &mut dyn FnMut(Event<'_>),
) -> Result<Ended, BisectRunError> {
    let started = Instant::now();
    let wall_before = record.totals.wall_seconds;
    loop {
        let (phase, index, runs, stop_at_first) = match planner.next() {
            Action::Finished(outcome) => {
                record.finish(&outcome, now_rfc3339());
                record.totals.wall_seconds = wall_before + started.elapsed().as_secs_f64();
                journal(record).map_err(BisectRunError::Journal)?;
                return Ok(Ended::Finished(outcome));
            }
            Action::Run {
                phase,
                index,
                runs,
                stop_at_first,
            } => (phase, index, runs, stop_at_first),
        };
        on(Event::Starting { phase, index, runs });
        let prepared = match builder.prepare(index) {
            Ok(p) => p,
            Err(BisectRunError::Interrupted) => return Ok(Ended::Interrupted),
            Err(e) => return Err(e),
        };
        on(Event::Built(&prepared));
        let dir = step_dir(phase, index);
        let (observed, run) = match &prepared.kernel {
            Err(why) => (Observed::Skipped { why: why.clone() }, None),
            Ok(kernel) => {
                let run = runner.run(&RunRequest {
                    phase,
                    index,
                    kernel,
                    runs,
                    stop_at_first,
                    dir: dir.clone(),
                })?;
                if run.trials.interrupted {
                    return Ok(Ended::Interrupted);
                }
                (bisect::observe(&run.trials), Some(run))
            }
        };
        planner.record(&observed)?;
        if phase == Phase::Calibrate {
            record.calibration =
                planner
                    .calibration()
                    .map(|(hits, runs, probability, interval95)| Calibration {
                        hits,
                        runs,
                        probability,
                        interval95,
                    });
            record.runs_per_step = planner.runs_per_step();
        }
        let step = step_record(
            planner,
            record,
            phase,
            index,
            runs,
            &prepared,
            run.as_ref(),
            observed,
            dir,
        );
        on(Event::Done(&step));
        record.push(step);
        record.totals.wall_seconds = wall_before + started.elapsed().as_secs_f64();
        journal(record).map_err(BisectRunError::Journal)?;
    }
}

#[allow(clippy::too_many_arguments)]
fn step_record(
    planner: &Planner,
    record: &BisectRecord,
    phase: Phase,
    index: usize,
    planned_runs: u32,
    prepared: &Prepared,
    run: Option<&StepRun>,
    observed: Observed,
    dir: String,
) -> StepRecord {
    let point = record.points.get(index);
    let verdict = kchaos_model::bisect::plan::verdict_of(&observed);
    let (runs, hits, errors) = run.map_or((0, 0, 0), |r| {
        (r.trials.runs, r.trials.hits, r.trials.errors)
    });
    let (probability, interval95) = run.map_or((None, None), |r| bisect::probability(&r.trials));
    let why = match &observed {
        Observed::Skipped { why } => Some(why.clone()),
        Observed::Judged { .. } => None,
    };
    StepRecord {
        phase,
        index,
        point: point.map(|p| p.id.clone()).unwrap_or_default(),
        subject: point.and_then(|p| p.subject.clone()),
        kernel: prepared.kernel.as_ref().ok().cloned(),
        verdict,
        confidence: planner.step_confidence(verdict, runs),
        observed,
        runs,
        hits,
        errors,
        planned_runs,
        probability,
        interval95,
        build: prepared.build.clone(),
        boot_ms: run.and_then(|r| r.boot_ms),
        run_seconds: run.map_or(0.0, |r| r.seconds),
        results: run.map(|_| dir),
        why,
    }
}

/// The points of a kernel list: each spec as it is (the session resolves it; one that
/// cannot be resolved makes every run an `error`, and the step a skip).
#[derive(Debug)]
pub struct ListBuilder {
    pub specs: Vec<String>,
}

impl PointBuilder for ListBuilder {
    fn prepare(&mut self, index: usize) -> Result<Prepared, BisectRunError> {
        let spec = self
            .specs
            .get(index)
            .cloned()
            .ok_or_else(|| BisectRunError::Host(format!("no kernel #{index} in the list")))?;
        Ok(Prepared {
            kernel: Ok(spec),
            build: None,
        })
    }
}

/// The points of a commit range: each commit built in the build space.
pub struct TreeBuilder {
    pub space: BuildSpace,
    pub commits: Vec<Commit>,
    /// Polled while a build runs: the user's interrupt.
    pub cancel: Box<dyn Fn() -> bool>,
}

impl std::fmt::Debug for TreeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreeBuilder")
            .field("space", &self.space.root())
            .field("commits", &self.commits.len())
            .finish()
    }
}

impl PointBuilder for TreeBuilder {
    fn prepare(&mut self, index: usize) -> Result<Prepared, BisectRunError> {
        let commit = self
            .commits
            .get(index)
            .ok_or_else(|| BisectRunError::Host(format!("no commit #{index} in the range")))?;
        match self.space.build(commit, &*self.cancel) {
            Ok(built) => Ok(Prepared {
                kernel: Ok(built.spec.clone()),
                build: Some(step_build(&built)),
            }),
            Err(TreeError::Interrupted) => Err(BisectRunError::Interrupted),
            Err(e) if (self.cancel)() => {
                tracing::debug!("the build ended by the interrupt: {}", error_chain(&e));
                Err(BisectRunError::Interrupted)
            }
            Err(e) if e.is_unbuildable() => {
                let log = match &e {
                    TreeError::Build { log, .. } => Some(log.clone()),
                    _ => None,
                };
                let first_line = error_chain(&e)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                Ok(Prepared {
                    kernel: Err(format!("does not build: {first_line}")),
                    build: Some(StepBuild {
                        seconds: 0.0,
                        checkout_seconds: 0.0,
                        cached: false,
                        compiled: 0,
                        ccache_hits: None,
                        ccache_misses: None,
                        log,
                    }),
                })
            }
            Err(e) => Err(BisectRunError::Host(error_chain(&e))),
        }
    }
}

fn step_build(b: &TreeBuild) -> StepBuild {
    StepBuild {
        seconds: if b.cached { 0.0 } else { b.record.seconds },
        checkout_seconds: if b.cached {
            0.0
        } else {
            b.record.checkout_seconds
        },
        cached: b.cached,
        compiled: if b.cached { 0 } else { b.record.compiled },
        ccache_hits: b.record.ccache.filter(|_| !b.cached).map(|c| c.hits()),
        ccache_misses: b.record.ccache.filter(|_| !b.cached).map(|c| c.misses),
        log: Some(b.dir.join("build.log").display().to_string()),
    }
}

/// Runs steps through a session: every step's cells in its own results directory, all
/// of them in the bisection's one database.
#[derive(Debug)]
pub struct SessionRunner<'a> {
    pub rt: &'a tokio::runtime::Runtime,
    pub session: &'a Arc<Session>,
    pub scenario: PathBuf,
    pub target: Target,
    pub seed: Option<u64>,
    pub out: PathBuf,
    /// Results that could not be written, each naming its path.
    pub write_failures: Vec<String>,
}

impl PointRunner for SessionRunner<'_> {
    fn run(&mut self, req: &RunRequest<'_>) -> Result<StepRun, BisectRunError> {
        let dir = self.out.join(&req.dir);
        set_aside(&dir)?;
        let started = Instant::now();
        let trials = self.rt.block_on(run_trials(
            self.session,
            &TrialOptions {
                stop_at_first: req.stop_at_first,
                seed: self.seed,
                db: Some(crate::results::store::Store::path_in(&self.out)),
                require_boot: true,
                ..TrialOptions::new(
                    self.scenario.clone(),
                    req.kernel.to_owned(),
                    self.target.clone(),
                    req.runs,
                    dir.clone(),
                )
            },
        ))?;
        self.write_failures
            .extend(trials.write_failures.iter().cloned());
        let cells = crate::results::sources::load_dir(&dir)
            .map(|r| r.results.cells)
            .unwrap_or_default();
        Ok(StepRun {
            boot_ms: bisect::median_boot_ms(&cells),
            seconds: started.elapsed().as_secs_f64(),
            trials,
        })
    }
}

/// A step directory an interrupted bisection left half done is kept under another
/// name (results are never lost), and the step runs again.
fn set_aside(dir: &std::path::Path) -> Result<(), BisectRunError> {
    if !dir.exists() {
        return Ok(());
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let parent = dir.parent().unwrap_or(std::path::Path::new("."));
    let aside = (1..)
        .map(|n| parent.join(format!("{name}.interrupted-{n}")))
        .find(|p| !p.exists())
        .unwrap_or_else(|| parent.join(format!("{name}.interrupted")));
    tracing::info!(
        "keeping the interrupted step {} as {}",
        dir.display(),
        aside.display()
    );
    std::fs::rename(dir, &aside)
        .map_err(|e| BisectRunError::Host(format!("cannot move {} aside: {e}", dir.display())))
}

#[cfg(test)]
mod tests;
