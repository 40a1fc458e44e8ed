//! What the harness does when the guest misbehaves: garbage on the channel, a wrong
//! protocol, silence, a panic on the console, QEMU dying, a runner that gives up. Each
//! case must end in exactly one recorded verdict with a clear reason, in bounded time,
//! without a panic. No VM: this binary is also the "QEMU" the harness starts. Invoked
//! with `-kernel FILE`, it reads the behaviour to fake from FILE and speaks the real
//! protocol on the control socket.

// Test code: a broken expectation should panic at the line that broke.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kchaos_harness::analysis::reproduction::Target;
use kchaos_harness::cell::{self, CellEnv, CellSpec, Gdb, KeepPolicy, Keeper};
use kchaos_harness::results::CellResult;
use kchaos_harness::scenario::LoadedScenario;
use kchaos_harness::vm::image::{GuestImage, ImageInfo};
use kchaos_harness::vm::{Accel, BootMedia, Qemu};
use kchaos_images::Kernel;
use kchaos_model::metrics::{Metric, Summary};
use kchaos_model::protocol::{
    self, FrameDecoder, FrameEvent, GuestMessage, Hello, HostMessage, KmsgRecord, Phase, RunReport,
    PROTOCOL_VERSION,
};
use kchaos_model::units::Unit;
use kchaos_model::verdict::Verdict;

/// The scenario every fake cell runs.
const SCENARIO: &str = include_str!("data/robustness-fake.toml");

/// Checks a fake run's result and how long it took.
type Expectation = fn(CellResult, Duration);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "-kernel") {
        fake_qemu(&args, &args[i + 1]);
        return;
    }
    let filter = args.iter().skip(1).find(|a| !a.starts_with('-')).cloned();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut failed = 0;
    let cases: &[(&str, Expectation)] = &[
        ("pass", case_pass),
        ("garbage", case_garbage),
        ("truncated", case_truncated),
        ("wrong-protocol", case_wrong_protocol),
        ("hang", case_hang),
        ("frozen-qemu", case_frozen_qemu),
        ("panic", case_panic),
        ("die", case_die),
        ("no-hello", case_no_hello),
        ("fatal", case_fatal),
        ("skip", case_skip),
        ("kmsg-lockup", case_kmsg_lockup),
        ("check-fails", case_check_fails),
        ("interrupt", case_interrupt),
        ("cancel-dropped", case_cancel_dropped),
        ("until-signature", case_until_signature),
        ("gdb-wait", case_gdb_wait),
    ];
    for (name, check) in cases {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let start = Instant::now();
        let result = runtime.block_on(run_fake(name));
        let took = start.elapsed();
        let outcome = std::panic::catch_unwind(|| check(result, took));
        failed += report(name, took, outcome);
    }
    if filter
        .as_deref()
        .is_none_or(|f| "keep-on-failure".contains(f))
    {
        let start = Instant::now();
        let outcome = std::panic::catch_unwind(|| runtime.block_on(case_keep_on_failure()));
        failed += report("keep-on-failure", start.elapsed(), outcome);
    }
    if failed > 0 {
        println!("{failed} robustness case(s) failed");
        std::process::exit(1);
    }
}

/// Prints a case's outcome as libtest does; 1 if it failed.
fn report(name: &str, took: Duration, outcome: std::thread::Result<()>) -> usize {
    if outcome.is_ok() {
        println!("test {name} ... ok ({:.1}s)", took.as_secs_f64());
        0
    } else {
        println!("test {name} ... FAILED");
        1
    }
}

async fn run_fake(mode: &str) -> CellResult {
    let dir = tempfile::tempdir().unwrap();
    let (tx, cancel) = tokio::sync::watch::channel(false);
    match mode {
        // The user interrupts the run while the guest works.
        "interrupt" => {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let _ = tx.send(true);
            });
        }
        // Nobody is left who could interrupt: that is not an interruption.
        "cancel-dropped" => drop(tx),
        _ => std::mem::forget(tx),
    }
    let mut env = fake_env(cancel);
    // A repro looking for any failure.
    env.until = (mode == "until-signature").then_some(Target::AnyFailure);
    if mode == "gdb-wait" {
        env.gdb = Some(Gdb {
            wait: true,
            vmlinux: Err("none in a fake".into()),
        });
    }
    run_fake_cell(mode, &dir, &env).await
}

/// How the fake cells run: this binary as QEMU, short bounds.
fn fake_env(cancel: tokio::sync::watch::Receiver<bool>) -> CellEnv {
    CellEnv {
        qemu: Qemu {
            path: std::env::current_exe().unwrap(),
            version: "fake".into(),
            firmware: None,
        },
        accel: Accel::Kvm,
        cancel,
        guest_log: None,
        boot_timeout: Some(Duration::from_secs(2)),
        dump: None,
        until: None,
        keep: KeepPolicy::Never,
        full_duration: false,
        keeper: Arc::new(Keeper::new(1)),
        gdb: None,
    }
}

/// Runs one fake cell in `dir` (its `mode` file tells the fake QEMU what to do).
async fn run_fake_cell(mode: &str, dir: &tempfile::TempDir, env: &CellEnv) -> CellResult {
    let kernel_file = dir.path().join("mode");
    std::fs::write(&kernel_file, mode).unwrap();
    let initrd = dir.path().join("initrd");
    std::fs::write(&initrd, b"").unwrap();
    let scenario = Arc::new(LoadedScenario {
        path: "fake.toml".into(),
        source: SCENARIO.to_owned(),
        model: kchaos_model::scenario::parse("fake.toml", SCENARIO).unwrap(),
    });
    let kernel = Arc::new(Kernel {
        spec: "path:fake".into(),
        resolved: "path:fake".into(),
        release: "6.1.0-fake".into(),
        package: None,
        debian: None,
        source: None,
        bzimage: kernel_file.clone(),
        modules_dir: None,
        config_path: None,
    });
    let spec = CellSpec {
        id: format!("fake/{mode}"),
        scenario,
        kernel,
        image: GuestImage {
            kernel: kchaos_images::pvh::BootKernel {
                path: kernel_file,
                fallback: Some("a fake kernel".into()),
            },
            media: BootMedia::Initrd(initrd),
            cmdline: Vec::new(),
            info: ImageInfo {
                kind: kchaos_model::scenario::ImageKind::Initramfs,
                key: "fake".into(),
            },
            size: 0,
        },
        seed: 7,
        topology: None,
        repeat: 0,
        results_dir: dir.path().to_path_buf(),
        dir: dir.path().join("cell"),
    };
    let result = cell::run(&spec, env, &|_| {}).await;
    // The result is on disk too, whatever happened.
    let on_disk: CellResult =
        serde_json::from_slice(&std::fs::read(dir.path().join("cell/cell.json")).unwrap()).unwrap();
    assert_eq!(on_disk, result);
    result
}

fn reasons(r: &CellResult) -> String {
    r.reasons.join(" | ")
}

/// Asserts the cell's verdict and that its reasons name each of `words`; a failure
/// shows the reasons.
#[track_caller]
fn assert_ended(r: &CellResult, verdict: Verdict, words: &[&str]) {
    assert_eq!(r.verdict, verdict, "{}", reasons(r));
    for w in words {
        assert!(reasons(r).contains(w), "{}", reasons(r));
    }
}

fn case_pass(r: CellResult, _: Duration) {
    assert_ended(&r, Verdict::Pass, &[]);
    assert_eq!(r.kernel.release.as_deref(), Some("6.1.0-fake-guest"));
    assert!(matches!(r.metrics.get("dying"), Some(Metric::Series(s)) if s.samples.len() == 3));
    assert!(r.boot_ms.is_some());
}

fn case_garbage(r: CellResult, _: Duration) {
    assert_eq!(
        r.verdict,
        Verdict::Error,
        "a corrupted channel never passes: {}",
        reasons(&r)
    );
    assert_ended(&r, Verdict::Error, &["corrupt bytes"]);
}

fn case_truncated(r: CellResult, _: Duration) {
    assert_ended(&r, Verdict::Error, &["truncated frame"]);
}

fn case_wrong_protocol(r: CellResult, took: Duration) {
    assert_ended(&r, Verdict::Error, &["protocol 999", "rebuild the runner"]);
    assert!(took < Duration::from_secs(10), "{took:?}");
}

fn case_hang(r: CellResult, took: Duration) {
    assert_ended(
        &r,
        Verdict::Hang,
        &["sent nothing for 2s (phase: workload)"],
    );
    assert!(
        took < Duration::from_secs(10),
        "the hang must be declared within its bound: {took:?}"
    );
    // The fake kernel handles every sysrq key: all dumps came, none was pressed twice.
    assert!(r.artifacts.sysrq.is_some(), "{:?}", r.artifacts);
    assert!(
        !r.notes.iter().any(|n| n.contains("no sysrq dump")),
        "{:?}",
        r.notes
    );
}

/// Issue #11: a SIGSTOPped QEMU is the host's problem, not a kernel hang.
fn case_frozen_qemu(r: CellResult, took: Duration) {
    assert_ended(
        &r,
        Verdict::Error,
        &["QEMU itself stopped responding (its process is stopped)"],
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
}

fn case_panic(r: CellResult, _: Duration) {
    assert_ended(&r, Verdict::Crash, &["[panic]", "Fatal exception"]);
    assert_eq!(
        r.signatures.len(),
        2,
        "panic and soft lockup, deduplicated: {:?}",
        r.signatures
    );
}

fn case_die(r: CellResult, took: Duration) {
    assert_ended(
        &r,
        Verdict::Error,
        &["QEMU said: qemu-system-x86_64: fake: cannot load kernel"],
    );
    assert!(took < Duration::from_secs(8), "{took:?}");
}

fn case_no_hello(r: CellResult, took: Duration) {
    assert_ended(
        &r,
        Verdict::Error,
        &["did not reach the kchaos runner within 2s"],
    );
    assert!(
        reasons(&r).contains("EFI stub: loaded"),
        "the console tail is quoted: {}",
        reasons(&r)
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
}

fn case_fatal(r: CellResult, _: Duration) {
    assert_ended(&r, Verdict::Error, &["runner: cannot mount cgroup2"]);
}

fn case_skip(r: CellResult, _: Duration) {
    assert_ended(&r, Verdict::Skip, &[]);
    assert_eq!(r.reasons, vec!["no cgroup v1 memory".to_owned()]);
}

fn case_kmsg_lockup(r: CellResult, _: Duration) {
    assert_ended(&r, Verdict::Fail, &["[soft-lockup]"]);
}

fn case_interrupt(r: CellResult, took: Duration) {
    assert_ended(&r, Verdict::Error, &[]);
    assert_eq!(r.reasons, vec!["interrupted".to_owned()]);
    assert!(took < Duration::from_secs(5), "{took:?}");
}

fn case_cancel_dropped(r: CellResult, _: Duration) {
    assert_ended(&r, Verdict::Pass, &[]);
}

/// Issue #14: the guest prints a signature that decides the repro's target and keeps
/// working (a stalled teardown keeps a workload alive for minutes): the cell ends within
/// seconds, evidence first, not at its duration (5s + 15s of margin) or as a hang.
fn case_until_signature(r: CellResult, took: Duration) {
    assert_ended(&r, Verdict::Fail, &["kernel log [unregister-netdevice]"]);
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(
        r.notes.iter().any(|n| n.starts_with("ended at once")),
        "{:?}",
        r.notes
    );
    assert!(
        r.artifacts.sysrq.is_some(),
        "evidence first: {:?}",
        r.artifacts
    );
    let first = r.first_signature_ms.unwrap();
    assert!(first < r.duration_ms, "{first} ms of {}", r.duration_ms);
}

/// Issue #16, `--keep-on-failure`: a failing cell is recorded at once (no Ack: the
/// runner keeps waiting), its QEMU stays alive in the keeper until the user interrupts,
/// and is gone after that.
/// The same for a repro's cell ended at its signature: kept with its evidence.
async fn case_keep_on_failure() {
    keep_on_failure("keep-fail", "dying.last = 9").await;
    keep_on_failure("until-signature", "kernel log [unregister-netdevice]").await;
}

async fn keep_on_failure(mode: &str, reason: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (tx, cancel) = tokio::sync::watch::channel(false);
    let mut env = fake_env(cancel);
    env.keep = KeepPolicy::Failures;
    if mode == "until-signature" {
        env.until = Some(Target::AnyFailure);
    }
    let start = Instant::now();
    let r = run_fake_cell(mode, &dir, &env).await;
    assert_ended(&r, Verdict::Fail, &[reason]);
    if mode == "until-signature" {
        let sysrq = r
            .artifacts
            .sysrq
            .as_deref()
            .expect("a kept cell keeps its evidence");
        assert!(dir.path().join(sysrq).is_file(), "{sysrq}");
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "the verdict does not wait for the release: {:?}",
        start.elapsed()
    );
    assert!(
        r.notes.iter().any(|n| n.contains("kept for debugging")),
        "{:?}",
        r.notes
    );
    let pid: i32 = std::fs::read_to_string(dir.path().join("fake-qemu.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let alive = || nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
    assert_eq!(env.keeper.kept(), 1);
    // Still there a while later: nothing times it out.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(alive(), "the kept QEMU must stay up until released");
    tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), env.keeper.wait())
        .await
        .expect("the kept VM is released within seconds of the interrupt");
    assert!(
        !alive(),
        "the kept QEMU is gone (killed and reaped) after the release"
    );
}

/// Issue #16, `--gdb-wait`: QEMU starts paused and the guest only boots once the
/// debugger lets it (here after 3s, beyond the 2s boot bound): the boot clock runs
/// from then, so the cell passes and its boot time does not include the wait.
fn case_gdb_wait(r: CellResult, took: Duration) {
    assert_ended(&r, Verdict::Pass, &[]);
    assert!(took > FAKE_DEBUGGER, "{took:?}");
    let boot = r.boot_ms.unwrap();
    assert!(boot < 2500, "boot time counts from the resume: {boot} ms");
}

fn case_check_fails(r: CellResult, _: Duration) {
    assert_ended(&r, Verdict::Fail, &["dying.last = 9"]);
}

// ---------------------------------------------------------------------------------
// The fake QEMU.

fn fake_qemu(args: &[String], mode_file: &str) {
    let mode = std::fs::read_to_string(mode_file).unwrap();
    let socket = args
        .iter()
        .find_map(|a| {
            a.strip_prefix("socket,id=kchaos-ctl,path=")
                .and_then(|r| r.strip_suffix(",server=off"))
        })
        .map(|p| PathBuf::from(p.replace(",,", ",")));
    if mode == "die" {
        eprintln!("qemu-system-x86_64: fake: cannot load kernel");
        std::process::exit(1);
    }
    // QEMU's monitor: answers every command, as long as the process runs.
    if let Some(qmp) = args
        .iter()
        .position(|a| a == "-qmp")
        .and_then(|i| args.get(i + 1))
        .and_then(|a| {
            a.strip_prefix("unix:")
                .and_then(|r| r.strip_suffix(",server=on,wait=off"))
        })
    {
        // Started with -S: a debugger lets the guest run after a while.
        let paused_until = args
            .iter()
            .any(|a| a == "-S")
            .then(|| Instant::now() + FAKE_DEBUGGER);
        fake_qmp(PathBuf::from(qmp.replace(",,", ",")), paused_until);
    }
    let pid_file = Path::new(mode_file).with_file_name("fake-qemu.pid");
    std::fs::write(pid_file, std::process::id().to_string()).unwrap();
    let mut guest = Guest::connect(&socket.unwrap());
    console("EFI stub: loaded initrd");
    match mode.as_str() {
        "keep-fail" => {
            guest.start();
            guest.workload(9.0, "cgroup: all fine");
            // As the runner with `kchaos.keep=1`: wait for the Ack as long as it takes.
            guest.send_finished();
            std::thread::sleep(Duration::from_secs(120));
        }
        "gdb-wait" => {
            assert!(args.iter().any(|a| a == "-S"), "QEMU must start paused");
            assert!(args.iter().any(|a| a == "chardev:kchaos-gdb"), "{args:?}");
            // The guest boots once resumed, which takes it a second.
            std::thread::sleep(FAKE_DEBUGGER + Duration::from_secs(1));
            guest.start();
            guest.workload(2.0, "cgroup: all fine");
            guest.finish();
        }
        "pass" | "kmsg-lockup" | "check-fails" => {
            let run = guest.start();
            assert_eq!(run.scenario.name, "fake");
            assert_eq!(run.seed, 7);
            let last = if mode == "check-fails" { 9.0 } else { 2.0 };
            let line = if mode == "kmsg-lockup" {
                "watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [kchaos:1]"
            } else {
                "cgroup: all fine"
            };
            // The runner quoting a signature is not the kernel reporting one.
            console("kchaos-runner: WARN self-test: writes `BUG: soft lockup` to /dev/kmsg");
            guest.workload(last, line);
            guest.finish();
        }
        "garbage" => {
            // A healthy run in every respect but the garbage around its frames.
            guest.raw(b"\x00\xffnot a frame");
            guest.start();
            guest.raw(b"KCH\x01\x05\x00\x00\x00\x00\x00\x00\x00hello");
            guest.workload(2.0, "cgroup: all fine");
            guest.finish();
        }
        "truncated" => {
            guest.start();
            let frame = protocol::encode(&GuestMessage::Note {
                message: "x".repeat(100),
            })
            .unwrap();
            guest.raw(&frame[..frame.len() / 2]);
        }
        "wrong-protocol" => {
            guest.hello(999);
            std::thread::sleep(Duration::from_secs(60));
        }
        "cancel-dropped" => {
            guest.start();
            std::thread::sleep(Duration::from_millis(300));
            guest.workload(2.0, "cgroup: all fine");
            guest.finish();
        }
        "until-signature" => {
            guest.start();
            guest.enter_workload();
            let leak = "unregister_netdevice: waiting for veth7 to become free. Usage count = 1";
            guest.kmsg(leak);
            console(&format!("[    5.300000] {leak}"));
            // The teardown is stuck, the runner alive: beats until killed.
            guest.beat_until_killed();
        }
        "interrupt" => {
            guest.start();
            guest.enter_workload();
            // Keep beating until killed, like a busy runner.
            guest.beat_until_killed();
        }
        "hang" => {
            guest.start();
            guest.enter_workload();
            guest.send(&GuestMessage::Heartbeat {
                seq: 0,
                uptime_ms: 1,
            });
            std::thread::sleep(Duration::from_secs(60));
        }
        "panic" => {
            guest.start();
            guest.kmsg("watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [x:1]");
            console("[   30.100000] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [x:1]");
            console("[   30.200000] Kernel panic - not syncing: Fatal exception");
        }
        "frozen-qemu" => {
            guest.start();
            guest.enter_workload();
            // Someone stops QEMU (a debugger, a job control slip, the OOM killer's cousin).
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
            std::thread::sleep(Duration::from_secs(60));
        }
        "no-hello" => std::thread::sleep(Duration::from_secs(60)),
        "fatal" => {
            guest.start();
            guest.send(&GuestMessage::Fatal {
                message: "cannot mount cgroup2".into(),
            });
            guest.expect_ack();
        }
        "skip" => {
            guest.start();
            guest.send(&GuestMessage::Skip {
                reason: "no cgroup v1 memory".into(),
            });
            guest.expect_ack();
        }
        other => panic!("unknown fake mode {other}"),
    }
}

/// How long the fake debugger holds a guest started with `-S`.
const FAKE_DEBUGGER: Duration = Duration::from_secs(3);

/// What a kernel prints on its console when it handles a sysrq key (drivers/tty/sysrq.c).
fn sysrq_header(key: &str) -> Option<&'static str> {
    match key {
        "w" => Some("sysrq: Show Blocked State"),
        "t" => Some("sysrq: Show State"),
        "l" => Some("sysrq: Show backtrace of all active CPUs"),
        "7" => Some("sysrq: Changing Loglevel"),
        _ => None,
    }
}

/// A QMP server that greets and answers every command with an empty return; a sysrq
/// key press (`send-key` alt+sysrq+KEY) is handled as a kernel would, its dump header
/// printed on the console.
fn fake_qmp(path: PathBuf, paused_until: Option<Instant>) {
    let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                use std::io::BufRead;
                let _ = writeln!(
                    stream,
                    r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#
                );
                let reader = std::io::BufReader::new(stream.try_clone().unwrap());
                for line in reader.lines() {
                    let Ok(line) = line else { return };
                    let paused = paused_until.is_some_and(|t| Instant::now() < t);
                    if line.contains("query-status") && paused {
                        let _ = writeln!(stream, r#"{{"return": {{"status": "prelaunch"}}}}"#);
                    } else if line.contains("query-status") {
                        let _ = writeln!(stream, r#"{{"return": {{"status": "running"}}}}"#);
                    } else if line.contains("send-key") {
                        let command: serde_json::Value =
                            serde_json::from_str(&line).unwrap_or_default();
                        let key = command["arguments"]["keys"]
                            .as_array()
                            .and_then(|keys| keys.last())
                            .and_then(|k| k["data"].as_str())
                            .unwrap_or_default();
                        if let Some(header) = sysrq_header(key) {
                            console(&format!("[   12.345678] {header}"));
                        }
                        let _ = writeln!(stream, r#"{{"return": {{}}}}"#);
                    } else {
                        let _ = writeln!(stream, r#"{{"return": {{}}}}"#);
                    }
                }
            });
        }
    });
}

fn console(line: &str) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

struct Guest {
    stream: UnixStream,
    decoder: FrameDecoder,
}

impl Guest {
    fn connect(path: &Path) -> Guest {
        Guest {
            stream: UnixStream::connect(path).unwrap(),
            decoder: FrameDecoder::new(),
        }
    }

    fn send(&mut self, msg: &GuestMessage) {
        self.stream
            .write_all(&protocol::encode(msg).unwrap())
            .unwrap();
    }

    fn raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    fn hello(&mut self, protocol: u32) {
        self.send(&GuestMessage::Hello(Hello {
            protocol,
            runner_version: "fake".into(),
            kernel_release: "6.1.0-fake-guest".into(),
            uptime_ms: 1000,
        }));
    }

    fn recv(&mut self) -> HostMessage {
        let mut buf = [0u8; 65536];
        loop {
            while let Some(event) = self.decoder.next_event() {
                if let FrameEvent::Frame(payload) = event {
                    return protocol::frame::decode(&payload).unwrap();
                }
            }
            let n = self.stream.read(&mut buf).unwrap();
            assert!(n > 0, "the harness closed the channel");
            self.decoder.push(&buf[..n]);
        }
    }

    /// The runner's start: its Hello, then the host's Run.
    fn start(&mut self) -> protocol::RunRequest {
        self.hello(PROTOCOL_VERSION);
        self.expect_run()
    }

    fn enter_workload(&mut self) {
        self.send(&GuestMessage::Phase {
            phase: Phase::Workload,
        });
    }

    /// A runner alive and busy: heartbeats every 100 ms until QEMU is killed.
    fn beat_until_killed(&mut self) {
        for seq in 0.. {
            self.send(&GuestMessage::Heartbeat {
                seq,
                uptime_ms: seq * 100,
            });
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A kernel-log line, as the runner forwards it from /dev/kmsg.
    fn kmsg(&mut self, text: &str) {
        self.send(&GuestMessage::Kmsg(KmsgRecord {
            seq: 1,
            level: 0,
            ts_us: 5,
            text: text.into(),
        }));
    }

    fn expect_run(&mut self) -> protocol::RunRequest {
        match self.recv() {
            HostMessage::Run(run) => *run,
            other => panic!("expected Run, got {other:?}"),
        }
    }

    fn expect_ack(&mut self) {
        assert!(matches!(self.recv(), HostMessage::Ack));
    }

    /// The workload phase of a healthy run: counter samples and one kernel-log line.
    fn workload(&mut self, last: f64, kmsg: &str) {
        self.enter_workload();
        for (t, v) in [(0, 1.0), (500, 4.0), (1000, last)] {
            self.send(&GuestMessage::Sample {
                metric: "dying".into(),
                t_ms: t,
                value: v,
            });
        }
        self.kmsg(kmsg);
    }

    /// Reports results and waits for the Ack, as the runner does.
    fn finish(&mut self) {
        self.send_finished();
        self.expect_ack();
    }

    fn send_finished(&mut self) {
        let mut report = RunReport::default();
        report.metrics.insert(
            "stat_read".into(),
            Metric::Histogram(Summary {
                unit: Unit::Ns,
                count: 10,
                min: 1000,
                p50: 2000,
                p90: 3000,
                p99: 4000,
                p999: 4000,
                max: 4000,
                mean: 2000.0,
            }),
        );
        report.probes.push(protocol::ProbeReport {
            name: "stat_read".into(),
            reads: 10,
            ..Default::default()
        });
        self.send(&GuestMessage::Finished(report));
    }
}
