//! The report on synthetic runs, and as headless Chromium draws it.

use super::*;
use crate::fixtures::assert_contains;
use crate::report::KernelNames;
use crate::results::store::empty_results;
use crate::results::test_cell;
use crate::results::RunResults;

/// `results` as a run loaded from `dir`.
fn run_in(dir: &Path, results: RunResults) -> LoadedRun {
    LoadedRun {
        dir: dir.to_path_buf(),
        results,
    }
}

/// The report on `results` alone, as a run that was loaded from a directory that does
/// not exist, rendered for another.
fn render_alone(results: RunResults) -> String {
    render(
        std::slice::from_ref(&run_in(Path::new("/nonexistent/run"), results)),
        None,
        Path::new("/elsewhere"),
        &KernelNames::default(),
    )
}

/// Headless Chromium on `args`, with the flags every test here needs and a bound of
/// two minutes.
fn headless(chromium: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec![
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
    ];
    all.extend(args);
    crate::test_support::run_bounded(chromium, &all, std::time::Duration::from_secs(120))
}

#[test]
fn the_report_has_the_grid_plots_and_links_and_escapes_text() {
    let mut results = empty_results();
    results
        .cells
        .push(test_cell("memcg/k1", Verdict::Pass, 1e6));
    let mut failed = test_cell("memcg/k2", Verdict::Fail, 5e6);
    failed.reasons = vec!["<script>alert(1)</script>".into()];
    results.cells.push(failed);
    let html = render_alone(results);
    assert!(html.contains("<table class=\"grid\">"));
    assert!(html.contains(verdict_colour(Verdict::Fail)));
    assert!(html.contains("&lt;script&gt;"));
    assert!(!html.contains("<script>"));
    // Why k2 failed, in the grid; every check across kernels, with its margin.
    assert_contains(
        &html,
        &[
            "<div class=\"why\"><b>fail</b> &lt;script&gt;",
            "<table class=\"checks\">",
            "1.00ms · +75.0%",
            "5.00ms · -25.0%",
        ],
    );
    // One percentile plot (lat), two series plots (dying, slab), one value table.
    assert_eq!(html.matches("<svg").count(), 3, "{html}");
    assert!(html.contains("churn.cgroups"));
    assert!(html.contains("href=\"/nonexistent/run/memcg/k2/console.log\""));
}

/// Each probe's latency per phase: the median p50 and the worst p99 over a kernel's
/// repeats, with the samples they rest on; a phase without samples says so.
#[test]
fn latency_per_phase_shows_each_probe_in_each_workloads_phase() {
    use kchaos_model::metrics::Summary;
    use kchaos_model::timeline::PhaseStats;
    use kchaos_model::units::Unit;
    let summary = |count: u64, p50_ms: u64, p99_ms: u64| Summary {
        unit: Unit::Ns,
        count,
        p50: p50_ms * 1_000_000,
        p99: p99_ms * 1_000_000,
        ..Summary::default()
    };
    let phases = |hold: Summary| {
        vec![
            PhaseStats {
                name: "churn".into(),
                start_ms: 0,
                end_ms: 4000,
                latency: [("stat".to_owned(), summary(40, 1, 2))].into(),
            },
            PhaseStats {
                name: "hold".into(),
                start_ms: 4000,
                end_ms: 19000,
                latency: [("stat".to_owned(), hold)].into(),
            },
        ]
    };
    let mut results = empty_results();
    for (repeat, hold) in [(0, summary(150, 60, 90)), (1, summary(140, 50, 120))] {
        let mut cell = test_cell("memcg/k1", Verdict::Fail, 1e6);
        cell.id = format!("memcg/k1/r{repeat}");
        cell.repeat = repeat;
        cell.phases = phases(hold);
        results.cells.push(cell);
    }
    let mut empty = test_cell("memcg/k2", Verdict::Pass, 1e6);
    empty.phases = phases(Summary::default());
    results.cells.push(empty);
    let html = render_alone(results);
    assert_contains(
        &html,
        &[
            "<table class=\"phases\">",
            "<td>stat</td><td>hold</td><td><span title=\"r0: n=150 p50=60.00ms",
        ],
    );
    // Median p50 of 60 and 50 ms, the worst p99, every sample counted.
    assert_contains(
        &html,
        &[
            "p50 55.00ms · p99 120.00ms <span class=\"note\">(n=290)</span>",
            ">no samples</span>",
        ],
    );
}

/// The report as a real browser draws it: Debian's chromium, headless, takes a
/// screenshot; the verdict squares must be there in their colours, and the DOM the
/// browser built must hold the grid and the plots.
#[test]
fn renders_in_headless_chromium() {
    let Some(chromium) = crate::test_support::tool("chromium") else {
        return;
    };
    let mut results = empty_results();
    for (id, verdict) in [
        ("memcg/k1", Verdict::Pass),
        ("memcg/k2", Verdict::Fail),
        ("panic/k1", Verdict::Crash),
        ("panic/k2", Verdict::Skip),
    ] {
        results.cells.push(test_cell(id, verdict, 2e6));
    }
    let dir = tempfile::tempdir().unwrap();
    let run = run_in(dir.path(), results);
    let written = super::super::write(std::slice::from_ref(&run), None, dir.path());
    let html_path = written.html.unwrap();
    let url = format!("file://{}", html_path.display());
    let shot = dir.path().join("shot.png");
    let screenshot = format!("--screenshot={}", shot.display());
    let out = headless(&chromium, &["--window-size=1000,600", &screenshot, &url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decoder = png::Decoder::new(std::io::Cursor::new(std::fs::read(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (1000, 600));
    let channels = info.line_size / info.width as usize;
    let count = |hex: &str| {
        let rgb: Vec<u8> = (1..7)
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        buf.chunks(channels)
            .filter(|px| (0..3).all(|i| px[i].abs_diff(rgb[i]) <= 3))
            .count()
    };
    // Each verdict square is 18x18 pixels; badges add more.
    for v in [Verdict::Pass, Verdict::Fail, Verdict::Crash, Verdict::Skip] {
        let n = count(verdict_colour(v));
        assert!(n >= 200, "{v}: {n} pixels of {}", verdict_colour(v));
    }
    // A colour the report never uses is absent: the count measures something.
    assert_eq!(count("#123456"), 0);
    let dom = headless(&chromium, &["--dump-dom", &url]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("<table class=\"grid\">"), "{dom}");
    assert!(dom.matches("<svg").count() >= 3);
}

/// What the page-side script in [`a_failing_run_reads_in_headless_chromium`] reports.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Layout {
    why: Option<String>,
    why_visible: bool,
    why_on_top: bool,
    details_open: Option<bool>,
    details_text: Option<String>,
    page_width: f64,
    view_width: f64,
    overflowing: Vec<String>,
    points: usize,
    outside: Vec<(f64, f64)>,
    text_outside: Vec<String>,
    headers: Vec<(String, String)>,
}

/// Measures the page as laid out: the first reason in the grid, whether any table cell
/// or the page overflows, and every plotted point against its plot's area. Injected
/// into a copy of the report only: the report itself has no scripts.
const MEASURE: &str = r#"<script>
const out = { overflowing: [], outside: [], textOutside: [], points: 0, headers: [] };
const why = document.querySelector('table.grid .why');
out.why = why ? why.textContent : null;
if (why) {
  const r = why.getBoundingClientRect();
  out.whyVisible = r.width > 0 && r.height > 0 && r.left >= 0 && r.right <= window.innerWidth
    && getComputedStyle(why).visibility === 'visible';
  const hit = document.elementFromPoint(r.left + 4, r.top + r.height / 2);
  out.whyOnTop = !!hit && why.contains(hit);
} else { out.whyVisible = false; out.whyOnTop = false; }
const det = document.querySelector('table.grid details');
out.detailsOpen = det ? det.open : null;
out.detailsText = det ? det.textContent : null;
out.pageWidth = document.documentElement.scrollWidth;
out.viewWidth = window.innerWidth;
for (const e of document.querySelectorAll('th, td, .legend')) {
  if (e.scrollWidth > e.clientWidth + 1) out.overflowing.push(e.textContent.slice(0, 80));
}
for (const th of document.querySelectorAll('table.grid th[title]')) {
  out.headers.push([th.textContent, th.getAttribute('title')]);
}
for (const f of document.querySelectorAll('figure.plot')) {
  const [x0, y0, x1, y1] = f.dataset.area.split(' ').map(Number);
  for (const c of f.querySelectorAll('circle')) {
    const x = +c.getAttribute('cx'), y = +c.getAttribute('cy');
    out.points += 1;
    // plotters clamps a point beyond its axis onto the frame: on the frame is outside.
    if (x <= x0 || x >= x1 || y <= y0 || y >= y1) out.outside.push([x, y]);
  }
  // Screen boxes, so rotated labels are measured as drawn.
  const s = f.querySelector('svg').getBoundingClientRect();
  for (const t of f.querySelectorAll('svg text')) {
    const b = t.getBoundingClientRect();
    if (b.left < s.left - 1 || b.top < s.top - 1 || b.right > s.right + 1 || b.bottom > s.bottom + 1) {
      out.textOutside.push(t.textContent);
    }
  }
}
const pre = document.createElement('pre');
pre.id = 'layout';
pre.textContent = JSON.stringify(out);
document.body.appendChild(pre);
</script>
"#;

/// The page of a failing run on a local build, as Chromium lays it out: why the cell
/// failed is in the grid (the other reasons one click away), the `path:` spec is
/// labelled short and overflows nothing, and the 2.55 s outlier is inside its plot.
#[test]
fn a_failing_run_reads_in_headless_chromium() {
    use kchaos_model::metrics::{Metric, Summary};
    use kchaos_model::units::Unit;
    let Some(chromium) = crate::test_support::tool("chromium") else {
        return;
    };
    const SPEC: &str = "path:/home/someone/src/linux/arch/x86/boot/bzImage,modules=/home/someone/src/linux/mods/lib/modules/6.13.0-rc1,config=/home/someone/src/linux/.config";
    let first = "check `wakeup_throttled.max <= 500ms` failed: wakeup_throttled.max = 2.55s (bound <= 500.00ms): throttled wakeups must not wait a whole period";
    let mut results = empty_results();
    for (id, repeat, verdict, max_ms) in [
        ("cfs/local-6.13.0-rc1/r0", 0, Verdict::Fail, 2550),
        ("cfs/local-6.13.0-rc1/r1", 1, Verdict::Fail, 900),
        ("cfs/debian-6.1/r0", 0, Verdict::Pass, 120),
        ("cfs/debian-6.1/r1", 1, Verdict::Pass, 110),
    ] {
        let mut c = test_cell(id, verdict, 1e6);
        c.scenario = "cfs".into();
        c.repeat = repeat;
        if id.contains("local") {
            c.kernel.spec = SPEC.into();
            c.kernel.resolved = Some("local-6.13.0-rc1".into());
            c.kernel.release = Some("6.13.0-rc1".into());
        } else {
            c.kernel.spec = "debian:6.1-cloud".into();
            c.kernel.resolved = Some("debian:6.1.0-56-cloud".into());
            c.kernel.release = Some("6.1.0-56-cloud-amd64".into());
        }
        c.reasons = match repeat {
            _ if verdict == Verdict::Pass => Vec::new(),
            0 => vec![
                first.to_owned(),
                "WARNING: CPU: 0 PID: 1 at kernel/sched/fair.c:5821 unthrottle_cfs_rq".to_owned(),
            ],
            _ => vec![
                "check `wakeup_throttled.max <= 500ms` failed: wakeup_throttled.max = 900.00ms"
                    .to_owned(),
            ],
        };
        let ms = 1_000_000;
        c.metrics.insert(
            "wakeup_throttled".into(),
            Metric::Histogram(Summary {
                unit: Unit::Ns,
                count: 500,
                min: ms,
                p50: 5 * ms,
                p90: 40 * ms,
                p99: 100 * ms,
                p999: max_ms * ms / 2,
                max: max_ms * ms,
                mean: 10e6,
            }),
        );
        results.cells.push(c);
    }
    let dir = tempfile::tempdir().unwrap();
    let run = run_in(dir.path(), results);
    let written = super::super::write_named(
        std::slice::from_ref(&run),
        None,
        dir.path(),
        &KernelNames::default(),
    );
    let html = std::fs::read_to_string(written.html.unwrap()).unwrap();
    assert!(!html.contains("<script"), "the report itself runs nothing");
    let measured = dir.path().join("measured.html");
    std::fs::write(
        &measured,
        html.replace("</body>", &format!("{MEASURE}</body>")),
    )
    .unwrap();
    let url = format!("file://{}", measured.display());
    let out = headless(&chromium, &["--window-size=1000,800", "--dump-dom", &url]);
    let dom = String::from_utf8_lossy(&out.stdout);
    let json = dom
        .split("<pre id=\"layout\">")
        .nth(1)
        .and_then(|rest| rest.split("</pre>").next())
        .unwrap_or_else(|| panic!("no layout in {dom}"))
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    let layout: Layout = serde_json::from_str(&json).unwrap();
    // The first reason of the failing cell, visible in the grid and not covered.
    assert_eq!(
        layout.why.as_deref(),
        Some(format!("fail {first}").as_str()),
        "{layout:?}"
    );
    assert!(layout.why_visible && layout.why_on_top, "{layout:?}");
    // The rest one click away: closed, holding the other reasons.
    assert_eq!(layout.details_open, Some(false), "{layout:?}");
    let details = layout.details_text.clone().unwrap_or_default();
    assert!(
        details.contains("unthrottle_cfs_rq") && details.contains("r1 fail: check"),
        "{layout:?}"
    );
    // The local build is labelled by its release; the whole spec is the tooltip.
    assert_eq!(
        layout.headers,
        vec![
            (
                "6.13.0-rc1".to_owned(),
                format!("{SPEC}\nresolved: local-6.13.0-rc1\nrelease: 6.13.0-rc1")
            ),
            (
                "debian:6.1.0-56-cloud".to_owned(),
                "debian:6.1-cloud\nresolved: debian:6.1.0-56-cloud\nrelease: 6.1.0-56-cloud-amd64"
                    .to_owned()
            ),
        ],
        "{layout:?}"
    );
    // Nothing overflows: no table cell, no legend, not the page.
    assert!(layout.overflowing.is_empty(), "{layout:?}");
    assert!(layout.page_width <= layout.view_width, "{layout:?}");
    // Every point inside its plot, the outlier included, and every label inside its SVG.
    assert!(layout.points >= 20, "{layout:?}");
    assert!(layout.outside.is_empty(), "{layout:?}");
    assert!(layout.text_outside.is_empty(), "{layout:?}");
}
