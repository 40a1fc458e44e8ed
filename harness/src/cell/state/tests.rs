//! Every way a cell ends, as a sequence of events and the verdict it must give. No VM,
//! no QEMU, no clock: time is what the test says it is.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kchaos_model::metrics::{Metric, Summary};
use kchaos_model::protocol::{
    GuestMessage, Hello, HostMessage, KmsgRecord, Phase, RunReport, PROTOCOL_VERSION,
};
use kchaos_model::scenario::Scenario;
use kchaos_model::signature::SignatureSet;
use kchaos_model::units::Unit;
use kchaos_model::verdict::{self, Verdict};

use super::*;

mod endings;

const SCENARIO: &str = r#"
[scenario]
name = "s"
duration = "10s"
settle = "1s"

[[probe]]
kind = "read-latency"
name = "stat_read"
path = "/x"

[[check]]
assert = "stat_read.p99 <= 10ms"
"#;

/// A step of a case: an event at a time (ms after QEMU started), or the timer firing
/// at whatever deadline the state set.
#[derive(Clone)]
enum Step {
    At(u64, Event),
    Deadline,
}

use Step::{At, Deadline};

fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(10),
        boot: Duration::from_secs(60),
        hang: Duration::from_secs(32),
        overrun: Duration::from_secs(60),
        poweroff: Duration::from_secs(12),
        crash_grace: Duration::from_secs(8),
        evidence_quiet: Duration::from_secs(4),
        evidence_max: Duration::from_secs(40),
    }
}

fn scenario() -> Scenario {
    kchaos_model::scenario::parse("s.toml", SCENARIO).unwrap()
}

fn hello(protocol: u32) -> Event {
    Event::Guest(GuestMessage::Hello(Hello {
        protocol,
        runner_version: "test".into(),
        kernel_release: "6.1.0-test".into(),
        uptime_ms: 900,
    }))
}

fn phase(p: Phase) -> Event {
    Event::Guest(GuestMessage::Phase { phase: p })
}

fn heartbeat() -> Event {
    Event::Guest(GuestMessage::Heartbeat {
        seq: 1,
        uptime_ms: 1,
    })
}

fn finished(p99_ms: u64) -> Event {
    let mut report = RunReport::default();
    report.metrics.insert(
        "stat_read".into(),
        Metric::Histogram(Summary {
            unit: Unit::Ns,
            count: 10,
            min: 1,
            p50: 1,
            p90: 1,
            p99: p99_ms * 1_000_000,
            p999: p99_ms * 1_000_000,
            max: p99_ms * 1_000_000,
            mean: 1.0,
        }),
    );
    Event::Guest(GuestMessage::Finished(report))
}

fn console(line: &str) -> Event {
    Event::Console(line.to_owned())
}

fn kmsg(text: &str) -> Event {
    Event::Guest(GuestMessage::Kmsg(KmsgRecord {
        seq: 1,
        level: 4,
        ts_us: 1,
        text: text.into(),
    }))
}

fn exited(status: &str) -> Event {
    Event::QemuExited {
        status: status.to_owned(),
    }
}

/// QEMU killed at `ms`, as the harness does at a cell's end.
fn killed(ms: u64) -> Step {
    At(ms, exited("signal: 9 (SIGKILL)"))
}

/// The guest powered off at `ms`, as the runner does after its Ack.
fn powered_off(ms: u64) -> Step {
    At(ms, exited("exit status: 0"))
}

/// A report the kernel prints on the console from `ms` on, a line a millisecond.
fn console_report(ms: u64, lines: &[&str]) -> Vec<Step> {
    (ms..)
        .zip(lines)
        .map(|(at, line)| At(at, console(line)))
        .collect()
}

/// QEMU connected the channel at 100 ms and the runner said Hello at 2 s: the boot
/// most cases start from.
fn booted() -> Vec<Step> {
    vec![At(100, Event::Connected), At(2000, hello(PROTOCOL_VERSION))]
}

/// Booted, with the workload under way from 3 s.
fn working() -> Vec<Step> {
    [booted(), vec![At(3000, phase(Phase::Workload))]].concat()
}

/// The console shows the headers of all four sysrq dumps (loglevel, `w`, `t`, `l`) at
/// `ms`: every key was handled, so the evidence window only waits for quiet.
fn sysrq_dumps(ms: u64) -> Vec<Step> {
    [
        "sysrq: Changing Loglevel",
        "sysrq: Show Blocked State",
        "sysrq: Show State",
        "sysrq: Show backtrace of all active CPUs",
    ]
    .into_iter()
    .map(|line| At(ms, console(line)))
    .collect()
}

/// A silent guest at its silence bound: QEMU still answers (36 s) and the sysrq keys
/// go out (37 s).
fn silent_then_sysrq() -> Vec<Step> {
    vec![
        Deadline,
        At(36_000, Event::Liveness(Ok(()))),
        At(37_000, Event::SysrqSent),
    ]
}

/// [`silent_then_sysrq`], and every dump shows (37.1 s).
fn silent_then_dumped() -> Vec<Step> {
    [silent_then_sysrq(), sysrq_dumps(37_100)].concat()
}

/// A fresh cell for `s` at `t0`, for the tests that drive it step by step.
fn cell_state(
    s: &Scenario,
    units: BTreeMap<String, Unit>,
    endings: Endings,
    t0: Instant,
) -> CellState {
    let observer = Observer::new(SignatureSet::new(&s.signatures).unwrap(), units);
    CellState::new(s, "s/k", 7, timeouts(), observer, endings, t0)
}

/// Checks when `state` next wants the timer; a failure names the stage (`what`).
fn assert_deadline(state: &CellState, want: Option<Instant>, what: &str) {
    assert_eq!(state.deadline(), want, "{what}");
}

/// What a case did and decided.
struct Ran {
    actions: Vec<Action>,
    verdict: Verdict,
    reasons: String,
    notes: Vec<String>,
    outcome_boot_ms: Option<u64>,
    fingerprint: bool,
    first_signature_ms: Option<u64>,
}

/// The actions that end a hang: the liveness check, the sysrq keys and their dumps
/// written, the memory dump, the kill.
const HANG_ACTIONS: &[&str] = &[
    "send-run",
    "check-liveness",
    "sysrq",
    "write-sysrq",
    "dump",
    "kill",
];

/// What a case wants of a cell's end: its verdict, words its reasons hold, and its
/// actions by kind.
#[derive(Clone, Copy)]
struct Ends {
    verdict: Verdict,
    reason: &'static str,
    actions: &'static [&'static str],
}

fn ends(verdict: Verdict, reason: &'static str, actions: &'static [&'static str]) -> Ends {
    Ends {
        verdict,
        reason,
        actions,
    }
}

impl Ran {
    /// Checks the verdict, the reasons and the actions against `want`; a failure names
    /// the case.
    fn assert_ends(&self, name: &str, want: Ends) {
        assert_eq!(self.verdict, want.verdict, "{name}: {}", self.reasons);
        assert!(
            self.reasons.contains(want.reason),
            "{name}: wanted `{}` in `{}`",
            want.reason,
            self.reasons
        );
        assert_eq!(kinds(&self.actions), want.actions, "{name}");
    }

    /// The lines written to `sysrq.txt`, if the cell wrote it.
    fn sysrq_written(&self) -> Option<&[String]> {
        self.actions.iter().find_map(|a| match a {
            Action::WriteSysrq(lines) => Some(lines.as_slice()),
            _ => None,
        })
    }

    /// Checks the reasons never mention `text`, a trace of the harness's own doing
    /// (`why` says which) rather than of the kernel's.
    fn assert_reasons_lack(&self, name: &str, text: &str, why: &str) {
        assert!(
            !self.reasons.contains(text),
            "{name}: {why}: {}",
            self.reasons
        );
    }
}

fn run(steps: Vec<Step>, stderr: &str) -> Ran {
    run_with(Endings::default(), steps, stderr)
}

fn run_with(endings: Endings, steps: Vec<Step>, stderr: &str) -> Ran {
    let s = scenario();
    let units = s
        .metric_catalog()
        .into_iter()
        .map(|(k, v)| (k, v.unit))
        .collect();
    let t0 = Instant::now();
    let mut state = cell_state(&s, units, endings, t0);
    let mut now = t0;
    let mut actions = Vec::new();
    for step in steps {
        let (at, event) = match step {
            At(ms, event) => (t0 + Duration::from_millis(ms), event),
            Deadline => (
                state
                    .deadline()
                    .unwrap_or_else(|| panic!("no deadline to wait for")),
                Event::Timer,
            ),
        };
        assert!(at >= now, "steps go forward in time");
        now = at;
        // (A refused keep is the driver's reply to the Keep that ended the cell.)
        if !matches!(event, Event::KeepRefused(_)) {
            assert!(!state.is_done(now), "the cell ended before {event:?}");
        }
        actions.extend(state.handle(event, now));
    }
    // QEMU's streams close after it exits; then the cell is over.
    for event in [Event::ConsoleClosed, Event::ChannelClosed] {
        actions.extend(state.handle(event, now));
    }
    assert!(
        state.is_done(now),
        "the cell must be over after QEMU exited"
    );
    let outcome = state.finish(stderr);
    // The verdict the state machine decided, as the result records it.
    let decision = outcome.decision.clone();
    assert_eq!(decision, verdict::decide(&s, &outcome.obs));
    Ran {
        actions,
        verdict: decision.verdict,
        reasons: decision.reasons.join(" | "),
        notes: outcome.notes,
        outcome_boot_ms: outcome.boot_ms,
        fingerprint: outcome.fingerprint.is_some(),
        first_signature_ms: outcome.first_signature_ms,
    }
}

/// The names of the actions, in order (messages by their kind).
fn kinds(actions: &[Action]) -> Vec<&'static str> {
    actions
        .iter()
        .map(|a| match a {
            Action::Send(HostMessage::Run(_)) => "send-run",
            Action::Send(HostMessage::Ack) => "send-ack",
            Action::Send(HostMessage::Abort { .. }) => "send-abort",
            Action::Kill => "kill",
            Action::Keep => "keep",
            Action::Update(_) => "update",
            Action::CheckLiveness => "check-liveness",
            Action::SendSysrq(_) => "sysrq",
            Action::InjectNmi => "nmi",
            Action::WriteSysrq(_) => "write-sysrq",
            Action::DumpMemory => "dump",
        })
        .filter(|k| *k != "update")
        .collect()
}

#[test]
fn every_ending_gives_its_verdict() {
    // The runner's last word at 3 s, then it powers off.
    let runner_says = |message| {
        [
            booted(),
            vec![At(3000, Event::Guest(message)), powered_off(3500)],
        ]
        .concat()
    };
    // (what happened, the events, QEMU's stderr, how it must end)
    let cases: Vec<(&str, Vec<Step>, &str, Ends)> = vec![
        (
            "a healthy run",
            [booted(), vec![At(3000, phase(Phase::Workload)), At(9000, finished(2)), powered_off(9500)]].concat(),
            "",
            ends(Verdict::Pass, "", &["send-run", "send-ack"]),
        ),
        (
            "the runner's Hello never came",
            vec![At(100, Event::Connected), At(500, console("EFI stub: loaded initrd")), Deadline, killed(61_000)],
            "",
            ends(
                Verdict::Error,
                "did not reach the kchaos runner within 60s; last console lines: EFI stub: loaded initrd",
                &["kill"],
            ),
        ),
        (
            "a panic on the console while the channel is alive",
            [
                booted(),
                console_report(3000, &[
                    "[ 3.0] BUG: kernel NULL pointer dereference, address: 0000000000000000",
                    "[ 3.0] RIP: 0010:distribute_cfs_runtime+0x4d/0x120",
                    "[ 3.1] Kernel panic - not syncing: Fatal exception",
                ]),
                vec![Deadline, killed(12_000)],
            ].concat(),
            "",
            ends(Verdict::Crash, "Kernel panic", &["send-run", "dump", "kill"]),
        ),
        (
            "finished, but QEMU lingered",
            [booted(), vec![At(9000, finished(2)), Deadline, killed(21_500)]].concat(),
            "",
            ends(Verdict::Pass, "", &["send-run", "send-ack", "kill"]),
        ),
        (
            "the heartbeat was lost: a hang, with sysrq dumps",
            [
                working(),
                vec![At(4000, heartbeat())],
                silent_then_dumped(),
                vec![At(37_200, console("task:kworker/0:1 state:D stack:0 pid:12")), Deadline, killed(42_000)],
            ].concat(),
            "",
            ends(Verdict::Hang, "the guest sent nothing for 32s (phase: workload)", HANG_ACTIONS),
        ),
        (
            "a workload overran although the guest kept answering",
            [working(), {
                // A beat every 20 s, never silent for the 32 s hang bound, past the budget.
                let mut beats: Vec<Step> = (1..=3).map(|i| At(2000 + i * 20_000, heartbeat())).collect();
                beats.extend([Deadline, At(84_000, Event::Liveness(Ok(()))), At(84_500, Event::SysrqSent)]);
                beats.extend(sysrq_dumps(84_600));
                beats.extend([Deadline, killed(90_000)]);
                beats
            }].concat(),
            "",
            ends(Verdict::Hang, "did not finish within 71s (duration 10s + settle 1s + margin)", HANG_ACTIONS),
        ),
        (
            "QEMU itself froze: its monitor does not answer",
            [working(), vec![
                Deadline,
                At(40_000, Event::Liveness(Err("its process is stopped".into()))),
                killed(40_100),
            ]].concat(),
            "",
            ends(
                Verdict::Error,
                "QEMU itself stopped responding (its process is stopped) while the guest was silent: not a kernel hang",
                &["send-run", "check-liveness", "kill"],
            ),
        ),
        (
            "QEMU died before the report",
            [booted(), vec![At(5000, exited("exit status: 1"))]].concat(),
            "qemu-system-x86_64: terminating on signal 15\n",
            ends(
                Verdict::Error,
                "QEMU exited (exit status: 1) before the runner reported results; QEMU said: qemu-system-x86_64: terminating on signal 15",
                &["send-run"],
            ),
        ),
        (
            "QEMU died before the guest reached the runner",
            vec![At(300, exited("exit status: 1"))],
            "qemu: cannot load kernel\n",
            ends(
                Verdict::Error,
                "QEMU exited (exit status: 1) before the guest reached the runner; QEMU said: qemu: cannot load kernel",
                &[],
            ),
        ),
        (
            "the user interrupted",
            [booted(), vec![At(3000, Event::Interrupted), At(3100, Event::Interrupted), killed(3200)]].concat(),
            "",
            ends(Verdict::Error, "interrupted", &["send-run", "send-abort", "kill"]),
        ),
        (
            "a kernel-log signature after the report",
            [booted(), vec![
                At(9000, finished(2)),
                At(9100, kmsg("unregister_netdevice: waiting for veth12 to become free. Usage count = 1")),
                powered_off(9500),
            ]].concat(),
            "",
            ends(Verdict::Fail, "unregister_netdevice: waiting for veth12", &["send-run", "send-ack"]),
        ),
        (
            "a check fails",
            [booted(), vec![At(9000, finished(25)), powered_off(9500)]].concat(),
            "",
            ends(Verdict::Fail, "stat_read.p99", &["send-run", "send-ack"]),
        ),
        (
            "the runner speaks another protocol",
            vec![At(100, Event::Connected), At(2000, hello(999)), killed(2100)],
            "",
            ends(Verdict::Error, "the runner speaks protocol 999", &["kill"]),
        ),
        (
            "QEMU never connected the channel",
            vec![At(10_000, Event::ConnectFailed("QEMU did not connect to the control socket within 10s".into())), killed(10_100)],
            "",
            ends(Verdict::Error, "did not connect to the control socket", &["kill"]),
        ),
        (
            "garbage on the channel never passes",
            [booted(), vec![
                At(2500, Event::Corrupt { bytes: 12, what: "bytes outside any frame".into() }),
                At(9000, finished(2)),
                powered_off(9500),
            ]].concat(),
            "",
            ends(
                Verdict::Error,
                "the control channel carried 12 corrupt bytes (first: bytes outside any frame)",
                &["send-run", "send-ack"],
            ),
        ),
        (
            "the runner gives up",
            runner_says(GuestMessage::Fatal { message: "cannot mount cgroup2".into() }),
            "",
            ends(Verdict::Error, "cannot mount cgroup2", &["send-run", "send-ack"]),
        ),
        (
            "the kernel cannot run the scenario",
            runner_says(GuestMessage::Skip { reason: "no cgroup v1 memory".into() }),
            "",
            ends(Verdict::Skip, "no cgroup v1 memory", &["send-run", "send-ack"]),
        ),
    ];
    for (name, steps, stderr, want) in cases {
        run(steps, stderr).assert_ends(name, want);
    }
}

#[test]
fn a_crash_is_fingerprinted_and_boot_time_measured() {
    let ran = run(
        [
            vec![At(100, Event::Connected), At(2500, hello(PROTOCOL_VERSION))],
            console_report(
                3000,
                &[
                    "[ 3.0] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [kworker:1]",
                    "[ 3.0] Call Trace:",
                    "[ 3.0]  distribute_cfs_runtime+0x4d/0x120",
                    "[ 3.0]  sched_cfs_period_timer+0x10a/0x250",
                    "[ 3.1] Kernel panic - not syncing: softlockup: hung tasks",
                ],
            ),
            vec![Deadline, killed(12_000)],
        ]
        .concat(),
        "",
    );
    assert_eq!(ran.verdict, Verdict::Crash, "{}", ran.reasons);
    assert!(ran.fingerprint);
    assert_eq!(ran.outcome_boot_ms, Some(2500));
}

#[test]
fn a_lingering_guest_is_noted_not_failed() {
    let ran = run(
        [
            booted(),
            vec![At(9000, finished(2)), Deadline, killed(22_000)],
        ]
        .concat(),
        "",
    );
    assert!(
        ran.notes
            .iter()
            .any(|n| n.contains("did not power off within 12s")),
        "{:?}",
        ran.notes
    );
}

#[test]
fn deadlines_follow_the_stage() {
    let t0 = Instant::now();
    let mut state = cell_state(&scenario(), BTreeMap::new(), Endings::default(), t0);
    assert_deadline(&state, Some(t0 + Duration::from_secs(60)), "boot");
    state.handle(Event::Connected, t0);
    let h = t0 + Duration::from_secs(2);
    state.handle(hello(PROTOCOL_VERSION), h);
    assert_deadline(&state, Some(h + Duration::from_secs(32)), "silence");
    let crash = h + Duration::from_secs(1);
    state.handle(console("Kernel panic - not syncing: x"), crash);
    assert_deadline(&state, Some(crash + Duration::from_secs(8)), "crash grace");
    state.handle(Event::Timer, crash + Duration::from_secs(8));
    assert_deadline(&state, None, "killed: wait for the exit");
    let gone = crash + Duration::from_secs(9);
    state.handle(exited("signal: 9"), gone);
    assert_deadline(&state, Some(gone + Duration::from_secs(3)), "drain");
    assert!(!state.is_done(gone));
    assert!(state.is_done(gone + Duration::from_secs(3)));
}
