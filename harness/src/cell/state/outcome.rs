//! What a cell saw, as the verdict reads it: while it still runs (to decide whether its
//! VM is kept) and once it is over.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use kchaos_model::fingerprint::Fingerprint;
use kchaos_model::metrics::Metric;
use kchaos_model::verdict::{self, Decision, Observations, Verdict};

use super::{CellState, Stage};

/// What a finished cell saw and the verdict it gets, for the result.
#[derive(Debug)]
pub struct Outcome {
    /// The cell's verdict, decided here once ([`CellState::decide`]).
    pub decision: Decision,
    pub obs: Observations,
    pub boot_ms: Option<u64>,
    pub guest_ready_ms: Option<u64>,
    pub release: Option<String>,
    pub notes: Vec<String>,
    /// What ended a failed, crashed or hung cell; a pass has none.
    pub fingerprint: Option<Fingerprint>,
    /// The console lines, for evidence written after the end.
    pub sysrq: Option<PathBuf>,
    pub vmcore: Option<PathBuf>,
    /// QEMU start → the first failure or crash signature.
    pub first_signature_ms: Option<u64>,
}

impl CellState {
    /// The verdict of what the cell saw: the one place a cell's verdict is decided,
    /// while it still runs (whether its VM is kept) and at its end (its result).
    pub(super) fn decide(&self, obs: &Observations) -> Decision {
        verdict::decide(&self.scenario, obs)
    }

    /// What the cell saw, as the verdict reads it. `qemu_stderr` is what QEMU printed
    /// once it is gone; `None` while the cell is still deciding (whether to keep its VM).
    pub(super) fn observations(&self, qemu_stderr: Option<&str>) -> Observations {
        let w = &self.observer;
        let mut obs = w.obs.clone();
        if w.corrupt_bytes > 0 {
            obs.infra.push(format!(
                "the control channel carried {} corrupt bytes (first: {})",
                w.corrupt_bytes,
                w.corrupt_first.clone().unwrap_or_default()
            ));
        }
        let ended_cleanly = obs.report.is_some() || obs.skip.is_some() || obs.fatal.is_some();
        let ended_by_harness = self.killed || self.kept();
        if let Some(stderr) = qemu_stderr.filter(|_| !ended_by_harness) {
            if !ended_cleanly && !w.has_crash() {
                let status = self.exit_status.as_deref().unwrap_or("unknown");
                let qemu_said = stderr
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .map(|l| format!("; QEMU said: {}", l.trim()))
                    .unwrap_or_default();
                let when = if self.hello_at.is_some() {
                    "before the runner reported results"
                } else {
                    "before the guest reached the runner"
                };
                obs.infra.push(format!(
                    "QEMU exited ({status}) {when}{qemu_said}; {}",
                    w.tail()
                ));
            }
        }
        let mut metrics: BTreeMap<String, Metric> = obs
            .report
            .as_ref()
            .map(|r| r.metrics.clone())
            .unwrap_or_default();
        for (name, series) in &w.series {
            metrics.insert(name.clone(), Metric::Series(series.clone()));
        }
        obs.metrics = metrics;
        obs
    }

    /// The cell is over: what it saw. `qemu_stderr` is what QEMU printed (nothing yet
    /// for a kept VM).
    pub fn finish(mut self, qemu_stderr: &str) -> Outcome {
        let mut obs = self.observations(Some(qemu_stderr));
        self.name_where_reported(&mut obs);
        let decision = self.decide(&obs);
        let failed = matches!(
            decision.verdict,
            Verdict::Crash | Verdict::Fail | Verdict::Hang
        );
        let hung = obs.hang.is_some();
        let since_start = |t: Instant| super::millis(t.saturating_duration_since(self.spawned_at));
        let boot_from = self.boot_from.unwrap_or(self.spawned_at);
        let w = &mut self.observer;
        if self.stage == Stage::Kept {
            w.notes.push(
                "the VM was kept for debugging after the verdict (--keep-on-failure / --keep)"
                    .to_owned(),
            );
        }
        Outcome {
            decision,
            obs,
            boot_ms: self
                .hello_at
                .map(|h| super::millis(h.saturating_duration_since(boot_from))),
            guest_ready_ms: self.guest_ready_ms,
            release: self.release,
            // A kernel report's stack first; a hang without one is fingerprinted by
            // where its dumps showed the kernel stuck.
            fingerprint: w
                .fingerprint()
                .or_else(|| {
                    self.stuck
                        .as_ref()
                        .filter(|_| hung || self.stuck_reported)
                        .and_then(kchaos_model::blocked::Stuck::fingerprint)
                })
                .filter(|_| failed),
            notes: std::mem::take(&mut w.notes),
            sysrq: None,
            vmcore: None,
            first_signature_ms: self.first_signature_at.map(since_start),
        }
    }

    /// A kernel that reported blocked tasks itself (the hung-task detector prints each
    /// one's stack) said where it is stuck even when no dump was taken: a cell that
    /// fails on such a report names the code path after it, as a hang does, and is
    /// fingerprinted by it when the report's own stack gave none.
    fn name_where_reported(&mut self, obs: &mut Observations) {
        let reported = obs.hits.iter().any(|h| h.id == "hung-task");
        if obs.stuck.is_some() || obs.hang.is_some() || !reported {
            return;
        }
        let mut lines = self.observer.console_lines.clone();
        lines.extend(self.observer.kmsg_lines().iter().cloned());
        let stuck = kchaos_model::blocked::parse(&lines);
        if let Some(summary) = stuck.summary() {
            obs.stuck = Some(summary);
            self.stuck = Some(stuck);
            self.stuck_reported = true;
        }
    }
}
