//! The statistics kchaos states its confidence with: Mann–Whitney U for "did this metric
//! move between two kernels beyond the noise of the repeats", a bootstrap interval for
//! how much, and Wilson's interval for a reproduction probability. Pure functions, no
//! I/O; bootstraps take a seed so a report is reproducible.

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

/// A bootstrap percentile interval (`level`, e.g. 0.95) for the relative change of the
/// median, `median(b) / median(a) - 1`. `None` when either side is empty or `a`'s
/// resampled medians can be zero.
pub fn bootstrap_relative_change(
    a: &[f64],
    b: &[f64],
    iterations: usize,
    level: f64,
    seed: u64,
) -> Option<(f64, f64)> {
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
        if ma == 0.0 {
            return None;
        }
        changes.push(mb / ma - 1.0);
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
        let (lo, hi) = bootstrap_relative_change(&a, &b, 2000, 0.95, 7).unwrap();
        assert!(
            lo > 0.4 && hi < 0.6 && lo <= 0.5 && 0.5 <= hi,
            "({lo}, {hi})"
        );
        assert_eq!(
            bootstrap_relative_change(&a, &b, 2000, 0.95, 7),
            Some((lo, hi))
        );
        assert_eq!(bootstrap_relative_change(&[0.0], &b, 10, 0.95, 1), None);
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
