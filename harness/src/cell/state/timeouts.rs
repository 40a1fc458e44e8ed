//! The bounds a cell is held to, and the progress it reports: plain values the state
//! machine decides with, kept beside it (the accelerator's slowdown comes in as a
//! number, so nothing here depends on how it was found).

use std::time::Duration;

use kchaos_model::protocol::Phase;
use kchaos_model::scenario::Scenario;

/// Bounds for one cell, scaled for the accelerator.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// QEMU start → control socket connection.
    pub connect: Duration,
    /// QEMU start → runner `Hello`.
    pub boot: Duration,
    /// Longest silence on the channel before the guest is declared hung.
    pub hang: Duration,
    /// `Hello` → results: the scenario's duration and settle plus this much.
    pub overrun: Duration,
    /// Results → QEMU exit.
    pub poweroff: Duration,
    /// First crash signature → evidence and kill (the rest of the report prints first).
    pub crash_grace: Duration,
    /// Evidence collection ends this long after the console went quiet …
    pub evidence_quiet: Duration,
    /// … or this long after it started, whichever comes first.
    pub evidence_max: Duration,
}

impl Timeouts {
    /// The bounds of `scenario`'s cell on an accelerator `slowdown` times slower than
    /// KVM (TCG emulates every instruction).
    pub fn new(slowdown: u32, scenario: &Scenario) -> Timeouts {
        let s = slowdown;
        Timeouts {
            connect: Duration::from_secs(10),
            boot: Duration::from_secs(15) * s,
            hang: scenario
                .vm
                .hang_timeout
                .unwrap_or(Duration::from_secs(8) * s),
            overrun: Duration::from_secs(15) * s,
            poweroff: Duration::from_secs(3) * s,
            crash_grace: Duration::from_secs(2) * s,
            evidence_quiet: Duration::from_secs(1) * s,
            evidence_max: Duration::from_secs(10) * s,
        }
    }
}

/// Progress reported while a cell runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CellUpdate {
    Booting,
    Phase(Phase),
    Progress {
        workload: String,
        done: u64,
        total: Option<u64>,
    },
    /// Something the user must read now (how to reach a kept VM, a debugger).
    Info(String),
}

/// A duration in whole milliseconds, saturating (results record milliseconds).
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
