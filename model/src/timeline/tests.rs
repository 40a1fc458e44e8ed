//! Windows cut from a run's timeline, case by case.

use super::*;

#[test]
fn a_condition_holds_between_consecutive_samples_that_both_satisfy_it() {
    let at_least_900 = |v: f64| v >= 900.0;
    #[rustfmt::skip]
    type Case<'a> = (&'a [(u64, f64)], &'a [(u64, u64)]);
    let table: &[Case<'_>] = &[
        // samples (t_ms, value) → intervals
        (&[], &[]),
        (&[(0, 0.0), (500, 100.0)], &[]),
        // Rising through the bound: from the first satisfying sample on.
        (
            &[(0, 0.0), (500, 950.0), (1000, 1000.0), (1500, 990.0)],
            &[(500, 1500)],
        ),
        // Falling: up to the last satisfying sample, not into the gap after it.
        (&[(0, 1000.0), (500, 1000.0), (1000, 3.0)], &[(0, 500)]),
        // Two stretches stay apart.
        (
            &[
                (0, 950.0),
                (100, 950.0),
                (200, 0.0),
                (300, 950.0),
                (400, 950.0),
            ],
            &[(0, 100), (300, 400)],
        ),
        // A lone satisfying sample is the instant it was taken.
        (&[(0, 0.0), (100, 950.0), (200, 0.0)], &[(100, 100)]),
        // Out of order as received: sorted first.
        (&[(1000, 1000.0), (0, 0.0), (500, 1000.0)], &[(500, 1000)]),
    ];
    for &(samples, want) in table {
        assert_eq!(intervals_while(samples, at_least_900), want, "{samples:?}");
    }
}

#[test]
fn samples_inside_windows_keep_both_ends() {
    let samples = [
        (0, 1.0),
        (99, 2.0),
        (100, 3.0),
        (150, 4.0),
        (200, 5.0),
        (201, 6.0),
    ];
    assert_eq!(
        within(&samples, &[(100, 200)]),
        [(100, 3.0), (150, 4.0), (200, 5.0)]
    );
    assert_eq!(
        within(&samples, &[(0, 0), (201, 300)]),
        [(0, 1.0), (201, 6.0)]
    );
    assert!(within(&samples, &[]).is_empty());
}

#[test]
fn a_phase_is_the_span_of_its_workload_and_absent_when_it_never_ran() {
    let spans = [
        Span {
            name: "churn".into(),
            start_ms: 0,
            end_ms: 4000,
        },
        Span {
            name: "hold".into(),
            start_ms: 4001,
            end_ms: 19000,
        },
    ];
    assert_eq!(phase(&spans, "hold"), Some(vec![(4001, 19000)]));
    assert_eq!(phase(&spans, "reclaim"), None);
    // A span reported backwards (a clock step) is the instant it started.
    let odd = [Span {
        name: "x".into(),
        start_ms: 50,
        end_ms: 10,
    }];
    assert_eq!(phase(&odd, "x"), Some(vec![(50, 50)]));
}

#[test]
fn latency_percentiles_are_exact_nearest_rank() {
    let values: Vec<f64> = (1..=100).map(|ms| f64::from(ms) * 1e6).collect();
    let s = summarize(Unit::Ns, &values);
    assert_eq!((s.count, s.min, s.max), (100, 1_000_000, 100_000_000));
    assert_eq!(
        (s.p50, s.p90, s.p99, s.p999),
        (50_000_000, 90_000_000, 99_000_000, 100_000_000)
    );
    assert!((s.mean - 50.5e6).abs() < 1.0);
    // One sample is every percentile; none is no percentile at all.
    let one = summarize(Unit::Ns, &[7.0]);
    assert_eq!((one.p50, one.p99, one.max), (7, 7, 7));
    assert_eq!(summarize(Unit::Ns, &[]).stat(Stat::P50), None);
    assert_eq!(summarize(Unit::Ns, &[f64::NAN]).count, 0);
}

#[test]
fn tails_need_enough_samples_to_hold_one() {
    #[rustfmt::skip]
    let table = [
        // stat, default minimum, tail floor
        (Stat::Count, 0, 1), (Stat::P50, 10, 2), (Stat::P90, 10, 10), (Stat::P99, 100, 100),
        (Stat::P999, 1000, 1000), (Stat::Max, 10, 1), (Stat::Min, 10, 1), (Stat::Last, 10, 1),
    ];
    for (stat, default, tail) in table {
        assert_eq!(
            (min_samples(stat), tail_samples(stat)),
            (default, tail),
            "{stat}"
        );
    }
}

#[test]
fn statistics_of_a_selection_treat_latencies_and_series_apart() {
    let sel = [(0, 3.0), (10, 1.0), (20, 2.0)];
    assert_eq!(stat_of(&sel, Unit::Ns, true, Stat::P50), Some(2.0));
    assert_eq!(stat_of(&sel, Unit::Count, false, Stat::First), Some(3.0));
    assert_eq!(stat_of(&sel, Unit::Count, false, Stat::Delta), Some(-1.0));
    assert_eq!(stat_of(&[], Unit::Count, false, Stat::Count), Some(0.0));
    assert_eq!(stat_of(&[], Unit::Ns, true, Stat::Count), Some(0.0));
}

#[test]
fn phase_statistics_cut_every_timeline_by_every_span_in_start_order() {
    let report = RunReport {
        spans: vec![
            Span {
                name: "reclaim".into(),
                start_ms: 200,
                end_ms: 300,
            },
            Span {
                name: "churn".into(),
                start_ms: 0,
                end_ms: 199,
            },
        ],
        timelines: BTreeMap::from([(
            "stat".to_owned(),
            Series {
                unit: Unit::Ns,
                samples: vec![(0, 1.0), (100, 2.0), (250, 50.0), (400, 9.0)],
            },
        )]),
        ..RunReport::default()
    };
    let phases = phase_stats(&report);
    let names: Vec<&str> = phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["churn", "reclaim"]);
    assert_eq!(phases[0].latency["stat"].count, 2);
    assert_eq!(phases[0].latency["stat"].max, 2);
    assert_eq!(phases[1].latency["stat"].count, 1);
    assert_eq!(phases[1].latency["stat"].p50, 50);
}

#[test]
fn measured_prefers_a_probes_timeline_and_falls_back_to_a_counter_series() {
    let metrics = BTreeMap::from([(
        "dying".to_owned(),
        Metric::Series(Series {
            unit: Unit::Count,
            samples: vec![(0, 1.0)],
        }),
    )]);
    let report = RunReport {
        timelines: BTreeMap::from([(
            "lat".to_owned(),
            Series {
                unit: Unit::Ns,
                samples: vec![(5, 1e6)],
            },
        )]),
        ..RunReport::default()
    };
    let m = Measured::of(&metrics, Some(&report));
    assert!(matches!(m.samples("lat"), Some((_, true))));
    assert!(matches!(m.samples("dying"), Some((_, false))));
    assert!(m.samples("nothing").is_none());
    let bare = Measured::of(&metrics, None);
    assert!(bare.samples("lat").is_none() && bare.spans.is_empty());
}
