//! JUnit XML for CI systems (Jenkins, GitLab, GitHub): one `<testsuite>` per scenario,
//! one `<testcase>` per cell. Kernel verdicts (`fail`, `hang`, `crash`) are failures,
//! infrastructure problems (`error`) are errors, `skip` is skipped; the message is the
//! first reason and the body carries every reason, the fingerprint and where the
//! console and kernel log are, so a CI page shows why without opening the results.
//!
//! Each check of a cell that reported is a `<testcase>` of its own after the cell's,
//! passing or failing with the check: a CI page then lists every bound with what was
//! observed and the margin left. Not `<properties>`: Jenkins' schema has none on a
//! testcase (only on a suite) and GitLab shows none at all, while both list every
//! testcase with its status, message and output.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use kchaos_model::scenario::{CheckOutcome, CheckResult};
use kchaos_model::verdict::Verdict;
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use crate::results::CellResult;

#[derive(Debug, thiserror::Error)]
#[error("Cannot write JUnit XML")]
pub struct JunitError(#[source] quick_junit::SerializeError);

/// The JUnit document for `cells` (of one run or several).
pub fn render<'a>(cells: impl IntoIterator<Item = &'a CellResult>) -> Result<String, JunitError> {
    let mut report = Report::new("kchaos");
    let mut suites: BTreeMap<&str, Vec<&CellResult>> = BTreeMap::new();
    for cell in cells {
        suites.entry(&cell.scenario).or_default().push(cell);
    }
    let mut total = Duration::ZERO;
    for (scenario, cells) in suites {
        let mut suite = TestSuite::new(scenario);
        let mut time = Duration::ZERO;
        for cell in cells {
            let took = Duration::from_millis(cell.duration_ms);
            time += took;
            suite.add_test_case(test_case(cell, took));
            for check in &cell.checks {
                suite.add_test_case(check_case(cell, check));
            }
        }
        suite.set_time(time);
        total += time;
        report.add_test_suite(suite);
    }
    report.set_time(total);
    report.to_string().map_err(JunitError)
}

fn test_case(cell: &CellResult, took: Duration) -> TestCase {
    let mut status = match cell.verdict {
        Verdict::Pass => TestCaseStatus::success(),
        Verdict::Skip => TestCaseStatus::skipped(),
        // A failure a known issue describes is shown, not counted: skipped, as pytest's
        // xfail is, with the issue in the message (Jenkins and GitLab display it).
        Verdict::Fail | Verdict::Hang | Verdict::Crash if cell.known.is_some() => {
            TestCaseStatus::skipped()
        }
        Verdict::Fail | Verdict::Hang | Verdict::Crash => {
            TestCaseStatus::non_success(NonSuccessKind::Failure)
        }
        Verdict::Error => TestCaseStatus::non_success(NonSuccessKind::Error),
    };
    if cell.verdict != Verdict::Pass {
        let first = cell.reasons.first().map(String::as_str).unwrap_or("");
        let known = cell
            .known
            .as_ref()
            .map(|k| format!("known issue {} ({}): ", k.id, k.link))
            .unwrap_or_default();
        status.set_message(format!("{known}{}: {first}", cell.verdict));
        status.set_type(if cell.known.is_some() {
            "known"
        } else {
            cell.verdict.as_str()
        });
        status.set_description(details(cell));
    }
    let mut case = TestCase::new(case_name(cell), status);
    case.set_classname(format!("kchaos.{}", cell.scenario));
    case.set_time(took);
    case.set_system_out(metrics_text(cell));
    case
}

/// The cell id without the scenario: `debian-6.1.0-56-cloud/r2`.
fn case_name(cell: &CellResult) -> &str {
    cell.id
        .strip_prefix(&format!("{}/", cell.scenario))
        .unwrap_or(&cell.id)
}

/// One check of one cell: `debian-6.1.0-56-cloud/r2 check memory_stat_read.p99 <= 50ms`,
/// next to its cell in the same class, so a CI page sorts it beside the cell.
fn check_case(cell: &CellResult, check: &CheckResult) -> TestCase {
    let mut status = match check.outcome() {
        CheckOutcome::Pass => TestCaseStatus::success(),
        CheckOutcome::Violated(msg) | CheckOutcome::NoData(msg) | CheckOutcome::NotTested(msg) => {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            s.set_message(msg);
            s.set_type(format!("check-{}", check.status));
            s
        }
    };
    let mut out = format!(
        "observed {}, bound {}",
        check.observed_text(),
        check.bound_text()
    );
    if check.margin.is_some() {
        let _ = write!(out, ", margin {} of the bound", check.margin_text());
    } else if let Some(h) = check.headroom {
        let _ = write!(out, ", headroom {}", check.unit.format(h));
    }
    out.push('\n');
    if let Some(because) = &check.because {
        let _ = writeln!(out, "because: {because}");
    }
    if !check.passed() {
        status.set_description(out.clone());
    }
    let mut case = TestCase::new(
        format!("{} check {}", case_name(cell), check.assert),
        status,
    );
    case.set_classname(format!("kchaos.{}", cell.scenario));
    case.set_system_out(out);
    case
}

/// Everything a reader needs to triage the cell from the CI page.
fn details(cell: &CellResult) -> String {
    let mut out = String::new();
    for reason in &cell.reasons {
        let _ = writeln!(out, "{reason}");
    }
    if let Some(fp) = &cell.fingerprint {
        let _ = writeln!(out, "fingerprint {}: {}", fp.id, fp.title);
        for frame in &fp.frames {
            let _ = writeln!(out, "  {frame}");
        }
    }
    for hit in &cell.signatures {
        let _ = writeln!(out, "{hit}");
    }
    let kernel = cell.kernel.resolved.as_deref().unwrap_or(&cell.kernel.spec);
    let _ = writeln!(out, "kernel: {kernel}, seed: {}", cell.seed);
    // The files a reader of a failure opens first: what the guest said, and the
    // hang's dumps (the directory, QEMU's log and the bundle are in the report).
    for (what, path) in cell.artifacts.present() {
        if matches!(what, "console" | "kmsg" | "sysrq" | "vmcore") {
            let _ = writeln!(out, "{what}: {path}");
        }
    }
    out
}

fn metrics_text(cell: &CellResult) -> String {
    let mut out = String::new();
    for (name, metric) in &cell.metrics {
        let _ = writeln!(out, "{name}: {}", metric.brief());
    }
    out
}

#[cfg(test)]
mod known_tests {
    use super::*;
    use crate::fixtures::assert_contains;
    use crate::results::{test_cell, KnownMatch};

    #[test]
    fn a_known_failure_is_skipped_with_its_issue() {
        let mut cell = test_cell("memcg/k", Verdict::Crash, 1e6);
        cell.known = Some(KnownMatch {
            id: "bug-7".into(),
            link: "https://bugs.example/7".into(),
        });
        let xml = render(std::iter::once(&cell)).unwrap();
        assert_contains(
            &xml,
            &[
                "<skipped",
                "known issue bug-7 (https://bugs.example/7): crash",
            ],
        );
        assert!(!xml.contains("<failure"), "{xml}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::assert_contains;
    use crate::results::store::empty_results;
    use crate::results::{test_cell, RunResults};

    /// A run with one plausible cell per `(id, verdict)`.
    fn results_of(cells: &[(&str, Verdict)]) -> RunResults {
        let mut results = empty_results();
        results.cells = cells
            .iter()
            .map(|&(id, verdict)| test_cell(id, verdict, 1e6))
            .collect();
        results
    }

    const VERDICTS: [(&str, Verdict); 5] = [
        ("memcg/k1", Verdict::Pass),
        ("memcg/k2", Verdict::Fail),
        ("veth/k1", Verdict::Skip),
        ("veth/k2", Verdict::Error),
        ("panic/k1", Verdict::Crash),
    ];

    #[test]
    fn each_verdict_maps_to_its_junit_status() {
        let mut results = results_of(&VERDICTS);
        for cell in &mut results.cells {
            cell.reasons = vec![format!("why {} & <{}>", cell.id, cell.verdict)];
        }
        // Checks are their own testcases; these cells carry none.
        for cell in &mut results.cells {
            cell.checks.clear();
        }
        let xml = render(&results.cells).unwrap();
        assert_contains(
            &xml,
            &[
                r#"<testsuites name="kchaos" tests="5" skipped="1" failures="2" errors="1""#,
                r#"<testsuite name="memcg" tests="2""#,
                r#"<testcase name="k1" classname="kchaos.memcg""#,
                r#"<failure message="fail: why memcg/k2 &amp; &lt;fail&gt;" type="fail">"#,
                r#"<skipped message="skip: why veth/k1"#,
                r#"<error message="error: why veth/k2"#,
                r#"type="crash""#,
                "lat: n=100",
            ],
        );
    }

    #[test]
    fn every_check_is_a_testcase_with_its_numbers() {
        // lat.p99 <= 4ms: 1ms passes with 75% left, 6ms fails 50% past the bound.
        let mut results = results_of(&[("memcg/k1", Verdict::Pass)]);
        results
            .cells
            .push(test_cell("memcg/k2", Verdict::Fail, 6e6));
        let xml = render(&results.cells).unwrap();
        assert_contains(
            &xml,
            &[
                r#"<testsuite name="memcg" tests="4" skipped="0" errors="0" failures="2""#,
                r#"<testcase name="k1 check lat.p99 &lt;= 4ms" classname="kchaos.memcg""#,
                "observed 1.00ms, bound &lt;= 4.00ms, margin +75.0% of the bound",
                r#"<failure message="check `lat.p99 &lt;= 4ms` failed: lat.p99 = 6.00ms (bound &lt;= 4.00ms): the incident&apos;s tail" type="check-fail">"#,
                "margin -50.0% of the bound",
                "because: the incident",
            ],
        );
    }

    #[test]
    fn junit_validates_against_the_jenkins_schema() {
        let Some(xmllint) = crate::test_support::tool("xmllint") else {
            return;
        };
        let mut results = results_of(&VERDICTS);
        results
            .cells
            .extend(results_of(&[("wedge/k1", Verdict::Hang)]).cells);
        let dir = tempfile::tempdir().unwrap();
        let xml = dir.path().join("junit.xml");
        std::fs::write(&xml, render(&results.cells).unwrap()).unwrap();
        let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/junit-10.xsd");
        let validate = || {
            crate::test_support::run_bounded(
                &xmllint,
                &["--noout", "--schema", schema, &xml.display().to_string()],
                Duration::from_secs(30),
            )
        };
        let out = validate();
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && text.contains("validates"), "{text}");
        // The schema check itself bites: a testcase without its name is refused.
        let broken =
            std::fs::read_to_string(&xml)
                .unwrap()
                .replacen("<testcase name=", "<testcase nam=", 1);
        std::fs::write(&xml, broken).unwrap();
        assert!(!validate().status.success());
    }
}
