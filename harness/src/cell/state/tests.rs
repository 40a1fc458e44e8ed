//! Every way a cell ends, as a sequence of events and the verdict it must give. No VM,
//! no QEMU, no clock: time is what the test says it is.

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
    let observer = Observer::new(SignatureSet::new(&s.signatures).unwrap(), units);
    let t0 = Instant::now();
    let mut state = CellState::new(&s, "s/k", 7, timeouts(), observer, endings, t0);
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
    let ok = || vec![At(100, Event::Connected), At(2000, hello(PROTOCOL_VERSION))];
    // (what happened, the events, QEMU's stderr, verdict, a reason, the actions)
    type Case = (
        &'static str,
        Vec<Step>,
        &'static str,
        Verdict,
        &'static str,
        Vec<&'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            "a healthy run",
            [ok(), vec![At(3000, phase(Phase::Workload)), At(9000, finished(2)), At(9500, exited("exit status: 0"))]].concat(),
            "",
            Verdict::Pass,
            "",
            vec!["send-run", "send-ack"],
        ),
        (
            "the runner's Hello never came",
            vec![At(100, Event::Connected), At(500, console("EFI stub: loaded initrd")), Deadline, At(61_000, exited("signal: 9 (SIGKILL)"))],
            "",
            Verdict::Error,
            "did not reach the kchaos runner within 60s; last console lines: EFI stub: loaded initrd",
            vec!["kill"],
        ),
        (
            "a panic on the console while the channel is alive",
            [ok(), vec![
                At(3000, console("[ 3.0] BUG: kernel NULL pointer dereference, address: 0000000000000000")),
                At(3001, console("[ 3.0] RIP: 0010:distribute_cfs_runtime+0x4d/0x120")),
                At(3002, console("[ 3.1] Kernel panic - not syncing: Fatal exception")),
                Deadline,
                At(12_000, exited("signal: 9 (SIGKILL)")),
            ]].concat(),
            "",
            Verdict::Crash,
            "Kernel panic",
            vec!["send-run", "dump", "kill"],
        ),
        (
            "finished, but QEMU lingered",
            [ok(), vec![At(9000, finished(2)), Deadline, At(21_500, exited("signal: 9 (SIGKILL)"))]].concat(),
            "",
            Verdict::Pass,
            "",
            vec!["send-run", "send-ack", "kill"],
        ),
        (
            "the heartbeat was lost: a hang, with sysrq dumps",
            [ok(), vec![
                At(3000, phase(Phase::Workload)),
                At(4000, heartbeat()),
                Deadline,
                At(36_000, Event::Liveness(Ok(()))),
                At(37_000, Event::SysrqSent),
                At(37_100, console("sysrq: Changing Loglevel")), At(37_100, console("sysrq: Show Blocked State")),
                At(37_100, console("sysrq: Show State")),
                At(37_100, console("sysrq: Show backtrace of all active CPUs")),
                At(37_200, console("task:kworker/0:1 state:D stack:0 pid:12")),
                Deadline,
                At(42_000, exited("signal: 9 (SIGKILL)")),
            ]].concat(),
            "",
            Verdict::Hang,
            "the guest sent nothing for 32s (phase: workload)",
            vec!["send-run", "check-liveness", "sysrq", "write-sysrq", "dump", "kill"],
        ),
        (
            "a workload overran although the guest kept answering",
            [ok(), {
                let mut beats = vec![At(3000, phase(Phase::Workload))];
                // A beat every 20 s, never silent for the 32 s hang bound, past the budget.
                beats.extend((1..=3).map(|i| At(2000 + i * 20_000, heartbeat())));
                beats.extend([Deadline, At(84_000, Event::Liveness(Ok(()))), At(84_500, Event::SysrqSent), At(84_600, console("sysrq: Changing Loglevel")), At(84_600, console("sysrq: Show Blocked State")), At(84_600, console("sysrq: Show State")), At(84_600, console("sysrq: Show backtrace of all active CPUs")), Deadline, At(90_000, exited("signal: 9 (SIGKILL)"))]);
                beats
            }].concat(),
            "",
            Verdict::Hang,
            "did not finish within 71s (duration 10s + settle 1s + margin)",
            vec!["send-run", "check-liveness", "sysrq", "write-sysrq", "dump", "kill"],
        ),
        (
            "QEMU itself froze: its monitor does not answer",
            [ok(), vec![
                At(3000, phase(Phase::Workload)),
                Deadline,
                At(40_000, Event::Liveness(Err("its process is stopped".into()))),
                At(40_100, exited("signal: 9 (SIGKILL)")),
            ]].concat(),
            "",
            Verdict::Error,
            "QEMU itself stopped responding (its process is stopped) while the guest was silent: not a kernel hang",
            vec!["send-run", "check-liveness", "kill"],
        ),
        (
            "QEMU died before the report",
            [ok(), vec![At(5000, exited("exit status: 1"))]].concat(),
            "qemu-system-x86_64: terminating on signal 15\n",
            Verdict::Error,
            "QEMU exited (exit status: 1) before the runner reported results; QEMU said: qemu-system-x86_64: terminating on signal 15",
            vec!["send-run"],
        ),
        (
            "QEMU died before the guest reached the runner",
            vec![At(300, exited("exit status: 1"))],
            "qemu: cannot load kernel\n",
            Verdict::Error,
            "QEMU exited (exit status: 1) before the guest reached the runner; QEMU said: qemu: cannot load kernel",
            vec![],
        ),
        (
            "the user interrupted",
            [ok(), vec![At(3000, Event::Interrupted), At(3100, Event::Interrupted), At(3200, exited("signal: 9 (SIGKILL)"))]].concat(),
            "",
            Verdict::Error,
            "interrupted",
            vec!["send-run", "send-abort", "kill"],
        ),
        (
            "a kernel-log signature after the report",
            [ok(), vec![
                At(9000, finished(2)),
                At(9100, kmsg("unregister_netdevice: waiting for veth12 to become free. Usage count = 1")),
                At(9500, exited("exit status: 0")),
            ]].concat(),
            "",
            Verdict::Fail,
            "unregister_netdevice: waiting for veth12",
            vec!["send-run", "send-ack"],
        ),
        (
            "a check fails",
            [ok(), vec![At(9000, finished(25)), At(9500, exited("exit status: 0"))]].concat(),
            "",
            Verdict::Fail,
            "stat_read.p99",
            vec!["send-run", "send-ack"],
        ),
        (
            "the runner speaks another protocol",
            vec![At(100, Event::Connected), At(2000, hello(999)), At(2100, exited("signal: 9 (SIGKILL)"))],
            "",
            Verdict::Error,
            "the runner speaks protocol 999",
            vec!["kill"],
        ),
        (
            "QEMU never connected the channel",
            vec![At(10_000, Event::ConnectFailed("QEMU did not connect to the control socket within 10s".into())), At(10_100, exited("signal: 9 (SIGKILL)"))],
            "",
            Verdict::Error,
            "did not connect to the control socket",
            vec!["kill"],
        ),
        (
            "garbage on the channel never passes",
            [ok(), vec![
                At(2500, Event::Corrupt { bytes: 12, what: "bytes outside any frame".into() }),
                At(9000, finished(2)),
                At(9500, exited("exit status: 0")),
            ]].concat(),
            "",
            Verdict::Error,
            "the control channel carried 12 corrupt bytes (first: bytes outside any frame)",
            vec!["send-run", "send-ack"],
        ),
        (
            "the runner gives up",
            [ok(), vec![At(3000, Event::Guest(GuestMessage::Fatal { message: "cannot mount cgroup2".into() })), At(3500, exited("exit status: 0"))]].concat(),
            "",
            Verdict::Error,
            "cannot mount cgroup2",
            vec!["send-run", "send-ack"],
        ),
        (
            "the kernel cannot run the scenario",
            [ok(), vec![At(3000, Event::Guest(GuestMessage::Skip { reason: "no cgroup v1 memory".into() })), At(3500, exited("exit status: 0"))]].concat(),
            "",
            Verdict::Skip,
            "no cgroup v1 memory",
            vec!["send-run", "send-ack"],
        ),
    ];
    for (name, steps, stderr, want, reason, want_actions) in cases {
        let ran = run(steps, stderr);
        assert_eq!(ran.verdict, want, "{name}: {}", ran.reasons);
        assert!(
            ran.reasons.contains(reason),
            "{name}: wanted `{reason}` in `{}`",
            ran.reasons
        );
        assert_eq!(kinds(&ran.actions), want_actions, "{name}");
    }
}

#[test]
fn a_crash_is_fingerprinted_and_boot_time_measured() {
    let ran = run(
        vec![
            At(100, Event::Connected),
            At(2500, hello(PROTOCOL_VERSION)),
            At(
                3000,
                console("[ 3.0] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [kworker:1]"),
            ),
            At(3001, console("[ 3.0] Call Trace:")),
            At(3002, console("[ 3.0]  distribute_cfs_runtime+0x4d/0x120")),
            At(3003, console("[ 3.0]  sched_cfs_period_timer+0x10a/0x250")),
            At(
                3004,
                console("[ 3.1] Kernel panic - not syncing: softlockup: hung tasks"),
            ),
            Deadline,
            At(12_000, exited("signal: 9 (SIGKILL)")),
        ],
        "",
    );
    assert_eq!(ran.verdict, Verdict::Crash, "{}", ran.reasons);
    assert!(ran.fingerprint);
    assert_eq!(ran.outcome_boot_ms, Some(2500));
}

#[test]
fn a_lingering_guest_is_noted_not_failed() {
    let ran = run(
        vec![
            At(100, Event::Connected),
            At(2000, hello(PROTOCOL_VERSION)),
            At(9000, finished(2)),
            Deadline,
            At(22_000, exited("signal: 9 (SIGKILL)")),
        ],
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
    let s = scenario();
    let observer = Observer::new(
        SignatureSet::new(&s.signatures).unwrap(),
        Default::default(),
    );
    let t0 = Instant::now();
    let mut state = CellState::new(&s, "s/k", 7, timeouts(), observer, Endings::default(), t0);
    assert_eq!(state.deadline(), Some(t0 + Duration::from_secs(60)), "boot");
    state.handle(Event::Connected, t0);
    let h = t0 + Duration::from_secs(2);
    state.handle(hello(PROTOCOL_VERSION), h);
    assert_eq!(
        state.deadline(),
        Some(h + Duration::from_secs(32)),
        "silence"
    );
    let crash = h + Duration::from_secs(1);
    state.handle(console("Kernel panic - not syncing: x"), crash);
    assert_eq!(
        state.deadline(),
        Some(crash + Duration::from_secs(8)),
        "crash grace"
    );
    state.handle(Event::Timer, crash + Duration::from_secs(8));
    assert_eq!(state.deadline(), None, "killed: wait for the exit");
    let gone = crash + Duration::from_secs(9);
    state.handle(exited("signal: 9"), gone);
    assert_eq!(
        state.deadline(),
        Some(gone + Duration::from_secs(3)),
        "drain"
    );
    assert!(!state.is_done(gone));
    assert!(state.is_done(gone + Duration::from_secs(3)));
}
