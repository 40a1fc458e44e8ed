//! Bisection over an ordered kernel list when the symptom is intermittent.
//!
//! A step runs the scenario N times on one kernel: any hit makes the kernel bad (a hit
//! is never a false positive), no hit makes it good, wrongly so with probability
//! `(1 - p)^N` where `p` is the per-run reproduction probability on a bad kernel. N is
//! chosen from `p` (measured on the known-bad end) so that each good verdict holds at
//! the wanted confidence; the whole answer then holds at least at
//! `1 - sum of the good steps' error bounds`. Pure: the caller runs the VMs.

/// Runs per step so that "no hit in N runs" means good with `confidence`, when a bad
/// kernel reproduces with probability `p` per run: the smallest N with
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

/// The chance that a bad kernel shows no hit in `runs` runs.
pub fn miss_probability(p: f64, runs: u32) -> f64 {
    (1.0 - p).clamp(0.0, 1.0).powf(f64::from(runs))
}

/// One tested kernel.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub index: usize,
    pub runs: u32,
    pub hits: u32,
}

impl Step {
    pub fn is_bad(&self) -> bool {
        self.hits > 0
    }
}

/// The state of a bisection over indexes `good < … < bad` of an ordered list.
#[derive(Debug, Clone)]
pub struct Bisection {
    good: usize,
    bad: usize,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BisectError {
    #[error("the good kernel (#{good}) must come before the bad one (#{bad}) in the list")]
    Order { good: usize, bad: usize },
}

impl Bisection {
    pub fn new(good: usize, bad: usize) -> Result<Bisection, BisectError> {
        if good >= bad {
            return Err(BisectError::Order { good, bad });
        }
        Ok(Bisection {
            good,
            bad,
            steps: Vec::new(),
        })
    }

    /// The next kernel to test, or `None` when the first bad one is known.
    pub fn next(&self) -> Option<usize> {
        (self.bad - self.good > 1).then(|| self.good + (self.bad - self.good) / 2)
    }

    /// Records a step on `index` (which must be the one [`Bisection::next`] gave).
    pub fn record(&mut self, index: usize, runs: u32, hits: u32) {
        let step = Step { index, runs, hits };
        if step.is_bad() {
            self.bad = index;
        } else {
            self.good = index;
        }
        self.steps.push(step);
    }

    /// The first bad kernel, once [`Bisection::next`] is `None`.
    pub fn first_bad(&self) -> Option<usize> {
        self.next().is_none().then_some(self.bad)
    }

    /// The last good kernel so far.
    pub fn last_good(&self) -> usize {
        self.good
    }

    /// A lower bound on the probability that the answer is right, if a bad kernel
    /// reproduces with probability `p`: each good step may be a bad kernel that missed.
    pub fn confidence(&self, p: f64) -> f64 {
        let wrong: f64 = self
            .steps
            .iter()
            .filter(|s| !s.is_bad())
            .map(|s| miss_probability(p, s.runs))
            .sum();
        (1.0 - wrong).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn runs_needed_follows_the_geometric_bound() {
        // (1 - 0.5)^5 = 0.031 <= 0.05 < (1 - 0.5)^4.
        assert_eq!(runs_needed(0.5, 0.95), Some(5));
        assert_eq!(runs_needed(0.3, 0.95), Some(9));
        assert_eq!(runs_needed(0.1, 0.99), Some(44));
        assert_eq!(runs_needed(1.0, 0.95), Some(1));
        assert_eq!(runs_needed(0.0, 0.95), None);
        assert_eq!(runs_needed(0.5, 1.0), None);
        assert!(miss_probability(0.3, 9) <= 0.05 && miss_probability(0.3, 8) > 0.05);
    }

    /// Bisects `len` kernels whose first bad one is `first_bad`, where a bad kernel
    /// reproduces with probability `p` per run; returns the answer.
    fn simulate(len: usize, first_bad: usize, p: f64, runs: u32, seed: u64) -> usize {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut b = Bisection::new(0, len - 1).unwrap();
        while let Some(i) = b.next() {
            let hits = if i >= first_bad {
                (0..runs).filter(|_| rng.random_bool(p)).count()
            } else {
                0
            };
            b.record(i, runs, u32::try_from(hits).unwrap());
        }
        b.first_bad().unwrap()
    }

    #[test]
    fn a_deterministic_oracle_finds_every_first_bad_kernel() {
        for len in 2..12 {
            for first_bad in 1..len {
                assert_eq!(simulate(len, first_bad, 1.0, 1, 0), first_bad);
            }
        }
        let mut b = Bisection::new(0, 16).unwrap();
        let mut steps = 0;
        while let Some(i) = b.next() {
            b.record(i, 1, u32::from(i >= 5));
            steps += 1;
        }
        assert_eq!((b.first_bad(), b.last_good(), steps), (Some(5), 4, 4));
        assert_eq!(b.confidence(1.0), 1.0);
        assert!(Bisection::new(3, 3).is_err());
    }

    #[test]
    fn a_flaky_oracle_needs_the_computed_number_of_runs() {
        // p = 0.3: with the runs for 99% per step, almost every bisection is right;
        // with one run per step, most are wrong.
        let p = 0.3;
        let runs = runs_needed(p, 0.99).unwrap();
        let right = |runs: u32| {
            (0..200)
                .filter(|&seed| simulate(16, 9, p, runs, seed) == 9)
                .count()
        };
        let (enough, one) = (right(runs), right(1));
        assert!(
            enough >= 190,
            "{enough}/200 right with {runs} runs per step"
        );
        assert!(one < 100, "{one}/200 right with 1 run per step");
        // The stated confidence is a true lower bound here.
        let mut b = Bisection::new(0, 15).unwrap();
        b.record(7, runs, 0);
        b.record(11, runs, 2);
        b.record(9, runs, 1);
        b.record(8, runs, 0);
        assert_eq!(b.first_bad(), Some(9));
        let c = b.confidence(p);
        assert!((0.98..1.0).contains(&c), "{c}");
    }
}
