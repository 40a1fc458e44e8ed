//! The verdict of one cell (scenario × kernel × repeat). The host decides it from what it
//! observed; the guest only reports facts, so a broken guest cannot report a pass.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::metrics::{Metric, Stat};
use crate::protocol::RunReport;
use crate::scenario::{CheckKind, CheckOutcome, CheckResult, Scenario};
use crate::signature::{Severity, SignatureHit};
use crate::timeline::Measured;
use crate::units::Unit;

/// Exactly one per cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Ran to the end; every check and signature rule held.
    Pass,
    /// A requirement is missing on this kernel; nothing was judged.
    Skip,
    /// A check or a kernel-log signature failed.
    Fail,
    /// The guest stopped answering (no heartbeat within the bound).
    Hang,
    /// The kernel panicked or oopsed.
    Crash,
    /// Infrastructure: QEMU missing or dead, kernel not found, image build failed, the
    /// runner could not run. Says nothing about the kernel under test.
    Error,
}

impl Verdict {
    pub const ALL: [Verdict; 6] = [
        Verdict::Pass,
        Verdict::Skip,
        Verdict::Fail,
        Verdict::Hang,
        Verdict::Crash,
        Verdict::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Skip => "skip",
            Verdict::Fail => "fail",
            Verdict::Hang => "hang",
            Verdict::Crash => "crash",
            Verdict::Error => "error",
        }
    }

    /// A verdict about the kernel that should fail CI.
    pub fn is_failure(self) -> bool {
        matches!(self, Verdict::Fail | Verdict::Hang | Verdict::Crash)
    }
}

display_as_str!(Verdict);

/// Everything the host saw while a cell ran.
#[derive(Debug, Clone, Default)]
pub struct Observations {
    /// The runner completed the handshake.
    pub reached_runner: bool,
    /// The runner reported its results.
    pub report: Option<RunReport>,
    /// The runner found a requirement missing.
    pub skip: Option<String>,
    /// The runner could not go on (its own error, not the kernel's).
    pub fatal: Option<String>,
    /// The guest went silent beyond the bound; says what was last seen.
    pub hang: Option<String>,
    /// Infrastructure problems: QEMU died, boot timed out, the channel carried garbage.
    pub infra: Vec<String>,
    /// Classified kernel-log lines, deduplicated.
    pub hits: Vec<SignatureHit>,
    /// All metrics: the runner's summaries plus series the host assembled from samples.
    pub metrics: BTreeMap<String, Metric>,
    /// Where the task dumps showed the kernel stuck ([`crate::blocked::Stuck::summary`])
    /// when a failure, not a hang, ended the cell early: it names the code path right
    /// after the kernel's own report (a hang carries it in its own reason).
    pub stuck: Option<String>,
}

/// A verdict with the reasons, most important first, and every check's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub verdict: Verdict,
    pub reasons: Vec<String>,
    /// Every `[[check]]` in scenario order, passing or not, whenever the runner
    /// reported (whatever ended the cell afterwards); empty when it never did, since
    /// without a report there are no numbers to hold against the bounds.
    #[serde(default)]
    pub checks: Vec<CheckResult>,
}

/// Decides the verdict. Precedence: a crash signature beats everything (a hang after a
/// panic is still a crash); then a hang; then the runner exiting; then anything that
/// fails the kernel (signatures, checks, workload errors); then infrastructure errors;
/// then a skip; otherwise pass — but only if the runner reported results.
pub fn decide(scenario: &Scenario, obs: &Observations) -> Decision {
    let checks = check_results(scenario, obs);
    let (verdict, reasons) = judge(scenario, obs, &checks);
    Decision {
        verdict,
        reasons,
        checks,
    }
}

/// Every check against what the runner reported; none when it never did.
fn check_results(scenario: &Scenario, obs: &Observations) -> Vec<CheckResult> {
    let Some(report) = &obs.report else {
        return Vec::new();
    };
    let measured = Measured::of(&obs.metrics, Some(report));
    scenario
        .checks
        .iter()
        .map(|c| c.result_in(&measured))
        .collect()
}

/// The verdict and its reasons, in the precedence [`decide`] describes.
fn judge(
    scenario: &Scenario,
    obs: &Observations,
    checks: &[CheckResult],
) -> (Verdict, Vec<String>) {
    let by = |sev: Severity| -> Vec<String> {
        obs.hits
            .iter()
            .filter(|h| h.severity == sev)
            .map(ToString::to_string)
            .collect()
    };
    let kernel_fail = by(Severity::Fail);
    if let Some(ended) = ended_early(obs, by(Severity::Crash), &kernel_fail, by(Severity::Infra)) {
        return ended;
    }
    let mut failures = failures(scenario, obs, checks, kernel_fail);
    if !failures.is_empty() {
        failures.extend(obs.infra.iter().cloned());
        return (Verdict::Fail, failures);
    }
    if !obs.infra.is_empty() || obs.fatal.is_some() {
        let reasons = obs
            .fatal
            .iter()
            .map(|f| format!("runner: {f}"))
            .chain(obs.infra.iter().cloned())
            .collect();
        return (Verdict::Error, reasons);
    }
    if let Some(skip) = &obs.skip {
        return (Verdict::Skip, vec![skip.clone()]);
    }
    if obs.report.is_none() {
        let reason = if obs.reached_runner {
            "the runner never reported results"
        } else {
            "the guest never reached the kchaos runner"
        };
        return (Verdict::Error, vec![reason.to_owned()]);
    }
    (Verdict::Pass, Vec::new())
}

/// What ended the cell before anything could be judged: a crash, a hang, or the runner
/// (PID 1) exiting; `None` when the cell ran its course.
fn ended_early(
    obs: &Observations,
    crash: Vec<String>,
    kernel_fail: &[String],
    init_exit: Vec<String>,
) -> Option<(Verdict, Vec<String>)> {
    if !crash.is_empty() {
        let reasons = crash
            .into_iter()
            .chain(kernel_fail.iter().cloned())
            .chain(obs.hang.clone())
            .collect();
        return Some((Verdict::Crash, reasons));
    }
    if let Some(hang) = &obs.hang {
        let reasons = std::iter::once(hang.clone())
            .chain(kernel_fail.iter().cloned())
            .collect();
        return Some((Verdict::Hang, reasons));
    }
    if !init_exit.is_empty() {
        let reasons = std::iter::once("the kchaos runner (PID 1) exited unexpectedly".to_owned())
            .chain(obs.fatal.clone())
            .chain(init_exit)
            .collect();
        return Some((Verdict::Error, reasons));
    }
    None
}

/// Everything that fails the kernel (signatures, findings, stalls, errors, checks),
/// most telling first; within a class, in the order they were found.
fn failures(
    scenario: &Scenario,
    obs: &Observations,
    checks: &[CheckResult],
    kernel_fail: Vec<String>,
) -> Vec<String> {
    let mut told: Vec<(Tell, String)> = kernel_fail
        .into_iter()
        .map(|f| (Tell::Signature, f))
        .collect();
    if !told.is_empty() {
        if let Some(stuck) = &obs.stuck {
            told.push((Tell::Finding, format!("stuck in the kernel: {stuck}")));
        }
    }
    if let Some(report) = &obs.report {
        told.extend(report_failures(scenario, report));
        told.extend(
            stall_guards(scenario, &obs.metrics)
                .into_iter()
                .map(|s| (Tell::Stall, s)),
        );
        told.extend(check_failures(scenario, checks));
    }
    told.sort_by_key(|(tell, _)| *tell);
    told.into_iter().map(|(_, msg)| msg).collect()
}

/// The checks that did not pass, each with what it tells.
fn check_failures(scenario: &Scenario, checks: &[CheckResult]) -> Vec<(Tell, String)> {
    let mut told = Vec::new();
    for (check, result) in scenario.checks.iter().zip(checks) {
        match result.outcome() {
            CheckOutcome::Pass => {}
            CheckOutcome::Violated(msg) | CheckOutcome::NoData(msg) => {
                told.push((Tell::of_check(check.kind), msg));
            }
            // Too few samples in the window: nothing was judged, which fails the
            // cell but tells the least of all.
            CheckOutcome::NotTested(msg) => told.push((Tell::Coverage, msg)),
        }
    }
    told
}

/// What a failure reason tells, most telling first: a failed cell's reasons are
/// ordered so that the first names the mechanism (a kernel signature, a workload's own
/// diagnosis, a stall, a leak) and the last says only that the run did not do enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Tell {
    Signature,
    Finding,
    Stall,
    Leak,
    WorkloadError,
    Behaviour,
    ProbeError,
    Coverage,
}

impl Tell {
    fn of_check(kind: CheckKind) -> Tell {
        match kind {
            CheckKind::Stall => Tell::Stall,
            CheckKind::Leak => Tell::Leak,
            CheckKind::Behaviour => Tell::Behaviour,
            CheckKind::Coverage => Tell::Coverage,
        }
    }
}

/// The stall guard: every latency histogram the workloads and probes reported whose
/// longest sample passed the scenario's `stall_bound`, unless the scenario bounds that
/// metric's `max` itself. No scenario can forget to bound an operation that hangs.
pub fn stall_guards(scenario: &Scenario, metrics: &BTreeMap<String, Metric>) -> Vec<String> {
    let Some(bound) = scenario.stall_bound else {
        return Vec::new();
    };
    let bound_ns = bound.as_nanos() as f64;
    metrics
        .iter()
        .filter_map(|(name, metric)| match metric {
            Metric::Histogram(h) if h.unit == Unit::Ns && h.count > 0 => Some((name, h.max)),
            _ => None,
        })
        .filter(|(name, max)| {
            *max as f64 > bound_ns
                && !scenario
                    .checks
                    .iter()
                    .any(|c| c.metric == **name && c.stat == Stat::Max)
        })
        .map(|(name, max)| {
            format!(
                "stall: `{name}` took {} at its longest, past the stall bound of {} (`[scenario] stall_bound`): the operation blocked in the kernel",
                Unit::Ns.format(max as f64),
                Unit::Ns.format(bound_ns)
            )
        })
        .collect()
}

/// Workload and probe errors beyond what the scenario tolerates, and the workloads' own
/// findings, each with what it tells.
fn report_failures(scenario: &Scenario, report: &RunReport) -> Vec<(Tell, String)> {
    let mut out = Vec::new();
    for w in &report.workloads {
        for finding in &w.findings {
            out.push((Tell::Finding, format!("workload `{}`: {finding}", w.name)));
        }
    }
    for w in &report.workloads {
        let allowed = scenario
            .workloads
            .iter()
            .find(|s| s.name == w.name)
            .map_or(0, |s| s.max_errors);
        if w.errors > allowed {
            let first = first_error(&w.error_samples);
            out.push((
                Tell::WorkloadError,
                format!(
                    "workload `{}`: {} errors (allowed {allowed}){first}",
                    w.name, w.errors
                ),
            ));
        }
    }
    for p in &report.probes {
        if p.errors > 0 {
            let first = first_error(&p.error_samples);
            out.push((
                Tell::ProbeError,
                format!(
                    "probe `{}`: {} of {} reads failed{first}",
                    p.name,
                    p.errors,
                    p.reads + p.errors
                ),
            ));
        }
    }
    out
}

/// `, first: <error>` to end a count of errors with an example; empty without one.
fn first_error(samples: &[String]) -> String {
    samples
        .first()
        .map(|e| format!(", first: {e}"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
