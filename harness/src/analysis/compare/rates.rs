//! Verdicts as failure rates: does the candidate fail more often than the baseline?
//!
//! Fisher's exact test on the counts, twice: any failure (`fail`, `hang`, `crash`), and
//! crashes or hangs alone, so a flaky check failing on the baseline does not hide a new
//! crash. Skipped and errored cells say nothing about the kernel and are not counted.
//! The answer is Pinpoint's: different (regression or improvement), same (unchanged),
//! or unknown (inconclusive: the candidate fails more often, but not yet beyond
//! chance; the row says how many runs per side would tell, if the rates held).

use std::collections::BTreeMap;

use kchaos_model::stats::{self, Fisher};
use kchaos_model::units::Unit;
use kchaos_model::verdict::Verdict;

use super::judge::cannot_reach;
use super::{CompareOptions, Direction, Outcome, Row, RowKind, MAX_RUNS_NEEDED};
use crate::results::sources::LoadedRun;
use crate::results::CellResult;

type Cells<'c, 'a> = &'c [(&'a LoadedRun, &'a CellResult)];

/// The counts of one side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Rates {
    /// Cells that ran to a verdict about the kernel: pass, fail, hang, crash.
    ran: u64,
    /// fail, hang or crash.
    failed: u64,
    /// hang or crash.
    severe: u64,
}

impl Rates {
    fn of(cells: Cells<'_, '_>) -> Rates {
        let mut r = Rates::default();
        for (_, c) in cells {
            if c.verdict == Verdict::Pass || c.verdict.is_failure() {
                r.ran += 1;
            }
            if c.verdict.is_failure() {
                r.failed += 1;
            }
            if matches!(c.verdict, Verdict::Crash | Verdict::Hang) {
                r.severe += 1;
            }
        }
        r
    }
}

/// One of the two questions asked of the counts.
#[derive(Debug, Clone, Copy)]
struct Question {
    /// `fails`, `crashes or hangs`.
    what: &'static str,
    base: u64,
    cand: u64,
    test: Fisher,
}

impl Question {
    fn rate(count: u64, ran: u64) -> f64 {
        count as f64 / ran as f64
    }

    /// `6 of 10 vs 1 of 10 on the baseline`.
    fn counts(&self, b: Rates, c: Rates) -> String {
        format!(
            "{} of {} vs {} of {} on the baseline",
            self.cand, c.ran, self.base, b.ran
        )
    }

    fn candidate_higher(&self, b: Rates, c: Rates) -> bool {
        Question::rate(self.cand, c.ran) > Question::rate(self.base, b.ran)
    }

    fn candidate_lower(&self, b: Rates, c: Rates) -> bool {
        Question::rate(self.cand, c.ran) < Question::rate(self.base, b.ran)
    }
}

pub(super) fn verdict_row(
    scenario: &str,
    base: Cells<'_, '_>,
    cand: Cells<'_, '_>,
    opts: CompareOptions,
) -> Row {
    let (bv, cv) = (verdict_counts(base), verdict_counts(cand));
    let mut row = Row {
        scenario: scenario.to_owned(),
        topology: None,
        kind: RowKind::Verdict,
        what: "verdict".to_owned(),
        unit: Unit::Count,
        direction: Direction::HigherIsWorse,
        baseline: Vec::new(),
        candidate: Vec::new(),
        baseline_text: counts_text(&bv),
        candidate_text: counts_text(&cv),
        change: None,
        interval: None,
        p: None,
        outcome: Outcome::Unchanged,
        why: String::new(),
        repeats_needed: None,
    };
    let (b, c) = (Rates::of(base), Rates::of(cand));
    for (side, cells, rates) in [("baseline", base, b), ("candidate", cand, c)] {
        if cells.is_empty() {
            row.outcome = Outcome::NotComparable;
            row.why = format!("not run on the {side}");
            return row;
        }
        if rates.ran == 0 {
            row.outcome = Outcome::NotComparable;
            row.why = format!(
                "no verdict about the kernel on the {side}: {}",
                first_reason(cells, |_| true)
            );
            return row;
        }
    }
    let ask = |what, base, cand| {
        fisher(base, b.ran, cand, c.ran).map(|test| Question {
            what,
            base,
            cand,
            test,
        })
    };
    let (Some(any), Some(severe)) = (
        ask("fails", b.failed, c.failed),
        ask("crashes or hangs", b.severe, c.severe),
    ) else {
        return row;
    };
    row.p = Some(any.test.p_greater.min(severe.test.p_greater));
    let alpha = opts.alpha;
    let reachable = stats::min_one_sided_p(as_usize(b.ran), as_usize(c.ran)) < alpha;
    // The more specific question first: a crash is worth naming as one.
    let worse = [severe, any]
        .into_iter()
        .find(|q| reachable && q.test.p_greater < alpha);
    if let Some(q) = worse {
        row.outcome = Outcome::Regression;
        row.p = Some(q.test.p_greater);
        row.why = format!(
            "{} more often: {} (Fisher p = {:.3} < {alpha}): {}",
            q.what,
            q.counts(b, c),
            q.test.p_greater,
            first_reason(cand, |v| v.is_failure())
        );
        return row;
    }
    if reachable && any.test.p_less < alpha {
        row.outcome = Outcome::Improvement;
        row.p = Some(any.test.p_less);
        row.why = format!(
            "fails less often: {} (Fisher p = {:.3} < {alpha})",
            any.counts(b, c),
            any.test.p_less
        );
        return row;
    }
    // Not significant. A higher rate on the candidate is unknown, not the same.
    if let Some(q) = [severe, any].into_iter().find(|q| q.candidate_higher(b, c)) {
        row.outcome = Outcome::Inconclusive;
        (row.repeats_needed, row.why) = need_more_runs(q, b, c, reachable, alpha, cand);
        return row;
    }
    row.why = unchanged_why(any, b, c);
    row
}

/// A higher rate on the candidate that the runs cannot tell from chance: how many runs
/// per side would show it, and why the row is inconclusive.
fn need_more_runs(
    q: Question,
    b: Rates,
    c: Rates,
    reachable: bool,
    alpha: f64,
    cand: Cells<'_, '_>,
) -> (Option<u64>, String) {
    let from = b.ran.max(c.ran) + 1;
    let needed = stats::fisher_runs_needed(
        Question::rate(q.base, b.ran),
        Question::rate(q.cand, c.ran),
        alpha,
        from,
        MAX_RUNS_NEEDED,
    );
    let sample = if reachable {
        format!("Fisher p = {:.3}", q.test.p_greater)
    } else {
        cannot_reach(as_usize(b.ran), as_usize(c.ran), "runs", alpha)
    };
    let more = match needed {
        Some(n) => format!("at these rates {n} per side would show it: rerun with --repeat {n}"),
        None => {
            format!("telling these rates apart takes more than {MAX_RUNS_NEEDED} runs per side")
        }
    };
    let why = format!(
        "need more runs: {} {}; {sample}; {more}; first failure: {}",
        q.what,
        q.counts(b, c),
        first_reason(cand, |v| v.is_failure())
    );
    (needed, why)
}

/// Why an unchanged verdict row is unchanged (nothing when neither side failed).
fn unchanged_why(any: Question, b: Rates, c: Rates) -> String {
    if any.base == 0 && any.cand == 0 {
        String::new()
    } else if any.base == b.ran && any.cand == c.ran {
        "fails in every run on both sides (a persistent failure)".to_owned()
    } else if any.candidate_lower(b, c) {
        format!(
            "fails less often: {}, not significant (Fisher p = {:.3})",
            any.counts(b, c),
            any.test.p_less
        )
    } else {
        format!("fails as often: {}", any.counts(b, c))
    }
}

fn fisher(fails_b: u64, runs_b: u64, fails_c: u64, runs_c: u64) -> Option<Fisher> {
    stats::fisher_exact(fails_b, runs_b, fails_c, runs_c)
}

fn as_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn verdict_counts(cells: Cells<'_, '_>) -> BTreeMap<Verdict, usize> {
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

/// The first reason of the first cell whose verdict `want`s.
fn first_reason(cells: Cells<'_, '_>, want: fn(Verdict) -> bool) -> String {
    cells
        .iter()
        .find(|(_, c)| want(c.verdict))
        .and_then(|(_, c)| c.reasons.first().cloned())
        .unwrap_or_default()
}
