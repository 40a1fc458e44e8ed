//! The whole bisection procedure as a state machine, for kernel lists and commit
//! ranges alike: calibrate on the bad end (how often does it reproduce?), plan the runs
//! per step from that, check that the good end does not reproduce, then bisect. The
//! caller asks [`Planner::next`] what to do, does it (build, boot, run), and reports
//! what it saw with [`Planner::record`]; nothing here builds or runs anything.
//!
//! A recorded bisection resumes by feeding the recorded results to a new planner in
//! order: the plan is deterministic, so it asks for the same steps again and the
//! results land where they were taken ([`Planner::replay`] checks that they do).

use serde::{Deserialize, Serialize};

use super::{miss_probability, runs_needed, Answer, BisectError, Bisection, StepVerdict};
use crate::stats;

/// What the user asked of the procedure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanOptions {
    /// Runs on the bad end to measure the reproduction probability.
    pub calibrate: u32,
    /// Runs per step, overriding the computed number.
    pub runs: Option<u32>,
    /// Wanted confidence in each good verdict.
    pub confidence: f64,
}

/// The part of the procedure a step belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Every run on the bad end, for the probability.
    Calibrate,
    /// The good end must not reproduce.
    CheckGood,
    /// A point between the ends.
    Bisect,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Run the scenario on point `index` up to `runs` times; `stop_at_first`: end the
    /// step at its first hit (one hit decides a point; calibration spends every run).
    Run {
        phase: Phase,
        index: usize,
        runs: u32,
        stop_at_first: bool,
    },
    Finished(Outcome),
}

/// What a step saw on its point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Observed {
    /// `runs` runs could be judged, `hits` of them reproduced.
    Judged { runs: u32, hits: u32 },
    /// Nothing could be judged: the point did not build or boot, every run was an
    /// infrastructure error, or the scenario skips on it.
    Skipped { why: String },
}

/// How the procedure ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The first bad point, exactly.
    Found {
        first_bad: usize,
        last_good: usize,
        confidence: f64,
    },
    /// Skipped points hide the boundary: the first bad is one of `candidates`.
    Ambiguous {
        candidates: Vec<usize>,
        last_good: usize,
        confidence: f64,
    },
    /// The bad end did not reproduce during calibration: nothing to bisect.
    BadDoesNotReproduce { runs: u32 },
    /// The good end reproduces too: not a regression inside this range.
    GoodReproduces { hits: u32, runs: u32 },
    /// An end could not be judged (`phase` says which).
    EndUntestable { phase: Phase, why: String },
    /// The probability is too low to plan a number of runs.
    ProbabilityTooLow { p_low: f64 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Range(#[from] BisectError),
    #[error("--confidence must be between 0 and 1 (exclusive), not {0}")]
    Confidence(String),
    #[error("--calibrate needs at least one run")]
    NoCalibration,
    #[error("nothing to record: the bisection is over")]
    Finished,
    #[error("recorded step {step} was taken on #{recorded} ({recorded_phase:?}), but this plan asks for #{wanted} ({wanted_phase:?}) there: it belongs to another bisection")]
    Diverged {
        step: usize,
        recorded: usize,
        recorded_phase: Phase,
        wanted: usize,
        wanted_phase: Phase,
    },
}

/// The procedure's state.
#[derive(Debug, Clone)]
pub struct Planner {
    opts: PlanOptions,
    good: usize,
    bad: usize,
    bisection: Bisection,
    /// Hits / runs on the bad end.
    calibration: Option<(u32, u32)>,
    good_checked: bool,
    runs_per_step: Option<u32>,
    /// The lower end of the probability's 95% interval: what the plan counts on.
    p_low: f64,
    outcome: Option<Outcome>,
}

impl Planner {
    pub fn new(good: usize, bad: usize, opts: PlanOptions) -> Result<Planner, PlanError> {
        if !(opts.confidence > 0.0 && opts.confidence < 1.0) {
            return Err(PlanError::Confidence(opts.confidence.to_string()));
        }
        if opts.calibrate == 0 {
            return Err(PlanError::NoCalibration);
        }
        Ok(Planner {
            opts,
            good,
            bad,
            bisection: Bisection::new(good, bad)?,
            calibration: None,
            good_checked: false,
            runs_per_step: None,
            p_low: 0.0,
            outcome: None,
        })
    }

    /// What to do next.
    pub fn next(&self) -> Action {
        if let Some(o) = &self.outcome {
            return Action::Finished(o.clone());
        }
        let runs = self.runs_per_step.unwrap_or(self.opts.calibrate);
        let run = |phase, index, stop_at_first| Action::Run {
            phase,
            index,
            runs,
            stop_at_first,
        };
        if self.calibration.is_none() {
            return Action::Run {
                phase: Phase::Calibrate,
                index: self.bad,
                runs: self.opts.calibrate,
                stop_at_first: false,
            };
        }
        if !self.good_checked {
            return run(Phase::CheckGood, self.good, true);
        }
        match self.bisection.next() {
            Some(i) => run(Phase::Bisect, i, true),
            None => Action::Finished(self.answer()),
        }
    }

    fn answer(&self) -> Outcome {
        let last_good = self.bisection.last_good();
        let confidence = self.bisection.confidence(self.p_low);
        match self.bisection.answer() {
            Some(Answer::OneOf(candidates)) => Outcome::Ambiguous {
                candidates,
                last_good,
                confidence,
            },
            Some(Answer::FirstBad(first_bad)) => Outcome::Found {
                first_bad,
                last_good,
                confidence,
            },
            // Only asked once the search is over, and an ended search has an answer.
            None => Outcome::Found {
                first_bad: self.bad,
                last_good,
                confidence,
            },
        }
    }

    /// Records what the step [`Planner::next`] asked for saw.
    pub fn record(&mut self, observed: &Observed) -> Result<(), PlanError> {
        let Action::Run { phase, index, .. } = self.next() else {
            return Err(PlanError::Finished);
        };
        match (phase, observed) {
            (_, Observed::Skipped { why }) if phase != Phase::Bisect => {
                self.outcome = Some(Outcome::EndUntestable {
                    phase,
                    why: why.clone(),
                });
            }
            (Phase::Calibrate, Observed::Judged { runs, hits }) => {
                self.calibrate(*runs, *hits);
            }
            (Phase::CheckGood, Observed::Judged { runs, hits }) => {
                self.good_checked = true;
                if *hits > 0 {
                    self.outcome = Some(Outcome::GoodReproduces {
                        hits: *hits,
                        runs: *runs,
                    });
                }
            }
            (_, Observed::Skipped { .. }) => self.bisection.skip(index)?,
            (Phase::Bisect, Observed::Judged { runs, hits }) => {
                self.bisection.record(index, *runs, *hits)?;
            }
        }
        if self.outcome.is_none() {
            if let Action::Finished(o) = self.next() {
                self.outcome = Some(o);
            }
        }
        Ok(())
    }

    fn calibrate(&mut self, runs: u32, hits: u32) {
        self.calibration = Some((hits, runs));
        if hits == 0 {
            self.outcome = Some(Outcome::BadDoesNotReproduce { runs });
            return;
        }
        // Plan with the pessimistic end of the interval: fewer hits than measured must
        // still be caught.
        let (lo, _) = stats::wilson(u64::from(hits), u64::from(runs), stats::Z95);
        self.p_low = lo;
        self.runs_per_step = match self.opts.runs {
            Some(r) => Some(r),
            None => runs_needed(lo, self.opts.confidence),
        };
        if self.runs_per_step.is_none() {
            self.outcome = Some(Outcome::ProbabilityTooLow { p_low: lo });
        }
    }

    /// Feeds recorded steps (phase, point, what it saw) to the plan in order, checking
    /// each was taken where this plan would take it.
    pub fn replay<'a>(
        &mut self,
        recorded: impl IntoIterator<Item = (Phase, usize, &'a Observed)>,
    ) -> Result<(), PlanError> {
        for (step, (phase, index, observed)) in recorded.into_iter().enumerate() {
            match self.next() {
                Action::Run {
                    phase: wanted_phase,
                    index: wanted,
                    ..
                } if wanted_phase == phase && wanted == index => self.record(observed)?,
                Action::Run {
                    phase: wanted_phase,
                    index: wanted,
                    ..
                } => {
                    return Err(PlanError::Diverged {
                        step,
                        recorded: index,
                        recorded_phase: phase,
                        wanted,
                        wanted_phase,
                    })
                }
                Action::Finished(_) => return Err(PlanError::Finished),
            }
        }
        Ok(())
    }

    /// The measured probability on the bad end: (hits, runs, p, 95% interval).
    pub fn calibration(&self) -> Option<(u32, u32, f64, (f64, f64))> {
        let (hits, runs) = self.calibration?;
        let p = if runs == 0 {
            0.0
        } else {
            f64::from(hits) / f64::from(runs)
        };
        let interval = stats::wilson(u64::from(hits), u64::from(runs), stats::Z95);
        Some((hits, runs, p, interval))
    }

    /// The runs each step gets, once calibrated.
    pub fn runs_per_step(&self) -> Option<u32> {
        self.runs_per_step
    }

    /// The probability the plan counts on (the lower end of the 95% interval).
    pub fn p_low(&self) -> f64 {
        self.p_low
    }

    /// How sure a step's verdict is: a bad verdict is certain (a hit is never a false
    /// positive), a good one holds unless a bad point missed `runs` times.
    pub fn step_confidence(&self, verdict: StepVerdict, runs: u32) -> Option<f64> {
        match verdict {
            StepVerdict::Bad => Some(1.0),
            StepVerdict::Good => Some(1.0 - miss_probability(self.p_low, runs)),
            StepVerdict::Skip => None,
        }
    }

    /// The ends this plan was made for.
    pub fn ends(&self) -> (usize, usize) {
        (self.good, self.bad)
    }
}

/// The verdict a step's observation gives its point (before a phase's own rules).
pub fn verdict_of(observed: &Observed) -> StepVerdict {
    match observed {
        Observed::Judged { hits, .. } if *hits > 0 => StepVerdict::Bad,
        Observed::Judged { .. } => StepVerdict::Good,
        Observed::Skipped { .. } => StepVerdict::Skip,
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
