//! One scenario's latency per phase: for each probe and each workload's phase, the
//! median p50 and the worst p99 over a kernel's repeats, with the samples they rest on.
//! The whole-run histograms above dilute a state that lasts a phase; this does not.

use std::fmt::Write as _;

use kchaos_model::metrics::Summary;

use super::super::labels::KernelColumn;
use super::escape;
use super::scenario::{kernel_cells, kernel_headers};
use crate::results::CellResult;

pub(super) fn table(
    out: &mut String,
    mine: &[&CellResult],
    present: &[usize],
    kernels: &[KernelColumn],
    column_of: &dyn Fn(&CellResult) -> usize,
) {
    // (probe, phase) rows in the order the cells have them.
    let mut rows: Vec<(&str, &str)> = Vec::new();
    for c in mine {
        for phase in &c.phases {
            for probe in phase.latency.keys() {
                if !rows.contains(&(probe.as_str(), phase.name.as_str())) {
                    rows.push((probe, &phase.name));
                }
            }
        }
    }
    if rows.is_empty() {
        return;
    }
    rows.sort_by_key(|&(probe, _)| probe);
    out.push_str("<table class=\"phases\"><tr><th>latency</th><th>phase</th>");
    kernel_headers(out, present, kernels);
    out.push_str("</tr>\n");
    for (probe, phase) in rows {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td>",
            escape(probe),
            escape(phase)
        );
        kernel_cells(
            out,
            mine,
            present,
            column_of,
            |c| {
                c.phases
                    .iter()
                    .filter(move |p| p.name == phase)
                    .filter_map(move |p| p.latency.get(probe))
            },
            cell,
        );
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

/// `p50 0.52ms · p99 4.10ms (n=150)`: the median p50 and the worst p99 of the repeats
/// that had samples, every repeat in the tooltip.
fn cell(these: &[(u32, &Summary)]) -> String {
    let with: Vec<&Summary> = these
        .iter()
        .map(|(_, s)| *s)
        .filter(|s| s.count > 0)
        .collect();
    let title: Vec<String> = these
        .iter()
        .map(|(r, s)| format!("r{r}: {}", brief(s)))
        .collect();
    let text = match with.first() {
        None if these.is_empty() => return String::new(),
        None => "no samples".to_owned(),
        Some(first) => {
            let p50s: Vec<f64> = with.iter().map(|s| s.p50 as f64).collect();
            let p50 = kchaos_model::stats::median(&p50s).unwrap_or_default();
            let p99 = with.iter().map(|s| s.p99).max().unwrap_or_default();
            let n: u64 = with.iter().map(|s| s.count).sum();
            format!(
                "p50 {} · p99 {} <span class=\"note\">(n={n})</span>",
                escape(&first.unit.format(p50)),
                escape(&first.unit.format(p99 as f64))
            )
        }
    };
    format!(
        "<span title=\"{}\">{text}</span>",
        escape(&title.join("\n"))
    )
}

fn brief(s: &Summary) -> String {
    if s.count == 0 {
        return "no samples".to_owned();
    }
    format!(
        "n={} p50={} p90={} p99={} max={}",
        s.count,
        s.unit.format(s.p50 as f64),
        s.unit.format(s.p90 as f64),
        s.unit.format(s.p99 as f64),
        s.unit.format(s.max as f64)
    )
}
