//! Judging one scenario: its verdicts on each side, then each metric's change against
//! the threshold and the noise of the repeats.

use std::collections::BTreeMap;

use kchaos_model::metrics::{Metric, MetricKind, Stat};
use kchaos_model::scenario::CmpOp;
use kchaos_model::stats;
use kchaos_model::units::Unit;
use kchaos_model::verdict::Verdict;

use super::{Cells, CompareOptions, Direction, Outcome, Row, Side};
use crate::results::sources::LoadedRun;
use crate::results::CellResult;

pub(super) fn by_scenario<'a>(side: &Side<'a>) -> BTreeMap<String, Cells<'a>> {
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

pub(super) fn verdict_row(
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
pub(super) fn check_directions<'a>(
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

pub(super) fn metric_rows(
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
