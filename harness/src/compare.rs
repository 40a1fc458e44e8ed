//! `kchaos compare`: did the candidate (a kernel, or a run) get worse than the baseline?
//!
//! Per scenario, the verdicts first: a scenario that never failed on the baseline and
//! fails, crashes or hangs on the candidate is a regression, whatever the numbers say.
//! Then every metric, as one value per repeat (a histogram's p99, a counter's last
//! sample, a value; plus any statistic a check bounds). A change is a regression only
//! when it is both larger than the threshold (default 10% of the baseline median) and
//! beyond the noise of the repeats: a one-sided Mann–Whitney U test at `alpha` (default
//! 0.05) in the direction that is worse. A bootstrap interval of the median change says
//! how sure the number is. Which direction is worse comes from the scenario's checks (a
//! `<=` bound means higher is worse); latencies without a check are worse when higher;
//! other metrics without a check are shown but never called regressions.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use kchaos_model::metrics::{Metric, MetricKind, Stat};
use kchaos_model::scenario::CmpOp;
use kchaos_model::stats;
use kchaos_model::units::Unit;
use kchaos_model::verdict::Verdict;
use serde::Serialize;

use crate::results::CellResult;
use crate::sources::LoadedRun;

#[derive(Debug, Clone, Copy)]
pub struct CompareOptions {
    /// Smallest relative change of the median that counts (0.10 = 10%).
    pub threshold: f64,
    /// Significance level of the one-sided test.
    pub alpha: f64,
    /// Seed of the bootstrap, so the same data always prints the same interval.
    pub seed: u64,
}

impl Default for CompareOptions {
    fn default() -> CompareOptions {
        CompareOptions {
            threshold: 0.10,
            alpha: 0.05,
            seed: 1,
        }
    }
}

/// One side of the comparison: the cells it selected, with the run each came from.
#[derive(Debug, Clone)]
pub struct Side<'a> {
    /// As the user named it.
    pub name: String,
    pub cells: Vec<(&'a LoadedRun, &'a CellResult)>,
}

impl<'a> Side<'a> {
    /// All cells of the given runs.
    pub fn runs(name: &str, runs: &'a [LoadedRun]) -> Side<'a> {
        Side {
            name: name.to_owned(),
            cells: runs
                .iter()
                .flat_map(|r| r.results.cells.iter().map(move |c| (r, c)))
                .collect(),
        }
    }

    /// The cells of `runs` whose kernel is `kernel`: the spec as asked (`debian:6.1-cloud`),
    /// as resolved (`debian:6.1.0-56-cloud`), its label (`debian-6.1.0-56-cloud`) or its
    /// `uname -r`.
    pub fn kernel(kernel: &str, runs: &'a [LoadedRun]) -> Side<'a> {
        Side {
            name: kernel.to_owned(),
            cells: runs
                .iter()
                .flat_map(|r| r.results.cells.iter().map(move |c| (r, c)))
                .filter(|(_, c)| kernel_matches(c, kernel))
                .collect(),
        }
    }
}

pub fn kernel_matches(cell: &CellResult, kernel: &str) -> bool {
    let k = &cell.kernel;
    k.spec == kernel
        || k.resolved.as_deref() == Some(kernel)
        || k.release.as_deref() == Some(kernel)
        || cell.kernel_label() == kernel
}

/// Which way a metric gets worse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    HigherIsWorse,
    LowerIsWorse,
    /// No check bounds it and it is not a latency: shown, never judged.
    Informational,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Regression,
    Improvement,
    /// Within the threshold or within the noise.
    Unchanged,
    /// Fewer than two usable repeats on a side: the change is shown, not judged.
    TooFewRepeats,
    Informational,
    /// Skipped, errored or missing on one side.
    NotComparable,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Regression => "REGRESSION",
            Outcome::Improvement => "improvement",
            Outcome::Unchanged => "unchanged",
            Outcome::TooFewRepeats => "too few repeats",
            Outcome::Informational => "info",
            Outcome::NotComparable => "not comparable",
        }
    }
}

/// One line of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    /// `verdict`, or `metric.stat` (`memory_stat_read.p99`).
    pub what: String,
    pub unit: Unit,
    pub direction: Direction,
    pub baseline: Vec<f64>,
    pub candidate: Vec<f64>,
    /// For verdict rows: the verdict counts, e.g. `pass 5` and `pass 3, fail 2`.
    pub baseline_text: String,
    pub candidate_text: String,
    /// Relative change of the median (0.25 = 25% higher); `None` when the baseline
    /// median is zero and the candidate's is not.
    pub change: Option<f64>,
    /// 95% bootstrap interval of `change`.
    pub interval: Option<(f64, f64)>,
    /// One-sided p-value in the worse direction (the larger direction if informational).
    pub p: Option<f64>,
    pub outcome: Outcome,
    pub why: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub baseline: String,
    pub candidate: String,
    pub baseline_cells: usize,
    pub candidate_cells: usize,
    pub threshold: f64,
    pub alpha: f64,
    pub rows: Vec<Row>,
}

impl Comparison {
    pub fn regressions(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| r.outcome == Outcome::Regression)
            .count()
    }
}

pub fn compare(base: &Side<'_>, cand: &Side<'_>, opts: CompareOptions) -> Comparison {
    let (b, c) = (by_scenario(base), by_scenario(cand));
    let scenarios: BTreeSet<&String> = b.keys().chain(c.keys()).collect();
    let mut rows = Vec::new();
    for scenario in scenarios {
        let empty = Vec::new();
        let (bc, cc) = (
            b.get(scenario).unwrap_or(&empty),
            c.get(scenario).unwrap_or(&empty),
        );
        rows.push(verdict_row(scenario, bc, cc));
        let directions = check_directions(bc.iter().chain(cc.iter()).copied());
        rows.extend(metric_rows(scenario, bc, cc, &directions, opts));
    }
    Comparison {
        baseline: base.name.clone(),
        candidate: cand.name.clone(),
        baseline_cells: base.cells.len(),
        candidate_cells: cand.cells.len(),
        threshold: opts.threshold,
        alpha: opts.alpha,
        rows,
    }
}

type Cells<'a> = Vec<(&'a LoadedRun, &'a CellResult)>;

fn by_scenario<'a>(side: &Side<'a>) -> BTreeMap<String, Cells<'a>> {
    let mut map: BTreeMap<String, Cells<'a>> = BTreeMap::new();
    for &(run, cell) in &side.cells {
        map.entry(cell.scenario.clone())
            .or_default()
            .push((run, cell));
    }
    map
}

fn verdict_counts(cells: &[(&LoadedRun, &CellResult)]) -> BTreeMap<Verdict, usize> {
    let mut counts = BTreeMap::new();
    for (_, cell) in cells {
        *counts.entry(cell.verdict).or_default() += 1;
    }
    counts
}

fn counts_text(counts: &BTreeMap<Verdict, usize>) -> String {
    if counts.is_empty() {
        return "no cells".to_owned();
    }
    counts
        .iter()
        .map(|(v, n)| format!("{v} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn verdict_row(
    scenario: &str,
    base: &[(&LoadedRun, &CellResult)],
    cand: &[(&LoadedRun, &CellResult)],
) -> Row {
    let (bv, cv) = (verdict_counts(base), verdict_counts(cand));
    let failures = |c: &BTreeMap<Verdict, usize>| {
        c.iter()
            .filter(|(v, _)| v.is_failure())
            .map(|(_, n)| n)
            .sum::<usize>()
    };
    let passes = |c: &BTreeMap<Verdict, usize>| c.get(&Verdict::Pass).copied().unwrap_or(0);
    let first_reason = |cells: &[(&LoadedRun, &CellResult)], want: fn(Verdict) -> bool| {
        cells
            .iter()
            .find(|(_, c)| want(c.verdict))
            .and_then(|(_, c)| c.reasons.first().cloned())
            .unwrap_or_default()
    };
    let (outcome, why) = if base.is_empty() || cand.is_empty() {
        let side = if base.is_empty() {
            "baseline"
        } else {
            "candidate"
        };
        (Outcome::NotComparable, format!("not run on the {side}"))
    } else if let Some(v) = new_failure(&bv, &cv) {
        let reason = cand
            .iter()
            .find(|(_, c)| c.verdict == v)
            .and_then(|(_, c)| c.reasons.first().cloned())
            .unwrap_or_default();
        let on_baseline = if failures(&bv) == 0 {
            "never fails on the baseline".to_owned()
        } else {
            format!("never a {v} on the baseline")
        };
        (
            Outcome::Regression,
            format!("{v} on the candidate, {on_baseline}: {reason}"),
        )
    } else if failures(&bv) > 0 && failures(&cv) == 0 && passes(&cv) > 0 {
        (
            Outcome::Improvement,
            "fails on the baseline, passes on the candidate".to_owned(),
        )
    } else if passes(&bv) == 0 || passes(&cv) == 0 {
        let (side, cells) = if passes(&cv) == 0 {
            ("candidate", cand)
        } else {
            ("baseline", base)
        };
        (
            Outcome::NotComparable,
            format!(
                "never passed on the {side}: {}",
                first_reason(cells, |v| v != Verdict::Pass)
            ),
        )
    } else {
        (Outcome::Unchanged, String::new())
    };
    Row {
        scenario: scenario.to_owned(),
        what: "verdict".to_owned(),
        unit: Unit::Count,
        direction: Direction::Informational,
        baseline: Vec::new(),
        candidate: Vec::new(),
        baseline_text: counts_text(&bv),
        candidate_text: counts_text(&cv),
        change: None,
        interval: None,
        p: None,
        outcome,
        why,
    }
}

/// A failing verdict the candidate shows and the baseline never did: any failure when
/// the baseline always passed, and a crash or hang when the baseline only ever failed a
/// check (a flaky latency bound on the baseline does not hide a new crash).
fn new_failure(
    base: &BTreeMap<Verdict, usize>,
    cand: &BTreeMap<Verdict, usize>,
) -> Option<Verdict> {
    let has = |c: &BTreeMap<Verdict, usize>, v: Verdict| c.get(&v).is_some_and(|n| *n > 0);
    if !has(base, Verdict::Pass) && !Verdict::ALL.iter().any(|v| v.is_failure() && has(base, *v)) {
        return None;
    }
    let base_fails = Verdict::ALL.iter().any(|v| v.is_failure() && has(base, *v));
    [Verdict::Crash, Verdict::Hang, Verdict::Fail]
        .into_iter()
        .find(|&v| has(cand, v) && !has(base, v) && (v != Verdict::Fail || !base_fails))
}

/// `(metric, stat)` → direction, from the scenario's checks (as the cells ran it).
fn check_directions<'a>(
    cells: impl Iterator<Item = (&'a LoadedRun, &'a CellResult)>,
) -> BTreeMap<(String, Stat), Direction> {
    let mut out = BTreeMap::new();
    let Some(path) = cells
        .into_iter()
        .find_map(|(run, cell)| run.scenario_copy(cell))
    else {
        return out;
    };
    let Ok(text) = std::fs::read_to_string(&path) else {
        return out;
    };
    let Ok(scenario) = kchaos_model::scenario::parse(&path.display().to_string(), &text) else {
        return out;
    };
    for check in &scenario.checks {
        let direction = match check.op {
            CmpOp::Lt | CmpOp::Le => Direction::HigherIsWorse,
            CmpOp::Gt | CmpOp::Ge => Direction::LowerIsWorse,
            _ => continue,
        };
        out.insert((check.metric.clone(), check.stat), direction);
    }
    out
}

/// The statistic compared by default for each kind of metric.
fn default_stat(kind: MetricKind) -> Stat {
    match kind {
        MetricKind::Histogram => Stat::P99,
        MetricKind::Series => Stat::Last,
        MetricKind::Value => Stat::Value,
    }
}

/// Only cells that ran their workload to the end have comparable numbers.
fn completed(cell: &CellResult) -> bool {
    matches!(cell.verdict, Verdict::Pass | Verdict::Fail)
}

fn metric_rows(
    scenario: &str,
    base: &[(&LoadedRun, &CellResult)],
    cand: &[(&LoadedRun, &CellResult)],
    directions: &BTreeMap<(String, Stat), Direction>,
    opts: CompareOptions,
) -> Vec<Row> {
    // Every (metric, stat) to compare, with its unit.
    let mut wanted: BTreeMap<(String, Stat), Unit> = BTreeMap::new();
    for (_, cell) in base.iter().chain(cand) {
        for (name, metric) in &cell.metrics {
            let stat = default_stat(metric.kind());
            wanted.insert((name.clone(), stat), stat.unit_for(metric.unit()));
        }
    }
    for (name, stat) in directions.keys() {
        let unit = base
            .iter()
            .chain(cand)
            .find_map(|(_, c)| c.metrics.get(name))
            .map(|m| stat.unit_for(m.unit()));
        if let Some(unit) = unit {
            wanted.insert((name.clone(), *stat), unit);
        }
    }
    let values = |cells: &[(&LoadedRun, &CellResult)], name: &str, stat: Stat| -> Vec<f64> {
        cells
            .iter()
            .filter(|(_, c)| completed(c))
            .filter_map(|(_, c)| c.metrics.get(name).and_then(|m: &Metric| m.stat(stat)))
            .collect()
    };
    let mut rows = Vec::new();
    for ((name, stat), unit) in wanted {
        let direction =
            directions
                .get(&(name.clone(), stat))
                .copied()
                .unwrap_or(if unit == Unit::Ns {
                    Direction::HigherIsWorse
                } else {
                    Direction::Informational
                });
        let (b, c) = (values(base, &name, stat), values(cand, &name, stat));
        rows.push(judge(
            scenario,
            format!("{name}.{}", stat.as_str()),
            unit,
            direction,
            b,
            c,
            opts,
        ));
    }
    rows
}

fn judge(
    scenario: &str,
    what: String,
    unit: Unit,
    direction: Direction,
    b: Vec<f64>,
    c: Vec<f64>,
    opts: CompareOptions,
) -> Row {
    let (bm, cm) = (stats::median(&b), stats::median(&c));
    let change = match (bm, cm) {
        (Some(bm), Some(cm)) if bm != 0.0 => Some(cm / bm - 1.0),
        (Some(_), Some(cm)) => (cm == 0.0).then_some(0.0),
        _ => None,
    };
    let interval = stats::bootstrap_relative_change(&b, &c, 2000, 0.95, opts.seed);
    let test = stats::mann_whitney(&b, &c);
    let p = test.as_ref().map(|t| match direction {
        Direction::HigherIsWorse => t.p_greater,
        Direction::LowerIsWorse => t.p_less,
        Direction::Informational => t.p_greater.min(t.p_less),
    });
    let text = |v: &[f64], m: Option<f64>| match m {
        Some(m) => format!("{} (n={})", unit.format(m), v.len()),
        None => "no data".to_owned(),
    };
    let mut row = Row {
        scenario: scenario.to_owned(),
        what,
        unit,
        direction,
        baseline_text: text(&b, bm),
        candidate_text: text(&c, cm),
        baseline: b,
        candidate: c,
        change,
        interval,
        p,
        outcome: Outcome::Unchanged,
        why: String::new(),
    };
    let (n1, n2) = (row.baseline.len(), row.candidate.len());
    if n1 == 0 || n2 == 0 {
        row.outcome = Outcome::NotComparable;
        row.why = "no values on one side".to_owned();
        return row;
    }
    if direction == Direction::Informational {
        row.outcome = Outcome::Informational;
        return row;
    }
    if n1 < 2 || n2 < 2 {
        row.outcome = Outcome::TooFewRepeats;
        row.why = "run with --repeat 3 or more to judge".to_owned();
        return row;
    }
    // Positive `worse` means a change for the worse; a zero baseline median with a
    // non-zero candidate is beyond any relative threshold.
    let sign = if direction == Direction::HigherIsWorse {
        1.0
    } else {
        -1.0
    };
    let worse = change.map_or(f64::INFINITY * sign * cm.unwrap_or(0.0).signum(), |x| {
        x * sign
    });
    let better_p = test.as_ref().map(|t| match direction {
        Direction::HigherIsWorse => t.p_less,
        _ => t.p_greater,
    });
    let significant = |p: Option<f64>| p.is_some_and(|p| p < opts.alpha);
    if worse > opts.threshold && significant(p) {
        row.outcome = Outcome::Regression;
        row.why = format!(
            "worse by more than {:.0}% and p = {:.3} < {}",
            opts.threshold * 100.0,
            p.unwrap_or(1.0),
            opts.alpha
        );
    } else if -worse > opts.threshold && significant(better_p) {
        row.outcome = Outcome::Improvement;
    } else if worse > opts.threshold {
        row.why = format!(
            "worse by more than {:.0}% but within the noise (p = {:.3})",
            opts.threshold * 100.0,
            p.unwrap_or(1.0)
        );
    }
    row
}

fn percent(x: f64) -> String {
    if x.is_infinite() {
        return if x > 0.0 { "+inf" } else { "-inf" }.to_owned();
    }
    format!("{:+.1}%", x * 100.0)
}

impl Row {
    pub fn change_text(&self) -> String {
        match self.change {
            Some(x) => percent(x),
            None if self.what == "verdict" => String::new(),
            None => "n/a".to_owned(),
        }
    }

    pub fn interval_text(&self) -> String {
        self.interval
            .map(|(lo, hi)| format!("[{}, {}]", percent(lo), percent(hi)))
            .unwrap_or_default()
    }

    pub fn p_text(&self) -> String {
        self.p.map(|p| format!("{p:.3}")).unwrap_or_default()
    }
}

/// The comparison as a terminal table, regressions first within each scenario.
pub fn table(cmp: &Comparison, all: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "baseline {} ({} cells) vs candidate {} ({} cells): regression = worse by more than {:.0}% \
         and one-sided Mann-Whitney p < {} over per-repeat values; CI = 95% bootstrap interval of \
         the median change",
        cmp.baseline,
        cmp.baseline_cells,
        cmp.candidate,
        cmp.candidate_cells,
        cmp.threshold * 100.0,
        cmp.alpha
    );
    let mut rows = vec![[
        "SCENARIO",
        "WHAT",
        "BASELINE",
        "CANDIDATE",
        "CHANGE",
        "95% CI",
        "P",
        "RESULT",
    ]
    .map(str::to_owned)];
    for r in &cmp.rows {
        let interesting = matches!(
            r.outcome,
            Outcome::Regression | Outcome::Improvement | Outcome::NotComparable
        ) || r.what == "verdict"
            || !r.why.is_empty();
        if !all && !interesting {
            continue;
        }
        let result = if r.why.is_empty() {
            r.outcome.as_str().to_owned()
        } else {
            format!("{}: {}", r.outcome.as_str(), r.why)
        };
        rows.push([
            r.scenario.clone(),
            r.what.clone(),
            r.baseline_text.clone(),
            r.candidate_text.clone(),
            r.change_text(),
            r.interval_text(),
            r.p_text(),
            result,
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for r in &rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i == 7 {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[i]);
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let regressions = cmp.regressions();
    let _ = writeln!(
        out,
        "{} regression{}{}",
        regressions,
        if regressions == 1 { "" } else { "s" },
        if all {
            ""
        } else {
            " (unchanged metrics hidden; --all shows them)"
        }
    );
    out
}

/// Whether `text` names a results directory or database rather than a kernel.
pub fn is_results_path(text: &str) -> bool {
    let path = Path::new(text);
    (path.is_dir() && path.join("results.json").exists())
        || (path.is_file() && path.extension().is_some_and(|e| e == "db"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::test_cell;
    use crate::store::empty_results;

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
}
