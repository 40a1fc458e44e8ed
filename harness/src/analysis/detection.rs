//! The kill matrix: does each scenario catch the defects it is declared to catch, by
//! naming their mechanism, and does it stay quiet on kernels without them? This module
//! is the accounting (`detection.json`); `run/kill_matrix.rs` drives the VMs through a
//! session, `report/detection_table.rs` renders the table and the page.
//!
//! A detection counts only when a failing cell's reasons, signatures or fingerprint name
//! the defect's mechanism (its `expect` pattern): a throughput check or an overrun that
//! happens to trip is an escape with a note, not a catch.

use kchaos_images::defects::Family;
use kchaos_model::stats;
use kchaos_model::verdict::Verdict;
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::results::CellResult;

/// One scenario against one defect: caught or escaped, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub scenario: String,
    pub detected: bool,
    /// Runs made (up to the first detection, or the budget).
    pub runs: u32,
    /// VM time to the detection: the wall times of the runs up to and including the
    /// first that named the mechanism (boot included; host preparation, such as
    /// building the runner, not).
    pub seconds_to_detect: Option<f64>,
    /// The detecting cell's verdict, else the last run's.
    pub verdict: Option<Verdict>,
    /// What named the mechanism (a reason or a signature line), or why nothing did.
    pub evidence: Option<String>,
    pub fingerprint: Option<String>,
    /// Results of these runs, relative to the detection directory.
    pub results: String,
    /// Failures that did not name the mechanism (not a detection).
    #[serde(default)]
    pub unnamed_failures: u32,
}

/// One defect and every scenario declared to catch it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DefectRow {
    pub defect: String,
    pub incident: String,
    pub family: String,
    pub kernel: String,
    pub cmdline: Vec<String>,
    /// What a detection must name (a regular expression).
    pub expect: String,
    pub attempts: Vec<Attempt>,
}

/// A scenario on a kernel without any defect: it must pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StockCell {
    pub scenario: String,
    pub kernel: String,
    pub repeat: u32,
    pub verdict: Verdict,
    pub reasons: Vec<String>,
}

/// False alarms over the stock cells: failures / judged cells with a 95% interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FalseAlarms {
    pub judged: u64,
    pub failed: u64,
    pub rate: f64,
    pub interval95: (f64, f64),
}

/// Everything `kchaos detect` found; written as `detection.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub kchaos_version: String,
    pub started_at: String,
    pub defects: Vec<DefectRow>,
    /// The defect kernels without their parameters, and the stock kernels asked for.
    pub stock: Vec<StockCell>,
    pub false_alarms: FalseAlarms,
}

impl Detection {
    pub fn escaped(&self) -> impl Iterator<Item = (&DefectRow, &Attempt)> {
        self.defects
            .iter()
            .flat_map(|d| d.attempts.iter().map(move |a| (d, a)))
            .filter(|(_, a)| !a.detected)
    }

    /// Exit 1 when a declared defect escaped or a stock cell failed.
    pub fn failed(&self) -> bool {
        self.escaped().next().is_some() || self.false_alarms.failed > 0
    }
}

/// What in `cell` names the mechanism `expect`, if anything: the first matching reason,
/// signature line or fingerprint title. Only failing cells can name it.
pub fn names_mechanism(cell: &CellResult, expect: &Regex) -> Option<String> {
    if !cell.verdict.is_failure() {
        return None;
    }
    cell.reasons
        .iter()
        .find(|r| expect.is_match(r))
        .cloned()
        .or_else(|| {
            cell.signatures
                .iter()
                .find(|s| expect.is_match(&s.line) || expect.is_match(&s.id))
                .map(|s| s.line.clone())
        })
        .or_else(|| {
            cell.fingerprint
                .as_ref()
                .filter(|f| expect.is_match(&f.title))
                .map(|f| f.title.clone())
        })
}

impl Attempt {
    /// The attempt `cells` (one scenario's runs on one defect, in order) add up to:
    /// detected when a cell names the mechanism, with that cell's evidence; else the
    /// last reason seen, marked as not naming it. `runs` counts runs made, errors
    /// included.
    pub fn from_cells(
        scenario: &str,
        cells: &[CellResult],
        expect: &Regex,
        runs: u32,
        results: String,
    ) -> Attempt {
        let first = cells
            .iter()
            .position(|c| names_mechanism(c, expect).is_some());
        let seconds_to_detect = first.map(|i| {
            cells[..=i]
                .iter()
                .map(|c| c.duration_ms as f64 / 1000.0)
                .sum::<f64>()
        });
        let hit = cells
            .iter()
            .find_map(|c| names_mechanism(c, expect).map(|e| (c, e)));
        let unnamed = cells
            .iter()
            .filter(|c| c.verdict.is_failure() && names_mechanism(c, expect).is_none())
            .count();
        let detected = hit.is_some();
        let (verdict, evidence, fingerprint) = match hit {
            Some((c, evidence)) => (
                Some(c.verdict),
                Some(evidence),
                c.fingerprint.as_ref().map(|f| f.id.clone()),
            ),
            None => (
                cells.last().map(|c| c.verdict),
                cells
                    .iter()
                    .rev()
                    .find_map(|c| c.reasons.first())
                    .map(|r| format!("not named: {r}")),
                None,
            ),
        };
        Attempt {
            scenario: scenario.to_owned(),
            detected,
            runs,
            seconds_to_detect,
            verdict,
            evidence,
            fingerprint,
            results,
            unnamed_failures: u32::try_from(unnamed).unwrap_or(u32::MAX),
        }
    }
}

/// The false-alarm rate of stock cells (errors and skips are not judged).
pub fn false_alarms(stock: &[StockCell]) -> FalseAlarms {
    let judged = stock
        .iter()
        .filter(|c| !matches!(c.verdict, Verdict::Error | Verdict::Skip))
        .count() as u64;
    let failed = stock.iter().filter(|c| c.verdict.is_failure()).count() as u64;
    let rate = if judged == 0 {
        0.0
    } else {
        failed as f64 / judged as f64
    };
    FalseAlarms {
        judged,
        failed,
        rate,
        interval95: stats::wilson(failed, judged, stats::Z95),
    }
}

/// What a detection must name, per family, when the defect list says nothing: the
/// kernel's signature or the check that names the leaked object, starving group or
/// stalled operation — never a throughput bound or the run's overrun.
pub fn default_expect(family: Family) -> &'static str {
    match family {
        Family::Netdev => r"unregister_netdevice|net_devices|leaked|teardown|D state",
        Family::Memcg => {
            r"dying|SLUB: Unable to allocate|page allocation failure|Cannot allocate memory|mkdir|rmdir|D state|hung_task|blocked"
        }
        Family::Cfs => r"share_min|share_max|throttl|starv|lockup|LOCKUP|rcu.*stall|RCU",
        Family::Systemd => {
            r"systemd unresponsive|silence|job of .* ended|no JobRemoved|leaked|Operation not supported"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::test_cell;

    #[test]
    fn only_a_failure_that_names_the_mechanism_is_a_detection() {
        let expect = Regex::new("unregister_netdevice|leaked").unwrap();
        let mut cell = test_cell("veth/k", Verdict::Fail, 1e6);
        cell.reasons = vec!["check `pods.teardown.p99 <= 2s` failed".into()];
        assert_eq!(
            names_mechanism(&cell, &expect),
            None,
            "a latency bound is no catch"
        );
        cell.signatures.push(kchaos_model::signature::SignatureHit {
            id: "unregister-netdevice".into(),
            severity: kchaos_model::signature::Severity::Fail,
            line: "unregister_netdevice: waiting for veth3 to become free. Usage count = 2".into(),
            source: kchaos_model::signature::LogSource::Console,
        });
        assert!(names_mechanism(&cell, &expect).is_some_and(|e| e.contains("waiting for veth3")));
        cell.verdict = Verdict::Pass;
        assert_eq!(
            names_mechanism(&cell, &expect),
            None,
            "only failures name it"
        );
    }

    #[test]
    fn an_attempt_is_detected_only_by_a_run_that_names_the_mechanism() {
        let expect = Regex::new("dying").unwrap();
        let mut throughput = test_cell("m/k", Verdict::Fail, 1e6);
        throughput.reasons = vec!["check `churn.cgroups.value >= 1000` failed".into()];
        let mut named = test_cell("m/k", Verdict::Fail, 1e6);
        named.reasons = vec!["check `reclaim.dying.value <= 2` failed: 75".into()];
        let pass = test_cell("m/k", Verdict::Pass, 1e6);

        let a = Attempt::from_cells(
            "m",
            &[throughput.clone(), pass.clone()],
            &expect,
            2,
            "d/m".into(),
        );
        assert!(!a.detected);
        assert_eq!(a.unnamed_failures, 1);
        assert_eq!(a.seconds_to_detect, None);
        assert_eq!(a.verdict, Some(Verdict::Pass));
        assert!(a
            .evidence
            .as_deref()
            .is_some_and(|e| e.starts_with("not named: check `churn")));

        let a = Attempt::from_cells("m", &[throughput, named], &expect, 2, "d/m".into());
        assert!(a.detected);
        assert_eq!(a.verdict, Some(Verdict::Fail));
        // Both runs' wall time: the one that did not name it counts too.
        assert_eq!(a.seconds_to_detect, Some(40.0));
        assert!(a
            .evidence
            .as_deref()
            .is_some_and(|e| e.contains("reclaim.dying")));

        let a = Attempt::from_cells("m", &[], &expect, 0, "d/m".into());
        assert!(!a.detected && a.verdict.is_none() && a.evidence.is_none());
    }

    #[test]
    fn false_alarms_count_judged_stock_cells_with_an_interval() {
        let cell = |v| StockCell {
            scenario: "s".into(),
            kernel: "k".into(),
            repeat: 0,
            verdict: v,
            reasons: Vec::new(),
        };
        let mut stock: Vec<StockCell> = (0..30).map(|_| cell(Verdict::Pass)).collect();
        stock.push(cell(Verdict::Error));
        stock.push(cell(Verdict::Skip));
        let f = false_alarms(&stock);
        assert_eq!((f.judged, f.failed), (30, 0));
        // 0 of 30: the rule of three's neighbour, Wilson's upper bound ~11.4%.
        assert!(
            (f.interval95.1 - 0.1135).abs() < 0.002,
            "{:?}",
            f.interval95
        );
        stock.push(cell(Verdict::Fail));
        assert_eq!(false_alarms(&stock).failed, 1);
    }
}
