//! Records that unit tests in more than one module build alike: the module that
//! computes a record and the one that renders it start from the same fixture, so each
//! test spells out only what it is about.

use kchaos_model::bisect::plan::{Observed, Phase};
use kchaos_model::bisect::StepVerdict;

use kchaos_model::verdict::Verdict;

use crate::analysis::bisect::{
    BisectRecord, Calibration, PlanOptionsRecord, Point, StepBuild, StepRecord, Totals,
};
use crate::analysis::compare::{compare, CompareOptions, Comparison, Side};
use crate::results::sources::LoadedRun;
use crate::results::store::empty_results;
use crate::results::{test_cell, KernelInfo};

/// Point `n` of a bisection: a full commit hash made of `n`, with `subject`.
pub fn point(n: usize, subject: String) -> Point {
    Point {
        id: format!("{n:040x}"),
        subject: Some(subject),
    }
}

/// An unfinished bisection of `scenario` over `points`, good at the first and bad at
/// the last, with no step yet: its bad end reproduced in 10 of 10 calibration runs,
/// which asks 3 runs of each step for 95% confidence in a good verdict.
pub fn bisect_record(scenario: &str, until: &str, points: Vec<Point>) -> BisectRecord {
    BisectRecord {
        kchaos_version: "0.1.0".into(),
        started_at: "2026-12-07T00:00:00Z".into(),
        finished_at: None,
        scenario: scenario.into(),
        until: until.into(),
        sets: Vec::new(),
        options: PlanOptionsRecord {
            calibrate: 10,
            runs: None,
            confidence: 0.95,
            seed: None,
        },
        source: None,
        good: 0,
        bad: points.len() - 1,
        points,
        calibration: Some(Calibration {
            hits: 10,
            runs: 10,
            probability: 1.0,
            interval95: (0.72, 1.0),
        }),
        runs_per_step: Some(3),
        steps: Vec::new(),
        outcome: None,
        totals: Totals::default(),
    }
}

/// Step `index` of a bisection at `point`: 3 runs on the kernel `path:/b` built as
/// `build`, no hit, no error, giving `verdict`.
pub fn step_record(
    phase: Phase,
    index: usize,
    point: &Point,
    verdict: StepVerdict,
    build: StepBuild,
) -> StepRecord {
    StepRecord {
        phase,
        index,
        point: point.id.clone(),
        subject: None,
        kernel: Some("path:/b".into()),
        verdict,
        observed: Observed::Judged { runs: 3, hits: 0 },
        runs: 3,
        hits: 0,
        errors: 0,
        planned_runs: 3,
        probability: Some(0.0),
        interval95: Some((0.0, 0.56)),
        confidence: Some(0.978),
        build: Some(build),
        boot_ms: Some(2100),
        run_seconds: 30.0,
        results: Some(format!("step-{index}")),
        why: None,
    }
}

/// Five repeats of `scenario` on `kernel` with the given p99s (ns) and verdicts.
pub fn run_with(kernel: &str, p99s: &[f64], verdict: Verdict) -> LoadedRun {
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

/// Passing runs on kernels `a` (the baseline's p99s) and `b` (the candidate's).
pub fn a_and_b(baseline: &[f64], candidate: &[f64]) -> Vec<LoadedRun> {
    vec![
        run_with("a", baseline, Verdict::Pass),
        run_with("b", candidate, Verdict::Pass),
    ]
}

/// `runs` compared from kernel `baseline` to kernel `candidate` (Debian's, by their
/// short names), with the default options.
pub fn compare_kernels(runs: &[LoadedRun], baseline: &str, candidate: &str) -> Comparison {
    compare(
        &Side::kernel(&format!("debian:{baseline}"), runs),
        &Side::kernel(&format!("debian:{candidate}"), runs),
        CompareOptions::default(),
    )
}

/// A kernel known only by its spec and what it resolved and reported: no package,
/// no Debian source, no commit.
pub fn kernel_info(spec: &str, resolved: Option<&str>, release: Option<&str>) -> KernelInfo {
    KernelInfo {
        spec: spec.into(),
        resolved: resolved.map(Into::into),
        release: release.map(Into::into),
        package: None,
        debian: None,
        source: None,
    }
}

/// Checks `text` (a rendered report) holds each of `wanted`; a failure names the piece
/// missing and shows the whole text.
#[track_caller]
pub fn assert_contains(text: &str, wanted: &[&str]) {
    for piece in wanted {
        assert!(text.contains(piece), "no `{piece}` in:\n{text}");
    }
}
