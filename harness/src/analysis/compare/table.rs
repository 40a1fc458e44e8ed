//! The comparison as a terminal table.

use std::fmt::Write as _;

use super::{Comparison, Outcome, Row};

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
