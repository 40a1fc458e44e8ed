//! The verdict rules, case by case: precedence, checks, signatures, missing values.

use super::*;
use crate::metrics::{Gauge, Metric, Summary};
use crate::protocol::{ProbeReport, WorkloadReport};
use crate::scenario::{parse, CheckStatus, CmpOp};
use crate::signature::LogSource;
use crate::units::Unit;

fn scenario() -> Scenario {
    let src = r#"
[scenario]
name = "v"
[[workload]]
kind = "cgroup-churn"
name = "churn"
max_errors = 1
[[probe]]
kind = "read-latency"
name = "stat_read"
path = "/x"
[[check]]
assert = "stat_read.p99 <= 10ms"
"#;
    parse("v.toml", src).unwrap()
}

/// What the runner reported in `obs`, to change it.
fn report(obs: &mut Observations) -> &mut RunReport {
    obs.report.as_mut().unwrap()
}

/// The first reason `obs` is decided with on [`scenario`], its verdict `verdict`.
fn first_reason(obs: &Observations, verdict: Verdict) -> String {
    let d = decide(&scenario(), obs);
    assert_eq!(d.verdict, verdict, "{:?}", d.reasons);
    d.reasons[0].clone()
}

fn hit(id: &str, severity: Severity) -> SignatureHit {
    SignatureHit {
        id: id.to_owned(),
        severity,
        line: format!("{id} line"),
        source: LogSource::Console,
    }
}

fn latency(p99_ms: u64) -> Metric {
    Metric::Histogram(Summary {
        unit: Unit::Ns,
        count: 100,
        p50: 1_000_000,
        p99: p99_ms * 1_000_000,
        max: p99_ms * 1_000_000,
        ..Summary::default()
    })
}

fn finished(p99_ms: u64) -> Observations {
    let mut metrics = BTreeMap::new();
    metrics.insert("stat_read".to_owned(), latency(p99_ms));
    Observations {
        reached_runner: true,
        report: Some(RunReport {
            workloads: vec![WorkloadReport {
                name: "churn".into(),
                iterations: 10,
                ..Default::default()
            }],
            probes: vec![ProbeReport {
                name: "stat_read".into(),
                reads: 100,
                ..Default::default()
            }],
            ..Default::default()
        }),
        metrics,
        ..Observations::default()
    }
}

#[test]
fn clean_run_passes() {
    let d = decide(&scenario(), &finished(5));
    assert_eq!(d.verdict, Verdict::Pass, "{:?}", d.reasons);
    assert!(d.reasons.is_empty());
}

#[test]
fn every_check_is_recorded_with_its_margin_pass_or_fail() {
    let d = decide(&scenario(), &finished(5));
    assert_eq!(d.checks.len(), 1);
    let c = &d.checks[0];
    assert_eq!(c.assert, "stat_read.p99 <= 10ms");
    assert_eq!(c.status, CheckStatus::Pass);
    assert_eq!((c.observed, c.bound), (Some(5e6), 10e6));
    assert_eq!(c.margin, Some(0.5));
    let d = decide(&scenario(), &finished(25));
    assert_eq!(d.checks[0].status, CheckStatus::Fail);
    assert_eq!(d.checks[0].margin, Some(-1.5));
}

#[test]
fn checks_are_kept_whatever_ends_the_cell_once_the_runner_reported() {
    // A panic after the report (say, while powering off) is a crash, and the checks
    // the run earned still say how close it came.
    let mut obs = finished(5);
    obs.hits.push(hit("panic", Severity::Crash));
    let d = decide(&scenario(), &obs);
    assert_eq!(d.verdict, Verdict::Crash);
    assert_eq!(d.checks.len(), 1);
    assert_eq!(d.checks[0].status, CheckStatus::Pass);
    // No report, no numbers: nothing to hold against the bounds.
    let obs = Observations {
        reached_runner: true,
        hang: Some("no heartbeat for 30s".into()),
        ..Observations::default()
    };
    assert!(decide(&scenario(), &obs).checks.is_empty());
}

#[test]
fn violated_check_fails_with_the_numbers() {
    let d = decide(&scenario(), &finished(25));
    assert_eq!(d.verdict, Verdict::Fail);
    assert_eq!(d.reasons.len(), 1);
    assert!(
        d.reasons[0].contains("stat_read.p99 = 25.00ms"),
        "{}",
        d.reasons[0]
    );
    assert!(d.reasons[0].contains("<= 10.00ms"), "{}", d.reasons[0]);
}

#[test]
fn a_missing_metric_never_passes_a_check() {
    let mut obs = finished(5);
    obs.metrics.clear();
    let d = decide(&scenario(), &obs);
    assert_eq!(d.verdict, Verdict::Fail);
    assert!(
        d.reasons[0].contains("no value of stat_read.p99 was recorded"),
        "{:?}",
        d.reasons
    );
    // The check is recorded all the same, with nothing observed.
    assert_eq!(d.checks.len(), 1);
    assert_eq!(d.checks[0].status, CheckStatus::NoData);
    assert_eq!((d.checks[0].observed, d.checks[0].margin), (None, None));
}

#[test]
fn workload_errors_beyond_the_tolerance_fail() {
    let mut obs = finished(5);
    let churn = &mut report(&mut obs).workloads[0];
    churn.errors = 2;
    churn.error_samples = vec!["mkdir /sys/fs/cgroup/kchaos/cg-3: ENOSPC".into()];
    let d = decide(&scenario(), &obs);
    assert_eq!(d.verdict, Verdict::Fail);
    assert!(
        d.reasons[0].contains("2 errors (allowed 1)") && d.reasons[0].contains("ENOSPC"),
        "{:?}",
        d.reasons
    );
    report(&mut obs).workloads[0].errors = 1;
    assert_eq!(decide(&scenario(), &obs).verdict, Verdict::Pass);
}

#[test]
fn probe_errors_fail() {
    let mut obs = finished(5);
    report(&mut obs).probes[0].errors = 3;
    assert_eq!(decide(&scenario(), &obs).verdict, Verdict::Fail);
}

#[test]
fn crash_beats_hang_beats_fail() {
    let mut obs = finished(25);
    obs.hits.push(hit("warning", Severity::Fail));
    assert_eq!(decide(&scenario(), &obs).verdict, Verdict::Fail);
    obs.hang = Some("no heartbeat for 30s".into());
    assert_eq!(first_reason(&obs, Verdict::Hang), "no heartbeat for 30s");
    obs.hits.push(hit("panic", Severity::Crash));
    assert!(first_reason(&obs, Verdict::Crash).contains("[panic]"));
}

#[test]
fn kernel_signature_fails_even_when_checks_pass() {
    let mut obs = finished(5);
    obs.hits.push(hit("unregister-netdevice", Severity::Fail));
    assert!(first_reason(&obs, Verdict::Fail).contains("unregister-netdevice"));
}

#[test]
fn runner_exit_is_an_error_not_a_crash() {
    let mut obs = finished(5);
    obs.hits.push(hit("init-exited", Severity::Infra));
    assert_eq!(decide(&scenario(), &obs).verdict, Verdict::Error);
}

#[test]
fn infrastructure_problems_are_errors_and_never_pass() {
    let mut obs = finished(5);
    obs.infra
        .push("control channel: 12 bytes of garbage".into());
    assert_eq!(decide(&scenario(), &obs).verdict, Verdict::Error);
    let never_booted = Observations::default();
    assert!(first_reason(&never_booted, Verdict::Error).contains("never reached"));
    let no_report = Observations {
        reached_runner: true,
        ..Observations::default()
    };
    assert!(decide(&scenario(), &no_report).reasons[0].contains("never reported"));
}

#[test]
fn skip_is_reported_with_its_reason_unless_the_kernel_misbehaved() {
    let mut obs = Observations {
        reached_runner: true,
        skip: Some("cgroup v1 memory controller cannot be mounted (EINVAL)".into()),
        ..Observations::default()
    };
    assert!(first_reason(&obs, Verdict::Skip).contains("EINVAL"));
    obs.hits.push(hit("warning", Severity::Fail));
    assert_eq!(decide(&scenario(), &obs).verdict, Verdict::Fail);
}

#[test]
fn value_metrics_are_checked_too() {
    let src = "[scenario]\nname = \"v\"\n[[workload]]\nkind = \"cgroup-churn\"\nname = \"c\"\n[[check]]\nassert = \"c.cgroups.value >= 10\"\n";
    let s = parse("v.toml", src).unwrap();
    let mut obs = Observations {
        reached_runner: true,
        report: Some(RunReport::default()),
        ..Default::default()
    };
    obs.metrics.insert(
        "c.cgroups".into(),
        Metric::Value(Gauge {
            unit: Unit::Count,
            value: 9.0,
        }),
    );
    assert_eq!(decide(&s, &obs).verdict, Verdict::Fail);
    obs.metrics.insert(
        "c.cgroups".into(),
        Metric::Value(Gauge {
            unit: Unit::Count,
            value: 10.0,
        }),
    );
    assert_eq!(decide(&s, &obs).verdict, Verdict::Pass);
}

fn histogram(unit: Unit, max_ns: u64) -> Metric {
    Metric::Histogram(Summary {
        unit,
        count: 10,
        min: 1,
        p50: 1,
        p90: max_ns,
        p99: max_ns,
        p999: max_ns,
        max: max_ns,
        mean: 1.0,
    })
}

/// Metrics that make every check of `s` hold exactly at its bound (or just inside).
fn passing(s: &Scenario) -> BTreeMap<String, Metric> {
    let mut metrics = BTreeMap::new();
    for c in &s.checks {
        let v = match c.op {
            CmpOp::Lt => c.threshold - 1.0,
            CmpOp::Gt | CmpOp::Ne => c.threshold + 1.0,
            _ => c.threshold,
        };
        let info = &s.metric_catalog()[&c.metric];
        let metric = match info.kind {
            crate::metrics::MetricKind::Value => Metric::Value(Gauge {
                unit: info.unit,
                value: v,
            }),
            crate::metrics::MetricKind::Histogram => {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let n = v.max(0.0) as u64;
                Metric::Histogram(Summary {
                    unit: info.unit,
                    count: 10,
                    min: n,
                    p50: n,
                    p90: n,
                    p99: n,
                    p999: n,
                    max: n,
                    #[allow(clippy::cast_precision_loss)]
                    mean: n as f64,
                })
            }
            crate::metrics::MetricKind::Series => Metric::Series(crate::metrics::Series {
                unit: info.unit,
                samples: vec![(0, v)],
            }),
        };
        metrics.entry(c.metric.clone()).or_insert(metric);
    }
    metrics
}

fn reported(metrics: BTreeMap<String, Metric>) -> Observations {
    Observations {
        reached_runner: true,
        report: Some(RunReport::default()),
        metrics,
        ..Observations::default()
    }
}

/// Issue 21: with a defect that made every Nth cgroup removal sleep 25 s holding
/// cgroup_mutex, `cfs-quota-starvation` measured `cfs.churn_rmdir` p90 = 25.4 s and
/// passed every check about it. The stall guard now fails it, naming the operation.
#[test]
fn the_cfs_scenario_can_no_longer_pass_a_25s_rmdir() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scenarios/cfs-quota-starvation.toml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let s = parse(path, &text).unwrap();
    let mut metrics = passing(&s);
    metrics.insert("cfs.churn_rmdir".into(), histogram(Unit::Ns, 1_000_000));
    let d = decide(&s, &reported(metrics.clone()));
    assert_eq!(d.verdict, Verdict::Pass, "{:?}", d.reasons);
    metrics.insert(
        "cfs.churn_rmdir".into(),
        histogram(Unit::Ns, 25_400_000_000),
    );
    let d = decide(&s, &reported(metrics));
    assert_eq!(d.verdict, Verdict::Fail);
    assert!(
        d.reasons[0].starts_with("stall: `cfs.churn_rmdir` took 25.40s"),
        "{:?}",
        d.reasons
    );
}

#[test]
fn the_stall_guard_yields_to_the_scenarios_own_bound_and_can_be_off() {
    let src = |extra: &str| {
        format!(
            "[scenario]\nname = \"g\"\n{extra}\n[[workload]]\nkind = \"cgroup-churn\"\nname = \"c\"\n"
        )
    };
    let slow = || {
        BTreeMap::from([
            ("c.rmdir".to_owned(), histogram(Unit::Ns, 12_000_000_000)),
            // A count histogram is not an operation's time.
            ("c.other".to_owned(), histogram(Unit::Count, 99_000_000_000)),
        ])
    };
    let default = parse("g.toml", &src("")).unwrap();
    let d = decide(&default, &reported(slow()));
    assert_eq!(d.reasons.len(), 1, "{:?}", d.reasons);
    assert!(
        d.reasons[0].contains("`c.rmdir` took 12.00s"),
        "{:?}",
        d.reasons
    );
    let wider = parse("g.toml", &src("stall_bound = \"20s\"")).unwrap();
    assert_eq!(decide(&wider, &reported(slow())).verdict, Verdict::Pass);
    let off = parse("g.toml", &src("stall_bound = \"off\"")).unwrap();
    assert_eq!(decide(&off, &reported(slow())).verdict, Verdict::Pass);
    let own = parse(
        "g.toml",
        &(src("") + "[[check]]\nassert = \"c.rmdir.max <= 30s\"\n"),
    )
    .unwrap();
    assert_eq!(decide(&own, &reported(slow())).verdict, Verdict::Pass);
    assert!(parse("g.toml", &src("stall_bound = \"1ms\"")).is_err());
}

#[test]
fn reasons_come_most_telling_first() {
    let src = r#"
[scenario]
name = "o"
[[workload]]
kind = "cgroup-churn"
name = "c"
[[probe]]
kind = "read-latency"
name = "r"
path = "/x"
[[check]]
assert = "c.cgroups.value >= 1000"
[[check]]
assert = "r.p99 <= 10ms"
[[check]]
assert = "c.cgroups.value <= 5"
kind = "leak"
[[check]]
assert = "c.mkdir.max <= 1s"
"#;
    let s = parse("o.toml", src).unwrap();
    let mut obs = reported(BTreeMap::from([
        (
            "c.cgroups".to_owned(),
            Metric::Value(Gauge {
                unit: Unit::Count,
                value: 10.0,
            }),
        ),
        ("r".to_owned(), latency(50)),
        ("c.mkdir".to_owned(), histogram(Unit::Ns, 2_000_000_000)),
    ]));
    let r = report(&mut obs);
    r.workloads = vec![WorkloadReport {
        name: "c".into(),
        errors: 3,
        error_samples: vec!["mkdir: ENOSPC".into()],
        findings: vec!["the mechanism, named".into()],
        ..Default::default()
    }];
    r.probes = vec![ProbeReport {
        name: "r".into(),
        errors: 1,
        ..Default::default()
    }];
    obs.hits.push(hit("hung-task", Severity::Fail));
    let d = decide(&s, &obs);
    let first_words: Vec<String> = d
        .reasons
        .iter()
        .map(|r| r.chars().take(32).collect())
        .collect();
    let want = [
        "kernel log [hung-task]",          // the kernel's own report
        "workload `c`: the mechanism",     // the workload's diagnosis
        "check `c.mkdir.max <= 1s`",       // a stall
        "check `c.cgroups.value <= 5`",    // a leak
        "workload `c`: 3 errors",          // errors
        "check `r.p99 <= 10ms`",           // behaviour
        "probe `r`: 1 of 1 reads failed",  // probe errors
        "check `c.cgroups.value >= 1000`", // coverage, last
    ];
    assert_eq!(d.reasons.len(), want.len(), "{:#?}", d.reasons);
    for (got, want) in first_words.iter().zip(want) {
        assert!(
            got.starts_with(want) || want.starts_with(got.as_str()),
            "{got:?} should start {want:?}: {:#?}",
            d.reasons
        );
    }
}

#[test]
fn scenarios_get_the_hung_task_detector_compressed_unless_they_set_it() {
    let body = "[[workload]]\nkind = \"cgroup-churn\"\nname = \"c\"\n";
    let plain = parse("h.toml", &format!("[scenario]\nname = \"h\"\n{body}")).unwrap();
    assert_eq!(plain.vm.sysctl["kernel.hung_task_timeout_secs"], "10");
    assert_eq!(plain.vm.sysctl["kernel.hung_task_check_interval_secs"], "2");
    let own = parse(
        "h.toml",
        &format!(
            "[scenario]\nname = \"h\"\n[vm.sysctl]\n\"kernel.hung_task_timeout_secs\" = 30\n{body}"
        ),
    )
    .unwrap();
    assert_eq!(own.vm.sysctl["kernel.hung_task_timeout_secs"], "30");
    assert_eq!(own.vm.sysctl["kernel.hung_task_check_interval_secs"], "2");
}

#[test]
fn where_the_kernel_was_stuck_follows_the_kernels_own_report() {
    let mut obs = finished(5);
    obs.stuck = Some("1 task blocked in D state: `exe` (pid 45) in msleep <- cgroup_rmdir".into());
    // Without a failure it changes nothing.
    assert_eq!(decide(&scenario(), &obs).verdict, Verdict::Pass);
    obs.hits.push(hit("hung-task", Severity::Fail));
    let d = decide(&scenario(), &obs);
    assert_eq!(d.verdict, Verdict::Fail);
    assert!(d.reasons[0].contains("[hung-task]"), "{:?}", d.reasons);
    assert!(
        d.reasons[1].starts_with("stuck in the kernel: 1 task blocked in D state: `exe`"),
        "{:?}",
        d.reasons
    );
}
