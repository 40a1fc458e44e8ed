//! The bisection section of `report.html` (`kchaos bisect`): the answer, how sure it
//! is, and every step with its commit, verdict, runs, probability, build and run time,
//! above the usual report of every step's cells.

use std::fmt::Write as _;

use kchaos_model::bisect::plan::Phase;
use kchaos_model::bisect::StepVerdict;

use super::escape;
use crate::analysis::bisect::{short, BisectRecord, StepRecord};

fn verdict_colour(v: StepVerdict) -> &'static str {
    match v {
        StepVerdict::Good => "#2e7d32",
        StepVerdict::Bad => "#c62828",
        StepVerdict::Skip => "#9e9e9e",
    }
}

fn phase(p: Phase) -> &'static str {
    match p {
        Phase::Calibrate => "calibrate (bad end)",
        Phase::CheckGood => "good end",
        Phase::Bisect => "bisect",
    }
}

fn secs(s: f64) -> String {
    crate::analysis::bisect::duration_text(s)
}

pub(super) fn section(out: &mut String, r: &BisectRecord) {
    out.push_str("<h2 id=\"bisection\">Bisection</h2>\n");
    match &r.outcome {
        Some(o) => {
            let _ = writeln!(out, "<p class=\"answer\"><b>{}</b></p>", escape(&o.message));
        }
        None => out.push_str("<p class=\"answer\"><b>not finished</b> (interrupted, or still running: <code>kchaos bisect --resume --out DIR</code> continues it)</p>\n"),
    }
    facts(out, r);
    out.push_str("<table class=\"steps\"><tr><th>#</th><th>phase</th><th>point</th><th>verdict</th><th>hits / runs</th><th>p (95%)</th><th>confidence</th><th>build</th><th>boot</th><th>runs took</th><th>results</th></tr>\n");
    for (n, step) in r.steps.iter().enumerate() {
        step_row(out, n, step);
    }
    out.push_str("</table>\n");
}

/// The bisection's facts: scenario, target, source, range, calibration, cost.
fn facts(out: &mut String, r: &BisectRecord) {
    let _ = write!(
        out,
        "<table class=\"bisect-facts\"><tr><th>scenario</th><td>{}</td></tr><tr><th>until</th><td>{}</td></tr>",
        escape(&r.scenario),
        escape(&r.until)
    );
    if !r.sets.is_empty() {
        let _ = write!(
            out,
            "<tr><th>set</th><td>{}</td></tr>",
            escape(&r.sets.join(", "))
        );
    }
    if let Some(s) = &r.source {
        let _ = write!(
            out,
            "<tr><th>source</th><td>{} ({} to {}), fragments: {}, ccache: {}</td></tr>",
            escape(&s.repo),
            escape(&s.good_rev),
            escape(&s.bad_rev),
            escape(&if s.fragments.is_empty() {
                "none".to_owned()
            } else {
                s.fragments.join(", ")
            }),
            if s.ccache { "yes" } else { "no" }
        );
    }
    let _ = write!(
        out,
        "<tr><th>range</th><td>{} points, good #{} {}, bad #{} {}</td></tr>",
        r.points.len(),
        r.good,
        escape(r.points.get(r.good).map_or("", |p| short(&p.id))),
        r.bad,
        escape(r.points.get(r.bad).map_or("", |p| short(&p.id)))
    );
    if let Some(c) = r.calibration {
        let _ = write!(
            out,
            "<tr><th>reproduction on the bad end</th><td>{}/{} runs, p {:.2} (95% interval {:.2}-{:.2})</td></tr>",
            c.hits, c.runs, c.probability, c.interval95.0, c.interval95.1
        );
    }
    if let Some(n) = r.runs_per_step {
        let _ = write!(
            out,
            "<tr><th>runs per step</th><td>{n} (for {:.0}% confidence in each good verdict)</td></tr>",
            r.options.confidence * 100.0
        );
    }
    let t = r.totals;
    let _ = writeln!(
        out,
        "<tr><th>cost</th><td>{} steps, {} builds: building {}, running {}, {} in all</td></tr></table>",
        t.steps,
        t.builds,
        secs(t.build_seconds),
        secs(t.run_seconds),
        secs(t.wall_seconds)
    );
}

/// One step of the bisection as a row of the steps table.
fn step_row(out: &mut String, n: usize, s: &StepRecord) {
    let point = match &s.subject {
        Some(subject) => format!(
            "<code>{}</code> {}",
            escape(short(&s.point)),
            escape(subject)
        ),
        None => format!("<code>{}</code>", escape(&s.point)),
    };
    let verdict = format!(
        "<span class=\"badge\" style=\"background:{}\">{}</span>{}",
        verdict_colour(s.verdict),
        s.verdict,
        s.why
            .as_ref()
            .map(|w| format!("<div class=\"why\">{}</div>", escape(w)))
            .unwrap_or_default()
    );
    let p = match (s.probability, s.interval95) {
        (Some(p), Some((lo, hi))) => format!("{p:.2} ({lo:.2}-{hi:.2})"),
        _ => String::new(),
    };
    let build = s.build.as_ref().map_or_else(String::new, |b| {
        if b.cached {
            "built earlier".to_owned()
        } else {
            let cc = match (b.ccache_hits, b.ccache_misses) {
                (Some(h), Some(m)) => format!(
                    ", ccache {h} hit{} / {m} miss{}",
                    if h == 1 { "" } else { "s" },
                    if m == 1 { "" } else { "es" }
                ),
                _ => String::new(),
            };
            format!(
                "{} ({} files compiled{cc})",
                secs(b.seconds + b.checkout_seconds),
                b.compiled
            )
        }
    });
    let results = s.results.as_ref().map_or_else(String::new, |d| {
        format!("<a href=\"{0}/results.json\">{0}</a>", escape(d))
    });
    let _ = writeln!(
        out,
        "<tr><td>{}</td><td>{}</td><td>{point}</td><td>{verdict}</td><td>{} / {} (planned {}){}</td><td>{p}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{results}</td></tr>",
        n + 1,
        phase(s.phase),
        s.hits,
        s.runs,
        s.planned_runs,
        if s.errors > 0 { format!(", {} not judged", s.errors) } else { String::new() },
        s.confidence.map(|c| format!("{c:.3}")).unwrap_or_default(),
        escape(&build),
        s.boot_ms.map(|b| format!("{:.1}s", b as f64 / 1000.0)).unwrap_or_default(),
        secs(s.run_seconds),
    );
}

#[cfg(test)]
mod tests {
    use kchaos_model::bisect::plan::Outcome;

    use super::*;
    use crate::analysis::bisect::{Point, SourceRange, StepBuild, StepRecord};
    use crate::fixtures::{assert_contains, bisect_record, point, step_record};

    /// Three commits with subjects to escape, from 0 (good) to 2 (bad), built from
    /// source; the bad end calibrated (built here), then the good end checked (built
    /// earlier).
    fn record() -> BisectRecord {
        let points: Vec<Point> = (0..3)
            .map(|i| point(i, format!("net: <change> {i}")))
            .collect();
        let step = |index: usize, verdict, cached| {
            let phase = if index == 2 {
                Phase::Calibrate
            } else {
                Phase::CheckGood
            };
            let build = StepBuild {
                seconds: if cached { 0.0 } else { 612.0 },
                checkout_seconds: if cached { 0.0 } else { 3.0 },
                cached,
                compiled: 1348,
                ccache_hits: Some(0),
                ccache_misses: Some(1348),
                log: None,
            };
            StepRecord {
                subject: points[index].subject.clone(),
                hits: u32::from(verdict == StepVerdict::Bad),
                errors: 1,
                boot_ms: Some(2150),
                run_seconds: 95.0,
                ..step_record(phase, index, &points[index], verdict, build)
            }
        };
        let mut r = BisectRecord {
            started_at: "t".into(),
            sets: vec!["workload.0.iterations=60".into()],
            source: Some(SourceRange {
                repo: "/src/linux".into(),
                good_rev: "v6.1".into(),
                bad_rev: "main".into(),
                fragments: vec!["defects.config".into()],
                build_space: "/cache/kernels/bisect/x".into(),
                ccache: true,
            }),
            ..bisect_record(
                "scenarios/veth-netns-storm.toml",
                "unregister_netdevice",
                points.clone(),
            )
        };
        r.push(step(2, StepVerdict::Bad, false));
        r.push(step(0, StepVerdict::Good, true));
        r
    }

    #[test]
    fn the_section_has_the_answer_the_costs_and_every_step_escaped() {
        let mut r = record();
        let mut out = String::new();
        section(&mut out, &r);
        assert!(out.contains("<b>not finished</b>"), "{out}");
        r.finish(
            &Outcome::Found {
                first_bad: 1,
                last_good: 0,
                confidence: 0.978,
            },
            "t".into(),
        );
        let mut out = String::new();
        section(&mut out, &r);
        assert!(
            out.contains("first bad: 000000000000 (net: &lt;change&gt; 1)"),
            "{out}"
        );
        assert!(!out.contains("<change>"), "{out}");
        assert_contains(
            &out,
            &[
                "10/10 runs, p 1.00 (95% interval 0.72-1.00)",
                "3 (for 95% confidence in each good verdict)",
                "2 steps, 1 builds: building 10m15s",
            ],
        );
        // A step built here shows its time and what ccache did; one built earlier says so.
        assert_contains(
            &out,
            &[
                "10m15s (1348 files compiled, ccache 0 hits / 1348 misses)",
                "built earlier",
                "1 / 3 (planned 3), 1 not judged",
                "<a href=\"step-2/results.json\">step-2</a>",
                "2.1s",
            ],
        );
        assert_eq!(out.matches("<tr><td>").count(), 2, "{out}");
    }
}
