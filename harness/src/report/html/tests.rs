//! The report on synthetic runs, and as headless Chromium draws it.

use super::*;
use crate::results::store::empty_results;
use crate::results::test_cell;

#[test]
fn the_report_has_the_grid_plots_and_links_and_escapes_text() {
    let mut results = empty_results();
    results
        .cells
        .push(test_cell("memcg/k1", Verdict::Pass, 1e6));
    let mut failed = test_cell("memcg/k2", Verdict::Fail, 5e6);
    failed.reasons = vec!["<script>alert(1)</script>".into()];
    results.cells.push(failed);
    let run = LoadedRun {
        dir: "/nonexistent/run".into(),
        results,
    };
    let html = render(std::slice::from_ref(&run), None, Path::new("/elsewhere"));
    assert!(html.contains("<table class=\"grid\">"));
    assert!(html.contains(verdict_colour(Verdict::Fail)));
    assert!(html.contains("&lt;script&gt;"));
    assert!(!html.contains("<script>"));
    // One percentile plot (lat), two series plots (dying, slab), one value table.
    assert_eq!(html.matches("<svg").count(), 3, "{html}");
    assert!(html.contains("churn.cgroups"));
    assert!(html.contains("href=\"/nonexistent/run/memcg/k2/console.log\""));
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
    let run = LoadedRun {
        dir: dir.path().to_path_buf(),
        results,
    };
    let written = super::super::write(std::slice::from_ref(&run), None, dir.path());
    let html_path = written.html.unwrap();
    let url = format!("file://{}", html_path.display());
    let shot = dir.path().join("shot.png");
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
    ];
    let limit = std::time::Duration::from_secs(120);
    let screenshot = format!("--screenshot={}", shot.display());
    let mut args = common.to_vec();
    args.extend(["--window-size=1000,600", &screenshot, &url]);
    let out = crate::test_support::run_bounded(&chromium, &args, limit);
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
    let mut args = common.to_vec();
    args.extend(["--dump-dom", &url]);
    let dom = crate::test_support::run_bounded(&chromium, &args, limit);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("<table class=\"grid\">"), "{dom}");
    assert!(dom.matches("<svg").count() >= 3);
}
