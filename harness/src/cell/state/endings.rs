//! How a cell ends besides running its course: at a signature that decides the run's
//! target, through the evidence end game (an NMI panic before a dump), and with its VM
//! kept for the engineer instead of killed. Part of [`CellState`]'s decisions, kept
//! apart so the main state machine reads as events and stages.

use std::time::Instant;

use kchaos_model::protocol::HostMessage;
use kchaos_model::signature::{Severity, SignatureHit};

use super::{after, sysrq, Action, CellState, KeepPolicy, Mark, Stage};
use crate::analysis::reproduction::Target;

/// How a cell may end besides running its course; fixed when it starts.
#[derive(Debug, Clone, Default)]
pub struct Endings {
    /// The outcome the run stops at (`repro`, `bisect`, `replay`): a kernel-log
    /// signature that decides it ends the cell at once, evidence first, instead of at
    /// the scenario's duration. `None` (`kchaos run`): every cell runs its course, and
    /// only a crash ends one early.
    pub until: Option<Target>,
    /// Guest memory is dumped at the end (`--dump-memory`; the kernel then runs with
    /// `panic=0 unknown_nmi_panic`, so an injected NMI panics it and it stays up).
    pub dump: bool,
    /// Which decided cells keep their VM for the engineer instead of killing it (the
    /// runner then waits for the host's `Ack` without a bound, and a panicked kernel
    /// stays up: `panic=0`).
    pub keep: KeepPolicy,
    /// QEMU starts paused until a debugger resumes it (`--gdb-wait`): the boot clock
    /// starts at [`Event::Resumed`], not at QEMU's start.
    pub wait_for_debugger: bool,
    /// Run to the scenario's end past a failure signature (`--full-duration`). Without
    /// it, in every command, a kernel-log signature that fails the cell decides it: the
    /// evidence is collected and the cell ends, instead of running out its duration.
    pub full_duration: bool,
}

impl CellState {
    /// Whether a VM that ends now is kept, by the policy and the verdict it will get.
    pub(super) fn keeps(&self) -> bool {
        if self.exited() || self.interrupted || self.endings.keep == KeepPolicy::Never {
            return false;
        }
        let verdict = self.decide(&self.observations(None)).verdict;
        self.endings.keep.keeps(verdict)
    }

    /// The cell is decided: keep its VM if asked to, else kill it.
    pub(super) fn end(&mut self, actions: &mut Vec<Action>) {
        if self.stage != Stage::Kept && self.keeps() {
            self.stage = Stage::Kept;
            actions.push(Action::Keep);
        } else {
            self.kill(actions);
        }
    }

    /// A new kernel-log signature: a crash ends the cell after a grace for the rest of
    /// its report; a failure ends it only when it decides the run's target (and the
    /// runner has not reported yet — then the cell is ending anyway).
    pub(super) fn signature(
        &mut self,
        hit: &SignatureHit,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        if matches!(hit.severity, Severity::Fail | Severity::Crash) {
            self.first_signature_at.get_or_insert(now);
        }
        // A crash while the dumps of a failure or a hang are being collected: what was
        // collected is kept, and the crash's report decides the rest.
        if hit.severity == Severity::Crash {
            if let Stage::SendingSysrq { mark, .. } | Stage::Collecting { mark, .. } = self.stage {
                let (console, kmsg) = self.since(mark);
                actions.push(Action::WriteSysrq(sysrq::sysrq_text(console, kmsg)));
                self.stage = Stage::Live;
            }
        }
        if self.stage != Stage::Live {
            return;
        }
        if hit.severity == Severity::Crash {
            self.stage = Stage::CrashGrace {
                until: after(now, self.timeouts.crash_grace),
            };
            return;
        }
        if self.finished_at.is_some() {
            // The runner reported: the cell is ending anyway.
            return;
        }
        let after_s = now.saturating_duration_since(self.spawned_at).as_secs_f64();
        match &self.endings.until {
            Some(target) if target.decided_by(hit) => {
                self.observer.notes.push(format!(
                    "ended at once: kernel log [{}] decides the target ({}) {after_s:.1}s after QEMU started; evidence collected, the rest of the run skipped",
                    hit.id,
                    target.describe(),
                ));
                self.send_sysrq(actions);
            }
            // Looking for something else: the cell runs on.
            Some(_) => {}
            None if hit.severity == Severity::Fail && !self.endings.full_duration => {
                self.observer.notes.push(format!(
                    "ended at once: kernel log [{}] fails the cell {after_s:.1}s after QEMU started; evidence collected, the rest of the run skipped (--full-duration runs it out)",
                    hit.id,
                ));
                self.send_sysrq(actions);
            }
            None => {}
        }
    }

    /// The runner reported (or gave up) and waits for the `Ack` to power off (a lost
    /// Ack only delays that). A VM to keep gets none: with `kchaos.keep` the runner
    /// waits for it without a bound.
    pub(super) fn reported(&mut self, actions: &mut Vec<Action>) {
        match self.stage {
            Stage::Live if self.keeps() => self.end(actions),
            Stage::Live | Stage::Exited { .. } => actions.push(Action::Send(HostMessage::Ack)),
            // Another end game (a crash's grace, a hang's evidence) decides; under a
            // keep policy the guest must not power off beneath it.
            _ if self.endings.keep == KeepPolicy::Never => {
                actions.push(Action::Send(HostMessage::Ack));
            }
            _ => {}
        }
    }

    /// The hang's (or a decided target's) evidence: every sysrq dump, the first time.
    pub(super) fn send_sysrq(&mut self, actions: &mut Vec<Action>) {
        self.stage = Stage::SendingSysrq {
            mark: Mark {
                console: self.observer.console_lines.len(),
                kmsg: self.observer.kmsg_lines().len(),
            },
            attempt: 1,
            started: None,
        };
        actions.push(Action::SendSysrq(sysrq::sysrq_keys()));
    }

    /// The console lines and kmsg records since `mark`: the evidence window's.
    pub(super) fn since(&self, mark: Mark) -> (Vec<String>, Vec<String>) {
        let console = self.observer.console_lines.get(mark.console..);
        let kmsg = self.observer.kmsg_lines().get(mark.kmsg..);
        (
            console.unwrap_or_default().to_vec(),
            kmsg.unwrap_or_default().to_vec(),
        )
    }

    /// Reads the task dumps for where the kernel is stuck: a hang's reason then names
    /// it first, and it fingerprints the hang; a cell ended early for a decided target
    /// keeps it as a note.
    pub(super) fn name_where_stuck(&mut self, console: &[String], kmsg: &[String]) {
        let mut lines = console.to_vec();
        lines.extend(kmsg.iter().cloned());
        let stuck = kchaos_model::blocked::parse(&lines);
        if let Some(summary) = stuck.summary() {
            match &mut self.observer.obs.hang {
                Some(reason) => *reason = format!("stuck in the kernel: {summary}; {reason}"),
                None => self.observer.obs.stuck = Some(summary),
            }
        }
        self.stuck = Some(stuck);
    }

    /// The last evidence, then the end: with a dump wanted, a kernel that has not
    /// panicked is made to panic first (every CPU's registers saved, its stack walkable
    /// by `crash`), then its memory is dumped.
    pub(super) fn dump_and_end(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let keeping = self.keeps();
        if self.endings.dump && !self.panicked {
            if !keeping {
                self.stage = Stage::Panicking {
                    until: after(now, self.timeouts.evidence_max),
                };
                actions.push(Action::InjectNmi);
                return;
            }
            self.observer.notes.push(
                "guest memory dumped live, without the NMI panic, to keep the guest as it was: `crash`'s bt may not walk a CPU caught on an entry stack (the monitor's `nmi`, then `dump-guest-memory`, gives a walkable dump)".to_owned(),
            );
        }
        actions.push(Action::DumpMemory);
        self.end(actions);
    }
}
