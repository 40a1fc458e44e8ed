//! `report.html`: one self-contained page per results directory (inline CSS and
//! SVG, no scripts, nothing fetched), readable offline and attachable to a ticket:
//! the verdict grid (scenario × kernel, one square per repeat, and why a cell did not
//! pass: the first reason in the grid, the rest one click away in a `<details>`), an
//! optional comparison, per scenario its checks across kernels (observed, bound,
//! margin) and its latency percentiles and counter time series with one colour per
//! kernel, and every cell with its reasons and links to its console, kernel log and
//! result. Kernels are labelled short (see [`super::labels`]); the full spec is in the
//! headers' tooltips and the kernels table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use kchaos_model::verdict::Verdict;

use super::labels::{columns, kernel_key, KernelColumn, KernelNames};
use crate::analysis::bisect::BisectRecord;
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
/// file will be written) and kernels labelled by `names` where it has them.
pub fn render(
    runs: &[LoadedRun],
    comparison: Option<&Comparison>,
    report_dir: &Path,
    names: &KernelNames,
) -> String {
    render_page(runs, comparison, None, report_dir, names)
}

/// [`render`] with a bisection's answer and steps above the cells of its steps.
pub fn render_bisection(
    runs: &[LoadedRun],
    bisection: &BisectRecord,
    report_dir: &Path,
    names: &KernelNames,
) -> String {
    render_page(runs, None, Some(bisection), report_dir, names)
}

fn render_page(
    runs: &[LoadedRun],
    comparison: Option<&Comparison>,
    bisection: Option<&BisectRecord>,
    report_dir: &Path,
    names: &KernelNames,
) -> String {
    let cells: Vec<Cell<'_>> = runs
        .iter()
        .flat_map(|r| r.results.cells.iter().map(move |c| (r, c)))
        .collect();
    // Scenarios and kernels in the order they first appear (the matrix order).
    let mut scenarios: Vec<&str> = Vec::new();
    for (_, c) in &cells {
        if !scenarios.contains(&c.scenario.as_str()) {
            scenarios.push(&c.scenario);
        }
    }
    let kernels = columns(cells.iter().map(|(_, c)| *c), names);
    let mut out = String::new();
    out.push_str(HEAD);
    let _ = writeln!(out, "<h1>kchaos report</h1>");
    if let Some(b) = bisection {
        bisect::section(&mut out, b);
    }
    summary(&mut out, runs, &cells);
    kernel_table(&mut out, &kernels);
    grid(&mut out, &cells, &scenarios, &kernels);
    if let Some(cmp) = comparison {
        comparison_section(&mut out, cmp);
    }
    for scenario in &scenarios {
        let mine: Vec<&CellResult> = cells
            .iter()
            .filter(|(_, c)| c.scenario == *scenario)
            .map(|(_, c)| *c)
            .collect();
        scenario::section(&mut out, scenario, &mine, &kernels);
    }
    cell_table(&mut out, &cells, report_dir);
    out.push_str("</body>\n</html>\n");
    out
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

/// Each kernel's short label with every name it has.
fn kernel_table(out: &mut String, kernels: &[KernelColumn]) {
    out.push_str("<table class=\"kernels\"><tr><th>kernel</th><th>spec</th><th>resolved</th><th>release</th><th>package</th></tr>\n");
    for (i, k) in kernels.iter().enumerate() {
        let opt = |v: &Option<String>| escape(v.as_deref().unwrap_or(""));
        let _ = writeln!(
            out,
            "<tr><td><i class=\"swatch\" style=\"background:{}\"></i>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            super::plot::colour_hex(i),
            escape(&k.label),
            escape(&k.info.spec),
            opt(&k.info.resolved),
            opt(&k.info.release),
            opt(&k.info.package),
        );
    }
    out.push_str("</table>\n");
}

fn grid(out: &mut String, cells: &[Cell<'_>], scenarios: &[&str], kernels: &[KernelColumn]) {
    out.push_str("<h2 id=\"matrix\">Verdicts</h2>\n<table class=\"grid\"><tr><th>scenario</th>");
    for k in kernels {
        let _ = write!(
            out,
            "<th title=\"{}\">{}</th>",
            escape(&k.title()),
            escape(&k.label)
        );
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
                .filter(|(_, c)| c.scenario == *scenario && kernel_key(c) == k.key)
                .map(|(_, c)| *c)
                .collect();
            these.sort_by_key(|c| c.repeat);
            out.push_str("<td>");
            for c in &these {
                let title = format!(
                    "{} r{}: {}{}{}",
                    c.id,
                    c.repeat,
                    c.verdict,
                    c.known
                        .as_ref()
                        .map(|k| format!(" (known issue {})", k.id))
                        .unwrap_or_default(),
                    c.reasons
                        .first()
                        .map(|r| format!(" — {r}"))
                        .unwrap_or_default()
                );
                // A known failure keeps its verdict's colour, outlined: seen, triaged.
                let _ = write!(
                    out,
                    "<a class=\"sq{}\" href=\"#{}\" title=\"{}\" style=\"background:{}\"></a>",
                    if c.known.is_some() { " known" } else { "" },
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
                let mut text: Vec<String> =
                    counts.iter().map(|(v, n)| format!("{v} {n}")).collect();
                let mut known: Vec<&crate::results::KnownMatch> =
                    these.iter().filter_map(|c| c.known.as_ref()).collect();
                known.sort_by(|a, b| a.id.cmp(&b.id));
                known.dedup_by(|a, b| a.id == b.id);
                for k in known {
                    text.push(format!(
                        "known: <a href=\"{}\">{}</a>",
                        escape(&k.link),
                        escape(&k.id)
                    ));
                }
                let _ = write!(out, "<div class=\"counts\">{}</div>", text.join(", "));
                reasons(out, &these);
            }
            out.push_str("</td>");
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

/// Why the cells of one grid square did not pass: the first reason of the most severe
/// one, visible; every other reason of every repeat in a `<details>` (no script needed).
fn reasons(out: &mut String, these: &[&CellResult]) {
    let severity = |v: Verdict| match v {
        Verdict::Crash => 0,
        Verdict::Hang => 1,
        Verdict::Fail => 2,
        Verdict::Error => 3,
        Verdict::Skip => 4,
        Verdict::Pass => 5,
    };
    let mut failed: Vec<&&CellResult> = these
        .iter()
        .filter(|c| c.verdict != Verdict::Pass && !c.reasons.is_empty())
        .collect();
    failed.sort_by_key(|c| (severity(c.verdict), c.repeat));
    let Some(first) = failed.first() else {
        return;
    };
    let _ = write!(
        out,
        "<div class=\"why\"><b>{}</b> {}</div>",
        first.verdict,
        escape(&first.reasons[0])
    );
    let mut rest: Vec<String> = Vec::new();
    for c in &failed {
        for (i, r) in c.reasons.iter().enumerate() {
            if std::ptr::eq(**c, **first) && i == 0 {
                continue;
            }
            rest.push(format!("r{} {}: {}", c.repeat, c.verdict, r));
        }
    }
    if !rest.is_empty() {
        let _ = write!(out, "<details><summary>{} more</summary><ul>", rest.len());
        for r in &rest {
            let _ = write!(out, "<li>{}</li>", escape(r));
        }
        out.push_str("</ul></details>");
    }
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
        escape(&crate::report::compare_table::summary(cmp)),
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
td { overflow-wrap: anywhere; }
.grid td { min-width: 9em; max-width: 28em; }
.why { margin-top: 0.3em; font-size: 0.85em; }
.why b { text-transform: uppercase; font-size: 0.8em; }
details { font-size: 0.85em; color: #444; }
details ul { margin: 0.2em 0; padding-left: 1.2em; }
.legend span { margin-right: 1em; white-space: nowrap; }
.legend i, .swatch { display: inline-block; width: 12px; height: 12px; margin-right: 0.3em; vertical-align: middle; border-radius: 2px; }
.checks .ok { color: #1b5e20; }
.checks .bad { color: #b71c1c; font-weight: bold; }
.plots figure { display: inline-block; margin: 0 1em 1em 0; }
.sq { display: inline-block; width: 18px; height: 18px; margin: 1px; border-radius: 2px; }
.sq.known { outline: 3px dashed #f9a825; outline-offset: -3px; }
.counts, .note { color: #666; font-size: 0.85em; }
.plots svg { border: 1px solid #eee; }
.cmp tr.reg td { background: #fde0e0; }
.cmp tr.imp td { background: #e3f4e4; }
.cmp tr.warn td { background: #fff4d6; }
</style>
</head>
<body>
"#;

mod bisect;
mod phases;
mod scenario;
#[cfg(test)]
mod tests;
