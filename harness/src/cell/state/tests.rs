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
use crate::analysis::trials::Target;
use crate::cell::keep::KeepPolicy;

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
    let watch = Watch::new(SignatureSet::new(&s.signatures).unwrap(), units);
    let t0 = Instant::now();
    let mut state = CellState::new(&s, "s/k", 7, timeouts(), watch, endings, t0);
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
    let decision = verdict::decide(&s, &outcome.obs);
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
            Action::SendSysrq => "sysrq",
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
                At(37_100, console("sysrq: Show Blocked State")),
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
                beats.extend([Deadline, At(84_000, Event::Liveness(Ok(()))), At(84_500, Event::SysrqSent), Deadline, At(90_000, exited("signal: 9 (SIGKILL)"))]);
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
    let watch = Watch::new(
        SignatureSet::new(&s.signatures).unwrap(),
        Default::default(),
    );
    let t0 = Instant::now();
    let mut state = CellState::new(&s, "s/k", 7, timeouts(), watch, Endings::default(), t0);
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

/// Issue #14, time to a hit: a run looking for an outcome ends a cell as soon as a
/// signature decides it (evidence first), instead of at the scenario's duration; a
/// plain run, or a signature that does not decide the target, changes nothing.
#[test]
fn a_decided_target_ends_the_cell_at_once() {
    const LEAK: &str = "unregister_netdevice: waiting for veth3 to become free. Usage count = 1";
    let ok = || {
        vec![
            At(100, Event::Connected),
            At(2000, hello(PROTOCOL_VERSION)),
            At(3000, phase(Phase::Workload)),
        ]
    };
    // The signature, then the evidence end game of a hang, without the silence.
    let ended_at_once = |signature: Event| {
        [
            ok(),
            vec![
                At(5000, signature),
                At(5100, heartbeat()),
                At(5400, Event::SysrqSent),
                At(5500, console("sysrq: Show Blocked State")),
                Deadline,
                At(9600, exited("signal: 9 (SIGKILL)")),
            ],
        ]
        .concat()
    };
    // The same signature, but the run goes on to its report.
    let runs_its_course = |signature: Event| {
        [
            ok(),
            vec![
                At(5000, signature),
                At(9000, finished(2)),
                At(9500, exited("exit status: 0")),
            ],
        ]
        .concat()
    };
    let until = |t: &str| Endings {
        until: Some(Target::parse(t)),
        ..Endings::default()
    };
    let plain = Endings::default;
    // (what happened, endings, events, verdict, a reason, actions, ended early)
    type Case = (
        &'static str,
        Endings,
        Vec<Step>,
        Verdict,
        &'static str,
        Vec<&'static str>,
        bool,
    );
    let cases: Vec<Case> = vec![
        (
            "--until any: the leak in kmsg ends the cell",
            until("any"),
            ended_at_once(kmsg(LEAK)),
            Verdict::Fail,
            "kernel log [unregister-netdevice]: unregister_netdevice: waiting for veth3",
            vec!["send-run", "sysrq", "write-sysrq", "dump", "kill"],
            true,
        ),
        (
            "--until TEXT: the console line names it",
            until("Usage count"),
            ended_at_once(console(&format!("[    5.3] {LEAK}"))),
            Verdict::Fail,
            "unregister-netdevice",
            vec!["send-run", "sysrq", "write-sysrq", "dump", "kill"],
            true,
        ),
        (
            "kchaos run: a failure signature does not end a cell",
            plain(),
            runs_its_course(kmsg(LEAK)),
            Verdict::Fail,
            "unregister-netdevice",
            vec!["send-run", "send-ack"],
            false,
        ),
        (
            "--until crash: a failure signature does not decide it",
            until("crash"),
            runs_its_course(kmsg(LEAK)),
            Verdict::Fail,
            "unregister-netdevice",
            vec!["send-run", "send-ack"],
            false,
        ),
        (
            "--until TEXT: another signature does not decide it",
            until("soft lockup"),
            runs_its_course(kmsg(LEAK)),
            Verdict::Fail,
            "unregister-netdevice",
            vec!["send-run", "send-ack"],
            false,
        ),
        (
            "--until fail: after the report the cell is ending anyway",
            until("fail"),
            [
                ok(),
                vec![
                    At(9000, finished(2)),
                    At(9100, kmsg(LEAK)),
                    At(9500, exited("exit status: 0")),
                ],
            ]
            .concat(),
            Verdict::Fail,
            "unregister-netdevice",
            vec!["send-run", "send-ack"],
            false,
        ),
    ];
    for (name, endings, steps, want, reason, want_actions, early) in cases {
        let ran = run_with(endings, steps, "");
        assert_eq!(ran.verdict, want, "{name}: {}", ran.reasons);
        assert!(
            ran.reasons.contains(reason),
            "{name}: wanted `{reason}` in `{}`",
            ran.reasons
        );
        assert_eq!(kinds(&ran.actions), want_actions, "{name}");
        assert_eq!(
            ran.notes.iter().any(|n| n.starts_with("ended at once")),
            early,
            "{name}: {:?}",
            ran.notes
        );
        // Time to a hit, from QEMU's start, whether or not the cell ended at once.
        let first = if name.contains("after the report") {
            9100
        } else {
            5000
        };
        assert_eq!(ran.first_signature_ms, Some(first), "{name}");
    }
}

/// Issue #13, walkable hang dumps: before a memory dump of a kernel that has not
/// panicked, an NMI makes it panic (so `crash` finds every CPU parked in `panic()`);
/// that panic is the harness's doing and never turns a hang into a crash.
#[test]
fn a_dump_of_a_live_kernel_panics_it_first() {
    let dump = || Endings {
        dump: true,
        ..Endings::default()
    };
    let ok = || {
        vec![
            At(100, Event::Connected),
            At(2000, hello(PROTOCOL_VERSION)),
            At(3000, phase(Phase::Workload)),
        ]
    };
    // The hang's end game up to the sysrq dumps being written.
    let hung = || {
        [
            ok(),
            vec![
                Deadline,
                At(36_000, Event::Liveness(Ok(()))),
                At(37_000, Event::SysrqSent),
                At(37_100, console("sysrq: Show Blocked State")),
                Deadline,
            ],
        ]
        .concat()
    };
    let nmi_panic = || {
        vec![
            At(42_000, Event::NmiInjected(Ok(()))),
            At(
                42_100,
                console("[   41.0] Kernel panic - not syncing: NMI: Not continuing"),
            ),
            At(
                42_200,
                console("[   41.0] CPU: 0 PID: 77 Comm: kchaos-wedge-0"),
            ),
            At(
                42_300,
                console("[   41.1] ---[ end Kernel panic - not syncing: NMI: Not continuing ]---"),
            ),
            At(42_400, exited("signal: 9 (SIGKILL)")),
        ]
    };
    // (what happened, endings, events, verdict, a reason, actions, a note)
    type Case = (
        &'static str,
        Endings,
        Vec<Step>,
        Verdict,
        &'static str,
        Vec<&'static str>,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "a hang: NMI, the panic report, then the dump",
            dump(),
            [hung(), nmi_panic()].concat(),
            Verdict::Hang,
            "the guest sent nothing for 32s",
            vec![
                "send-run",
                "check-liveness",
                "sysrq",
                "write-sysrq",
                "nmi",
                "dump",
                "kill",
            ],
            "",
        ),
        (
            "a hang without --dump-memory: no NMI",
            Endings::default(),
            [hung(), vec![At(42_400, exited("signal: 9 (SIGKILL)"))]].concat(),
            Verdict::Hang,
            "the guest sent nothing for 32s",
            vec![
                "send-run",
                "check-liveness",
                "sysrq",
                "write-sysrq",
                "dump",
                "kill",
            ],
            "",
        ),
        (
            "a panic: already parked, dumped at once",
            dump(),
            [
                ok(),
                vec![
                    At(
                        5000,
                        console("[ 5.0] Kernel panic - not syncing: sysrq triggered crash"),
                    ),
                    Deadline,
                    At(14_000, exited("signal: 9 (SIGKILL)")),
                ],
            ]
            .concat(),
            Verdict::Crash,
            "sysrq triggered crash",
            vec!["send-run", "dump", "kill"],
            "",
        ),
        (
            "an Oops the kernel survived: made to panic before the dump",
            dump(),
            [
                ok(),
                vec![
                    At(5000, console("[ 5.0] Oops: 0000 [#1] PREEMPT SMP NOPTI")),
                    Deadline,
                ],
                nmi_panic(),
            ]
            .concat(),
            Verdict::Crash,
            "kernel log [oops]: Oops: 0000",
            vec!["send-run", "nmi", "dump", "kill"],
            "",
        ),
        (
            "QEMU refuses the NMI: dumped as it was",
            dump(),
            [
                hung(),
                vec![
                    At(
                        42_000,
                        Event::NmiInjected(Err("QEMU refused `inject-nmi`".into())),
                    ),
                    At(42_400, exited("signal: 9 (SIGKILL)")),
                ],
            ]
            .concat(),
            Verdict::Hang,
            "the guest sent nothing for 32s",
            vec![
                "send-run",
                "check-liveness",
                "sysrq",
                "write-sysrq",
                "nmi",
                "dump",
                "kill",
            ],
            "no NMI (QEMU refused `inject-nmi`)",
        ),
        (
            "the kernel ignores the NMI: dumped after the bound",
            dump(),
            [
                hung(),
                vec![
                    At(42_000, Event::NmiInjected(Ok(()))),
                    Deadline,
                    At(90_000, exited("signal: 9 (SIGKILL)")),
                ],
            ]
            .concat(),
            Verdict::Hang,
            "the guest sent nothing for 32s",
            vec![
                "send-run",
                "check-liveness",
                "sysrq",
                "write-sysrq",
                "nmi",
                "dump",
                "kill",
            ],
            "did not finish panicking within 40s of the NMI",
        ),
    ];
    for (name, endings, steps, want, reason, want_actions, note) in cases {
        let ran = run_with(endings, steps, "");
        assert_eq!(ran.verdict, want, "{name}: {}", ran.reasons);
        assert!(
            ran.reasons.contains(reason),
            "{name}: wanted `{reason}` in `{}`",
            ran.reasons
        );
        assert!(
            !ran.reasons.contains("NMI: Not continuing"),
            "{name}: the harness's panic is no finding: {}",
            ran.reasons
        );
        assert_eq!(kinds(&ran.actions), want_actions, "{name}");
        assert!(
            note.is_empty() || ran.notes.iter().any(|n| n.contains(note)),
            "{name}: wanted `{note}` in {:?}",
            ran.notes
        );
    }
}

/// Issue #16, `--keep-on-failure` / `--keep`: a decided cell's VM is kept instead of
/// killed — failures only, or every verdict — and the runner gets no Ack, so it waits
/// instead of powering off. Interrupts, frozen QEMUs and a full keeper still kill.
#[test]
fn a_decided_cell_keeps_its_vm_when_asked() {
    let keep = |policy| Endings {
        keep: policy,
        ..Endings::default()
    };
    let on_failure = || keep(KeepPolicy::Failures);
    let ok = || {
        vec![
            At(100, Event::Connected),
            At(2000, hello(PROTOCOL_VERSION)),
            At(3000, phase(Phase::Workload)),
        ]
    };
    let panic = || console("[ 5.0] Kernel panic - not syncing: sysrq triggered crash");
    // (what happened, endings, events, verdict, a reason, actions, kept)
    type Case = (
        &'static str,
        Endings,
        Vec<Step>,
        Verdict,
        &'static str,
        Vec<&'static str>,
        bool,
    );
    let cases: Vec<Case> = vec![
        (
            "a crash: kept in its panic after the grace",
            on_failure(),
            [ok(), vec![At(5000, panic()), Deadline]].concat(),
            Verdict::Crash,
            "sysrq triggered crash",
            vec!["send-run", "dump", "keep"],
            true,
        ),
        (
            "a failed check: no Ack, the runner waits",
            on_failure(),
            [ok(), vec![At(9000, finished(25))]].concat(),
            Verdict::Fail,
            "stat_read.p99",
            vec!["send-run", "keep"],
            true,
        ),
        (
            "a pass is not kept on failure",
            on_failure(),
            [ok(), vec![At(9000, finished(2)), At(9500, exited("exit status: 0"))]].concat(),
            Verdict::Pass,
            "",
            vec!["send-run", "send-ack"],
            false,
        ),
        (
            "--keep keeps a pass too",
            keep(KeepPolicy::Always),
            [ok(), vec![At(9000, finished(2))]].concat(),
            Verdict::Pass,
            "",
            vec!["send-run", "keep"],
            true,
        ),
        (
            "a hang with a dump: dumped live (no NMI), kept as it was",
            Endings { dump: true, ..on_failure() },
            [ok(), vec![
                Deadline,
                At(36_000, Event::Liveness(Ok(()))),
                At(37_000, Event::SysrqSent),
                Deadline,
            ]].concat(),
            Verdict::Hang,
            "the guest sent nothing for 32s",
            vec!["send-run", "check-liveness", "sysrq", "write-sysrq", "dump", "keep"],
            true,
        ),
        (
            "a decided target ends the cell and keeps it",
            Endings { until: Some(Target::AnyFailure), ..on_failure() },
            [ok(), vec![
                At(5000, kmsg("unregister_netdevice: waiting for veth3 to become free. Usage count = 1")),
                At(5400, Event::SysrqSent),
                Deadline,
            ]].concat(),
            Verdict::Fail,
            "unregister-netdevice",
            vec!["send-run", "sysrq", "write-sysrq", "dump", "keep"],
            true,
        ),
        (
            "the report comes during a crash's grace: no Ack under a keep policy",
            on_failure(),
            [ok(), vec![At(5000, panic()), At(5100, finished(2)), Deadline]].concat(),
            Verdict::Crash,
            "sysrq triggered crash",
            vec!["send-run", "dump", "keep"],
            true,
        ),
        (
            "the keeper is full: killed, and said so",
            on_failure(),
            [ok(), vec![
                At(5000, panic()),
                Deadline,
                At(13_100, Event::KeepRefused("2 VMs are kept already".into())),
                At(13_200, exited("signal: 9 (SIGKILL)")),
            ]].concat(),
            Verdict::Crash,
            "sysrq triggered crash",
            vec!["send-run", "dump", "keep", "kill"],
            false,
        ),
        (
            "an interrupt releases, never keeps",
            on_failure(),
            [ok(), vec![At(5000, Event::Interrupted), At(5100, exited("signal: 9 (SIGKILL)"))]].concat(),
            Verdict::Error,
            "interrupted",
            vec!["send-run", "send-abort", "kill"],
            false,
        ),
        (
            "a frozen QEMU is killed: nothing to debug there",
            keep(KeepPolicy::Always),
            [ok(), vec![
                Deadline,
                At(36_000, Event::Liveness(Err("its process is stopped".into()))),
                At(36_100, exited("signal: 9 (SIGKILL)")),
            ]].concat(),
            Verdict::Error,
            "QEMU itself stopped responding",
            vec!["send-run", "check-liveness", "kill"],
            false,
        ),
        (
            "a boot that never reached the runner is no failure to keep",
            on_failure(),
            vec![At(100, Event::Connected), Deadline, At(61_000, exited("signal: 9 (SIGKILL)"))],
            Verdict::Error,
            "did not reach the kchaos runner",
            vec!["kill"],
            false,
        ),
        (
            "--keep keeps it though: a boot to debug",
            keep(KeepPolicy::Always),
            vec![At(100, Event::Connected), Deadline],
            Verdict::Error,
            "did not reach the kchaos runner",
            vec!["keep"],
            true,
        ),
    ];
    for (name, endings, steps, want, reason, want_actions, kept) in cases {
        let ran = run_with(endings, steps, "");
        assert_eq!(ran.verdict, want, "{name}: {}", ran.reasons);
        assert!(
            ran.reasons.contains(reason),
            "{name}: wanted `{reason}` in `{}`",
            ran.reasons
        );
        assert!(
            !ran.reasons.contains("QEMU exited"),
            "{name}: a kept QEMU has not exited: {}",
            ran.reasons
        );
        assert_eq!(kinds(&ran.actions), want_actions, "{name}");
        assert_eq!(
            ran.notes.iter().any(|n| n.contains("kept for debugging")),
            kept,
            "{name}: {:?}",
            ran.notes
        );
    }
}

/// Issue #16, `--gdb`: a guest held by a debugger (QEMU run state `debug`) is silent
/// but not hung; the time it was held extends the run's budget.
#[test]
fn a_guest_stopped_in_the_debugger_is_not_hung() {
    let ran = run(
        vec![
            At(100, Event::Connected),
            At(2000, hello(PROTOCOL_VERSION)),
            At(3000, phase(Phase::Workload)),
            // Silent from 3s: checked at 35s, held by gdb.
            Deadline,
            At(35_100, Event::Stopped("debug".into())),
            // Held again at the next silence bound; then it runs on and reports.
            Deadline,
            At(67_200, Event::Stopped("debug".into())),
            At(70_000, heartbeat()),
            At(75_000, finished(2)),
            At(75_500, exited("exit status: 0")),
        ],
        "",
    );
    assert_eq!(ran.verdict, Verdict::Pass, "{}", ran.reasons);
    assert_eq!(
        kinds(&ran.actions),
        ["send-run", "check-liveness", "check-liveness", "send-ack"]
    );
    let noted: Vec<_> = ran
        .notes
        .iter()
        .filter(|n| n.contains("QEMU run state `debug`"))
        .collect();
    assert_eq!(noted.len(), 1, "said once: {:?}", ran.notes);
}

#[test]
fn waiting_for_the_debugger_stops_the_boot_clock_and_stopped_time_extends_the_budget() {
    let s = scenario();
    let watch = Watch::new(
        SignatureSet::new(&s.signatures).unwrap(),
        Default::default(),
    );
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let endings = Endings {
        wait_for_debugger: true,
        ..Endings::default()
    };
    let mut state = CellState::new(&s, "s/k", 7, timeouts(), watch, endings, t0);
    state.handle(Event::Connected, at(100));
    assert_eq!(
        state.deadline(),
        None,
        "no boot clock before the debugger lets go"
    );
    state.handle(Event::Resumed, at(100_000));
    assert_eq!(
        state.deadline(),
        Some(at(160_000)),
        "boot bound from the resume"
    );
    state.handle(hello(PROTOCOL_VERSION), at(102_000));
    // Budget: 10s + 1s + 60s from Hello; silence: 32s.
    assert_eq!(state.deadline(), Some(at(134_000)), "silence");
    state.handle(Event::Timer, at(134_000));
    state.handle(Event::Stopped("paused".into()), at(134_000));
    assert_eq!(
        state.deadline(),
        Some(at(166_000)),
        "silence, from the check"
    );
    // 32s stopped: the run may end 32s later than without the debugger.
    for t in (140_000..=200_000).step_by(10_000) {
        state.handle(heartbeat(), at(t));
    }
    assert_eq!(
        state.deadline(),
        Some(at(102_000 + 71_000 + 32_000)),
        "budget"
    );
    state.handle(finished(2), at(201_000));
    state.handle(exited("exit status: 0"), at(201_500));
    for event in [Event::ConsoleClosed, Event::ChannelClosed] {
        state.handle(event, at(201_500));
    }
    assert_eq!(
        state.finish("").boot_ms,
        Some(2000),
        "boot time from the resume"
    );
}
