//! Comparisons of synthetic runs: regressions found, noise and identical data not.

use kchaos_model::verdict::Verdict;

use super::*;
use crate::results::store::empty_results;
use crate::results::test_cell;

/// Five repeats of `scenario` on `kernel` with the given p99s (ns) and verdicts.
fn run_with(kernel: &str, p99s: &[f64], verdict: Verdict) -> LoadedRun {
    let mut results = empty_results();
    for (i, p99) in p99s.iter().enumerate() {
        let mut cell = test_cell(&format!("memcg/{kernel}"), verdict, *p99);
        cell.repeat = u32::try_from(i).unwrap();
        cell.id = format!("memcg/{kernel}/r{i}");
        results.cells.push(cell);
    }
    LoadedRun {
        dir: "/nonexistent".into(),
        results,
    }
}

fn row<'a>(cmp: &'a Comparison, what: &str) -> &'a Row {
    cmp.rows.iter().find(|r| r.what == what).unwrap()
}

#[test]
fn a_synthetic_latency_regression_is_flagged() {
    let runs = vec![
        run_with(
            "a",
            &[1.00e6, 1.05e6, 0.98e6, 1.02e6, 1.01e6],
            Verdict::Pass,
        ),
        run_with(
            "b",
            &[1.50e6, 1.48e6, 1.55e6, 1.52e6, 1.49e6],
            Verdict::Pass,
        ),
    ];
    let cmp = compare(
        &Side::kernel("debian:a", &runs),
        &Side::kernel("debian:b", &runs),
        CompareOptions::default(),
    );
    let lat = row(&cmp, "lat.p99");
    assert_eq!(lat.outcome, Outcome::Regression, "{lat:?}");
    assert!((lat.change.unwrap() - 0.5).abs() < 0.03);
    let (lo, hi) = lat.interval.unwrap();
    assert!(lo > 0.3 && hi < 0.7, "{lo} {hi}");
    assert_eq!(cmp.regressions(), 1);
    // The other way round it is an improvement, not a regression.
    let back = compare(
        &Side::kernel("debian:b", &runs),
        &Side::kernel("debian:a", &runs),
        CompareOptions::default(),
    );
    assert_eq!(row(&back, "lat.p99").outcome, Outcome::Improvement);
    assert_eq!(back.regressions(), 0);
}

#[test]
fn identical_and_noisy_data_are_not_regressions() {
    let same = [1.0e6, 1.1e6, 0.9e6, 1.05e6, 0.95e6];
    let runs = vec![
        run_with("a", &same, Verdict::Pass),
        run_with("b", &same, Verdict::Pass),
    ];
    let cmp = compare(
        &Side::kernel("debian:a", &runs),
        &Side::kernel("debian:b", &runs),
        CompareOptions::default(),
    );
    assert_eq!(cmp.regressions(), 0, "{}", table(&cmp, true));
    assert_eq!(row(&cmp, "lat.p99").outcome, Outcome::Unchanged);
    assert_eq!(row(&cmp, "lat.p99").change, Some(0.0));
    // Big but noisy: overlapping repeats are not enough evidence.
    let runs = vec![
        run_with("a", &[1.0e6, 3.0e6, 1.2e6, 2.9e6, 1.1e6], Verdict::Pass),
        run_with("b", &[1.3e6, 3.1e6, 2.8e6, 1.15e6, 3.2e6], Verdict::Pass),
    ];
    let cmp = compare(
        &Side::kernel("debian:a", &runs),
        &Side::kernel("debian:b", &runs),
        CompareOptions::default(),
    );
    let lat = row(&cmp, "lat.p99");
    assert!(lat.change.unwrap() > 0.10, "{lat:?}");
    assert_eq!(lat.outcome, Outcome::Unchanged, "{lat:?}");
    assert!(lat.why.contains("within the noise"), "{lat:?}");
    // Significant but below the threshold.
    let runs = vec![
        run_with(
            "a",
            &[1.00e6, 1.01e6, 1.02e6, 1.00e6, 1.01e6],
            Verdict::Pass,
        ),
        run_with(
            "b",
            &[1.05e6, 1.06e6, 1.05e6, 1.07e6, 1.06e6],
            Verdict::Pass,
        ),
    ];
    let cmp = compare(
        &Side::kernel("debian:a", &runs),
        &Side::kernel("debian:b", &runs),
        CompareOptions::default(),
    );
    assert_eq!(row(&cmp, "lat.p99").outcome, Outcome::Unchanged);
    // Counters without a check are shown, never judged.
    assert_eq!(row(&cmp, "dying.last").outcome, Outcome::Informational);
}

#[test]
fn verdict_flips_are_always_regressions() {
    let runs = vec![
        run_with("a", &[1.0e6, 1.0e6, 1.0e6], Verdict::Pass),
        // Same numbers, but the candidate crashed once.
        {
            let mut r = run_with("b", &[1.0e6, 1.0e6, 1.0e6], Verdict::Pass);
            r.results.cells[1].verdict = Verdict::Crash;
            r.results.cells[1].reasons = vec!["kernel panic".into()];
            r
        },
    ];
    let cmp = compare(
        &Side::kernel("debian:a", &runs),
        &Side::kernel("debian:b", &runs),
        CompareOptions::default(),
    );
    let v = row(&cmp, "verdict");
    assert_eq!(v.outcome, Outcome::Regression);
    assert!(v.why.contains("kernel panic"), "{v:?}");
    assert_eq!(v.candidate_text, "pass 2, crash 1");
    // A flaky check failing on the baseline does not hide a new crash.
    let runs = vec![
        {
            let mut r = run_with("a", &[1.0e6, 1.0e6, 1.0e6], Verdict::Pass);
            r.results.cells[0].verdict = Verdict::Fail;
            r
        },
        {
            let mut r = run_with("b", &[1.0e6, 1.0e6, 1.0e6], Verdict::Pass);
            r.results.cells[2].verdict = Verdict::Crash;
            r
        },
    ];
    let cmp = compare(
        &Side::kernel("debian:a", &runs),
        &Side::kernel("debian:b", &runs),
        CompareOptions::default(),
    );
    let v = row(&cmp, "verdict");
    assert_eq!(v.outcome, Outcome::Regression, "{v:?}");
    assert!(
        v.why.starts_with("crash on the candidate, never a crash"),
        "{v:?}"
    );
    // ...but one more flaky check failure is not a flip.
    let runs = vec![
        {
            let mut r = run_with("a", &[1.0e6, 1.0e6, 1.0e6], Verdict::Pass);
            r.results.cells[0].verdict = Verdict::Fail;
            r
        },
        {
            let mut r = run_with("b", &[1.0e6, 1.0e6, 1.0e6], Verdict::Pass);
            r.results.cells[1].verdict = Verdict::Fail;
            r.results.cells[2].verdict = Verdict::Fail;
            r
        },
    ];
    let cmp = compare(
        &Side::kernel("debian:a", &runs),
        &Side::kernel("debian:b", &runs),
        CompareOptions::default(),
    );
    assert_ne!(row(&cmp, "verdict").outcome, Outcome::Regression);
    // Skipped on one side: not comparable, not a regression.
    let runs = vec![
        run_with("a", &[1.0e6, 1.0e6], Verdict::Pass),
        run_with("b", &[1.0e6, 1.0e6], Verdict::Skip),
    ];
    let cmp = compare(
        &Side::kernel("debian:a", &runs),
        &Side::kernel("debian:b", &runs),
        CompareOptions::default(),
    );
    assert_eq!(row(&cmp, "verdict").outcome, Outcome::NotComparable);
    assert_eq!(cmp.regressions(), 0);
}
