//! The summary table `kchaos run` prints at the end: one row per cell.

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
}
