//! The verdict rules, case by case: precedence, checks, signatures, missing values.

use super::*;
use crate::metrics::{Gauge, Metric, Summary};
use crate::protocol::{ProbeReport, WorkloadReport};
use crate::scenario::{parse, CheckStatus};
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
    if let Some(r) = obs.report.as_mut() {
        r.workloads[0].errors = 2;
        r.workloads[0].error_samples = vec!["mkdir /sys/fs/cgroup/kchaos/cg-3: ENOSPC".into()];
    }
    let d = decide(&scenario(), &obs);
    assert_eq!(d.verdict, Verdict::Fail);
    assert!(
        d.reasons[0].contains("2 errors (allowed 1)") && d.reasons[0].contains("ENOSPC"),
        "{:?}",
        d.reasons
    );
    if let Some(r) = obs.report.as_mut() {
        r.workloads[0].errors = 1;
    }
    assert_eq!(decide(&scenario(), &obs).verdict, Verdict::Pass);
}

#[test]
fn probe_errors_fail() {
    let mut obs = finished(5);
    if let Some(r) = obs.report.as_mut() {
        r.probes[0].errors = 3;
    }
    assert_eq!(decide(&scenario(), &obs).verdict, Verdict::Fail);
}

#[test]
fn crash_beats_hang_beats_fail() {
    let mut obs = finished(25);
    obs.hits.push(hit("warning", Severity::Fail));
    assert_eq!(decide(&scenario(), &obs).verdict, Verdict::Fail);
    obs.hang = Some("no heartbeat for 30s".into());
    let d = decide(&scenario(), &obs);
    assert_eq!(d.verdict, Verdict::Hang);
    assert_eq!(d.reasons[0], "no heartbeat for 30s");
    obs.hits.push(hit("panic", Severity::Crash));
    let d = decide(&scenario(), &obs);
    assert_eq!(d.verdict, Verdict::Crash);
    assert!(d.reasons[0].contains("[panic]"));
}

#[test]
fn kernel_signature_fails_even_when_checks_pass() {
    let mut obs = finished(5);
    obs.hits.push(hit("unregister-netdevice", Severity::Fail));
    let d = decide(&scenario(), &obs);
    assert_eq!(d.verdict, Verdict::Fail);
    assert!(d.reasons[0].contains("unregister-netdevice"));
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
    let d = decide(&scenario(), &never_booted);
    assert_eq!(d.verdict, Verdict::Error);
    assert!(d.reasons[0].contains("never reached"));
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
    let d = decide(&scenario(), &obs);
    assert_eq!(d.verdict, Verdict::Skip);
    assert!(d.reasons[0].contains("EINVAL"));
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
