//! The endings besides a cell's course, as table tests: a decided target, the NMI
//! before a dump, kept VMs, a guest held by a debugger.

use super::*;
use crate::analysis::reproduction::Target;
use crate::cell::KeepPolicy;

/// The netdev leak's line, as the kernel repeats it every 2 s.
const LEAK: &str = "unregister_netdevice: waiting for veth3 to become free. Usage count = 1";

/// A table row: what happened, the endings asked for, the events, how the cell must
/// end, and what else the table checks.
type Case<X> = (&'static str, Endings, Vec<Step>, Ends, X);

/// Runs each case, checks how it ended, then hands it to `check` for the rest.
fn run_cases<X>(cases: Vec<Case<X>>, check: impl Fn(&str, &Ran, X)) {
    for (name, endings, steps, want, extra) in cases {
        let ran = run_with(endings, steps, "");
        ran.assert_ends(name, want);
        check(name, &ran, extra);
    }
}

/// Issue #14, time to a hit: a run looking for an outcome ends a cell as soon as a
/// signature decides it (evidence first), instead of at the scenario's duration; a
/// plain run, or a signature that does not decide the target, changes nothing.
#[test]
fn a_decided_target_ends_the_cell_at_once() {
    // The signature, then the evidence end game of a hang, without the silence.
    let ended_at_once = |signature: Event| {
        [
            working(),
            vec![
                At(5000, signature),
                At(5100, heartbeat()),
                At(5400, Event::SysrqSent),
            ],
            sysrq_dumps(5500),
            vec![Deadline, killed(9600)],
        ]
        .concat()
    };
    // The same signature, but the run goes on to its report.
    let runs_its_course = |signature: Event| {
        [
            working(),
            vec![
                At(5000, signature),
                At(9000, finished(2)),
                powered_off(9500),
            ],
        ]
        .concat()
    };
    let until = |t: &str| Endings {
        until: Some(Target::parse(t)),
        ..Endings::default()
    };
    const EVIDENCE_THEN_KILL: &[&str] = &["send-run", "sysrq", "write-sysrq", "dump", "kill"];
    let at_once_from_kmsg = ends(
        Verdict::Fail,
        "kernel log [unregister-netdevice]: unregister_netdevice: waiting for veth3",
        EVIDENCE_THEN_KILL,
    );
    let ran_on = ends(
        Verdict::Fail,
        "unregister-netdevice",
        &["send-run", "send-ack"],
    );
    // (what happened, endings, events, how it ends, ended early)
    let cases: Vec<Case<bool>> = vec![
        (
            "--until any: the leak in kmsg ends the cell",
            until("any"),
            ended_at_once(kmsg(LEAK)),
            at_once_from_kmsg,
            true,
        ),
        (
            "--until TEXT: the console line names it",
            until("Usage count"),
            ended_at_once(console(&format!("[    5.3] {LEAK}"))),
            ends(Verdict::Fail, "unregister-netdevice", EVIDENCE_THEN_KILL),
            true,
        ),
        (
            "kchaos run: a failure signature decides the cell, which ends at once",
            Endings::default(),
            ended_at_once(kmsg(LEAK)),
            at_once_from_kmsg,
            true,
        ),
        (
            "kchaos run --full-duration: a failure signature does not end a cell",
            Endings {
                full_duration: true,
                ..Endings::default()
            },
            runs_its_course(kmsg(LEAK)),
            ran_on,
            false,
        ),
        (
            "--until crash: a failure signature does not decide it",
            until("crash"),
            runs_its_course(kmsg(LEAK)),
            ran_on,
            false,
        ),
        (
            "--until TEXT: another signature does not decide it",
            until("soft lockup"),
            runs_its_course(kmsg(LEAK)),
            ran_on,
            false,
        ),
        (
            "--until fail: after the report the cell is ending anyway",
            until("fail"),
            [
                working(),
                vec![
                    At(9000, finished(2)),
                    At(9100, kmsg(LEAK)),
                    powered_off(9500),
                ],
            ]
            .concat(),
            ran_on,
            false,
        ),
    ];
    run_cases(cases, |name, ran, early| {
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
    });
}

/// A defect that keeps printing its signature (the netdev leak: every 2 s, for ever)
/// must not hold the evidence window open to its maximum: only new lines extend it.
/// Before, such a cell collected for 40 s (evidence_max) after ending "at once".
#[test]
fn a_repeating_signature_does_not_hold_the_evidence_window_open() {
    let endings = Endings {
        until: Some(Target::parse("any")),
        ..Endings::default()
    };
    let steps = [
        working(),
        vec![
            At(5000, console(&format!("[    5.0] {LEAK}"))),
            At(5400, Event::SysrqSent),
        ],
        sysrq_dumps(5500),
        vec![
            // The repeats, each 2 s apart (new timestamps, same line).
            At(7000, console(&format!("[    7.0] {LEAK}"))),
            At(9000, console(&format!("[    9.0] {LEAK}"))),
            // Quiet since the sysrq output at 5500: the window closes at 9500, not 13000.
            Deadline,
            killed(9600),
        ],
    ]
    .concat();
    let ran = run_with(endings, steps, "");
    assert_eq!(ran.verdict, Verdict::Fail, "{}", ran.reasons);
    assert!(kinds(&ran.actions).contains(&"kill"));
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
    // The hang's end game up to the sysrq dumps being written.
    let hung = || [working(), silent_then_dumped(), vec![Deadline]].concat();
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
            killed(42_400),
        ]
    };
    let silent = "the guest sent nothing for 32s";
    let hang_dumped_after_nmi = ends(
        Verdict::Hang,
        silent,
        &[
            "send-run",
            "check-liveness",
            "sysrq",
            "write-sysrq",
            "nmi",
            "dump",
            "kill",
        ],
    );
    // (what happened, endings, events, how it ends, a note)
    let cases: Vec<Case<&str>> = vec![
        (
            "a hang: NMI, the panic report, then the dump",
            dump(),
            [hung(), nmi_panic()].concat(),
            hang_dumped_after_nmi,
            "",
        ),
        (
            "a hang without --dump-memory: no NMI",
            Endings::default(),
            [hung(), vec![killed(42_400)]].concat(),
            ends(Verdict::Hang, silent, HANG_ACTIONS),
            "",
        ),
        (
            "a panic: already parked, dumped at once",
            dump(),
            [
                working(),
                vec![
                    At(
                        5000,
                        console("[ 5.0] Kernel panic - not syncing: sysrq triggered crash"),
                    ),
                    Deadline,
                    killed(14_000),
                ],
            ]
            .concat(),
            ends(
                Verdict::Crash,
                "sysrq triggered crash",
                &["send-run", "dump", "kill"],
            ),
            "",
        ),
        (
            "an Oops the kernel survived: made to panic before the dump",
            dump(),
            [
                working(),
                vec![
                    At(5000, console("[ 5.0] Oops: 0000 [#1] PREEMPT SMP NOPTI")),
                    Deadline,
                ],
                nmi_panic(),
            ]
            .concat(),
            ends(
                Verdict::Crash,
                "kernel log [oops]: Oops: 0000",
                &["send-run", "nmi", "dump", "kill"],
            ),
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
                    killed(42_400),
                ],
            ]
            .concat(),
            hang_dumped_after_nmi,
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
                    killed(90_000),
                ],
            ]
            .concat(),
            hang_dumped_after_nmi,
            "did not finish panicking within 40s of the NMI",
        ),
    ];
    run_cases(cases, |name, ran, note| {
        ran.assert_reasons_lack(
            name,
            "NMI: Not continuing",
            "the harness's panic is no finding",
        );
        assert!(
            note.is_empty() || ran.notes.iter().any(|n| n.contains(note)),
            "{name}: wanted `{note}` in {:?}",
            ran.notes
        );
    });
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
    let panic = || console("[ 5.0] Kernel panic - not syncing: sysrq triggered crash");
    let kept_crash = ends(
        Verdict::Crash,
        "sysrq triggered crash",
        &["send-run", "dump", "keep"],
    );
    let no_runner = "did not reach the kchaos runner";
    // (what happened, endings, events, how it ends, kept)
    let cases: Vec<Case<bool>> = vec![
        (
            "a crash: kept in its panic after the grace",
            on_failure(),
            [working(), vec![At(5000, panic()), Deadline]].concat(),
            kept_crash,
            true,
        ),
        (
            "a failed check: no Ack, the runner waits",
            on_failure(),
            [working(), vec![At(9000, finished(25))]].concat(),
            ends(Verdict::Fail, "stat_read.p99", &["send-run", "keep"]),
            true,
        ),
        (
            "a pass is not kept on failure",
            on_failure(),
            [working(), vec![At(9000, finished(2)), powered_off(9500)]].concat(),
            ends(Verdict::Pass, "", &["send-run", "send-ack"]),
            false,
        ),
        (
            "--keep keeps a pass too",
            keep(KeepPolicy::Always),
            [working(), vec![At(9000, finished(2))]].concat(),
            ends(Verdict::Pass, "", &["send-run", "keep"]),
            true,
        ),
        (
            "a hang with a dump: dumped live (no NMI), kept as it was",
            Endings {
                dump: true,
                ..on_failure()
            },
            [working(), silent_then_dumped(), vec![Deadline]].concat(),
            ends(
                Verdict::Hang,
                "the guest sent nothing for 32s",
                &[
                    "send-run",
                    "check-liveness",
                    "sysrq",
                    "write-sysrq",
                    "dump",
                    "keep",
                ],
            ),
            true,
        ),
        (
            "a decided target ends the cell and keeps it",
            Endings {
                until: Some(Target::AnyFailure),
                ..on_failure()
            },
            [
                working(),
                vec![At(5000, kmsg(LEAK)), At(5400, Event::SysrqSent)],
                sysrq_dumps(5500),
                vec![Deadline],
            ]
            .concat(),
            ends(
                Verdict::Fail,
                "unregister-netdevice",
                &["send-run", "sysrq", "write-sysrq", "dump", "keep"],
            ),
            true,
        ),
        (
            "the report comes during a crash's grace: no Ack under a keep policy",
            on_failure(),
            [
                working(),
                vec![At(5000, panic()), At(5100, finished(2)), Deadline],
            ]
            .concat(),
            kept_crash,
            true,
        ),
        (
            "the keeper is full: killed, and said so",
            on_failure(),
            [
                working(),
                vec![
                    At(5000, panic()),
                    Deadline,
                    At(13_100, Event::KeepRefused("2 VMs are kept already".into())),
                    killed(13_200),
                ],
            ]
            .concat(),
            ends(
                Verdict::Crash,
                "sysrq triggered crash",
                &["send-run", "dump", "keep", "kill"],
            ),
            false,
        ),
        (
            "an interrupt releases, never keeps",
            on_failure(),
            [working(), vec![At(5000, Event::Interrupted), killed(5100)]].concat(),
            ends(
                Verdict::Error,
                "interrupted",
                &["send-run", "send-abort", "kill"],
            ),
            false,
        ),
        (
            "a frozen QEMU is killed: nothing to debug there",
            keep(KeepPolicy::Always),
            [
                working(),
                vec![
                    Deadline,
                    At(
                        36_000,
                        Event::Liveness(Err("its process is stopped".into())),
                    ),
                    killed(36_100),
                ],
            ]
            .concat(),
            ends(
                Verdict::Error,
                "QEMU itself stopped responding",
                &["send-run", "check-liveness", "kill"],
            ),
            false,
        ),
        (
            "a boot that never reached the runner is no failure to keep",
            on_failure(),
            vec![At(100, Event::Connected), Deadline, killed(61_000)],
            ends(Verdict::Error, no_runner, &["kill"]),
            false,
        ),
        (
            "--keep keeps it though: a boot to debug",
            keep(KeepPolicy::Always),
            vec![At(100, Event::Connected), Deadline],
            ends(Verdict::Error, no_runner, &["keep"]),
            true,
        ),
    ];
    run_cases(cases, |name, ran, kept| {
        ran.assert_reasons_lack(name, "QEMU exited", "a kept QEMU has not exited");
        assert_eq!(
            ran.notes.iter().any(|n| n.contains("kept for debugging")),
            kept,
            "{name}: {:?}",
            ran.notes
        );
    });
}

/// Issue #16, `--gdb`: a guest held by a debugger (QEMU run state `debug`) is silent
/// but not hung; the time it was held extends the run's budget.
#[test]
fn a_guest_stopped_in_the_debugger_is_not_hung() {
    let ran = run(
        [
            working(),
            vec![
                // Silent from 3s: checked at 35s, held by gdb.
                Deadline,
                At(35_100, Event::Stopped("debug".into())),
                // Held again at the next silence bound; then it runs on and reports.
                Deadline,
                At(67_200, Event::Stopped("debug".into())),
                At(70_000, heartbeat()),
                At(75_000, finished(2)),
                powered_off(75_500),
            ],
        ]
        .concat(),
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
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let endings = Endings {
        wait_for_debugger: true,
        ..Endings::default()
    };
    let mut state = cell_state(&scenario(), BTreeMap::new(), endings, t0);
    state.handle(Event::Connected, at(100));
    assert_deadline(&state, None, "no boot clock before the debugger lets go");
    state.handle(Event::Resumed, at(100_000));
    assert_deadline(&state, Some(at(160_000)), "boot bound from the resume");
    state.handle(hello(PROTOCOL_VERSION), at(102_000));
    // Budget: 10s + 1s + 60s from Hello; silence: 32s.
    assert_deadline(&state, Some(at(134_000)), "silence");
    state.handle(Event::Timer, at(134_000));
    state.handle(Event::Stopped("paused".into()), at(134_000));
    assert_deadline(&state, Some(at(166_000)), "silence, from the check");
    // 32s stopped: the run may end 32s later than without the debugger.
    for t in (140_000..=200_000).step_by(10_000) {
        state.handle(heartbeat(), at(t));
    }
    assert_deadline(&state, Some(at(102_000 + 71_000 + 32_000)), "budget");
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

/// A sysrq key pressed while the guest stalls can be lost (seen in CI: a hang's
/// `sysrq.txt` without the blocked tasks, `t` and `l` present). Keys whose dump header
/// did not show are pressed again, up to `SYSRQ_ATTEMPTS` in all and within the
/// evidence window; a dump that never shows is a note, and the rest is still written.
#[test]
fn a_lost_sysrq_key_is_pressed_again() {
    let hung = || [working(), silent_then_sysrq()].concat();
    let loglevel = || console("[ 37.0] sysrq: Changing Loglevel");
    let blocked = || console("[ 37.0] sysrq: Show Blocked State");
    let state = || console("[ 37.1] sysrq: Show State");
    let cpus = || console("[ 37.2] sysrq: Show backtrace of all active CPUs");
    // (what happened, events after the first keys, keys pressed per attempt, lines
    // written, a note)
    type Case = (
        &'static str,
        Vec<Step>,
        Vec<Vec<char>>,
        usize,
        Option<&'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            "every dump showed: pressed once",
            vec![
                At(37_100, loglevel()),
                At(37_100, blocked()),
                At(37_100, state()),
                At(37_100, cpus()),
                Deadline,
            ],
            vec![vec!['7', 'w', 't', 'l']],
            4,
            None,
        ),
        (
            "`w` was lost: pressed again, then all three are written",
            vec![
                At(37_100, loglevel()),
                At(37_100, state()),
                At(37_200, cpus()),
                Deadline,
                At(41_300, Event::SysrqSent),
                At(41_400, blocked()),
                Deadline,
            ],
            vec![vec!['7', 'w', 't', 'l'], vec!['w']],
            4,
            None,
        ),
        (
            "a guest that never handles the keys: three attempts, then a note",
            vec![
                Deadline,
                At(41_100, Event::SysrqSent),
                Deadline,
                At(45_200, Event::SysrqSent),
                Deadline,
            ],
            vec![
                vec!['7', 'w', 't', 'l'],
                vec!['7', 'w', 't', 'l'],
                vec!['7', 'w', 't', 'l'],
            ],
            0,
            Some("no sysrq dump on the console for key(s) `7wtl` after 3 attempt(s)"),
        ),
    ];
    for (what, tail, pressed, written, note) in cases {
        let steps = [hung(), tail, vec![killed(60_000)]].concat();
        let ran = run(steps, "");
        assert_eq!(ran.verdict, Verdict::Hang, "{what}: {}", ran.reasons);
        let keys: Vec<Vec<char>> = ran
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::SendSysrq(keys) => Some(keys.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(keys, pressed, "{what}");
        assert_eq!(
            ran.sysrq_written().map(<[String]>::len),
            Some(written),
            "{what}"
        );
        match note {
            Some(n) => assert!(
                ran.notes.iter().any(|x| x.contains(n)),
                "{what}: {:?}",
                ran.notes
            ),
            None => assert!(
                !ran.notes.iter().any(|x| x.contains("no sysrq dump")),
                "{what}"
            ),
        }
        assert!(
            kinds(&ran.actions).ends_with(&["write-sysrq", "dump", "kill"]),
            "{what}"
        );
    }
}

/// A blocked task as the kernel prints it in kmsg at `ms`: its `task:` line, then a
/// stack asleep in `rmdir` of a cgroup whose removal waits (the stack both Issue 21
/// cases must name).
fn blocked_in_rmdir(ms: u64, task: &str) -> Vec<Step> {
    [
        task,
        "Call Trace:",
        " __schedule+0x34d/0x9e0",
        " schedule+0x5a/0xd0",
        " msleep+0x2d/0x40",
        " cgroup_rmdir+0x5a/0x140",
        " kernfs_iop_rmdir+0x76/0xc0",
        " vfs_rmdir+0x9a/0x1e0",
    ]
    .into_iter()
    .map(|line| At(ms, kmsg(line)))
    .collect()
}

/// Issue 21: a hang says where the kernel is stuck, from the blocked tasks the sysrq
/// `w` dump shows (here only in kmsg, as when the console's loglevel filtered them),
/// and is fingerprinted by that stack; sysrq.txt keeps the kmsg side of the window.
#[test]
fn a_hang_names_the_blocked_tasks_and_is_fingerprinted_by_them() {
    let steps = [
        working(),
        silent_then_sysrq(),
        vec![
            At(37_100, console("[ 37.0] sysrq: Changing Loglevel")),
            At(37_100, console("[ 37.0] sysrq: Show Blocked State")),
        ],
        blocked_in_rmdir(
            37_100,
            "task:exe             state:D stack:0     pid:45    ppid:1      flags:0x00004002",
        ),
        vec![
            At(37_100, kmsg(" do_syscall_64+0x58/0xc0")),
            At(37_100, console("[ 37.1] sysrq: Show State")),
            At(
                37_100,
                console("[ 37.2] sysrq: Show backtrace of all active CPUs"),
            ),
            Deadline,
            killed(60_000),
        ],
    ]
    .concat();
    let ran = run(steps, "");
    assert_eq!(ran.verdict, Verdict::Hang);
    assert!(
        ran.reasons.starts_with(
            "stuck in the kernel: 1 task blocked in D state: `exe` (pid 45) in msleep <- cgroup_rmdir <- kernfs_iop_rmdir <- vfs_rmdir; the guest sent nothing"
        ),
        "{}",
        ran.reasons
    );
    assert!(
        ran.fingerprint,
        "a hang with a blocked stack is fingerprinted"
    );
    let written = ran.sysrq_written().unwrap_or_default();
    assert!(
        written.iter().any(|l| l.contains("cgroup_rmdir+0x5a")),
        "sysrq.txt has the kmsg dump: {written:#?}"
    );
}

/// Issue 21: a cell failed by the kernel's own hung-task report, with no hang and no
/// dump, still names where the kernel is stuck: the report prints each blocked task's
/// stack, which names the code path right after the report's line and fingerprints it.
#[test]
fn a_hung_task_report_names_where_the_task_sleeps() {
    let steps = [
        working(),
        vec![At(
            14_000,
            kmsg("INFO: task tokio-rt-worker:45 blocked for more than 10 seconds."),
        )],
        blocked_in_rmdir(
            14_000,
            "task:tokio-rt-worker state:D stack:0     pid:45    ppid:1      flags:0x00004002",
        ),
        vec![At(20_000, finished(2)), powered_off(20_500)],
    ]
    .concat();
    let endings = Endings {
        full_duration: true,
        ..Endings::default()
    };
    let ran = run_with(endings, steps, "");
    assert_eq!(ran.verdict, Verdict::Fail, "{}", ran.reasons);
    assert!(ran.reasons.contains("[hung-task]"), "{}", ran.reasons);
    assert!(
        ran.reasons.contains(
            "stuck in the kernel: 1 task blocked in D state: `tokio-rt-worker` (pid 45) in msleep <- cgroup_rmdir"
        ),
        "{}",
        ran.reasons
    );
    assert!(ran.fingerprint, "fingerprinted by the reported stack");
}
