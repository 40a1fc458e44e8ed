//! The decisions of one cell, as a state machine with no I/O. The driver (`drive.rs`)
//! turns console lines, channel frames, QEMU's exit, the user's interrupt and timers
//! into [`Event`]s; [`CellState::handle`] decides and answers with [`Action`]s for the
//! driver to carry out. Every path to a verdict is a table test here, not a VM run.
//!
//! The stage is explicit: a live QEMU (booting, running, reported — told apart by what
//! the runner has said), the end games of a hang (verify QEMU is alive, send sysrq,
//! collect the dumps) and of a crash (grace for the rest of the report), killed, exited.
//! A run looking for an outcome (`repro --until`) ends a cell as soon as a signature
//! decides it, through the same evidence end game as a hang ([`Endings`]). Before a
//! memory dump of a kernel that has not panicked, an NMI makes it panic: a live guest's
//! vCPU is caught anywhere (often on its entry stack, where `crash` cannot walk), a
//! panicked one is parked in `panic()` with every CPU stopped. With `--keep-on-failure`
//! a decided cell's VM is kept instead of killed ([`Stage::Kept`]); the driver hands it
//! to the session's keeper after the verdict is recorded.
//!
//! (Over 500 lines on purpose: it is the one place a cell's verdict path is decided,
//! and reads best whole. The endings besides a cell's course are in `state/endings.rs`,
//! what it saw in `state/outcome.rs`, the table tests in `state/tests.rs`.)

use std::time::{Duration, Instant};

use kchaos_model::protocol::{
    GuestMessage, HostMessage, KmsgRecord, Phase, RunRequest, PROTOCOL_VERSION,
};
use kchaos_model::scenario::Scenario;
use kchaos_model::signature::SignatureHit;

use super::observe::Observer;

/// The line a panicking kernel ends its report with.
const PANIC_END: &str = "---[ end Kernel panic";
/// The line a panic starts with.
const PANIC_START: &str = "Kernel panic - not syncing";

/// What the driver saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// QEMU connected the control channel.
    Connected,
    /// QEMU never connected it (or accepting failed).
    ConnectFailed(String),
    Console(String),
    ConsoleClosed,
    Guest(GuestMessage),
    /// Bytes on the channel that were no valid frame.
    Corrupt {
        bytes: usize,
        what: String,
    },
    ChannelClosed,
    /// QEMU's process ended; `status` as the OS reports it.
    QemuExited {
        status: String,
    },
    /// The user interrupted the run.
    Interrupted,
    /// The deadline of [`CellState::deadline`] passed.
    Timer,
    /// The answer to [`Action::CheckLiveness`]: QEMU's monitor answered, or why not.
    Liveness(Result<(), String>),
    /// The answer to [`Action::CheckLiveness`] when QEMU answers but its guest is
    /// stopped (run state `debug`: a gdb session; `paused`: the monitor's `stop`).
    Stopped(String),
    /// The guest started running (after `--gdb-wait`).
    Resumed,
    /// [`Action::SendSysrq`] is done.
    SysrqSent,
    /// The answer to [`Action::InjectNmi`].
    NmiInjected(Result<(), String>),
    /// The answer to [`Action::Keep`] when the VM cannot be kept.
    KeepRefused(String),
    /// A message could not be sent to the guest.
    SendFailed {
        message: &'static str,
        error: String,
    },
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Send(HostMessage),
    /// Kill QEMU's process group.
    Kill,
    /// The cell is decided: hand its live VM to the keeper instead of killing it;
    /// answer [`Event::KeepRefused`] if the keeper has no room.
    Keep,
    Update(CellUpdate),
    /// Ask QEMU's monitor whether QEMU itself still runs; answer with [`Event::Liveness`].
    CheckLiveness,
    /// Press these sysrq task-dump keys; answer with [`Event::SysrqSent`].
    SendSysrq(Vec<char>),
    /// Inject an NMI (the kernel panics on it); answer with [`Event::NmiInjected`].
    InjectNmi,
    /// Keep these console lines (the sysrq dumps) as `sysrq.txt`.
    WriteSysrq(Vec<String>),
    /// Dump guest memory if the run asked for it (`--dump-memory`).
    DumpMemory,
}

/// Where the cell is.
#[derive(Debug, Clone, PartialEq)]
enum Stage {
    /// QEMU runs and nothing has ended the cell: booting, running or reported, as
    /// `hello_at` and `finished_at` tell.
    Live,
    /// The guest went silent or overran: is QEMU itself alive before it is called hung?
    Verifying { reason: String },
    /// Hung: the sysrq keys are being sent (for the `attempt`th time; keys whose dump
    /// did not show are pressed again); dumps start at console line `mark`; `started`
    /// is when the first keys went out (the evidence window's maximum counts from it).
    SendingSysrq {
        mark: Mark,
        attempt: u8,
        started: Option<Instant>,
    },
    /// Hung: the console's task dumps are collected until it goes quiet.
    Collecting {
        started: Instant,
        mark: Mark,
        last_line: Instant,
        attempt: u8,
    },
    /// A crash signature was seen: the rest of the report prints until `until`.
    CrashGrace { until: Instant },
    /// Before the dump: an NMI was injected and the kernel is panicking on it; its
    /// report is evidence, not a finding. Dump at the report's end or at `until`.
    Panicking { until: Instant },
    /// Killed by the harness; waiting for QEMU to exit.
    Killed,
    /// Decided, and the VM is kept up for the engineer: the cell is over for the
    /// harness while QEMU runs on.
    Kept,
    /// QEMU exited; what it wrote last is delivered until `drain_until`.
    Exited { drain_until: Instant },
}

/// Where the evidence window began: the console line and the kmsg record the dumps
/// start after (the console shows what its loglevel lets through; kmsg has it all
/// while the runner still forwards it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    console: usize,
    kmsg: usize,
}

/// What QEMU wrote before dying still arrives this long after its exit.
const DRAIN: Duration = Duration::from_secs(3);

/// Everything a cell decides from.
#[derive(Debug)]
pub struct CellState {
    scenario: Scenario,
    cell: String,
    seed: u64,
    timeouts: Timeouts,
    stage: Stage,
    spawned_at: Instant,
    observer: Observer,
    connected: bool,
    console_open: bool,
    channel_open: bool,
    hello_at: Option<Instant>,
    last_seen: Instant,
    finished_at: Option<Instant>,
    guest_phase: Option<Phase>,
    release: Option<String>,
    guest_ready_ms: Option<u64>,
    exit_status: Option<String>,
    killed: bool,
    interrupted: bool,
    endings: Endings,
    /// When the first failure or crash signature was seen (time to a hit).
    first_signature_at: Option<Instant>,
    /// When the guest started to run: QEMU's start, or its resume by a debugger;
    /// `None` while it waits for one.
    boot_from: Option<Instant>,
    /// Time the guest spent stopped by a debugger: added to the run's budget.
    stopped_for: Duration,
    /// The kernel printed its panic line: it stopped every CPU itself.
    panicked: bool,
    /// Where the task dumps showed the kernel stuck (the end of a hang's evidence).
    stuck: Option<kchaos_model::blocked::Stuck>,
    /// `stuck` came from the kernel's own hung-task report, not a hang's dumps.
    stuck_reported: bool,
}

/// `t + d`, or far in the future when that does not fit a clock (it cannot with
/// validated scenarios; this keeps a decision from ever panicking).
fn after(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .or_else(|| t.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(t)
}

impl CellState {
    pub(crate) fn new(
        scenario: &Scenario,
        cell: &str,
        seed: u64,
        timeouts: Timeouts,
        observer: Observer,
        endings: Endings,
        spawned_at: Instant,
    ) -> CellState {
        CellState {
            scenario: scenario.clone(),
            cell: cell.to_owned(),
            seed,
            timeouts,
            stage: Stage::Live,
            spawned_at,
            observer,
            connected: false,
            console_open: true,
            channel_open: true,
            hello_at: None,
            last_seen: spawned_at,
            finished_at: None,
            guest_phase: None,
            release: None,
            guest_ready_ms: None,
            exit_status: None,
            killed: false,
            interrupted: false,
            first_signature_at: None,
            boot_from: (!endings.wait_for_debugger).then_some(spawned_at),
            stopped_for: Duration::ZERO,
            panicked: false,
            stuck: None,
            stuck_reported: false,
            endings,
        }
    }

    /// How long the workload may run: the scenario's duration and settle plus a margin,
    /// and whatever time a debugger held the guest stopped.
    fn run_budget(&self) -> Duration {
        self.scenario
            .duration
            .saturating_add(self.scenario.settle)
            .saturating_add(self.timeouts.overrun)
            .saturating_add(self.stopped_for)
    }

    /// Whether the driver should still wait for QEMU to connect the channel.
    pub fn wants_connection(&self) -> bool {
        !self.connected && self.channel_open
    }

    pub fn console_open(&self) -> bool {
        self.console_open
    }

    /// Whether channel messages can still arrive.
    pub fn channel_live(&self) -> bool {
        self.connected && self.channel_open
    }

    pub fn exited(&self) -> bool {
        self.exit_status.is_some()
    }

    /// Whether an interrupt still matters (QEMU runs and nobody interrupted yet).
    pub fn interruptible(&self) -> bool {
        !self.exited() && !self.interrupted
    }

    /// The cell is over: QEMU exited and its last words arrived (or stopped arriving),
    /// or its VM is kept.
    pub fn is_done(&self, now: Instant) -> bool {
        match self.stage {
            Stage::Kept => true,
            Stage::Exited { drain_until } => {
                (!self.console_open && !self.channel_open) || now >= drain_until
            }
            _ => false,
        }
    }

    /// When to send [`Event::Timer`]; `None` while waiting for QEMU to die after a kill.
    pub fn deadline(&self) -> Option<Instant> {
        let t = &self.timeouts;
        match &self.stage {
            Stage::Exited { drain_until } => Some(*drain_until),
            Stage::Killed | Stage::Kept | Stage::Verifying { .. } | Stage::SendingSysrq { .. } => {
                None
            }
            Stage::Collecting {
                started, last_line, ..
            } => Some(after(*last_line, t.evidence_quiet).min(after(*started, t.evidence_max))),
            Stage::CrashGrace { until } | Stage::Panicking { until } => Some(*until),
            Stage::Live => match (self.hello_at, self.finished_at) {
                // No boot clock while QEMU waits for a debugger.
                (None, _) => self.boot_from.map(|b| after(b, t.boot)),
                (Some(_), Some(done)) => Some(after(done, t.poweroff)),
                (Some(h), None) => {
                    Some(after(self.last_seen, t.hang).min(after(h, self.run_budget())))
                }
            },
        }
    }

    /// A note for the result (evidence collection reports through these).
    pub fn note(&mut self, text: String) {
        self.observer.notes.push(text);
    }

    /// The console lines seen so far (for sysrq evidence).
    pub fn console_lines(&self) -> &[String] {
        &self.observer.console_lines
    }

    /// Whether the VM is kept (the cell is over, QEMU runs on).
    pub fn kept(&self) -> bool {
        self.stage == Stage::Kept
    }

    /// Whether the kernel printed its panic line (a kept guest then has no shell).
    pub fn panicked(&self) -> bool {
        self.panicked
    }

    fn kill(&mut self, actions: &mut Vec<Action>) {
        if !self.killed && !self.exited() {
            actions.push(Action::Kill);
        }
        self.killed = true;
        if !self.exited() {
            self.stage = Stage::Killed;
        }
    }

    /// Decides what `event` means at `now`.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        let mut hit = None;
        match event {
            Event::Connected => self.connected = true,
            Event::ConnectFailed(why) => {
                self.observer.obs.infra.push(why);
                self.channel_open = false;
                self.end(&mut actions);
            }
            Event::Console(line) => hit = self.console(line, now, &mut actions),
            Event::ConsoleClosed => self.console_open = false,
            // The harness's own panic is not the kernel's finding.
            Event::Guest(GuestMessage::Kmsg(_))
                if matches!(self.stage, Stage::Panicking { .. }) => {}
            Event::Guest(msg) => {
                self.last_seen = now;
                hit = self.guest(msg, now, &mut actions);
            }
            Event::Corrupt { bytes, what } => self.observer.corrupt(bytes, what),
            Event::ChannelClosed => self.channel_open = false,
            Event::QemuExited { status } => {
                self.exit_status = Some(status);
                if !self.connected {
                    // QEMU never connected and never will.
                    self.channel_open = false;
                }
                self.stage = Stage::Exited {
                    drain_until: after(now, DRAIN),
                };
            }
            Event::Interrupted => {
                if self.interruptible() {
                    self.interrupted = true;
                    self.observer.obs.infra.push("interrupted".to_owned());
                    if self.connected {
                        actions.push(Action::Send(HostMessage::Abort {
                            reason: "interrupted".to_owned(),
                        }));
                    }
                    self.kill(&mut actions);
                }
            }
            Event::Timer => self.timer(now, &mut actions),
            Event::Liveness(answer) => self.liveness(answer, &mut actions),
            Event::Stopped(status) => self.stopped(&status, now),
            Event::Resumed => {
                self.boot_from.get_or_insert(now);
            }
            Event::SysrqSent => {
                if let Stage::SendingSysrq {
                    mark,
                    attempt,
                    started,
                } = self.stage
                {
                    self.stage = Stage::Collecting {
                        started: started.unwrap_or(now),
                        mark,
                        last_line: now,
                        attempt,
                    };
                }
            }
            Event::NmiInjected(answer) => {
                if let (Stage::Panicking { .. }, Err(why)) = (&self.stage, answer) {
                    self.observer
                        .notes
                        .push(format!("no NMI ({why}): guest memory dumped as it was"));
                    actions.push(Action::DumpMemory);
                    self.end(&mut actions);
                }
            }
            Event::KeepRefused(why) => {
                if self.stage == Stage::Kept {
                    self.observer.notes.push(format!("VM not kept: {why}"));
                    self.stage = Stage::Live;
                    self.kill(&mut actions);
                }
            }
            Event::SendFailed { message, error } => {
                // The guest powers off after its report either way; only a lost Run
                // request leaves it waiting for nothing.
                if message == "Run" {
                    self.observer.obs.infra.push(error);
                }
            }
        }
        if let Some(hit) = hit {
            self.signature(&hit, now, &mut actions);
        }
        actions
    }

    /// A console line; returns the new signature it carried, if any. During the NMI
    /// panic before a dump the lines are kept but not judged: that panic is the
    /// harness's, not a finding.
    fn console(
        &mut self,
        line: String,
        now: Instant,
        actions: &mut Vec<Action>,
    ) -> Option<SignatureHit> {
        if let Stage::Collecting { last_line, .. } = &mut self.stage {
            if !self.observer.repeats_signature(&line) {
                *last_line = now;
            }
        }
        if line.contains(PANIC_START) {
            self.panicked = true;
        }
        if let Stage::Panicking { .. } = self.stage {
            let over = line.contains(PANIC_END);
            self.observer.console_unjudged(line);
            if over {
                actions.push(Action::DumpMemory);
                self.end(actions);
            }
            None
        } else {
            self.observer.console(line)
        }
    }

    /// QEMU's monitor answered (or not) while a silent guest is verified: a guest hang
    /// when QEMU answers, the host's fault when QEMU itself is frozen.
    fn liveness(&mut self, answer: Result<(), String>, actions: &mut Vec<Action>) {
        if let Stage::Verifying { reason } = std::mem::replace(&mut self.stage, Stage::Live) {
            match answer {
                Ok(()) => {
                    // QEMU runs and its monitor answers: the guest itself hung.
                    self.observer.obs.hang = Some(reason);
                    self.send_sysrq(actions);
                }
                Err(why) => {
                    // A frozen QEMU is the host's fault, not the kernel's.
                    self.observer.obs.infra.push(format!(
                        "QEMU itself stopped responding ({why}) while the guest was silent: not a kernel hang; {reason}"
                    ));
                    self.kill(actions);
                }
            }
        }
    }

    /// The silent guest is stopped (a debugger or the monitor holds it): not a hang,
    /// and the stopped time is added to the run's budget.
    fn stopped(&mut self, status: &str, now: Instant) {
        if let Stage::Verifying { .. } = self.stage {
            if self.stopped_for.is_zero() {
                self.observer.notes.push(format!(
                    "the guest was stopped (QEMU run state `{status}`, a debugger or the monitor): stopped time is not silence"
                ));
            }
            let silent = now.saturating_duration_since(self.last_seen);
            self.stopped_for = self.stopped_for.saturating_add(silent);
            self.last_seen = now;
            self.stage = Stage::Live;
        }
    }

    /// A message from the runner; returns the new signature it carried, if any.
    fn guest(
        &mut self,
        msg: GuestMessage,
        now: Instant,
        actions: &mut Vec<Action>,
    ) -> Option<SignatureHit> {
        let mut hit = None;
        match msg {
            GuestMessage::Hello(hello) => {
                self.hello_at = Some(now);
                self.observer.obs.reached_runner = true;
                self.release = Some(hello.kernel_release.clone());
                self.guest_ready_ms = Some(hello.uptime_ms);
                if hello.protocol != PROTOCOL_VERSION {
                    self.observer.obs.infra.push(format!(
                        "the runner speaks protocol {} but this harness {}; rebuild the runner",
                        hello.protocol, PROTOCOL_VERSION
                    ));
                    self.end(actions);
                } else {
                    actions.push(Action::Send(HostMessage::Run(Box::new(RunRequest {
                        protocol: PROTOCOL_VERSION,
                        scenario: self.scenario.clone(),
                        seed: self.seed,
                        cell: self.cell.clone(),
                    }))));
                }
            }
            GuestMessage::Heartbeat { .. } => {}
            GuestMessage::Phase { phase } => {
                self.guest_phase = Some(phase);
                actions.push(Action::Update(CellUpdate::Phase(phase)));
            }
            GuestMessage::Kmsg(record) => hit = self.observer.kmsg(&record),
            GuestMessage::Sample {
                metric,
                t_ms,
                value,
            } => self.observer.sample(metric, t_ms, value),
            GuestMessage::Progress {
                workload,
                done,
                total,
            } => actions.push(Action::Update(CellUpdate::Progress {
                workload,
                done,
                total,
            })),
            GuestMessage::Note { message } => self.observer.notes.push(message),
            GuestMessage::Skip { reason } => self.observer.obs.skip = Some(reason),
            GuestMessage::Fatal { message } => self.observer.obs.fatal = Some(message),
            GuestMessage::Finished(report) => {
                self.finished_at = Some(now);
                self.observer.obs.report = Some(report);
                self.reported(actions);
            }
        }
        let gave_up = self.observer.obs.skip.is_some() || self.observer.obs.fatal.is_some();
        if gave_up && self.finished_at.is_none() {
            self.finished_at = Some(now);
            self.reported(actions);
        }
        hit
    }

    fn timer(&mut self, now: Instant, actions: &mut Vec<Action>) {
        match std::mem::replace(&mut self.stage, Stage::Live) {
            stage @ (Stage::Exited { .. }
            | Stage::Killed
            | Stage::Kept
            | Stage::Verifying { .. }
            | Stage::SendingSysrq { .. }) => {
                // Nothing is timed here (or the driver is mid-way through an action).
                self.stage = stage;
            }
            Stage::Collecting {
                mark,
                started,
                attempt,
                ..
            } => {
                let (dumps, kmsg) = self.since(mark);
                let missing = sysrq::missing_dumps(&dumps);
                let window_left = now < after(started, self.timeouts.evidence_max);
                if !missing.is_empty() && attempt < sysrq::SYSRQ_ATTEMPTS && window_left {
                    self.stage = Stage::SendingSysrq {
                        mark,
                        attempt: attempt + 1,
                        started: Some(started),
                    };
                    actions.push(Action::SendSysrq(missing));
                    return;
                }
                if !missing.is_empty() {
                    let keys: String = missing.iter().collect();
                    self.observer.notes.push(format!(
                        "no sysrq dump on the console for key(s) `{keys}` after {attempt} attempt(s): the guest did not handle them"
                    ));
                }
                self.name_where_stuck(&dumps, &kmsg);
                actions.push(Action::WriteSysrq(sysrq::sysrq_text(dumps, kmsg)));
                self.dump_and_end(now, actions);
            }
            Stage::CrashGrace { .. } => self.dump_and_end(now, actions),
            Stage::Panicking { .. } => {
                self.observer.notes.push(format!(
                    "the kernel did not finish panicking within {:?} of the NMI: guest memory dumped as it was",
                    self.timeouts.evidence_max
                ));
                actions.push(Action::DumpMemory);
                self.end(actions);
            }
            Stage::Live => match (self.hello_at, self.finished_at) {
                (None, _) => {
                    if !self.observer.has_crash() {
                        self.observer.obs.infra.push(format!(
                            "the guest did not reach the kchaos runner within {:?}; {}",
                            self.timeouts.boot,
                            self.observer.tail()
                        ));
                    }
                    self.end(actions);
                }
                (Some(_), Some(_)) => {
                    self.observer.notes.push(format!(
                        "the guest did not power off within {:?} of reporting; killed",
                        self.timeouts.poweroff
                    ));
                    self.kill(actions);
                }
                (Some(h), None) => {
                    let budget = self.run_budget();
                    let reason = if now >= after(h, budget) {
                        format!(
                            "the run did not finish within {budget:?} (duration {:?} + settle {:?} + margin) although the guest kept answering: a workload is stuck, likely in the kernel (phase: {})",
                            self.scenario.duration,
                            self.scenario.settle,
                            phase_name(self.guest_phase)
                        )
                    } else {
                        format!(
                            "the guest sent nothing for {:?} (phase: {}); {}",
                            self.timeouts.hang,
                            phase_name(self.guest_phase),
                            self.observer.tail()
                        )
                    };
                    self.stage = Stage::Verifying { reason };
                    actions.push(Action::CheckLiveness);
                }
            },
        }
    }
}

/// How a kmsg record is written to `kmsg.log`.
pub fn kmsg_line(record: &KmsgRecord) -> String {
    format!(
        "[{:>5}.{:06}] <{}> {}",
        record.ts_us / 1_000_000,
        record.ts_us % 1_000_000,
        record.level,
        record.text
    )
}

fn phase_name(phase: Option<Phase>) -> &'static str {
    match phase {
        None => "before setup",
        Some(Phase::Setup) => "setup",
        Some(Phase::Workload) => "workload",
        Some(Phase::Settle) => "settle",
        Some(Phase::Collect) => "collect",
    }
}

mod endings;
mod keep_policy;
mod outcome;
pub mod sysrq;
#[cfg(test)]
mod tests;
mod timeouts;

pub use self::endings::Endings;
pub use self::keep_policy::KeepPolicy;
pub use self::outcome::Outcome;
pub use self::timeouts::{millis, CellUpdate, Timeouts};
