//! Each check's margin on both sides: how much room to its bound the candidate kept.
//!
//! A margin is a fraction of the bound (`model::scenario::CheckResult`), so a change
//! is read as the difference of the medians in points of the bound: 0.90 → 0.55 lost
//! 35 points. Eroded means more points lost than the threshold (10 by default) and a
//! one-sided Mann–Whitney test on the per-repeat margins at `alpha`, as for metrics.
//! Checks against a zero bound have no margin and get no row; their metric's row
//! covers them.

use std::collections::BTreeMap;

use kchaos_model::stats;
use kchaos_model::units::Unit;

use super::judge::{decide, Judged};
use super::{CompareOptions, Direction, Outcome, Row, RowKind};
use crate::results::sources::LoadedRun;
use crate::results::CellResult;

type Cells<'c, 'a> = &'c [(&'a LoadedRun, &'a CellResult)];

pub(super) fn margin_rows(
    scenario: &str,
    base: Cells<'_, '_>,
    cand: Cells<'_, '_>,
    opts: CompareOptions,
) -> Vec<Row> {
    // assertion → (baseline margins, candidate margins, every candidate check passed)
    let mut by_check: BTreeMap<&str, (Vec<f64>, Vec<f64>, bool)> = BTreeMap::new();
    for (side, cells) in [(0, base), (1, cand)] {
        for (_, cell) in cells {
            for check in &cell.checks {
                let Some(m) = check.margin.filter(|m| m.is_finite()) else {
                    continue;
                };
                let entry = by_check
                    .entry(check.assert.as_str())
                    .or_insert_with(|| (Vec::new(), Vec::new(), true));
                if side == 0 {
                    entry.0.push(m);
                } else {
                    entry.1.push(m);
                    entry.2 &= check.passed();
                }
            }
        }
    }
    by_check
        .into_iter()
        .map(|(assert, (b, c, passes))| judge_margin(scenario, assert, b, c, passes, opts))
        .collect()
}

fn judge_margin(
    scenario: &str,
    assert: &str,
    b: Vec<f64>,
    c: Vec<f64>,
    candidate_passes: bool,
    opts: CompareOptions,
) -> Row {
    let (bm, cm) = (stats::median(&b), stats::median(&c));
    let text = |v: &[f64], m: Option<f64>| match m {
        Some(m) => format!("margin {:+.1}% (n={})", m * 100.0, v.len()),
        None => "no margin".to_owned(),
    };
    let test = stats::mann_whitney(&b, &c);
    let mut row = Row {
        scenario: scenario.to_owned(),
        topology: None,
        kind: RowKind::Margin,
        what: format!("check {assert}"),
        unit: Unit::Ratio,
        direction: Direction::LowerIsWorse,
        baseline_text: text(&b, bm),
        candidate_text: text(&c, cm),
        change: bm.zip(cm).map(|(bm, cm)| cm - bm),
        interval: stats::Bootstrap::new(opts.seed).difference(&b, &c),
        p: test.map(|t| t.p_less),
        baseline: b,
        candidate: c,
        outcome: Outcome::Unchanged,
        why: String::new(),
        repeats_needed: None,
    };
    let Some(change) = row.change else {
        row.outcome = Outcome::NotComparable;
        let side = if row.baseline.is_empty() {
            "baseline"
        } else {
            "candidate"
        };
        row.why = format!("no margin on the {side} (the check did not run there)");
        return row;
    };
    decide(
        &mut row,
        &Judged {
            worse: -change,
            p_worse: test.map(|t| t.p_less),
            p_better: test.map(|t| t.p_greater),
        },
        opts,
        Outcome::MarginEroded,
    );
    if row.outcome == Outcome::MarginEroded {
        let still = if candidate_passes {
            "still passes, "
        } else {
            ""
        };
        row.why = format!(
            "{still}{:.0} points of the bound less room (p = {:.3} < {})",
            -change * 100.0,
            row.p.unwrap_or(1.0),
            opts.alpha
        );
    }
    row
}
