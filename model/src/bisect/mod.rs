//! Bisection over an ordered list (kernels, or the commits between two revisions) when
//! the symptom is intermittent and some points cannot be tested.
//!
//! A step runs the scenario N times on one point: any hit makes it bad (a hit is never
//! a false positive), no hit makes it good, wrongly so with probability `(1 - p)^N`
//! where `p` is the per-run reproduction probability on a bad point. N is chosen from
//! `p` (measured on the known-bad end) so that each good verdict holds at the wanted
//! confidence; the whole answer then holds at least at `1 - sum of the good steps'
//! error bounds`. A point that cannot be judged (it does not build or boot, or skips
//! the scenario) is `skip`, as `git bisect run` exit 125: it is left out and a
//! neighbour is tried; when skips hide the boundary the answer is "one of" them.
//!
//! Pure: [`Bisection`] is the search, [`plan::Planner`] the whole procedure
//! (calibrate, check the good end, bisect); the caller builds, boots and runs.

pub mod plan;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Runs per step so that "no hit in N runs" means good with `confidence`, when a bad
/// point reproduces with probability `p` per run: the smallest N with
/// `(1 - p)^N <= 1 - confidence`. `None` when `p` is 0 (nothing can be concluded) or
/// the inputs are out of range.
pub fn runs_needed(p: f64, confidence: f64) -> Option<u32> {
    if !(p > 0.0 && p <= 1.0 && confidence > 0.0 && confidence < 1.0) {
        return None;
    }
    if p >= 1.0 {
        return Some(1);
    }
    let n = ((1.0 - confidence).ln() / (1.0 - p).ln()).ceil();
    // Bounded: a tiny p asks for more runs than anyone will spend.
    if n.is_finite() && n <= f64::from(u32::MAX) {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some((n as u32).max(1))
    } else {
        None
    }
}

/// The chance that a bad point shows no hit in `runs` runs.
pub fn miss_probability(p: f64, runs: u32) -> f64 {
    (1.0 - p).clamp(0.0, 1.0).powf(f64::from(runs))
}

/// What a step concluded about its point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepVerdict {
    Good,
    Bad,
    /// Could not be judged: not built, not booted, or the scenario skipped.
    Skip,
}

impl std::fmt::Display for StepVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StepVerdict::Good => "good",
            StepVerdict::Bad => "bad",
            StepVerdict::Skip => "skip",
        })
    }
}

/// One tested point.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub index: usize,
    pub runs: u32,
    pub hits: u32,
    pub verdict: StepVerdict,
}

impl Step {
    pub fn is_bad(&self) -> bool {
        self.verdict == StepVerdict::Bad
    }
}

/// Where the first bad point is, once the search is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    FirstBad(usize),
    /// Skipped points hide the boundary: the first bad is one of these (the skipped
    /// points after the last good one, and the first bad one after them), in order.
    OneOf(Vec<usize>),
}

/// The state of a bisection over indexes `good < … < bad` of an ordered list.
#[derive(Debug, Clone)]
pub struct Bisection {
    good: usize,
    bad: usize,
    skipped: BTreeSet<usize>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BisectError {
    #[error("the good point (#{good}) must come before the bad one (#{bad}) in the list")]
    Order { good: usize, bad: usize },
    #[error(
        "#{index} is not between the last good point (#{good}) and the first bad one (#{bad})"
    )]
    OutOfRange {
        index: usize,
        good: usize,
        bad: usize,
    },
}

impl Bisection {
    pub fn new(good: usize, bad: usize) -> Result<Bisection, BisectError> {
        if good >= bad {
            return Err(BisectError::Order { good, bad });
        }
        Ok(Bisection {
            good,
            bad,
            skipped: BTreeSet::new(),
            steps: Vec::new(),
        })
    }

    /// The next point to test, or `None` when the search is over. The middle of the
    /// untested points between the last good and the first bad one; a skipped middle
    /// gives way to its nearest untested neighbour (the earlier one on a tie), as `git
    /// bisect skip` moves away from an untestable commit.
    pub fn next(&self) -> Option<usize> {
        let mid = self.good + (self.bad - self.good) / 2;
        (self.good + 1..self.bad)
            .filter(|i| !self.skipped.contains(i))
            .min_by_key(|&i| (i.abs_diff(mid), i))
    }

    fn check(&self, index: usize) -> Result<(), BisectError> {
        if index <= self.good || index >= self.bad {
            return Err(BisectError::OutOfRange {
                index,
                good: self.good,
                bad: self.bad,
            });
        }
        Ok(())
    }

    /// Records a judged step on `index`: any hit makes it bad.
    pub fn record(&mut self, index: usize, runs: u32, hits: u32) -> Result<(), BisectError> {
        self.check(index)?;
        let verdict = if hits > 0 {
            self.bad = index;
            StepVerdict::Bad
        } else {
            self.good = index;
            StepVerdict::Good
        };
        self.steps.push(Step {
            index,
            runs,
            hits,
            verdict,
        });
        Ok(())
    }

    /// Records that `index` could not be judged; the search goes around it.
    pub fn skip(&mut self, index: usize) -> Result<(), BisectError> {
        self.check(index)?;
        self.skipped.insert(index);
        self.steps.push(Step {
            index,
            runs: 0,
            hits: 0,
            verdict: StepVerdict::Skip,
        });
        Ok(())
    }

    /// The answer, once [`Bisection::next`] is `None`.
    pub fn answer(&self) -> Option<Answer> {
        if self.next().is_some() {
            return None;
        }
        let hidden: Vec<usize> = self
            .skipped
            .range(self.good + 1..self.bad)
            .copied()
            .collect();
        Some(if hidden.is_empty() {
            Answer::FirstBad(self.bad)
        } else {
            Answer::OneOf(hidden.into_iter().chain([self.bad]).collect())
        })
    }

    /// The first bad point, once the search is over and no skip hides it.
    pub fn first_bad(&self) -> Option<usize> {
        match self.answer() {
            Some(Answer::FirstBad(i)) => Some(i),
            _ => None,
        }
    }

    /// The last good point so far.
    pub fn last_good(&self) -> usize {
        self.good
    }

    /// A lower bound on the probability that the answer is right, if a bad point
    /// reproduces with probability `p`: each good step may be a bad point that missed.
    pub fn confidence(&self, p: f64) -> f64 {
        let wrong: f64 = self
            .steps
            .iter()
            .filter(|s| s.verdict == StepVerdict::Good)
            .map(|s| miss_probability(p, s.runs))
            .sum();
        (1.0 - wrong).max(0.0)
    }
}

#[cfg(test)]
mod tests;
