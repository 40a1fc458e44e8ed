//! `report.html`: one self-contained page per results directory (inline CSS and
//! SVG, no scripts, nothing fetched), readable offline and attachable to a ticket:
//! the verdict grid (scenario × kernel, one square per repeat), an optional comparison,
//! per-scenario latency percentiles and counter time series with one colour per kernel,
//! and every cell with its reasons and links to its console, kernel log and result.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use kchaos_model::metrics::Metric;
use kchaos_model::units::Unit;
use kchaos_model::verdict::Verdict;

use crate::analysis::compare::{Comparison, Outcome};
use crate::results::sources::LoadedRun;
use crate::results::CellResult;

/// HTML-escapes text for element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Verdict colours, shared by the grid, the badges and the screenshot test.
pub fn verdict_colour(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "#2e7d32",
        Verdict::Skip => "#9e9e9e",
        Verdict::Fail => "#c62828",
        Verdict::Hang => "#6a1b9a",
        Verdict::Crash => "#212121",
        Verdict::Error => "#ef6c00",
    }
}

/// A cell with the run it came from.
type Cell<'a> = (&'a LoadedRun, &'a CellResult);

/// Renders the report of `runs`, with links relative to `report_dir` (where the HTML
/// file will be written).
pub fn render(runs: &[LoadedRun], comparison: Option<&Comparison>, report_dir: &Path) -> String {
    let cells: Vec<Cell<'_>> = runs
        .iter()
        .flat_map(|r| r.results.cells.iter().map(move |c| (r, c)))
        .collect();
    // Scenarios and kernels in the order they first appear (the matrix order).
    let mut scenarios: Vec<&str> = Vec::new();
    let mut kernels: Vec<String> = Vec::new();
    for (_, c) in &cells {
        if !scenarios.contains(&c.scenario.as_str()) {
            scenarios.push(&c.scenario);
        }
        let k = kernel_name(c);
        if !kernels.contains(&k) {
            kernels.push(k);
        }
    }
    let mut out = String::new();
    out.push_str(HEAD);
    let _ = writeln!(out, "<h1>kchaos report</h1>");
    summary(&mut out, runs, &cells);
    grid(&mut out, &cells, &scenarios, &kernels);
    if let Some(cmp) = comparison {
        comparison_section(&mut out, cmp);
    }
    for scenario in &scenarios {
        scenario_section(&mut out, scenario, &cells, &kernels);
    }
    cell_table(&mut out, &cells, report_dir);
    out.push_str("</body>\n</html>\n");
    out
}

/// `debian:6.1.0-56-cloud`: the kernel as resolved, else as asked.
fn kernel_name(cell: &CellResult) -> String {
    cell.kernel
        .resolved
        .clone()
        .unwrap_or_else(|| cell.kernel.spec.clone())
}

fn anchor(cell: &CellResult) -> String {
    format!("cell-{}", cell.id.replace(['/', ':', '+'], "-"))
}

fn summary(out: &mut String, runs: &[LoadedRun], cells: &[Cell<'_>]) {
    let mut counts: BTreeMap<Verdict, usize> = BTreeMap::new();
    for (_, c) in cells {
        *counts.entry(c.verdict).or_default() += 1;
    }
    let _ = write!(out, "<p class=\"badges\">{} cells: ", cells.len());
    for (v, n) in &counts {
        let _ = write!(
            out,
            "<span class=\"badge\" style=\"background:{}\">{v} {n}</span> ",
            verdict_colour(*v)
        );
    }
    out.push_str("</p>\n<table class=\"runs\"><tr><th>run</th><th>started</th><th>finished</th><th>QEMU</th><th>accelerator</th><th>VMs at once</th><th>kernels</th><th>repeats</th></tr>\n");
    for run in runs {
        let r = &run.results;
        let plan = r.plan.as_ref();
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&run.dir.display().to_string()),
            escape(&r.started_at),
            escape(r.finished_at.as_deref().unwrap_or("not finished")),
            escape(r.host.qemu.as_deref().unwrap_or("")),
            escape(r.host.accel.as_deref().unwrap_or("")),
            r.host.jobs.map(|j| j.to_string()).unwrap_or_default(),
            escape(&plan.map(|p| p.kernels.join(", ")).unwrap_or_default()),
            plan.map(|p| p.repeat.to_string()).unwrap_or_default(),
        );
    }
    out.push_str("</table>\n");
}

fn grid(out: &mut String, cells: &[Cell<'_>], scenarios: &[&str], kernels: &[String]) {
    out.push_str("<h2 id=\"matrix\">Verdicts</h2>\n<table class=\"grid\"><tr><th>scenario</th>");
    for k in kernels {
        let _ = write!(out, "<th>{}</th>", escape(k));
    }
    out.push_str("</tr>\n");
    for scenario in scenarios {
        let _ = write!(
            out,
            "<tr><th class=\"scenario\"><a href=\"#s-{0}\">{0}</a></th>",
            escape(scenario)
        );
        for k in kernels {
            let mut these: Vec<&CellResult> = cells
                .iter()
                .filter(|(_, c)| c.scenario == *scenario && kernel_name(c) == *k)
                .map(|(_, c)| *c)
                .collect();
            these.sort_by_key(|c| c.repeat);
            out.push_str("<td>");
            for c in &these {
                let title = format!(
                    "{} r{}: {}{}",
                    c.id,
                    c.repeat,
                    c.verdict,
                    c.reasons
                        .first()
                        .map(|r| format!(" — {r}"))
                        .unwrap_or_default()
                );
                let _ = write!(
                    out,
                    "<a class=\"sq\" href=\"#{}\" title=\"{}\" style=\"background:{}\"></a>",
                    anchor(c),
                    escape(&title),
                    verdict_colour(c.verdict)
                );
            }
            if !these.is_empty() {
                let mut counts: BTreeMap<Verdict, usize> = BTreeMap::new();
                for c in &these {
                    *counts.entry(c.verdict).or_default() += 1;
                }
                let text: Vec<String> = counts.iter().map(|(v, n)| format!("{v} {n}")).collect();
                let _ = write!(out, "<div class=\"counts\">{}</div>", text.join(", "));
            }
            out.push_str("</td>");
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

fn comparison_section(out: &mut String, cmp: &Comparison) {
    let _ = writeln!(
        out,
        "<h2 id=\"compare\">Comparison</h2>\n<p>Baseline <b>{}</b> ({} cells) vs candidate <b>{}</b> ({} cells). \
         A verdict regression is a failure rate that Fisher's exact test finds higher at p &lt; {alpha} \
         (crashes and hangs are also tested alone); a metric regression is a change for the worse larger than \
         {threshold:.0}% of the baseline median that a one-sided Mann–Whitney test on the per-repeat values \
         finds significant at p &lt; {alpha}. A check's margin eroded when its room to the bound shrank by more \
         than {threshold:.0} points of the bound, as significantly. Inconclusive rows are changes the runs cannot \
         tell yet, with the repeats that could. <b>{}.</b></p>",
        escape(&cmp.baseline),
        cmp.baseline_cells,
        escape(&cmp.candidate),
        cmp.candidate_cells,
        escape(&crate::analysis::compare::summary(cmp)),
        threshold = cmp.threshold * 100.0,
        alpha = cmp.alpha,
    );
    out.push_str("<table class=\"cmp\"><tr><th>scenario</th><th>what</th><th>baseline</th><th>candidate</th><th>change</th><th>95% CI</th><th>p</th><th>result</th></tr>\n");
    for r in &cmp.rows {
        let class = match r.outcome {
            Outcome::Regression => "reg",
            Outcome::Improvement => "imp",
            Outcome::MarginEroded | Outcome::Inconclusive => "warn",
            _ => "",
        };
        let _ = writeln!(
            out,
            "<tr class=\"{class}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}{}</td></tr>",
            escape(&r.scenario),
            escape(&r.what),
            escape(&r.baseline_text),
            escape(&r.candidate_text),
            escape(&r.change_text()),
            escape(&r.interval_text()),
            escape(&r.p_text()),
            r.outcome.as_str(),
            if r.why.is_empty() {
                String::new()
            } else {
                format!(": {}", escape(&r.why))
            }
        );
    }
    out.push_str("</table>\n");
}

fn scenario_section(out: &mut String, scenario: &str, cells: &[Cell<'_>], kernels: &[String]) {
    let _ = writeln!(out, "<h2 id=\"s-{0}\">{0}</h2>", escape(scenario));
    let mine: Vec<&CellResult> = cells
        .iter()
        .filter(|(_, c)| c.scenario == scenario)
        .map(|(_, c)| *c)
        .collect();
    let kernel_of = |c: &CellResult| {
        let name = kernel_name(c);
        kernels.iter().position(|k| *k == name).unwrap_or(0)
    };
    // Metric names with their kind, in name order.
    let mut names: BTreeMap<&str, &Metric> = BTreeMap::new();
    for c in &mine {
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
        for c in &mine {
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
            lines.push(super::plot::Line {
                kernel: kernel_of(c),
                points,
            });
        }
        match first {
            Metric::Histogram(s) => out.push_str(&super::plot::percentiles(
                &format!("{name} (percentiles per cell)"),
                s.unit,
                &lines,
                kernels,
            )),
            Metric::Series(s) => out.push_str(&super::plot::series(
                &format!("{name} over time"),
                s.unit,
                &lines,
                kernels,
            )),
            Metric::Value(g) => values.push((name, g.unit)),
        }
    }
    out.push_str("</div>\n");
    if !values.is_empty() {
        out.push_str("<table class=\"values\"><tr><th>value</th>");
        for k in kernels {
            let _ = write!(out, "<th>{}</th>", escape(k));
        }
        out.push_str("</tr>\n");
        for (name, unit) in values {
            let _ = write!(out, "<tr><td>{}</td>", escape(name));
            for (i, _) in kernels.iter().enumerate() {
                let v: Vec<f64> = mine
                    .iter()
                    .filter(|c| kernel_of(c) == i)
                    .filter_map(|c| match c.metrics.get(name) {
                        Some(Metric::Value(g)) => Some(g.value),
                        _ => None,
                    })
                    .collect();
                let text = match kchaos_model::stats::median(&v) {
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
                };
                let _ = write!(out, "<td>{text}</td>");
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</table>\n");
    }
}

/// `path` (relative to `run_dir`) as a link from `report_dir`.
fn link(run_dir: &Path, path: &str, report_dir: &Path) -> String {
    let target = run_dir.join(path);
    let rel = match (
        std::fs::canonicalize(run_dir),
        std::fs::canonicalize(report_dir),
    ) {
        (Ok(run), Ok(report)) => run
            .strip_prefix(&report)
            .map(|p| p.join(path))
            .unwrap_or(run.join(path)),
        _ => target,
    };
    rel.display().to_string()
}

fn cell_table(out: &mut String, cells: &[Cell<'_>], report_dir: &Path) {
    out.push_str("<h2 id=\"cells\">Cells</h2>\n<table class=\"cells\"><tr><th>cell</th><th>verdict</th><th>boot</th><th>time</th><th>seed</th><th>why</th><th>files</th></tr>\n");
    for (run, c) in cells {
        let mut why: Vec<String> = c.reasons.iter().map(|r| escape(r)).collect();
        if let Some(fp) = &c.fingerprint {
            why.push(format!(
                "fingerprint {} {}",
                escape(&fp.id),
                escape(&fp.title)
            ));
        }
        let mut files = Vec::new();
        let a = &c.artifacts;
        let result = a.dir.as_ref().map(|d| PathBuf::from(d).join("cell.json"));
        for (what, path) in [
            ("console", a.console.clone()),
            ("kmsg", a.kmsg.clone()),
            ("qemu", a.qemu_log.clone()),
            ("sysrq", a.sysrq.clone()),
            ("vmcore", a.vmcore.clone()),
            ("result", result.map(|p| p.display().to_string())),
        ] {
            if let Some(path) = path {
                files.push(format!(
                    "<a href=\"{}\">{what}</a>",
                    escape(&link(&run.dir, &path, report_dir))
                ));
            }
        }
        let secs = |ms: u64| format!("{:.1}s", ms as f64 / 1000.0);
        let _ = writeln!(
            out,
            "<tr id=\"{}\"><td>{}</td><td><span class=\"badge\" style=\"background:{}\">{}</span></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            anchor(c),
            escape(&c.id),
            verdict_colour(c.verdict),
            c.verdict,
            c.boot_ms.map(secs).unwrap_or_default(),
            secs(c.duration_ms),
            c.seed,
            why.join("<br>"),
            files.join(" ")
        );
    }
    out.push_str("</table>\n");
}

const HEAD: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>kchaos report</title>
<style>
body { font-family: sans-serif; margin: 1.5em; color: #222; }
h1 { margin-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; font-size: 0.9em; }
th { background: #f3f3f3; }
.badge { color: #fff; border-radius: 3px; padding: 0.1em 0.4em; font-size: 0.9em; }
.grid td { min-width: 9em; }
.sq { display: inline-block; width: 18px; height: 18px; margin: 1px; border-radius: 2px; }
.counts, .note { color: #666; font-size: 0.85em; }
.plots svg { margin: 0 1em 1em 0; border: 1px solid #eee; }
.cmp tr.reg td { background: #fde0e0; }
.cmp tr.imp td { background: #e3f4e4; }
.cmp tr.warn td { background: #fff4d6; }
</style>
</head>
<body>
"#;

#[cfg(test)]
mod tests;
