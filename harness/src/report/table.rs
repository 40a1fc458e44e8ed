//! What the terminal shows at the end of a command: `kchaos run`'s summary table (one
//! row per cell), a trial series' report (`repro`), the gate's classes (`gate`, `run
//! --known`). The numbers come from `analysis/`; this only lays them out.

use std::fmt::Write as _;

use crate::analysis::classify::{Gate, GateExit};
use crate::analysis::reproduction::{Target, Trials};
use crate::results::RunResults;

/// Longest reason shown in a row; the rest is in the results.
const WHY_WIDTH: usize = 120;

/// The terminal summary table; a TOPOLOGY column when the run had a topology axis.
pub fn summary_table(results: &RunResults) -> String {
    let topologies = results.cells.iter().any(|c| c.topology.is_some());
    let mut head = vec!["SCENARIO", "KERNEL"];
    if topologies {
        head.push("TOPOLOGY");
    }
    head.extend(["VERDICT", "BOOT", "TIME", "WHY"]);
    let mut rows: Vec<Vec<String>> = vec![head.into_iter().map(str::to_owned).collect()];
    let repeated = results.plan.as_ref().is_some_and(|p| p.repeat > 1);
    for c in &results.cells {
        let secs = |ms: u64| format!("{:.1}s", ms as f64 / 1000.0);
        let kernel = c
            .kernel
            .resolved
            .clone()
            .unwrap_or_else(|| c.kernel.spec.clone());
        let mut row = vec![
            c.scenario.clone(),
            // Repeats are told apart by their number.
            if repeated {
                format!("{kernel} #{}", c.repeat)
            } else {
                kernel
            },
        ];
        if topologies {
            row.push(c.topology.clone().unwrap_or_else(|| "-".to_owned()));
        }
        row.extend([
            c.verdict.to_string(),
            c.boot_ms.map(secs).unwrap_or_else(|| "-".to_owned()),
            secs(c.duration_ms),
            c.reasons.first().cloned().unwrap_or_default(),
        ]);
        rows.push(row);
    }
    let last = rows[0].len() - 1;
    let widths: Vec<usize> = (0..last)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < last {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            } else {
                let mut why: String = cell.chars().take(WHY_WIDTH).collect();
                if cell.chars().count() > WHY_WIDTH {
                    why.push('…');
                }
                out.push_str(&why);
            }
        }
        out.push('\n');
    }
    out
}

/// The gate as a terminal table.
pub fn gate_table(gate: &Gate) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}candidate {}",
        gate.baseline
            .as_ref()
            .map(|b| format!("baseline {b} vs "))
            .unwrap_or_default(),
        gate.candidate
    );
    let mut rows = vec![[
        "SCENARIO".to_owned(),
        "CLASS".to_owned(),
        "BASELINE".to_owned(),
        "CANDIDATE".to_owned(),
        "KNOWN".to_owned(),
    ]];
    for r in &gate.rows {
        rows.push([
            crate::results::scenario_label(&r.scenario, r.topology.as_deref()),
            r.class.as_str().to_owned(),
            r.baseline.map_or_else(|| "-".to_owned(), |b| b.text()),
            r.candidate.text(),
            r.known.join(", "),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    let _ = writeln!(
        out,
        "gate: {}",
        match gate.exit {
            GateExit::Ok => "ok: nothing new",
            GateExit::Violation => "FAILED: a regression or an untriaged failure",
            GateExit::Incomplete => "INCOMPLETE: cells missing or in error",
        }
    );
    out
}

/// The report of a trial series, for the terminal.
pub fn trials_summary(scenario: &str, kernel: &str, target: &Target, t: &Trials) -> String {
    let mut out = String::new();
    let (p, lo, hi) = t.probability();
    let _ = writeln!(
        out,
        "{scenario} on {kernel}, until {}: {} hit{} in {} run{}{}",
        target.describe(),
        t.hits,
        if t.hits == 1 { "" } else { "s" },
        t.runs,
        if t.runs == 1 { "" } else { "s" },
        if t.errors > 0 {
            format!(" ({} runs could not be judged: error)", t.errors)
        } else {
            String::new()
        }
    );
    if let Some(why) = &t.skipped {
        let _ = writeln!(out, "  skipped on this kernel: {why}");
    }
    if t.runs > 0 {
        let _ = writeln!(
            out,
            "  reproduction probability {p:.2} per run (95% Wilson interval {lo:.2}-{hi:.2})"
        );
    }
    match &t.first_hit {
        Some((cell, seed, after)) => {
            let _ = writeln!(
                out,
                "  first hit: {cell} (seed {seed}) after {:.0}s",
                after.as_secs_f64()
            );
        }
        None if t.runs > 0 => {
            let _ = writeln!(
                out,
                "  not reproduced; if it reproduces at all, p < {hi:.2} per run (95%)"
            );
        }
        None => {}
    }
    if let Some(eta) = t.expected_time_to_hit() {
        let _ = writeln!(
            out,
            "  one run takes {:.0}s; expected time to a hit {:.0}s",
            t.mean_run.as_secs_f64(),
            eta.as_secs_f64()
        );
    }
    for (id, seen) in &t.fingerprints {
        let _ = writeln!(
            out,
            "  fingerprint {id} x{}: {} (first in {})",
            seen.count, seen.title, seen.first_cell
        );
    }
    let _ = writeln!(out, "  results: {}", t.dir.display());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::store::empty_results;
    use crate::results::test_cell;
    use kchaos_model::verdict::Verdict;

    #[test]
    fn one_row_per_cell_with_the_first_reason_cut_short() {
        let mut results = empty_results();
        let mut failed = test_cell("memcg/k", Verdict::Fail, 2e6);
        failed.reasons = vec!["x".repeat(200)];
        results.cells = vec![test_cell("memcg/k", Verdict::Pass, 1e6), failed];
        let table = summary_table(&results);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("SCENARIO"));
        assert!(
            lines[2].contains("fail") && lines[2].ends_with('…'),
            "{}",
            lines[2]
        );
        assert!(!lines[0].contains("TOPOLOGY"), "no axis, no column");
    }

    #[test]
    fn a_topology_axis_gets_its_column() {
        let mut results = empty_results();
        let mut on = test_cell("cfs/k", Verdict::Pass, 1e6);
        "cfs/k/topo-2s1c".clone_into(&mut on.id);
        on.topology = Some("2s1c".to_owned());
        results.cells = vec![on];
        let table = summary_table(&results);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].starts_with("SCENARIO  KERNEL    TOPOLOGY  VERDICT"),
            "{table}"
        );
        assert!(
            lines[1].contains(" 2s1c ") && lines[1].contains("pass"),
            "{table}"
        );
    }

    /// The gate of `analysis::classify`'s test, where it passes: `c`'s failure is a
    /// known issue's, the rest pass again.
    #[test]
    fn the_gate_names_each_scenarios_class() {
        use crate::analysis::classify::{Class, Counts, GateRow};
        let passed = Counts {
            pass: 1,
            ..Counts::default()
        };
        let row = |scenario: &str, class, candidate, known: &[&str]| GateRow {
            scenario: scenario.to_owned(),
            topology: None,
            class,
            baseline: Some(passed),
            candidate,
            known: known.iter().map(ToString::to_string).collect(),
        };
        let g = Gate {
            baseline: Some("old".to_owned()),
            candidate: "new".to_owned(),
            rows: vec![
                row("a", Class::Pass, passed, &[]),
                row("b", Class::Pass, passed, &[]),
                row(
                    "c",
                    Class::Known,
                    Counts {
                        known: 1,
                        ..Counts::default()
                    },
                    &["bug-1"],
                ),
                row("d", Class::Pass, passed, &[]),
            ],
            exit: GateExit::Ok,
        };
        assert_eq!(g.exit, GateExit::Ok, "{}", gate_table(&g));
        assert!(
            gate_table(&g).contains("c         known"),
            "{}",
            gate_table(&g)
        );
    }
}
