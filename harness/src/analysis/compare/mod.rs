//! `kchaos compare`: did the candidate (a kernel, or a run) get worse than the baseline?
//!
//! Per scenario, the verdicts first, as failure rates: Fisher's exact test asks whether
//! the candidate fails (and, separately, crashes or hangs) more often than the baseline,
//! so a flaky check on the baseline neither hides a new crash nor turns one extra
//! failure into a regression. Like Chromium's Pinpoint it answers different (a
//! regression, or an improvement), same, or unknown: a higher failure rate the runs
//! cannot yet tell from chance is "inconclusive", with the runs per side that would.
//!
//! Then every metric, as one value per repeat (a histogram's p99, a counter's last
//! sample, a value; plus any statistic a check bounds). A change is a regression only
//! when it is both larger than the threshold (default 10% of the baseline median) and
//! beyond the noise of the repeats: a one-sided Mann–Whitney U test at `alpha` (default
//! 0.05) in the direction that is worse. When the repeats are too few for any data to
//! reach `alpha` (2 per side cannot go below p = 1/6), a large change is "inconclusive"
//! with the `--repeat` that could show it, never "within the noise". A bootstrap
//! interval of the median change says how sure the number is. Which direction is worse
//! comes from the scenario's checks (a `<=` bound means higher is worse); latencies
//! without a check are worse when higher; other metrics without a check are shown but
//! never called regressions.
//!
//! Last, each check's margin (its room to the bound, as a fraction of the bound): one
//! that shrank by more than the threshold in points of the bound, significantly, is
//! reported as eroded even while the check still passes. Erosion is reported, not
//! gated on: the bound is what the scenario calls acceptable.

use std::collections::BTreeSet;
use std::path::Path;

use kchaos_model::units::Unit;
use serde::Serialize;

use crate::results::sources::LoadedRun;
use crate::results::CellResult;

mod judge;
mod margins;
mod rates;
#[cfg(test)]
mod tests;

use self::judge::{by_scenario, check_directions, metric_rows};
use self::margins::margin_rows;
use self::rates::verdict_row;

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
    /// Worse beyond the threshold and the noise, or failing significantly more often.
    Regression,
    Improvement,
    /// A check's margin shrank beyond the threshold, significantly (it may still pass).
    MarginEroded,
    /// The runs cannot tell: too few repeats for any data to reach `alpha`, or a higher
    /// failure rate not yet distinguishable from chance. `repeats_needed` says how many
    /// would.
    Inconclusive,
    /// Within the threshold, or within the noise of enough repeats.
    Unchanged,
    Informational,
    /// Skipped, errored or missing on one side.
    NotComparable,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Regression => "REGRESSION",
            Outcome::Improvement => "improvement",
            Outcome::MarginEroded => "margin eroded",
            Outcome::Inconclusive => "inconclusive",
            Outcome::Unchanged => "unchanged",
            Outcome::Informational => "info",
            Outcome::NotComparable => "not comparable",
        }
    }
}

/// What a row compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RowKind {
    /// Failure rates; `baseline_text`/`candidate_text` hold the verdict counts.
    Verdict,
    /// A statistic per repeat; `change` is relative to the baseline median.
    Metric,
    /// A check's margin per repeat; `change` is the difference of the medians, in
    /// fractions of the bound (points).
    Margin,
}

/// One line of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    /// The topology both sides ran the scenario on, when the runs had a topology axis:
    /// a baseline and a candidate are compared per topology.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topology: Option<String>,
    pub kind: RowKind,
    /// `verdict`, `metric.stat` (`memory_stat_read.p99`), or `check ASSERTION`.
    pub what: String,
    pub unit: Unit,
    pub direction: Direction,
    pub baseline: Vec<f64>,
    pub candidate: Vec<f64>,
    /// For verdict rows: the verdict counts, e.g. `pass 5` and `pass 3, fail 2`.
    pub baseline_text: String,
    pub candidate_text: String,
    /// Relative change of the median (0.25 = 25% higher); `None` when the baseline
    /// median is zero and the candidate's is not. For margins, the difference of the
    /// medians (-0.30 = 30 points of the bound less room).
    pub change: Option<f64>,
    /// 95% bootstrap interval of `change`.
    pub interval: Option<(f64, f64)>,
    /// One-sided p-value in the worse direction (the larger direction if informational);
    /// Fisher's for verdicts, Mann–Whitney's otherwise.
    pub p: Option<f64>,
    pub outcome: Outcome,
    pub why: String,
    /// For `inconclusive`: the repeats per side that could show the change (`None`
    /// when more than [`MAX_RUNS_NEEDED`] would be needed).
    pub repeats_needed: Option<u64>,
}

/// Beyond this many runs per side, "how many would show it" is not worth a number.
pub const MAX_RUNS_NEEDED: u64 = 1000;

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
    /// Rows with `outcome`.
    pub fn count(&self, outcome: Outcome) -> usize {
        self.rows.iter().filter(|r| r.outcome == outcome).count()
    }

    /// What gates: `compare` exits 1 when this is not zero.
    pub fn regressions(&self) -> usize {
        self.count(Outcome::Regression)
    }
}

pub fn compare(base: &Side<'_>, cand: &Side<'_>, opts: CompareOptions) -> Comparison {
    let (b, c) = (by_scenario(base), by_scenario(cand));
    let columns: BTreeSet<&(String, Option<String>)> = b.keys().chain(c.keys()).collect();
    let mut rows = Vec::new();
    for column in columns {
        let empty = Vec::new();
        let (bc, cc) = (
            b.get(column).unwrap_or(&empty),
            c.get(column).unwrap_or(&empty),
        );
        let (scenario, topology) = column;
        let first = rows.len();
        rows.push(verdict_row(scenario, bc, cc, opts));
        let directions = check_directions(bc.iter().chain(cc.iter()).copied());
        rows.extend(metric_rows(scenario, bc, cc, &directions, opts));
        rows.extend(margin_rows(scenario, bc, cc, opts));
        for row in &mut rows[first..] {
            row.topology.clone_from(topology);
        }
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

pub(super) type Cells<'a> = Vec<(&'a LoadedRun, &'a CellResult)>;

pub fn is_results_path(text: &str) -> bool {
    let path = Path::new(text);
    (path.is_dir() && path.join("results.json").exists())
        || (path.is_file() && path.extension().is_some_and(|e| e == "db"))
}
