//! The statistics kchaos states its confidence with: Mann–Whitney U for "did this metric
//! move between two kernels beyond the noise of the repeats", a bootstrap interval for
//! how much, Fisher's exact test for "does this kernel fail more often", the smallest
//! p-value a sample size can reach (so too few repeats read as inconclusive, not as
//! "no change"), and Wilson's interval for a reproduction probability. Pure functions,
//! no I/O; bootstraps take a seed so a report is reproducible.

use rand::{Rng, SeedableRng};

/// The 97.5th percentile of the standard normal: two-sided 95%.
pub const Z95: f64 = 1.959_963_984_540_054;

/// Median of the finite values, `None` when there are none.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Result of a Mann–Whitney U test of `b` against `a`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannWhitney {
    /// Pairs `(a_i, b_j)` with `b_j > a_i`, ties counting one half.
    pub u: f64,
    /// One-sided p-value for "`b` tends to be larger than `a`".
    pub p_greater: f64,
    /// One-sided p-value for "`b` tends to be smaller than `a`".
    pub p_less: f64,
    /// Whether the exact distribution was used (small samples, no ties).
    pub exact: bool,
}

/// Mann–Whitney U of `b` against `a`: exact for small samples without ties (the usual
/// case for a few repeats), else the normal approximation with tie and continuity
/// corrections. `None` when either side is empty.
pub fn mann_whitney(a: &[f64], b: &[f64]) -> Option<MannWhitney> {
    let (n1, n2) = (a.len(), b.len());
    if n1 == 0 || n2 == 0 {
        return None;
    }
    let mut u: f64 = 0.0;
    let mut ties = false;
    for &x in a {
        for &y in b {
            if y > x {
                u += 1.0;
            } else if y == x {
                u += 0.5;
                ties = true;
            }
        }
    }
    let pooled_ties = {
        let mut all: Vec<f64> = a.iter().chain(b).copied().collect();
        all.sort_by(f64::total_cmp);
        all.windows(2).any(|w| w[0] == w[1])
    };
    if !ties && !pooled_ties && n1 + n2 <= 40 {
        let dist = exact_u_distribution(n1, n2);
        let total: f64 = dist.iter().sum();
        // U takes integer values in 0..=n1*n2 here (no ties), so the cast is exact.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let k = u.round() as usize;
        let p_greater = dist[k..].iter().sum::<f64>() / total;
        let p_less = dist[..=k.min(dist.len() - 1)].iter().sum::<f64>() / total;
        return Some(MannWhitney {
            u,
            p_greater,
            p_less,
            exact: true,
        });
    }
    let (n1f, n2f) = (n1 as f64, n2 as f64);
    let mean = n1f * n2f / 2.0;
    let n = n1f + n2f;
    let tie_term = tie_correction(a, b);
    let var = n1f * n2f / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)));
    if var <= 0.0 {
        // Every value equal: no evidence either way.
        return Some(MannWhitney {
            u,
            p_greater: 1.0,
            p_less: 1.0,
            exact: false,
        });
    }
    let sd = var.sqrt();
    let z_greater = (u - mean - 0.5) / sd;
    let z_less = (u - mean + 0.5) / sd;
    Some(MannWhitney {
        u,
        p_greater: 1.0 - normal_cdf(z_greater),
        p_less: normal_cdf(z_less),
        exact: false,
    })
}

/// The smallest one-sided p-value any data can give two samples of `n1` and `n2`:
/// `1 / C(n1 + n2, n1)`. For Mann–Whitney it is complete separation without ties; for
/// Fisher's test of two failure counts, every run failing on one side and none on the
/// other. When it is not below the significance level, no outcome of the sample could
/// be significant, so a non-significant result says nothing about the change. 2 repeats
/// per side give 1/6, 3 give 1/20, 4 give 1/70.
pub fn min_one_sided_p(n1: usize, n2: usize) -> f64 {
    if n1 == 0 || n2 == 0 {
        return 1.0;
    }
    // Exactly, while the binomial coefficient is an exact integer in f64 (each step of
    // the product is itself a binomial coefficient): 3 per side must give 1/20 = 0.05,
    // not 0.0499999, or a test at 0.05 would look reachable when it is not.
    let (n, k) = (n1 + n2, n1.min(n2));
    let mut c = 1.0f64;
    for i in 1..=k {
        c = c * (n - k + i) as f64 / i as f64;
        if c > 2f64.powi(52) {
            return (-ln_choose(n, k)).exp();
        }
    }
    1.0 / c
}

/// The fewest repeats per side with which [`min_one_sided_p`] is below `alpha`, up to
/// `cap`: what `--repeat` must at least be for a test at `alpha` to be able to say
/// anything. `None` when even `cap` is not enough (or `alpha` is not in (0, 1]).
pub fn repeats_to_reach(alpha: f64, cap: usize) -> Option<usize> {
    if alpha <= 0.0 || alpha > 1.0 || alpha.is_nan() {
        return None;
    }
    (1..=cap).find(|&m| min_one_sided_p(m, m) < alpha)
}

/// Fisher's exact test of two failure counts: `fails_b` of `runs_b` (the baseline) and
/// `fails_c` of `runs_c` (the candidate).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fisher {
    /// One-sided p-value for "the candidate fails more often than the baseline".
    pub p_greater: f64,
    /// One-sided p-value for "the candidate fails less often".
    pub p_less: f64,
}

/// Fisher's exact test: given both sides' runs and the total number of failures, the
/// candidate's count of failures is hypergeometric if both fail equally often; the
/// p-values are its tails. `None` when a side has no runs or a count exceeds its runs.
pub fn fisher_exact(fails_b: u64, runs_b: u64, fails_c: u64, runs_c: u64) -> Option<Fisher> {
    if runs_b == 0 || runs_c == 0 || fails_b > runs_b || fails_c > runs_c {
        return None;
    }
    let to = |v: u64| usize::try_from(v).ok();
    let (runs_c, fails_c) = (to(runs_c)?, to(fails_c)?);
    let total = to(runs_b)?.checked_add(runs_c)?;
    let failures = to(fails_b)?.checked_add(fails_c)?;
    // The candidate's failures range over lo..=hi given the margins.
    let lo = failures.saturating_sub(total - runs_c);
    let hi = failures.min(runs_c);
    let ln_all = ln_choose(total, runs_c);
    let pmf = |x: usize| {
        (ln_choose(failures, x) + ln_choose(total - failures, runs_c - x) - ln_all).exp()
    };
    let tail = |range: std::ops::RangeInclusive<usize>| range.map(pmf).sum::<f64>().min(1.0);
    Some(Fisher {
        p_greater: tail(fails_c..=hi),
        p_less: tail(lo..=fails_c),
    })
}

/// The fewest runs per side at which failure rates of `rate_b` (baseline) and `rate_c`
/// (candidate), if they held, would make Fisher's test find the candidate failing more
/// often at `alpha`; searched from `from` to `cap` runs. Counts are rounded toward each
/// other (the candidate's down, the baseline's up), so the answer never rests on a
/// difference larger than the one observed. `None` when the candidate's rate is not
/// higher or `cap` runs are not enough.
pub fn fisher_runs_needed(
    rate_b: f64,
    rate_c: f64,
    alpha: f64,
    from: u64,
    cap: u64,
) -> Option<u64> {
    let valid = (0.0..=1.0).contains(&rate_b) && (0.0..=1.0).contains(&rate_c);
    if !valid || rate_c <= rate_b {
        return None;
    }
    // Rates are in [0, 1], so the counts are in 0..=m; the small epsilon keeps
    // 0.3 * 10 from becoming 2.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let count = |rate: f64, m: u64, up: bool| {
        let x = rate * m as f64;
        if up {
            (x - 1e-9).ceil() as u64
        } else {
            (x + 1e-9).floor() as u64
        }
    };
    (from.max(1)..=cap).find(|&m| {
        let reachable = usize::try_from(m).is_ok_and(|n| min_one_sided_p(n, n) < alpha);
        reachable
            && fisher_exact(count(rate_b, m, true), m, count(rate_c, m, false), m)
                .is_some_and(|f| f.p_greater < alpha)
    })
}

/// `ln C(n, k)`.
fn ln_choose(n: usize, k: usize) -> f64 {
    if k > n {
        return f64::NEG_INFINITY;
    }
    ln_factorial(n) - ln_factorial(k) - ln_factorial(n - k)
}

/// `ln n!`: summed exactly below 64, Stirling's series above (relative error < 1e-15
/// there), so a Fisher test over thousands of runs stays cheap.
fn ln_factorial(n: usize) -> f64 {
    if n < 64 {
        return (2..=n).map(|i| (i as f64).ln()).sum();
    }
    let x = n as f64;
    let x3 = x * x * x;
    x * x.ln() - x + 0.5 * (std::f64::consts::TAU * x).ln() + 1.0 / (12.0 * x) - 1.0 / (360.0 * x3)
        + 1.0 / (1260.0 * x3 * x * x)
}

/// `sum(t^3 - t)` over groups of tied values in the pooled sample.
fn tie_correction(a: &[f64], b: &[f64]) -> f64 {
    let mut all: Vec<f64> = a.iter().chain(b).copied().collect();
    all.sort_by(f64::total_cmp);
    let mut sum = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i + 1;
        while j < all.len() && all[j] == all[i] {
            j += 1;
        }
        let t = (j - i) as f64;
        sum += t * t * t - t;
        i = j;
    }
    sum
}

/// How many arrangements of `n1` a's and `n2` b's give each value of U (index = U).
fn exact_u_distribution(n1: usize, n2: usize) -> Vec<f64> {
    // counts[i][j][u]: arrangements of i a's and j b's with U = u, built up one element
    // at a time: the largest element is a b (it beats all i a's) or an a (beats none).
    let max = n1 * n2;
    let mut prev: Vec<Vec<f64>> = vec![vec![0.0; max + 1]; n2 + 1];
    for row in &mut prev {
        row[0] = 1.0;
    }
    for i in 1..=n1 {
        let mut cur: Vec<Vec<f64>> = vec![vec![0.0; max + 1]; n2 + 1];
        cur[0][0] = 1.0;
        for j in 1..=n2 {
            for u in 0..=max {
                // Largest is an a: U unchanged, from (i-1, j).
                let mut v = prev[j][u];
                // Largest is a b: it beats all i a's, from (i, j-1) with U - i.
                if u >= i {
                    v += cur[j - 1][u - i];
                }
                cur[j][u] = v;
            }
        }
        prev = cur;
    }
    prev.swap_remove(n2)
}

/// Standard normal CDF (Abramowitz–Stegun 7.1.26 for erf; |error| < 1.5e-7).
pub fn normal_cdf(z: f64) -> f64 {
    0.5 * (1.0 + erf(z / std::f64::consts::SQRT_2))
}

fn erf(x: f64) -> f64 {
    let sign = if x < 0.0 { -1.0 } else { 1.0 };
    let x = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    sign * (1.0 - poly * (-x * x).exp())
}

/// Bootstrap percentile intervals for the change between two samples' medians: how many
/// resamples, at which level, from which seed (the same seed gives the same interval,
/// so a report rendered twice does not move).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bootstrap {
    pub iterations: usize,
    /// The interval's coverage, e.g. 0.95.
    pub level: f64,
    pub seed: u64,
}

impl Bootstrap {
    /// 2000 resamples at 95%: what a comparison of recorded runs uses.
    pub fn new(seed: u64) -> Bootstrap {
        Bootstrap {
            iterations: 2000,
            level: 0.95,
            seed,
        }
    }

    /// The interval of the relative change of the median, `median(b) / median(a) - 1`.
    /// `None` when either side is empty or `a`'s resampled medians can be zero.
    pub fn relative_change(&self, a: &[f64], b: &[f64]) -> Option<(f64, f64)> {
        bootstrap(a, b, self, |ma, mb| (ma != 0.0).then(|| mb / ma - 1.0))
    }

    /// The interval of the difference of the medians, `median(b) - median(a)`: for
    /// quantities that are already fractions, like a check's margin, where a change is
    /// read in points, not relative to itself.
    pub fn difference(&self, a: &[f64], b: &[f64]) -> Option<(f64, f64)> {
        bootstrap(a, b, self, |ma, mb| Some(mb - ma))
    }
}

/// Percentile interval of `change(median(a*), median(b*))` over resamples; `None` when
/// a side is empty or `change` has no value for some resample.
fn bootstrap(
    a: &[f64],
    b: &[f64],
    how: &Bootstrap,
    change: impl Fn(f64, f64) -> Option<f64>,
) -> Option<(f64, f64)> {
    let Bootstrap {
        iterations,
        level,
        seed,
    } = *how;
    if a.is_empty() || b.is_empty() || iterations == 0 {
        return None;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut resample = |v: &[f64], buf: &mut Vec<f64>| {
        buf.clear();
        for _ in 0..v.len() {
            buf.push(v[rng.random_range(0..v.len())]);
        }
        median(buf)
    };
    let (mut ra, mut rb) = (Vec::new(), Vec::new());
    let mut changes = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let (ma, mb) = (resample(a, &mut ra)?, resample(b, &mut rb)?);
        changes.push(change(ma, mb)?);
    }
    changes.sort_by(f64::total_cmp);
    let tail = (1.0 - level) / 2.0;
    let at = |q: f64| {
        // q is in [0, 1], so the index is in 0..len.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let i = ((changes.len() - 1) as f64 * q).round() as usize;
        changes[i.min(changes.len() - 1)]
    };
    Some((at(tail), at(1.0 - tail)))
}

/// Wilson score interval for `hits` successes in `runs` trials at normal quantile `z`.
pub fn wilson(hits: u64, runs: u64, z: f64) -> (f64, f64) {
    if runs == 0 {
        return (0.0, 1.0);
    }
    let n = runs as f64;
    let p = hits as f64 / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = z * ((p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt()) / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN]), None);
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn exact_distribution_counts_every_arrangement() {
        // C(6,3) = 20 arrangements of 3 and 3; U is symmetric around 4.5.
        let d = exact_u_distribution(3, 3);
        assert_eq!(d.iter().sum::<f64>(), 20.0);
        assert_eq!(d, vec![1.0, 1.0, 2.0, 3.0, 3.0, 3.0, 3.0, 2.0, 1.0, 1.0]);
        assert_eq!(exact_u_distribution(1, 2), vec![1.0, 1.0, 1.0]);
    }

    #[test]
    fn complete_separation_of_three_repeats_is_p_one_in_twenty() {
        let a = [10.0, 11.0, 12.0];
        let b = [20.0, 21.0, 22.0];
        let mw = mann_whitney(&a, &b).unwrap();
        assert!(mw.exact);
        assert_eq!(mw.u, 9.0);
        assert!(close(mw.p_greater, 0.05, 1e-12), "{mw:?}");
        assert!(close(mw.p_less, 1.0, 1e-12));
        // Identical data: no evidence.
        let same = mann_whitney(&a, &a).unwrap();
        assert!(same.p_greater > 0.4 && same.p_less > 0.4, "{same:?}");
    }

    #[test]
    fn large_samples_use_the_normal_approximation() {
        let a: Vec<f64> = (0..30).map(f64::from).collect();
        let b: Vec<f64> = (0..30).map(|x| f64::from(x) + 15.0).collect();
        let mw = mann_whitney(&a, &b).unwrap();
        assert!(!mw.exact);
        // Reference values: scipy.stats.mannwhitneyu(b, a, method="asymptotic").
        assert!(close(mw.p_greater, 3.124e-7, 1e-9), "{mw:?}");
        assert!(close(mw.p_less, 0.999_999_7, 1e-7), "{mw:?}");
        let tied = mann_whitney(&[1.0, 1.0, 2.0], &[1.0, 2.0, 2.0]).unwrap();
        assert!(!tied.exact);
        assert!(close(tied.p_greater, 0.309_628, 1e-5), "{tied:?}");
    }

    #[test]
    fn normal_cdf_matches_known_values() {
        assert!(close(normal_cdf(0.0), 0.5, 1e-7));
        assert!(close(normal_cdf(Z95), 0.975, 1e-6));
        assert!(close(normal_cdf(-1.0), 0.158_655_25, 1e-6));
    }

    #[test]
    fn bootstrap_interval_brackets_the_change_and_is_reproducible() {
        let a = [100.0, 102.0, 98.0, 101.0, 99.0];
        let b = [150.0, 153.0, 147.0, 151.0, 149.0];
        let (lo, hi) = Bootstrap::new(7).relative_change(&a, &b).unwrap();
        assert!(
            lo > 0.4 && hi < 0.6 && lo <= 0.5 && 0.5 <= hi,
            "({lo}, {hi})"
        );
        assert_eq!(Bootstrap::new(7).relative_change(&a, &b), Some((lo, hi)));
        assert_eq!(
            Bootstrap {
                iterations: 10,
                ..Bootstrap::new(1)
            }
            .relative_change(&[0.0], &b),
            None
        );
    }

    #[test]
    fn the_smallest_p_a_sample_size_can_reach() {
        // Reference values: scipy.stats.mannwhitneyu(b, a, alternative="greater",
        // method="exact") on completely separated samples (scipy 1.17.1): n = 1..5 per
        // side gives 0.5, 1/6, 0.05, 0.0142857, 0.00396825; 2 against 3 gives 0.1.
        for (n, want) in [
            (1, 0.5),
            (2, 0.166_666_666_666_666_66),
            (3, 0.05),
            (4, 0.014_285_714_285_714_285),
            (5, 0.003_968_253_968_253_968),
        ] {
            assert!(close(min_one_sided_p(n, n), want, 1e-12), "{n}");
            // The exact test on separated data reaches exactly that bound.
            let a: Vec<f64> = (0..n).map(|i| i as f64).collect();
            let b: Vec<f64> = (0..n).map(|i| i as f64 + 100.0).collect();
            let mw = mann_whitney(&a, &b).unwrap();
            assert!(close(mw.p_greater, want, 1e-12), "{n}: {mw:?}");
        }
        assert!(close(min_one_sided_p(2, 3), 0.1, 1e-12));
        assert_eq!(min_one_sided_p(0, 5), 1.0);
        // 3 per side reach exactly 0.05, which is not below 0.05: 4 are needed.
        assert_eq!(repeats_to_reach(0.05, 64), Some(4));
        assert_eq!(repeats_to_reach(0.2, 64), Some(2));
        assert_eq!(repeats_to_reach(0.01, 64), Some(5));
        assert_eq!(repeats_to_reach(1e-300, 64), None);
        assert_eq!(repeats_to_reach(0.0, 64), None);
    }

    /// Reference values: `scipy.stats.fisher_exact([[fails_c, runs_c - fails_c],
    /// [fails_b, runs_b - fails_b]], alternative=...)` with scipy 1.17.1, "greater"
    /// and "less" (the candidate's row first, so "greater" is "fails more often").
    #[test]
    fn fisher_matches_scipy() {
        #[rustfmt::skip]
        let table: &[(u64, u64, u64, u64, f64, f64)] = &[
            // fails_b, runs_b, fails_c, runs_c, p_greater, p_less
            (1, 10, 6, 10, 0.028_637_770_897_832_815, 0.998_452_012_383_900_9),
            (0, 2, 1, 2, 0.5, 1.0),
            (0, 2, 2, 2, 0.166_666_666_666_666_66, 1.0),
            (2, 2, 0, 2, 1.0, 0.166_666_666_666_666_66),
            (0, 10, 5, 10, 0.016_253_869_969_040_248, 1.0),
            (1, 10, 1, 10, 0.763_157_894_736_842, 0.763_157_894_736_842),
            (0, 3, 3, 3, 0.050_000_000_000_000_01, 1.0),
            (0, 4, 4, 4, 0.014_285_714_285_714_284, 1.0),
            (4, 8, 0, 8, 1.0, 0.038_461_538_461_538_464),
            (1, 10, 2, 10, 0.5, 0.894_736_842_105_263_2),
            (2, 20, 7, 20, 0.063_693_063_693_063_7, 0.990_171_990_171_990_2),
            (0, 5, 0, 5, 1.0, 1.0),
            (5, 5, 5, 5, 1.0, 1.0),
            (10, 200, 30, 200, 0.000_642_466_379_722_599, 0.999_824_345_329_042_6),
        ];
        for &(fb, nb, fc, nc, greater, less) in table {
            let f = fisher_exact(fb, nb, fc, nc).unwrap();
            let case = format!("{fb}/{nb} vs {fc}/{nc}: {f:?}");
            assert!(close(f.p_greater, greater, 1e-12), "{case}");
            assert!(close(f.p_less, less, 1e-12), "{case}");
        }
        assert_eq!(fisher_exact(0, 0, 1, 2), None);
        assert_eq!(fisher_exact(3, 2, 1, 2), None);
    }

    #[test]
    fn runs_needed_for_observed_failure_rates() {
        // 0 of 2 against 1 of 2: at rates 0 and 0.5, 8 runs per side give 0/8 vs 4/8,
        // p = 70/1820 = 0.038 (6 give 0/6 vs 3/6, p = 0.091).
        assert_eq!(fisher_runs_needed(0.0, 0.5, 0.05, 3, 1000), Some(8));
        // Always against never: the separation bound, as for Mann–Whitney.
        assert_eq!(fisher_runs_needed(0.0, 1.0, 0.05, 1, 1000), Some(4));
        // 10% against 20%: 9/90 vs 18/90, p = 0.0468 (scipy's fisher_exact agrees;
        // 80 to 89 runs stay above 0.05).
        assert_eq!(fisher_runs_needed(0.1, 0.2, 0.05, 11, 1000), Some(90));
        // Not worse, or not within the cap: no number.
        assert_eq!(fisher_runs_needed(0.5, 0.5, 0.05, 1, 1000), None);
        assert_eq!(fisher_runs_needed(0.5, 0.2, 0.05, 1, 1000), None);
        assert_eq!(fisher_runs_needed(0.10, 0.11, 0.05, 1, 50), None);
    }

    #[test]
    fn ln_factorial_is_continuous_across_the_switch_to_stirling() {
        let exact: f64 = (2..=70).map(|i| f64::from(i).ln()).sum();
        assert!(close(ln_factorial(70), exact, 1e-9), "{}", ln_factorial(70));
        assert!(close(ln_factorial(64), ln_factorial(63) + 64f64.ln(), 1e-9));
    }

    #[test]
    fn bootstrap_difference_brackets_a_shift_in_points() {
        let a = [0.90, 0.92, 0.91, 0.89, 0.90];
        let b = [0.60, 0.62, 0.58, 0.61, 0.59];
        let (lo, hi) = Bootstrap::new(3).difference(&a, &b).unwrap();
        assert!(lo >= -0.34 && hi <= -0.27 && lo <= hi, "({lo}, {hi})");
    }

    #[test]
    fn wilson_interval() {
        // 5 of 10 at 95%: (0.2366, 0.7634).
        let (lo, hi) = wilson(5, 10, Z95);
        assert!(
            close(lo, 0.2366, 1e-4) && close(hi, 0.7634, 1e-4),
            "({lo}, {hi})"
        );
        let (lo, hi) = wilson(0, 20, Z95);
        assert_eq!(lo, 0.0);
        assert!(close(hi, 0.1611, 1e-4), "{hi}");
        assert_eq!(wilson(0, 0, Z95), (0.0, 1.0));
    }
}
