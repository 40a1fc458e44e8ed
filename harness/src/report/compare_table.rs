//! The comparison (`analysis::compare`) as a terminal table and its one-line summary.

use std::fmt::Write as _;

use crate::analysis::compare::{Comparison, Outcome, Row, RowKind};

fn percent(x: f64) -> String {
    if x.is_infinite() {
        return if x > 0.0 { "+inf" } else { "-inf" }.to_owned();
    }
    format!("{:+.1}%", x * 100.0)
}

/// A difference of margins, in points of the bound.
fn points(x: f64) -> String {
    format!("{:+.1} pts", x * 100.0)
}

impl Row {
    fn change_format(&self) -> fn(f64) -> String {
        match self.kind {
            RowKind::Margin => points,
            _ => percent,
        }
    }

    pub fn change_text(&self) -> String {
        match self.change {
            Some(x) => self.change_format()(x),
            None if self.kind == RowKind::Verdict => String::new(),
            None => "n/a".to_owned(),
        }
    }

    pub fn interval_text(&self) -> String {
        let f = self.change_format();
        self.interval
            .map(|(lo, hi)| format!("[{}, {}]", f(lo), f(hi)))
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
        "baseline {} ({} cells) vs candidate {} ({} cells): regression = failing more often \
         (Fisher's exact test, p < {alpha}), or a metric worse by more than {threshold:.0}% and \
         one-sided Mann-Whitney p < {alpha} over per-repeat values; margin eroded = a check's \
         room to its bound shrank by more than {threshold:.0} points, as significantly; \
         inconclusive = the runs cannot tell yet; CI = 95% bootstrap interval of the median change",
        cmp.baseline,
        cmp.baseline_cells,
        cmp.candidate,
        cmp.candidate_cells,
        threshold = cmp.threshold * 100.0,
        alpha = cmp.alpha
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
            Outcome::Regression
                | Outcome::Improvement
                | Outcome::MarginEroded
                | Outcome::Inconclusive
                | Outcome::NotComparable
        ) || r.kind == RowKind::Verdict
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
            crate::results::scenario_label(&r.scenario, r.topology.as_deref()),
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
    let _ = writeln!(
        out,
        "{}{}",
        summary(cmp),
        if all {
            ""
        } else {
            " (unchanged metrics hidden; --all shows them)"
        }
    );
    out
}

/// `1 regression, 2 inconclusive (more repeats needed), 1 check margin eroded`.
pub fn summary(cmp: &Comparison) -> String {
    let regressions = cmp.regressions();
    let mut parts = vec![format!(
        "{regressions} regression{}",
        if regressions == 1 { "" } else { "s" }
    )];
    let inconclusive = cmp.count(Outcome::Inconclusive);
    if inconclusive > 0 {
        parts.push(format!("{inconclusive} inconclusive (more repeats needed)"));
    }
    let eroded = cmp.count(Outcome::MarginEroded);
    if eroded > 0 {
        parts.push(format!(
            "{eroded} check margin{} eroded",
            if eroded == 1 { "" } else { "s" }
        ));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{a_and_b, assert_contains, compare_kernels};

    #[test]
    fn an_inconclusive_row_is_listed_by_default_and_counted() {
        let cases: &[(&[f64], &[f64])] = &[
            (&[2.40e6, 2.41e6], &[12.65e6, 12.66e6]),
            (&[2.40e6], &[12.65e6]),
            (&[1.0e6, 1.1e6, 1.2e6], &[2.0e6, 2.1e6, 2.2e6]),
        ];
        for (baseline, candidate) in cases {
            let cmp = compare_kernels(&a_and_b(baseline, candidate), "a", "b");
            // The p99 row and the margin of the check on it.
            assert_eq!(cmp.count(Outcome::Inconclusive), 2, "{baseline:?}");
            assert_contains(
                &table(&cmp, false),
                &[
                    "inconclusive: ",
                    "cannot reach p < 0.05",
                    "2 inconclusive (more repeats needed)",
                ],
            );
        }
    }

    #[test]
    fn an_eroded_margin_is_counted_in_the_summary() {
        let base = [1.00e6, 1.02e6, 0.98e6, 1.01e6, 0.99e6];
        let runs = a_and_b(&base, &[2.60e6, 2.62e6, 2.58e6, 2.61e6, 2.59e6]);
        let cmp = compare_kernels(&runs, "a", "b");
        assert_eq!(cmp.count(Outcome::MarginEroded), 1);
        assert_contains(&table(&cmp, false), &["1 check margin eroded"]);
    }
}
