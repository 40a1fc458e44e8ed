//! Windows in the check language: written, refused with a located error, and judged.

use std::collections::BTreeMap;

use super::*;
use crate::metrics::{Metric, Series};
use crate::protocol::RunReport;
use crate::scenario::{parse, CheckOutcome, CheckStatus, Scenario};
use crate::timeline::Span;
use crate::units::Unit;

/// A churn, a hold and a reclaim; memory.stat reads and the dying count.
const BASE: &str = r#"[scenario]
name = "w"
[[workload]]
kind = "cgroup-churn"
name = "churn"
[[workload]]
kind = "memcg-reclaim"
name = "reclaim"
churn = "churn"
[[probe]]
kind = "read-latency"
name = "stat"
path = "/x"
[[probe]]
kind = "counter"
name = "dying"
path = "/y"
key = "nr_dying_descendants"
"#;

fn with(assert: &str) -> String {
    format!("{BASE}[[check]]\nassert = \"{assert}\"\n")
}

fn scenario(assert: &str) -> Scenario {
    match parse("w.toml", &with(assert)) {
        Ok(s) => s,
        Err(e) => panic!("`{assert}`: {e}"),
    }
}

#[test]
fn splitting_takes_the_window_out_of_the_check() {
    #[rustfmt::skip]
    type Split<'a> = Option<(&'a str, &'a str, usize)>;
    let table: &[(&str, Split<'_>)] = &[
        ("stat.p50 <= 5ms", None),
        (
            "stat[hold].p50 <= 5ms",
            Some(("stat.p50 <= 5ms", "hold", 5)),
        ),
        (
            "a.b[while d >= 9].max < 1",
            Some(("a.b.max < 1", "while d >= 9", 4)),
        ),
    ];
    for &(text, want) in table {
        let got = split(text).unwrap();
        let got = got.as_ref().map(|(plain, w, at)| (plain.as_str(), *w, *at));
        assert_eq!(got, want, "{text}");
    }
    #[rustfmt::skip]
    let refused: &[(&str, &str)] = &[
        ("stat[hold.p50 <= 5ms", "never closed"),
        ("stat]hold.p50 <= 5ms", "closes no window"),
        ("stat[hold]p50 <= 5ms", "between the metric and its statistic"),
        ("stat[a][b].p50 <= 5ms", "one window"),
    ];
    for &(text, says) in refused {
        let err = split(text).unwrap_err();
        assert!(err.1.contains(says), "{text}: {err:?}");
    }
}

#[test]
fn phases_and_conditions_parse_into_windows() {
    let s = scenario("stat[reclaim].p50 <= 5ms");
    let w = s.checks[0].window.clone().unwrap();
    assert_eq!(
        w.over,
        Over::Phase {
            name: "reclaim".into()
        }
    );
    assert_eq!(s.checks[0].text, "stat[reclaim].p50 <= 5ms");

    let s = scenario("stat[ while  dying >= 900 ].p90 < 1s");
    let w = s.checks[0].window.clone().unwrap();
    assert_eq!(w.text, "while  dying >= 900");
    assert_eq!(
        w.over,
        Over::While {
            metric: "dying".into(),
            op: CmpOp::Ge,
            threshold: 900.0
        }
    );
    assert_eq!(s.checks[0].threshold, 1e9);
    // A counter may be judged over a window too, even over its own condition.
    let s = scenario("dying[while dying >= 900].count >= 20");
    assert!(s.checks[0].window.is_some());
}

/// Every mistake in a window is an error at its line and the column of the mistake.
#[test]
fn a_bad_window_is_an_error_at_its_place() {
    // The check is the file's last line; its string starts at column 10.
    let line = with("x").lines().count();
    #[rustfmt::skip]
    let table: &[(&str, usize, &str)] = &[
        // assert, column, message
        ("stat[hlod].p50 <= 5ms", 16, "unknown phase `hlod`; phases are the workloads: churn, reclaim"),
        ("stat[].p50 <= 5ms", 16, "empty window"),
        ("stat[while nope >= 9].p50 <= 5ms", 22, "unknown counter `nope`; this scenario's counters: dying"),
        ("stat[while stat >= 9].p50 <= 5ms", 22, "`stat` is not a counter series"),
        ("stat[while dying >= 9ms].p50 <= 5ms", 31, "write a plain number"),
        ("stat[while dying].p50 <= 5ms", 22, "a condition compares a counter"),
        ("churn.mkdir[reclaim].p50 <= 5ms", 23, "`churn.mkdir` has no timed samples to cut into windows; windows apply to probes: dying, stat"),
        ("stat[reclaim.p50 <= 5ms", 15, "never closed"),
    ];
    for &(assert, column, says) in table {
        let errors = match parse("w.toml", &with(assert)) {
            Ok(_) => panic!("`{assert}` parsed"),
            Err(e) => e.0,
        };
        assert_eq!(errors.len(), 1, "{assert}: {errors:?}");
        let e = &errors[0];
        assert_eq!((e.line, e.column), (line, column), "{assert}: {e}");
        assert_eq!(e.key.as_deref(), Some("check[0].assert"), "{e}");
        assert!(e.message.contains(says), "{assert}: {e}");
    }
}

#[test]
fn min_samples_belongs_to_a_windowed_check() {
    let src = format!("{BASE}[[check]]\nassert = \"stat.p50 <= 5ms\"\nmin_samples = 5\n");
    let err = parse("w.toml", &src).unwrap_err().to_string();
    assert!(
        err.contains("check[0].min_samples: `min_samples` is for a check over a window"),
        "{err}"
    );
    let src = format!("{BASE}[[check]]\nassert = \"stat[churn].p50 <= 5ms\"\nmin_samples = 0\n");
    let err = parse("w.toml", &src).unwrap_err().to_string();
    assert!(err.contains("0 is out of range"), "{err}");
}

/// A run: churn 0-999 ms, reclaim 1000-1999 ms; `dying` at 950 from 200 to 900 ms; a
/// read every 10 ms, slow (50 ms) while the count is high, fast (1 ms) otherwise.
fn run() -> (BTreeMap<String, Metric>, RunReport) {
    let dying: Vec<(u64, f64)> = (0..=20)
        .map(|i| {
            let t = i * 100;
            (t, if (200..=900).contains(&t) { 950.0 } else { 0.0 })
        })
        .collect();
    let reads: Vec<(u64, f64)> = (0..200)
        .map(|i| {
            let t = i * 10;
            (t, if (200..=900).contains(&t) { 50e6 } else { 1e6 })
        })
        .collect();
    let metrics = BTreeMap::from([(
        "dying".to_owned(),
        Metric::Series(Series {
            unit: Unit::Count,
            samples: dying,
        }),
    )]);
    let report = RunReport {
        spans: vec![
            Span {
                name: "churn".into(),
                start_ms: 0,
                end_ms: 999,
            },
            Span {
                name: "reclaim".into(),
                start_ms: 1000,
                end_ms: 1999,
            },
        ],
        timelines: BTreeMap::from([(
            "stat".to_owned(),
            Series {
                unit: Unit::Ns,
                samples: reads,
            },
        )]),
        ..RunReport::default()
    };
    (metrics, report)
}

#[test]
fn windows_judge_only_their_samples() {
    let (metrics, report) = run();
    let data = Measured::of(&metrics, Some(&report));
    #[rustfmt::skip]
    let table: &[(&str, CheckStatus, Option<f64>, Option<u64>)] = &[
        // assert, status, observed, samples in the window
        ("stat[while dying >= 900].p50 <= 20ms", CheckStatus::Fail, Some(50e6), Some(71)),
        ("stat[while dying >= 900].count >= 50", CheckStatus::Pass, Some(71.0), Some(71)),
        ("stat[while dying < 900].max <= 20ms", CheckStatus::Pass, Some(1e6), Some(111)),
        ("stat[churn].p90 <= 20ms", CheckStatus::Fail, Some(50e6), Some(100)),
        ("stat[reclaim].p99 <= 20ms", CheckStatus::Pass, Some(1e6), Some(100)),
        ("dying[churn].max >= 900", CheckStatus::Pass, Some(950.0), Some(10)),
        // Too few samples: not tested, whatever the value would say.
        ("stat[while dying >= 900].p99 <= 1s", CheckStatus::NotTested, None, Some(71)),
        ("stat[while dying >= 5000].p50 <= 1s", CheckStatus::NotTested, None, Some(0)),
        ("dying[while dying >= 900].min >= 900", CheckStatus::NotTested, None, Some(8)),
        // A window that never happened is counted as empty: a count of nothing fails.
        ("stat[while dying >= 5000].count >= 1", CheckStatus::Fail, Some(0.0), Some(0)),
    ];
    for &(assert, status, observed, samples) in table {
        let s = scenario(assert);
        let r = s.checks[0].result_in(&data);
        assert_eq!(r.status, status, "{assert}: {r:?}");
        if observed.is_some() {
            assert_eq!(r.observed, observed, "{assert}");
        }
        assert_eq!(r.samples, samples, "{assert}");
        if status == CheckStatus::NotTested {
            assert!(r.observed.is_none() && r.margin.is_none(), "{r:?}");
            let CheckOutcome::NotTested(msg) = r.outcome() else {
                panic!("{r:?}")
            };
            assert!(
                msg.contains("not tested") && msg.contains("never passes"),
                "{msg}"
            );
        }
    }
}

#[test]
fn a_phase_that_never_ran_or_a_runner_without_timelines_is_not_tested() {
    let (metrics, mut report) = run();
    report.spans.retain(|s| s.name != "reclaim");
    let data = Measured::of(&metrics, Some(&report));
    let r = scenario("stat[reclaim].p50 <= 5ms").checks[0].result_in(&data);
    assert_eq!(r.status, CheckStatus::NotTested);
    assert_eq!(
        r.not_tested.as_deref(),
        Some("the workload `reclaim` never ran")
    );

    let bare = Measured::of(&metrics, None);
    let r = scenario("stat[churn].p50 <= 5ms").checks[0].result_in(&bare);
    assert_eq!(r.status, CheckStatus::NotTested);
    assert_eq!(
        r.not_tested.as_deref(),
        Some("no timed samples of `stat` were reported")
    );
    assert_eq!(r.outcome(), CheckOutcome::NotTested(
        "check `stat[churn].p50 <= 5ms` not tested: no timed samples of `stat` were reported (a window too thin to judge never passes)".into()
    ));
}

#[test]
fn min_samples_raises_or_lowers_the_bar_but_not_below_a_tail() {
    let (metrics, report) = run();
    let data = Measured::of(&metrics, Some(&report));
    let src = format!("{BASE}[[check]]\nassert = \"stat[churn].p50 <= 1s\"\nmin_samples = 500\n");
    let s = parse("w.toml", &src).unwrap();
    let r = s.checks[0].result_in(&data);
    assert_eq!(
        (r.status, r.samples, r.min_samples),
        (CheckStatus::NotTested, Some(100), Some(500))
    );
    let src = format!(
        "{BASE}[[check]]\nassert = \"dying[while dying >= 900].min >= 900\"\nmin_samples = 3\n"
    );
    let r = parse("w.toml", &src).unwrap().checks[0].result_in(&data);
    assert_eq!(r.status, CheckStatus::Pass, "{r:?}");
    assert_eq!(needed(Stat::P99, Some(3)), 100);
    assert_eq!(needed(Stat::Count, Some(3)), 0);
}

#[test]
fn a_failed_windowed_check_names_its_window_and_sample_count() {
    let (metrics, report) = run();
    let data = Measured::of(&metrics, Some(&report));
    let r = scenario("stat[churn].p90 <= 20ms").checks[0].result_in(&data);
    let CheckOutcome::Violated(msg) = r.outcome() else {
        panic!("{r:?}")
    };
    assert_eq!(
        msg,
        "check `stat[churn].p90 <= 20ms` failed: stat[churn].p90 = 50.00ms over 100 samples (bound <= 20.00ms)"
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["window"], "churn");
    assert_eq!(json["samples"], 100);
    // Whole-run checks keep their JSON as it was.
    let plain = scenario("stat.p50 <= 20ms").checks[0].result_in(&data);
    let json = serde_json::to_value(&plain).unwrap();
    assert!(json.get("window").is_none() && json.get("samples").is_none());
}
