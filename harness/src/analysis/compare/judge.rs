//! Judging one scenario's metrics: each one's change against the threshold and the
//! noise of the repeats, and whether the repeats could show a change at all.

use std::collections::BTreeMap;

use kchaos_model::metrics::{Metric, MetricKind, Stat};
use kchaos_model::scenario::CmpOp;
use kchaos_model::stats;
use kchaos_model::units::Unit;
use kchaos_model::verdict::Verdict;

use super::{Cells, CompareOptions, Direction, Outcome, Row, RowKind, Side};
use crate::results::sources::LoadedRun;
use crate::results::CellResult;

pub(super) fn by_scenario<'a>(side: &Side<'a>) -> BTreeMap<(String, Option<String>), Cells<'a>> {
    let mut map: BTreeMap<(String, Option<String>), Cells<'a>> = BTreeMap::new();
    for &(run, cell) in &side.cells {
        map.entry(cell.column()).or_default().push((run, cell));
    }
    map
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

/// `2 repeats per side cannot reach p < 0.05 (the smallest possible p is 0.167)`: why a
/// sample of this size says nothing either way, whatever its numbers.
pub(super) fn cannot_reach(n1: usize, n2: usize, what: &str, alpha: f64) -> String {
    // `repeats` → `repeat` for one.
    let noun = |n: usize| {
        if n == 1 {
            what.strip_suffix('s').unwrap_or(what)
        } else {
            what
        }
    };
    let sizes = if n1 == n2 {
        format!("{n1} {} per side", noun(n1))
    } else {
        format!("{n1} baseline and {n2} candidate {}", noun(n2))
    };
    format!(
        "{sizes} cannot reach p < {alpha} (the smallest possible p is {:.3})",
        stats::min_one_sided_p(n1, n2)
    )
}

/// Repeats are searched up to this many per side for `--repeat M`.
const MAX_REPEATS: usize = 64;

/// The inconclusive verdict on a change beyond the threshold that `n1` and `n2`
/// repeats cannot show: the message and the `--repeat` that could.
pub(super) fn inconclusive(row: &mut Row, alpha: f64) {
    let (n1, n2) = (row.baseline.len(), row.candidate.len());
    let needed = stats::repeats_to_reach(alpha, MAX_REPEATS);
    row.outcome = Outcome::Inconclusive;
    row.repeats_needed = needed.and_then(|m| u64::try_from(m).ok());
    row.why = match needed {
        Some(m) => format!(
            "{}; rerun with --repeat {m}",
            cannot_reach(n1, n2, "repeats", alpha)
        ),
        None => cannot_reach(n1, n2, "repeats", alpha),
    };
}

/// A row of per-repeat values, judged: `change` and `worse` in the row's terms (relative
/// for metrics, points for margins), the one-sided p-values from Mann–Whitney.
pub(super) struct Judged {
    /// Positive: a change for the worse beyond nothing; compared with the threshold.
    pub worse: f64,
    /// p for "worse", and for "better".
    pub p_worse: Option<f64>,
    pub p_better: Option<f64>,
}

/// Regression, improvement, inconclusive, within the noise, or unchanged.
pub(super) fn decide(row: &mut Row, j: &Judged, opts: CompareOptions, worse_outcome: Outcome) {
    let (n1, n2) = (row.baseline.len(), row.candidate.len());
    // Only the exact test's bound counts: with ties, the normal approximation can dip
    // below alpha for samples whose exact test never could.
    let reachable = stats::min_one_sided_p(n1, n2) < opts.alpha;
    let significant = |p: Option<f64>| reachable && p.is_some_and(|p| p < opts.alpha);
    let beyond = j.worse.abs() > opts.threshold;
    if j.worse > opts.threshold && significant(j.p_worse) {
        row.outcome = worse_outcome;
        row.why = format!(
            "worse by more than {} and p = {:.3} < {}",
            threshold_text(row.kind, opts.threshold),
            j.p_worse.unwrap_or(1.0),
            opts.alpha
        );
    } else if -j.worse > opts.threshold && significant(j.p_better) {
        row.outcome = Outcome::Improvement;
    } else if beyond && !reachable {
        inconclusive(row, opts.alpha);
    } else if j.worse > opts.threshold {
        row.why = format!(
            "worse by more than {} but within the noise (p = {:.3})",
            threshold_text(row.kind, opts.threshold),
            j.p_worse.unwrap_or(1.0)
        );
    }
}

/// `10%` of the baseline median, or `10 points` of the bound for margins.
fn threshold_text(kind: RowKind, threshold: f64) -> String {
    match kind {
        RowKind::Margin => format!("{:.0} points of the bound", threshold * 100.0),
        _ => format!("{:.0}%", threshold * 100.0),
    }
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
    let interval = stats::Bootstrap::new(opts.seed).relative_change(&b, &c);
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
        topology: None,
        kind: RowKind::Metric,
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
        repeats_needed: None,
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
    let p_better = test.as_ref().map(|t| match direction {
        Direction::HigherIsWorse => t.p_less,
        _ => t.p_greater,
    });
    decide(
        &mut row,
        &Judged {
            worse,
            p_worse: p,
            p_better,
        },
        opts,
        Outcome::Regression,
    );
    row
}
