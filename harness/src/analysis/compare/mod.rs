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

use std::collections::BTreeSet;
use std::path::Path;

use kchaos_model::units::Unit;
use serde::Serialize;

use crate::results::sources::LoadedRun;
use crate::results::CellResult;

mod judge;
mod table;
#[cfg(test)]
mod tests;

use self::judge::{by_scenario, check_directions, metric_rows, verdict_row};
pub use self::table::table;

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

pub(super) type Cells<'a> = Vec<(&'a LoadedRun, &'a CellResult)>;

pub fn is_results_path(text: &str) -> bool {
    let path = Path::new(text);
    (path.is_dir() && path.join("results.json").exists())
        || (path.is_file() && path.extension().is_some_and(|e| e == "db"))
}
