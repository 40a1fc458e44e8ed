//! One scenario's section of the report: a legend of its kernels, its checks across
//! kernels (observed, bound, margin), its latency per phase, its plots, and its single
//! values.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use kchaos_model::metrics::Metric;
use kchaos_model::scenario::CheckResult;
use kchaos_model::units::Unit;

use super::super::labels::{kernel_key, KernelColumn};
use super::super::plot;
use super::escape;
use crate::results::CellResult;

pub(super) fn section(
    out: &mut String,
    scenario: &str,
    mine: &[&CellResult],
    kernels: &[KernelColumn],
) {
    let _ = writeln!(out, "<h2 id=\"s-{0}\">{0}</h2>", escape(scenario));
    let column_of = |c: &CellResult| {
        let key = kernel_key(c);
        kernels.iter().position(|k| k.key == key).unwrap_or(0)
    };
    // This scenario's kernels, in matrix order.
    let mut present: Vec<usize> = mine.iter().map(|c| column_of(c)).collect();
    present.sort_unstable();
    present.dedup();
    legend(out, &present, kernels);
    checks_table(out, mine, &present, kernels, &column_of);
    super::phases::table(out, mine, &present, kernels, &column_of);
    // Metric names with their kind, in name order.
    let mut names: BTreeMap<&str, &Metric> = BTreeMap::new();
    for c in mine {
        for (name, metric) in &c.metrics {
            names.entry(name).or_insert(metric);
        }
    }
    if names.is_empty() {
        out.push_str("<p class=\"note\">No metrics recorded (no cell ran its workload).</p>\n");
        return;
    }
    let mut values: Vec<(&str, Unit)> = Vec::new();
    out.push_str("<div class=\"plots\">");
    for (name, first) in &names {
        let mut lines = Vec::new();
        for c in mine {
            let Some(metric) = c.metrics.get(*name) else {
                continue;
            };
            let points = match metric {
                Metric::Histogram(s) if s.count > 0 => [s.p50, s.p90, s.p99, s.p999, s.max]
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (i as f64, *v as f64))
                    .collect(),
                Metric::Series(s) => s
                    .samples
                    .iter()
                    .map(|&(t, v)| (t as f64 / 1000.0, v))
                    .collect(),
                _ => continue,
            };
            lines.push(plot::Line {
                kernel: column_of(c),
                points,
            });
        }
        match first {
            Metric::Histogram(s) => out.push_str(&plot::percentiles(
                &format!("{name} (percentiles per cell)"),
                s.unit,
                &lines,
            )),
            Metric::Series(s) => {
                out.push_str(&plot::series(&format!("{name} over time"), s.unit, &lines));
            }
            Metric::Value(g) => values.push((name, g.unit)),
        }
    }
    out.push_str("</div>\n");
    if !values.is_empty() {
        values_table(out, mine, &values, &present, kernels, &column_of);
    }
}

/// One swatch per kernel, as the plots colour them, with the short label (the full spec
/// in the tooltip). In HTML, outside the plots: it wraps instead of covering data.
fn legend(out: &mut String, present: &[usize], kernels: &[KernelColumn]) {
    out.push_str("<p class=\"legend\">");
    for &i in present {
        let k = &kernels[i];
        let _ = write!(
            out,
            "<span title=\"{}\"><i style=\"background:{}\"></i>{}</span> ",
            escape(&k.title()),
            plot::colour_hex(i),
            escape(&k.label)
        );
    }
    out.push_str("</p>\n");
}

/// `<th>` per kernel with the short label and the full spec as its tooltip.
pub(super) fn kernel_headers(out: &mut String, present: &[usize], kernels: &[KernelColumn]) {
    for &i in present {
        let k = &kernels[i];
        let _ = write!(
            out,
            "<th title=\"{}\">{}</th>",
            escape(&k.title()),
            escape(&k.label)
        );
    }
}

/// One `<td>` per kernel in `present`, beneath [`kernel_headers`]: `render` of what
/// `pick` finds in each of that kernel's cells, with the cell's repeat, in repeat order.
pub(super) fn kernel_cells<'a, T: 'a, I: Iterator<Item = &'a T>>(
    out: &mut String,
    mine: &[&'a CellResult],
    present: &[usize],
    column_of: &dyn Fn(&CellResult) -> usize,
    pick: impl Fn(&'a CellResult) -> I,
    render: impl Fn(&[(u32, &'a T)]) -> String,
) {
    for &i in present {
        let mut these: Vec<(u32, &T)> = mine
            .iter()
            .filter(|c| column_of(c) == i)
            .flat_map(|c| pick(c).map(|x| (c.repeat, x)))
            .collect();
        these.sort_by_key(|(r, _)| *r);
        let _ = write!(out, "<td>{}</td>", render(&these));
    }
}

/// Every check across kernels: for each kernel the repeat with the least room (its
/// observed value and margin), how many repeats passed, and every repeat in the tooltip.
fn checks_table(
    out: &mut String,
    mine: &[&CellResult],
    present: &[usize],
    kernels: &[KernelColumn],
    column_of: &dyn Fn(&CellResult) -> usize,
) {
    // Checks in the order the scenario declares them, as the first cell has them.
    let mut asserts: Vec<&CheckResult> = Vec::new();
    for c in mine {
        for check in &c.checks {
            if !asserts.iter().any(|a| a.assert == check.assert) {
                asserts.push(check);
            }
        }
    }
    if asserts.is_empty() {
        return;
    }
    out.push_str("<table class=\"checks\"><tr><th>check</th><th>bound</th>");
    kernel_headers(out, present, kernels);
    out.push_str("</tr>\n");
    for first in asserts {
        let because = first
            .because
            .as_deref()
            .map(|b| format!("<div class=\"note\">{}</div>", escape(b)))
            .unwrap_or_default();
        let _ = write!(
            out,
            "<tr><td><code>{}</code>{because}</td><td>{}</td>",
            escape(&first.assert),
            escape(&first.bound_text())
        );
        kernel_cells(
            out,
            mine,
            present,
            column_of,
            |c| c.checks.iter().filter(|k| k.assert == first.assert),
            check_cell,
        );
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

/// `2.30ms · +95.4%`, the repeat with the least room; `1 of 3 pass` when some failed.
fn check_cell(these: &[(u32, &CheckResult)]) -> String {
    let Some((_, worst)) = these.iter().min_by(|a, b| {
        // No data is the least room of all.
        let m = |c: &CheckResult| c.margin.or(c.headroom).unwrap_or(f64::NEG_INFINITY);
        m(a.1).total_cmp(&m(b.1))
    }) else {
        return String::new();
    };
    let passed = these.iter().filter(|(_, c)| c.passed()).count();
    let title: Vec<String> = these
        .iter()
        .map(|(r, c)| {
            format!(
                "r{r}: {} {} {}",
                c.observed_text(),
                c.status,
                c.margin_text()
            )
        })
        .collect();
    let class = if passed == these.len() { "ok" } else { "bad" };
    let margin = worst.margin_text();
    let mut text = if margin.is_empty() {
        escape(&worst.observed_text())
    } else {
        format!("{} · {}", escape(&worst.observed_text()), escape(&margin))
    };
    if passed < these.len() || these.len() > 1 {
        let _ = write!(
            text,
            " <span class=\"note\">({passed} of {} pass)</span>",
            these.len()
        );
    }
    format!(
        "<span class=\"{class}\" title=\"{}\">{text}</span>",
        escape(&title.join("\n"))
    )
}

fn values_table(
    out: &mut String,
    mine: &[&CellResult],
    values: &[(&str, Unit)],
    present: &[usize],
    kernels: &[KernelColumn],
    column_of: &dyn Fn(&CellResult) -> usize,
) {
    out.push_str("<table class=\"values\"><tr><th>value</th>");
    kernel_headers(out, present, kernels);
    out.push_str("</tr>\n");
    for (name, unit) in values {
        let _ = write!(out, "<tr><td>{}</td>", escape(name));
        kernel_cells(
            out,
            mine,
            present,
            column_of,
            |c| match c.metrics.get(*name) {
                Some(Metric::Value(g)) => Some(&g.value).into_iter(),
                _ => None.into_iter(),
            },
            |these| value_cell(*unit, these),
        );
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

/// `1.20 [1.00 – 1.50], n=3`: the median of the repeats' values, their range and count.
fn value_cell(unit: Unit, these: &[(u32, &f64)]) -> String {
    let v: Vec<f64> = these.iter().map(|(_, x)| **x).collect();
    match kchaos_model::stats::median(&v) {
        Some(m) => {
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!(
                "{} <span class=\"note\">[{} – {}], n={}</span>",
                escape(&unit.format(m)),
                escape(&unit.format(lo)),
                escape(&unit.format(hi)),
                v.len()
            )
        }
        None => String::new(),
    }
}
