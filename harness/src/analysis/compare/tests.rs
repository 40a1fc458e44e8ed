//! Comparisons of synthetic runs: regressions found, noise and identical data not.

use kchaos_model::verdict::Verdict;

use super::*;
use crate::fixtures::{a_and_b, compare_kernels, run_with};

fn row<'a>(cmp: &'a Comparison, what: &str) -> &'a Row {
    cmp.rows.iter().find(|r| r.what == what).unwrap()
}

#[test]
fn a_synthetic_latency_regression_is_flagged() {
    let runs = a_and_b(
        &[1.00e6, 1.05e6, 0.98e6, 1.02e6, 1.01e6],
        &[1.50e6, 1.48e6, 1.55e6, 1.52e6, 1.49e6],
    );
    let cmp = compare_kernels(&runs, "a", "b");
    let lat = row(&cmp, "lat.p99");
    assert_eq!(lat.outcome, Outcome::Regression, "{lat:?}");
    assert!((lat.change.unwrap() - 0.5).abs() < 0.03);
    let (lo, hi) = lat.interval.unwrap();
    assert!(lo > 0.3 && hi < 0.7, "{lo} {hi}");
    assert_eq!(cmp.regressions(), 1);
    // The other way round it is an improvement, not a regression.
    let back = compare_kernels(&runs, "b", "a");
    assert_eq!(row(&back, "lat.p99").outcome, Outcome::Improvement);
    assert_eq!(back.regressions(), 0);
}

#[test]
fn identical_and_noisy_data_are_not_regressions() {
    let same = [1.0e6, 1.1e6, 0.9e6, 1.05e6, 0.95e6];
    let runs = a_and_b(&same, &same);
    let cmp = compare_kernels(&runs, "a", "b");
    assert_eq!(cmp.regressions(), 0, "{:#?}", cmp.rows);
    assert_eq!(row(&cmp, "lat.p99").outcome, Outcome::Unchanged);
    assert_eq!(row(&cmp, "lat.p99").change, Some(0.0));
    // Big but noisy: overlapping repeats are not enough evidence.
    let runs = a_and_b(
        &[1.0e6, 3.0e6, 1.2e6, 2.9e6, 1.1e6],
        &[1.3e6, 3.1e6, 2.8e6, 1.15e6, 3.2e6],
    );
    let cmp = compare_kernels(&runs, "a", "b");
    let lat = row(&cmp, "lat.p99");
    assert!(lat.change.unwrap() > 0.10, "{lat:?}");
    assert_eq!(lat.outcome, Outcome::Unchanged, "{lat:?}");
    assert!(lat.why.contains("within the noise"), "{lat:?}");
    // Significant but below the threshold.
    let runs = a_and_b(
        &[1.00e6, 1.01e6, 1.02e6, 1.00e6, 1.01e6],
        &[1.05e6, 1.06e6, 1.05e6, 1.07e6, 1.06e6],
    );
    let cmp = compare_kernels(&runs, "a", "b");
    assert_eq!(row(&cmp, "lat.p99").outcome, Outcome::Unchanged);
    // Counters without a check are shown, never judged.
    assert_eq!(row(&cmp, "dying.last").outcome, Outcome::Informational);
}

/// One cell per verdict, in order, on `kernel`; failures give a reason naming their
/// verdict.
fn run_of(kernel: &str, verdicts: &[Verdict]) -> LoadedRun {
    let mut r = run_with(kernel, &vec![1.0e6; verdicts.len()], Verdict::Pass);
    for (cell, v) in r.results.cells.iter_mut().zip(verdicts) {
        cell.verdict = *v;
        cell.reasons = if *v == Verdict::Pass {
            Vec::new()
        } else {
            vec![format!("{v} reason")]
        };
    }
    r
}

/// `n` passes followed by `k` of `v`.
fn verdicts(pass: usize, v: Verdict, k: usize) -> Vec<Verdict> {
    let mut out = vec![Verdict::Pass; pass];
    out.extend(std::iter::repeat_n(v, k));
    out
}

/// case, baseline verdicts, candidate verdicts, outcome, repeats needed, why (prefix).
type RateCase = (
    &'static str,
    Vec<Verdict>,
    Vec<Verdict>,
    Outcome,
    Option<u64>,
    &'static str,
);

/// Verdicts as failure rates under Fisher's exact test: different, same or unknown, as
/// Pinpoint answers. The p-values quoted are scipy's (see `model::stats`' tests).
#[test]
fn verdict_rates_are_judged_by_fishers_exact_test() {
    use Outcome::{Improvement, Inconclusive, NotComparable, Regression, Unchanged};
    use Verdict::{Crash, Fail, Hang, Pass, Skip};
    let mix = |parts: &[(Verdict, usize)]| -> Vec<Verdict> {
        parts
            .iter()
            .flat_map(|&(v, n)| std::iter::repeat_n(v, n))
            .collect()
    };
    #[rustfmt::skip]
    let table: Vec<RateCase> = vec![
        // The two cases: 1 failure in 10 vs 6 in 10 is a regression (p = 0.029)…
        ("1/10 vs 6/10", verdicts(9, Fail, 1), verdicts(4, Fail, 6), Regression, None,
         "fails more often: 6 of 10 vs 1 of 10 on the baseline (Fisher p = 0.029 < 0.05): fail reason"),
        // …and 0 in 2 vs 1 in 2 is unknown, with the runs that would tell.
        ("0/2 vs 1/2", verdicts(2, Fail, 0), verdicts(1, Fail, 1), Inconclusive, Some(8),
         "need more runs: fails 1 of 2 vs 0 of 2 on the baseline; 2 runs per side cannot reach p < 0.05 \
          (the smallest possible p is 0.167); at these rates 8 per side would show it: rerun with --repeat 8; \
          first failure: fail reason"),
        // One crash in three: a flip that used to gate, now unknown (these runs-needed
        // numbers were checked with scipy's fisher_exact over the same rounding).
        ("0/3 vs crash 1/3", verdicts(3, Crash, 0), verdicts(2, Crash, 1), Inconclusive, Some(12),
         "need more runs: crashes or hangs 1 of 3 vs 0 of 3 on the baseline; 3 runs per side cannot"),
        // A flaky check on the baseline does not hide a new crash: any failure is 3 of
        // 10 against 5 of 10 (p = 0.32), crashes alone 0 of 10 against 5 (p = 0.016).
        ("flaky fail vs crashes", mix(&[(Pass, 7), (Fail, 3)]), mix(&[(Pass, 5), (Crash, 5)]), Regression, None,
         "crashes or hangs more often: 5 of 10 vs 0 of 10 on the baseline (Fisher p = 0.016 < 0.05): crash reason"),
        // …and one more flaky failure is not a regression.
        ("flaky 1/3 vs 2/3", verdicts(2, Fail, 1), verdicts(1, Fail, 2), Inconclusive, Some(18),
         "need more runs: fails 2 of 3 vs 1 of 3"),
        // Hangs count with crashes.
        ("hangs 0/10 vs 5/10", verdicts(10, Hang, 0), verdicts(5, Hang, 5), Regression, None,
         "crashes or hangs more often"),
        ("always vs never", verdicts(0, Fail, 5), verdicts(5, Fail, 0), Improvement, None,
         "fails less often: 0 of 5 vs 5 of 5 on the baseline (Fisher p = 0.004 < 0.05)"),
        ("fewer, not significantly", verdicts(8, Fail, 2), verdicts(10, Fail, 0), Unchanged, None,
         "fails less often: 0 of 10 vs 2 of 10 on the baseline, not significant (Fisher p = 0.237)"),
        ("as flaky", verdicts(8, Fail, 2), verdicts(8, Fail, 2), Unchanged, None,
         "fails as often: 2 of 10 vs 2 of 10 on the baseline"),
        ("persistent", verdicts(0, Fail, 3), verdicts(0, Fail, 3), Unchanged, None,
         "fails in every run on both sides"),
        ("all pass", verdicts(3, Fail, 0), verdicts(3, Fail, 0), Unchanged, None, ""),
        // Skips and errors say nothing about the kernel.
        ("skipped", verdicts(2, Fail, 0), vec![Skip, Skip], NotComparable, None,
         "no verdict about the kernel on the candidate: skip reason"),
        ("not run", verdicts(2, Fail, 0), Vec::new(), NotComparable, None, "not run on the candidate"),
    ];
    for (case, base, cand, outcome, needed, why) in table {
        let runs = vec![run_of("a", &base), run_of("b", &cand)];
        let cmp = compare_kernels(&runs, "a", "b");
        let v = row(&cmp, "verdict");
        assert_eq!(v.kind, RowKind::Verdict, "{case}");
        assert_eq!(v.outcome, outcome, "{case}: {v:?}");
        assert_eq!(v.repeats_needed, needed, "{case}: {v:?}");
        assert!(
            v.why.starts_with(why) || (why.is_empty() && v.why.is_empty()),
            "{case}: {}",
            v.why
        );
        assert_eq!(
            cmp.regressions(),
            usize::from(outcome == Regression),
            "{case}"
        );
    }
}

#[test]
fn verdict_counts_are_shown_per_side() {
    let runs = vec![
        run_of("a", &verdicts(3, Verdict::Fail, 0)),
        run_of("b", &[Verdict::Pass, Verdict::Crash, Verdict::Pass]),
    ];
    let cmp = compare_kernels(&runs, "a", "b");
    let v = row(&cmp, "verdict");
    assert_eq!(v.baseline_text, "pass 3");
    assert_eq!(v.candidate_text, "pass 2, crash 1");
}

/// The case: memory.stat p99 from 2.40 to 12.65 ms in both of 2 repeats is
/// +427%, but 2 repeats per side can never reach p < 0.05; that is inconclusive with
/// the `--repeat` that could show it, never "within the noise".
#[test]
fn too_few_repeats_are_inconclusive_not_within_the_noise() {
    let cases: &[(&[f64], &[f64], Outcome)] = &[
        (
            &[2.40e6, 2.41e6],
            &[12.65e6, 12.66e6],
            Outcome::Inconclusive,
        ),
        (&[2.40e6], &[12.65e6], Outcome::Inconclusive),
        // 3 per side: complete separation gives exactly 0.05, not below it.
        (
            &[1.0e6, 1.1e6, 1.2e6],
            &[2.0e6, 2.1e6, 2.2e6],
            Outcome::Inconclusive,
        ),
        // Within the threshold there is nothing to show.
        (&[1.00e6, 1.01e6], &[1.02e6, 1.03e6], Outcome::Unchanged),
        // 4 per side can show it.
        (
            &[1.0e6, 1.1e6, 1.2e6, 1.3e6],
            &[2.0e6, 2.1e6, 2.2e6, 2.3e6],
            Outcome::Regression,
        ),
    ];
    for &(b, c, outcome) in cases {
        let runs = a_and_b(b, c);
        let cmp = compare_kernels(&runs, "a", "b");
        let lat = row(&cmp, "lat.p99");
        assert_eq!(lat.outcome, outcome, "{b:?} {c:?}: {lat:?}");
        if outcome == Outcome::Inconclusive {
            assert_eq!(lat.repeats_needed, Some(4), "{lat:?}");
            let sizes = match b.len() {
                1 => "1 repeat per side".to_owned(),
                n => format!("{n} repeats per side"),
            };
            assert!(
                lat.why.starts_with(&format!(
                    "{sizes} cannot reach p < 0.05 (the smallest possible p is"
                )) && lat.why.ends_with("; rerun with --repeat 4"),
                "{}",
                lat.why
            );
        }
    }
    // Unequal sides: 10 against 2 can reach 1/66, so a clear shift is judged.
    let ten: Vec<f64> = (0..10).map(|i| 1.0e6 + f64::from(i) * 1e4).collect();
    let runs = a_and_b(&ten, &[3.0e6, 3.1e6]);
    let cmp = compare_kernels(&runs, "a", "b");
    let lat = row(&cmp, "lat.p99");
    assert_eq!(lat.outcome, Outcome::Regression, "{lat:?}");
    assert!((lat.p.unwrap() - 1.0 / 66.0).abs() < 1e-12, "{lat:?}");
}

/// `lat.p99 <= 4ms`: margins 0.75 → 0.35 lose 40 points of the bound while the check
/// still passes; 0.75 → 0.70 is within the threshold.
#[test]
fn eroded_margins_are_reported_even_when_the_check_passes() {
    let base = [1.00e6, 1.02e6, 0.98e6, 1.01e6, 0.99e6];
    let mut runs = a_and_b(&base, &[2.60e6, 2.62e6, 2.58e6, 2.61e6, 2.59e6]);
    runs.push(run_with(
        "c",
        &[1.20e6, 1.22e6, 1.18e6, 1.21e6, 1.19e6],
        Verdict::Pass,
    ));
    let cmp = compare_kernels(&runs, "a", "b");
    let m = row(&cmp, "check lat.p99 <= 4ms");
    assert_eq!(m.kind, RowKind::Margin);
    assert_eq!(m.outcome, Outcome::MarginEroded, "{m:?}");
    assert!((m.change.unwrap() + 0.40).abs() < 1e-9, "{m:?}");
    assert_eq!(m.baseline_text, "margin +75.0% (n=5)");
    assert_eq!(m.candidate_text, "margin +35.0% (n=5)");
    assert!(
        m.why
            .starts_with("still passes, 40 points of the bound less room (p = 0.004"),
        "{}",
        m.why
    );
    assert_eq!(m.change_text(), "-40.0 pts");
    assert_eq!(cmp.count(Outcome::MarginEroded), 1);
    // Erosion alone does not gate: the metric row is what regressed here.
    assert_eq!(cmp.regressions(), 1);
    let cmp = compare_kernels(&runs, "a", "c");
    assert_eq!(
        row(&cmp, "check lat.p99 <= 4ms").outcome,
        Outcome::Unchanged
    );
    // The other way round the room grew.
    let cmp = compare_kernels(&runs, "b", "a");
    assert_eq!(
        row(&cmp, "check lat.p99 <= 4ms").outcome,
        Outcome::Improvement
    );
}
