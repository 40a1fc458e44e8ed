//! The kill matrix (`kchaos detect`) for people: the terminal's table and the
//! self-contained page `detection.html`, from the accounting in `analysis::detection`.

use std::fmt::Write as _;

use kchaos_model::verdict::Verdict;

use super::escape;
use crate::analysis::detection::{Detection, FalseAlarms};

/// The matrix for the terminal.
pub fn table(d: &Detection) -> String {
    let mut rows = vec![[
        "DEFECT".to_owned(),
        "SCENARIO".to_owned(),
        "RESULT".to_owned(),
        "RUNS".to_owned(),
        "TIME".to_owned(),
        "EVIDENCE".to_owned(),
    ]];
    for def in &d.defects {
        for a in &def.attempts {
            rows.push([
                def.defect.clone(),
                a.scenario.clone(),
                if a.detected {
                    format!("detected ({})", a.verdict.map_or("?", Verdict::as_str))
                } else {
                    "ESCAPED".to_owned()
                },
                a.runs.to_string(),
                a.seconds_to_detect
                    .map_or_else(|| "-".to_owned(), |s| format!("{s:.0}s")),
                a.evidence.clone().unwrap_or_default(),
            ]);
        }
    }
    let mut out = render_rows(&rows);
    let mut stock = vec![[
        "STOCK KERNEL".to_owned(),
        "SCENARIO".to_owned(),
        "REPEAT".to_owned(),
        "VERDICT".to_owned(),
        String::new(),
        "WHY".to_owned(),
    ]];
    for c in &d.stock {
        stock.push([
            c.kernel.clone(),
            c.scenario.clone(),
            c.repeat.to_string(),
            if c.verdict.is_failure() {
                format!("{} (FALSE ALARM)", c.verdict)
            } else {
                c.verdict.to_string()
            },
            String::new(),
            c.reasons.first().cloned().unwrap_or_default(),
        ]);
    }
    out.push('\n');
    out.push_str(&render_rows(&stock));
    let _ = writeln!(
        out,
        "\nfalse alarms: {}",
        false_alarms(&d.false_alarms, "interval", "-")
    );
    let escaped = d.escaped().count();
    let total: usize = d.defects.iter().map(|x| x.attempts.len()).sum();
    let _ = writeln!(
        out,
        "detected {} of {total} declared (defect, scenario) pairs{}",
        total - escaped,
        if escaped > 0 {
            format!("; {escaped} ESCAPED")
        } else {
            String::new()
        }
    );
    out
}

/// The false-alarm rate with its 95% interval, in the table's words or the page's
/// (`interval` names the interval, `dash` joins its ends).
fn false_alarms(f: &FalseAlarms, interval: &str, dash: &str) -> String {
    format!(
        "{} of {} stock cells ({:.1}%, 95% {interval} {:.1}%{dash}{:.1}%)",
        f.failed,
        f.judged,
        f.rate * 100.0,
        f.interval95.0 * 100.0,
        f.interval95.1 * 100.0
    )
}

fn render_rows(rows: &[[String; 6]]) -> String {
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i < 5 {
                let _ = write!(line, "{cell:<w$}  ", w = widths[i]);
            } else {
                let short: String = cell.chars().take(100).collect();
                line.push_str(&short);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The matrix as a self-contained page (same style as the run reports, which it links).
pub fn html(d: &Detection) -> String {
    let mut out = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>kchaos detection matrix</title><style>body{font:14px sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}.ok{background:#e8f5e9}.bad{background:#ffebee}</style></head><body>\n<h1>Detection matrix</h1>\n",
    );
    let _ = writeln!(
        out,
        "<p>kchaos {}, started {}. A detection counts only when the verdict names the defect's mechanism.</p>",
        escape(&d.kchaos_version),
        escape(&d.started_at)
    );
    out.push_str("<table><tr><th>defect</th><th>incident</th><th>kernel parameters</th><th>scenario</th><th>result</th><th>runs</th><th>time</th><th>evidence</th></tr>\n");
    for def in &d.defects {
        for a in &def.attempts {
            let _ = writeln!(
                out,
                "<tr class=\"{}\"><td>{}</td><td>{} ({})</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} <a href=\"{}/report.html\">runs</a></td></tr>",
                if a.detected { "ok" } else { "bad" },
                escape(&def.defect),
                escape(&def.incident),
                escape(&def.family),
                escape(&def.cmdline.join(" ")),
                escape(&a.scenario),
                if a.detected { "detected" } else { "ESCAPED" },
                a.runs,
                a.seconds_to_detect.map_or_else(|| "-".to_owned(), |s| format!("{s:.0}s")),
                escape(a.evidence.as_deref().unwrap_or("")),
                escape(&a.results)
            );
        }
    }
    out.push_str("</table>\n<h2>Stock kernels (must pass)</h2>\n<table><tr><th>kernel</th><th>scenario</th><th>repeat</th><th>verdict</th><th>why</th></tr>\n");
    for c in &d.stock {
        let _ = writeln!(
            out,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if c.verdict.is_failure() { "bad" } else { "ok" },
            escape(&c.kernel),
            escape(&c.scenario),
            c.repeat,
            c.verdict,
            escape(c.reasons.first().map_or("", String::as_str))
        );
    }
    let _ = writeln!(
        out,
        "</table>\n<p>False alarms: {}.</p></body></html>",
        false_alarms(&d.false_alarms, "Wilson interval", "–")
    );
    out
}
