//! Real VMs: the Debian 6.1 cloud kernel under QEMU, the static runner as PID 1.
//! Few and short by design; they run in CI on every change.

// Test code: a broken expectation should panic at the line that broke.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod common;

use self::common::{kchaos_command, ran, read_json, vm_available, vm_required};

const KERNEL: &str = "debian:6.1-cloud";

struct Run {
    code: Option<i32>,
    output: String,
    results: Value,
    dir: tempfile::TempDir,
}

/// [`run`] where a VM can boot; `None` (the test skips) where QEMU is missing.
fn run_on_vm(name: &str, scenario: &str) -> Option<Run> {
    vm_available().then(|| run(name, scenario))
}

fn run(name: &str, scenario: &str) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{name}.toml"));
    std::fs::write(&file, scenario).unwrap();
    run_file(&file, &[], dir)
}

/// Runs a scenario file (shipped ones included) with extra `kchaos run` arguments.
fn run_file(file: &Path, extra: &[&str], dir: tempfile::TempDir) -> Run {
    let out = ran(kchaos_command()
        .args(["run", "--kernel", KERNEL, "--out"])
        .arg(dir.path().join("res"))
        .args(extra)
        .arg(file));
    let results = common::read_json_if_any(&dir.path().join("res/results.json"));
    common::keep_results(&dir.path().join("res"));
    Run {
        code: out.code,
        output: out.text,
        results,
        dir,
    }
}

/// Runs a scenario shipped in the checkout (`path` from its root), in a directory of
/// its own.
fn run_shipped(path: &str, extra: &[&str]) -> Run {
    run_file(&shipped(path), extra, tempfile::tempdir().unwrap())
}

impl Run {
    fn cell(&self) -> &Value {
        &self.results["cells"][0]
    }

    /// The cell, once it is known to have ended with `verdict`.
    #[track_caller]
    fn cell_with_verdict(&self, verdict: &str) -> &Value {
        let cell = self.cell();
        assert_eq!(cell["verdict"], verdict, "{}\n{cell:#}", self.output);
        cell
    }

    fn reasons(&self) -> String {
        self.cell()["reasons"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" | ")
            })
            .unwrap_or_default()
    }

    fn artifact(&self, key: &str) -> PathBuf {
        let rel = self.cell()["artifacts"][key]
            .as_str()
            .unwrap_or_else(|| panic!("no artifact {key}: {}", self.output));
        self.dir.path().join("res").join(rel)
    }
}

/// Incident 1b in miniature: 40 memory cgroups, each with a file-writing process, removed
/// while their files keep them charged.
fn dying_cgroups(extra_check: &str) -> String {
    format!(
        "{}{extra_check}",
        include_str!("data/memcg-dying-small.toml")
    )
}

#[test]
fn memcg_dying_cgroups_passes_on_debian_6_1_with_latency_metrics() {
    let Some(r) = run_on_vm("dying", &dying_cgroups("")) else {
        return;
    };
    let cell = r.cell_with_verdict("pass");
    assert_eq!(r.code, Some(0), "{}", r.output);
    assert!(
        cell["kernel"]["release"]
            .as_str()
            .unwrap()
            .starts_with("6.1."),
        "{cell:#}"
    );
    assert_eq!(cell["accel"], "tcg");
    assert!(cell["boot_ms"].as_u64().unwrap() > 0);
    let m = &cell["metrics"];
    assert_eq!(m["churn.mkdir"]["kind"], "histogram");
    assert_eq!(m["churn.mkdir"]["count"], 40);
    assert_eq!(m["churn.rmdir"]["count"], 40);
    assert!(m["memory_stat_read"]["count"].as_u64().unwrap() > 0);
    assert!(m["memory_stat_read"]["p99"].as_u64().unwrap() > 0);
    assert_eq!(m["nr_dying_descendants"]["kind"], "series");
    assert!(
        m["nr_dying_descendants"]["samples"]
            .as_array()
            .unwrap()
            .len()
            >= 2
    );
    // Evidence: the kernel log came over the channel, the console was kept.
    let kmsg = std::fs::read_to_string(r.artifact("kmsg")).unwrap();
    assert!(
        kmsg.contains("Linux version 6.1."),
        "kmsg.log should start at boot"
    );
    assert!(Path::new(&r.artifact("console")).exists());
    // The guest was entered through the kernel's PVH entry: QEMU got the ELF kchaos
    // took out of the bzImage (Debian's kernels have the note), not the bzImage.
    let cmdline =
        std::fs::read_to_string(r.artifact("console").with_file_name("qemu.cmdline")).unwrap();
    let booted = cmdline
        .split_whitespace()
        .skip_while(|a| *a != "-kernel")
        .nth(1)
        .unwrap_or_default();
    assert!(
        booted.contains("/kernels/pvh/") && booted.ends_with(".vmlinux"),
        "{cmdline}"
    );
}

#[test]
fn a_violated_check_fails_the_cell_with_its_reason() {
    let Some(r) = run_on_vm(
        "dying-strict",
        &dying_cgroups("[[check]]\nassert = \"memory_stat_read.p99 <= 1ns\"\n"),
    ) else {
        return;
    };
    let cell = r.cell_with_verdict("fail");
    assert_eq!(r.code, Some(1), "{}", r.output);
    let reasons: Vec<&str> = cell["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(reasons.len(), 1, "only the strict check fails: {reasons:?}");
    assert!(
        reasons[0]
            .starts_with("check `memory_stat_read.p99 <= 1ns` failed: memory_stat_read.p99 = "),
        "{reasons:?}"
    );
}

/// Incident 1b's dying state held for a phase of its own and judged there: the guest
/// reports each workload's span and every sample's time, the host cuts the window; a
/// window too thin for its statistic is "not tested", which fails the cell. The
/// network probe's handshakes are timed on loopback, pinned like the reads.
#[test]
fn a_held_phase_is_judged_on_its_own_and_a_thin_window_is_not_tested() {
    if !vm_available() {
        return;
    }
    let scenario = include_str!("data/memcg-hold-small.toml");
    let r = run("hold", scenario);
    let cell = r.cell_with_verdict("fail");
    let checks = cell["checks"].as_array().unwrap();
    let status: Vec<&str> = checks
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        status,
        ["pass", "pass", "pass", "not-tested"],
        "{}",
        r.reasons()
    );
    // About 60 reads in a 3 s hold: too few for a p99, which needs 100.
    assert_eq!(checks[3]["window"], "hold");
    assert_eq!(checks[3]["min_samples"], 100);
    let n = checks[3]["samples"].as_u64().unwrap();
    assert!((20..100).contains(&n), "{n}");
    assert!(
        r.reasons().contains("not tested: ") && r.reasons().contains("needed to judge p99"),
        "{}",
        r.reasons()
    );
    // The phases, with each probe's samples inside them.
    let phases = cell["phases"].as_array().unwrap();
    let names: Vec<&str> = phases.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["churn", "hold"]);
    let hold = &phases[1]["latency"];
    assert_eq!(hold["memory_stat_read"]["count"].as_u64(), Some(n));
    assert!(hold["net_rtt"]["count"].as_u64().unwrap() >= 20, "{hold:#}");
    let (start, end) = (
        phases[1]["start_ms"].as_u64().unwrap(),
        phases[1]["end_ms"].as_u64().unwrap(),
    );
    assert!((3000..4000).contains(&(end - start)), "{start}..{end}");
}

fn shipped(path: &str) -> PathBuf {
    common::workspace().join(path)
}

/// Incident 4 in miniature: two throttled leaves, live retuning, a wake-up probe inside
/// one of them and one outside.
const CFS_SMALL: &str = include_str!("data/cfs-small.toml");

#[test]
fn cfs_quota_passes_on_debian_6_1_with_wakeup_and_throttling_metrics() {
    let Some(r) = run_on_vm("cfs", CFS_SMALL) else {
        return;
    };
    let cell = r.cell_with_verdict("pass");
    let m = &cell["metrics"];
    for probe in ["wakeup_outside", "wakeup_throttled"] {
        assert!(
            m[probe]["count"].as_u64().unwrap() > 100,
            "{probe}: {:#}",
            m[probe]
        );
        let cpu = m[format!("{probe}.cpu_share")]["value"].as_f64().unwrap();
        assert!(cpu > 0.0 && cpu < 0.5, "{probe} cpu share {cpu}");
    }
    // Inside a 20-40% quota, a sleeper waits out throttled periods: later than outside.
    assert!(
        m["wakeup_throttled"]["p99"].as_u64() > m["wakeup_outside"]["p50"].as_u64(),
        "{m:#}"
    );
    assert!(m["cfs.retunes"]["value"].as_f64().unwrap() >= 10.0);
    assert!(m["cfs.churned"]["value"].as_f64().unwrap() >= 1.0);
    let throttled = &m["nr_throttled"];
    assert!(
        throttled["last"].as_f64().unwrap() > throttled["first"].as_f64().unwrap(),
        "{throttled:#}"
    );
}

#[test]
fn a_panicking_guest_is_a_crash_with_a_fingerprint_stable_across_runs() {
    if !vm_available() {
        return;
    }
    let first = run_shipped("scenarios/selftest/panic.toml", &[]);
    let second = run_shipped("scenarios/selftest/panic.toml", &[]);
    for r in [&first, &second] {
        r.cell_with_verdict("crash");
        assert!(
            r.reasons()
                .contains("Kernel panic - not syncing: sysrq triggered crash"),
            "{}",
            r.reasons()
        );
        assert_eq!(r.code, Some(1));
    }
    let (a, b) = (&first.cell()["fingerprint"], &second.cell()["fingerprint"]);
    assert_eq!(a, b, "same bug, same fingerprint");
    assert_eq!(a["frames"][0], "sysrq_handle_crash", "{a:#}");
}

#[test]
fn a_wedged_guest_is_a_hang_within_its_bound_with_evidence() {
    if !vm_available() {
        return;
    }
    let r = run_shipped("scenarios/selftest/wedge.toml", &["--dump-memory"]);
    let cell = r.cell_with_verdict("hang");
    assert!(
        r.reasons()
            .contains("the guest sent nothing for 8s (phase: workload)"),
        "{}",
        r.reasons()
    );
    // Boot, 0.5s to the wedge, 8s of silence, evidence: far below the 60s scenario.
    assert!(cell["duration_ms"].as_u64().unwrap() < 45_000, "{cell:#}");
    let sysrq = std::fs::read_to_string(r.artifact("sysrq")).unwrap();
    assert!(sysrq.contains("sysrq: Show Blocked State"), "{sysrq}");
    assert!(
        sysrq.contains("kchaos-wedge-0"),
        "the CPU backtrace names the hog: {sysrq}"
    );
    let vmcore = std::fs::metadata(r.artifact("vmcore")).unwrap();
    assert!(
        vmcore.len() > 1 << 20,
        "a real memory dump: {} bytes",
        vmcore.len()
    );
    // Issue #13: the kernel was made to panic by an NMI before the dump (so every CPU
    // is parked in panic()), and that panic is not a finding: still a hang.
    let console = std::fs::read_to_string(r.artifact("console")).unwrap();
    assert!(
        console.contains("Kernel panic - not syncing: NMI: Not continuing"),
        "{console}"
    );
    assert!(
        r.cell()["signatures"].as_array().unwrap().is_empty(),
        "{cell:#}"
    );
    // ... and `crash` walks the stuck CPU's stack in that dump.
    if !tool_available("crash") {
        return;
    }
    ran(kchaos_command().arg("analyze").arg(r.artifact("dir"))).exits(0);
    let analysis = std::fs::read_to_string(r.artifact("dir").join("analysis.txt")).unwrap();
    // `bt -a` prints after `set scroll off`, `runq -g` from its first `CPU N` line.
    let bt = analysis
        .split_once("scroll: off")
        .map(|(_, rest)| rest.split("\nCPU ").next().unwrap_or_default())
        .unwrap_or_default();
    assert!(
        !bt.contains("read of stack at"),
        "bt -a must walk: {analysis}"
    );
    assert!(
        bt.contains("kchaos-wedge-0") && bt.contains(" panic at ") && bt.contains("exc_nmi"),
        "the wedged CPU's stack, from panic() down through the NMI: {bt}"
    );
}

/// `false` (with a message) when `tool` is not installed; where VMs are required (CI,
/// which installs it) that is a failure, never a skip.
fn tool_available(tool: &str) -> bool {
    if kchaos_harness::vm::find_in_path(tool).is_some() {
        return true;
    }
    assert!(
        !vm_required(),
        "KCHAOS_REQUIRE_VM is set but `{tool}` is not installed"
    );
    eprintln!("SKIP: `{tool}` is not installed");
    false
}

/// Incident 2 in miniature: pods with traffic, namespaces dropped, devices must go.
const VETH_SMALL: &str = include_str!("data/veth-small.toml");

#[test]
fn veth_storm_passes_on_debian_6_1_with_per_pod_latencies() {
    let Some(r) = run_on_vm("veth", VETH_SMALL) else {
        return;
    };
    let cell = r.cell_with_verdict("pass");
    let m = &cell["metrics"];
    for stage in ["create", "configure", "traffic", "delete", "teardown"] {
        assert_eq!(
            m[format!("pods.{stage}")]["count"],
            40,
            "{stage}: {:#}",
            m[format!("pods.{stage}")]
        );
    }
    // While pods existed, the root namespace had their host ends.
    assert!(
        m["net_devices"]["max"].as_f64().unwrap() > 1.0,
        "{:#}",
        m["net_devices"]
    );
    assert!(m["pods.inflight"]["max"].as_f64().unwrap() >= 1.0);
}

#[test]
fn the_netdev_leak_signature_fails_the_cell_naming_it() {
    if !vm_available() {
        return;
    }
    let r = run_shipped("scenarios/selftest/kmsg-signature.toml", &[]);
    r.cell_with_verdict("fail");
    assert_eq!(
        r.reasons(),
        "kernel log [unregister-netdevice]: unregister_netdevice: waiting for veth-selftest to become free. Usage count = 1",
        "exactly the kernel's line, with the device's name"
    );
    assert_eq!(r.code, Some(1));
}

/// `false` (with a message) when the systemd image cannot be built here: it needs root
/// and debootstrap. Where VMs are required (CI) that is a failure, never a skip.
fn systemd_image_available() -> bool {
    if !vm_available() {
        return false;
    }
    let root = nix::unistd::geteuid().is_root();
    let debootstrap = ["/usr/sbin/debootstrap", "/usr/bin/debootstrap"]
        .iter()
        .any(|p| Path::new(p).exists());
    if !root || !debootstrap {
        assert!(!vm_required(), "KCHAOS_REQUIRE_VM is set but the systemd image cannot be built (root: {root}, debootstrap: {debootstrap})");
        eprintln!("SKIP: building the systemd image needs root and debootstrap");
    }
    root && debootstrap
}

/// Incident 3 in miniature: 40 transient units of every kind through D-Bus, with
/// systemd's cookie moved 256 messages below the overflow first.
const SYSTEMD_SMALL: &str = include_str!("data/systemd-small.toml");

#[test]
fn transient_units_flood_passes_in_the_systemd_image_with_job_latencies() {
    if !systemd_image_available() {
        return;
    }
    let r = run("systemd", SYSTEMD_SMALL);
    let cell = r.cell_with_verdict("pass");
    assert_eq!(cell["image"]["kind"], "systemd");
    let m = &cell["metrics"];
    assert_eq!(m["units.units"]["value"], 40.0, "{m:#}");
    for stage in ["start", "stop"] {
        assert_eq!(m[format!("units.{stage}")]["count"], 40, "{stage}: {m:#}");
    }
    assert!(
        m["systemd_call"]["count"].as_u64().unwrap() > 0,
        "systemd answered the probe during the flood: {m:#}"
    );
    // The fast-forward happened, was verified, and the flood crossed 0xffffffff on the
    // fixed systemd (bookworm's 252), which cycled to 0x80000000 and went on.
    let value = |k: &str| m[format!("units.{k}")]["value"].as_f64().unwrap_or(-1.0);
    assert_eq!(value("cookie_start"), f64::from(0xffff_ff00_u32), "{m:#}");
    assert!(
        (1.0..f64::from(0xffff_ff00_u32)).contains(&value("cookie_before")),
        "{m:#}"
    );
    assert_eq!(value("cookie_cycles"), 1.0, "{m:#}");
    assert!(value("messages_after_cycle") > 100.0, "{m:#}");
    assert!(
        (f64::from(0x8000_0000_u32)..f64::from(0x8001_0000_u32)).contains(&value("cookie")),
        "the newest cookie is past the cycle: {m:#}"
    );
    // The runner's lines reach the console with their prefix, as under the initramfs.
    let console = std::fs::read_to_string(r.artifact("console")).unwrap();
    assert!(!console.contains("Failed to start"), "{console}");
}

#[test]
fn a_frozen_systemd_fails_the_cell_as_unresponsive() {
    if !systemd_image_available() {
        return;
    }
    let r = run_shipped("scenarios/selftest/freeze-systemd.toml", &[]);
    let cell = r.cell_with_verdict("fail");
    assert!(
        r.reasons()
            .contains("systemd unresponsive: Version not answered within 2s"),
        "{}",
        r.reasons()
    );
    // The runner needs nothing from systemd to report: the results are complete.
    assert!(cell["metrics"]["systemd_call"]["count"].as_u64().unwrap() > 0);
    assert_eq!(r.code, Some(1));
}

/// A run killed outright (SIGKILL: no chance to clean up) keeps the cells it finished;
/// `--resume` runs only the others, and the killed run leaves no QEMU behind.
#[test]
fn a_killed_run_resumes_without_rerunning_finished_cells() {
    if !vm_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("res");
    // Its own name, so its VMs can be told from other tests' (the name is on QEMU's
    // command line as `kchaos.cell=NAME/...`).
    let scenario = dir.path().join("panic.toml");
    let text = std::fs::read_to_string(shipped("scenarios/selftest/panic.toml")).unwrap();
    std::fs::write(
        &scenario,
        text.replace(
            "name = \"selftest-panic\"",
            "name = \"selftest-panic-resume\"",
        ),
    )
    .unwrap();
    let mut child = kchaos_command()
        .args([
            "run", "--kernel", KERNEL, "--jobs", "1", "--repeat", "3", "--out",
        ])
        .arg(&out)
        .arg(&scenario)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let recorded = |out: &Path| -> Vec<Value> {
        std::fs::read(out.join("results.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["cells"].as_array().cloned())
            .unwrap_or_default()
    };
    let start = std::time::Instant::now();
    while recorded(&out).is_empty() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        assert!(start.elapsed().as_secs() < 300, "no cell finished in 300s");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = recorded(&out);
    assert!(!before.is_empty() && before.len() < 3, "{before:#?}");
    // No QEMU of this run survives its harness.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let survivors = Command::new("pgrep")
        .args(["-f", "kchaos.cell=selftest-panic-resume/"])
        .output()
        .unwrap();
    assert!(
        survivors.stdout.is_empty(),
        "QEMU outlived the killed harness: {}",
        String::from_utf8_lossy(&survivors.stdout)
    );
    let resumed = ran(kchaos_command().args(["run", "--resume"]).arg(&out));
    let text = &resumed.stderr;
    assert!(
        text.contains(&format!(
            "{} cells finished, {} to run",
            before.len(),
            3 - before.len()
        )),
        "{text}"
    );
    let after = recorded(&out);
    let mut repeats: Vec<u64> = after
        .iter()
        .map(|c| c["repeat"].as_u64().unwrap())
        .collect();
    repeats.sort_unstable();
    assert_eq!(repeats, [0, 1, 2], "{after:#?}");
    assert!(after.iter().all(|c| c["verdict"] == "crash"), "{after:#?}");
    assert!(after
        .iter()
        .all(|c| c["scenario"] == "selftest-panic-resume"));
    // The finished cells were kept as they were, not run again.
    for cell in &before {
        assert!(after.contains(cell), "{cell:#} was rerun");
    }
    assert!(out.join("report.html").exists() && out.join("junit.xml").exists());
}

/// `repro` stops at the first hit and says so (exit 1); the crashed cell left a replay
/// bundle; `replay` reruns exactly it: same kernel, seed and kernel command line, and
/// the same crash fingerprint.
#[test]
fn repro_finds_a_crash_and_its_bundle_replays_it_exactly() {
    if !vm_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("repro");
    let repro = ran(kchaos_command()
        .args([
            "repro",
            "--kernel",
            KERNEL,
            "--until",
            "crash",
            "--max-runs",
            "3",
        ])
        .args(["--jobs", "1", "--out"])
        .arg(&out)
        .arg(shipped("scenarios/selftest/panic.toml")));
    repro.exits(1);
    let text = &repro.stdout;
    assert!(text.contains("until crash: 1 hit in 1 run"), "{text}");
    assert!(text.contains("reproduction probability 1.00"), "{text}");
    assert!(text.contains("fingerprint "), "{text}");
    let results = read_json(&out.join("results.json"));
    let cell = &results["cells"][0];
    let bundle = out.join(cell["artifacts"]["bundle"].as_str().unwrap());
    assert!(bundle.exists());

    let replay_out = dir.path().join("replay");
    let replay = ran(kchaos_command()
        .args(["replay", "--out"])
        .arg(&replay_out)
        .arg(&bundle));
    replay.exits(1);
    let text = &replay.stdout;
    assert!(text.contains("recurred 1/1"), "{text}");
    assert!(text.contains("same kernel command line"), "{text}");
    let again = read_json(&replay_out.join("results.json"));
    let again = &again["cells"][0];
    assert_eq!(again["seed"], cell["seed"]);
    assert_eq!(again["kernel"]["release"], cell["kernel"]["release"]);
    assert_eq!(again["fingerprint"]["id"], cell["fingerprint"]["id"]);
    assert_eq!(again["scenario"], cell["scenario"]);
}

/// Issue #15: `cargo install` gives a `kchaos` that needs no checkout: from another
/// directory it validates a scenario and runs a VM cell with the runner and kernel list
/// built into it. A debug install (with the runner embedded, as release installs do)
/// keeps the test's build short; its build directory lives under the kchaos cache (when
/// set), so CI pays for it once, and the embedded runner reuses the workspace's build.
#[test]
fn an_installed_kchaos_runs_outside_a_checkout() {
    if !vm_available() {
        return;
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let root = tempfile::tempdir().unwrap();
    let target = std::env::var_os("KCHAOS_CACHE")
        .map(|c| PathBuf::from(c).join("build/install-target"))
        .unwrap_or_else(|| root.path().join("target"));
    let install = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["install", "--debug", "--locked", "--path"])
        .arg(workspace.join("harness"))
        .arg("--root")
        .arg(root.path())
        .arg("--target-dir")
        .arg(&target)
        .env("KCHAOS_EMBED_RUNNER", "1")
        // The test's own cargo settings must not leak into the install.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap();
    assert!(
        install.status.success(),
        "cargo install failed:\n{}",
        String::from_utf8_lossy(&install.stderr)
    );
    let kchaos = root.path().join("bin/kchaos");
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::write(
        elsewhere.path().join("tiny.toml"),
        "[scenario]\nname = \"tiny\"\nduration = \"1s\"\n[[probe]]\nkind = \"counter\"\nname = \"mem\"\npath = \"/proc/meminfo\"\nkey = \"MemFree\"\ninterval = \"200ms\"\n[[check]]\nassert = \"mem.last > 1MiB\"\n",
    )
    .unwrap();
    ran(Command::new(&kchaos)
        .args(["validate", "tiny.toml"])
        .current_dir(elsewhere.path()))
    .exits(0);
    // A kernel-list name: the list is the one built in.
    let run = ran(Command::new(&kchaos)
        .args(["run", "tiny.toml", "--kernel", "deb61", "--out", "res"])
        .current_dir(elsewhere.path())
        .env_remove("KCHAOS_RUNNER"));
    let text = &run.text;
    run.exits(0);
    assert!(
        !text.contains("building the static guest runner"),
        "the runner is built in: {text}"
    );
    let results = read_json(&elsewhere.path().join("res/results.json"));
    assert_eq!(results["cells"][0]["verdict"], "pass", "{text}");
}

/// Issue 14's acceptance: the populate process (now a clone3/vfork child, no exec)
/// writes from inside its cgroup, so its file pages are charged there (memory.stat
/// `file` > 0 just before removal); and once the files are gone the kernel frees the
/// removed cgroups (memcg-reclaim), which is what a memcg reference leak breaks. 64 KiB
/// files so each cgroup's charge crosses the kernel's statistics flush threshold.
#[test]
fn memcg_populate_pages_are_charged_to_their_cgroup_and_reclaim_frees_it() {
    if !vm_available() {
        return;
    }
    let scenario = include_str!("data/memcg-charge-small.toml");
    let r = run("charge", scenario);
    let cell = r.cell_with_verdict("pass");
    let m = &cell["metrics"];
    // Every sampled cgroup (0, 10, 20, 30) had both of its files charged to it.
    assert!(
        m["churn.file_charged_min"]["value"].as_f64().unwrap() >= 2.0 * 65536.0,
        "{:#}",
        m["churn.file_charged_min"]
    );
    assert_eq!(m["churn.populate"]["count"], 40);
    assert_eq!(m["reclaim.deleted"]["value"], 40.0);
}

/// Issue #16: `--keep-on-failure --gdb` on the panic self-test. The verdict is recorded
/// while the crashed guest stays up in its panic; gdb, attached to the printed stub with
/// the printed debug vmlinux, reads a kernel symbol that matches `uname -r`; SIGINT to
/// the harness ends it, and QEMU is gone.
#[test]
fn a_kept_crashed_guest_answers_gdb_until_interrupted() {
    use std::io::BufRead;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    if !vm_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("res");
    let mut harness = kchaos_command()
        .args([
            "run",
            "--kernel",
            KERNEL,
            "--keep-on-failure",
            "--gdb",
            "--out",
        ])
        .arg(&out)
        .arg(shipped("scenarios/selftest/panic.toml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel();
    let stderr = harness.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // The first run downloads the debug vmlinux (about 300 MB) before booting.
    let deadline = Instant::now() + Duration::from_secs(1200);
    let mut output = String::new();
    while !output.contains("VM kept for debugging") {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                output.push_str(&line);
                output.push('\n');
            }
            Err(_) => {
                let _ = harness.kill();
                panic!("the VM was not kept: {output}");
            }
        }
    }
    // The verdict did not wait for the release.
    let results = read_json(&out.join("results.json"));
    let cell = &results["cells"][0];
    assert_eq!(cell["verdict"], "crash", "{output}\n{cell:#}");
    let release = cell["kernel"]["release"].as_str().unwrap().to_owned();
    // `    gdb VMLINUX -ex 'target remote SOCKET'`: the line a user pastes.
    let gdb_line = output
        .lines()
        .find(|l| l.trim_start().starts_with("gdb ") && l.contains("target remote"))
        .unwrap_or_else(|| panic!("no gdb command printed: {output}"))
        .trim()
        .to_owned();
    assert!(
        !gdb_line.contains("no kernel symbols"),
        "the debug vmlinux must be found: {gdb_line}"
    );
    let socket = gdb_line
        .split("target remote ")
        .nth(1)
        .unwrap()
        .trim_end_matches('\'')
        .to_owned();
    let vmlinux = gdb_line.split_whitespace().nth(1).unwrap().to_owned();
    let socket_dir = Path::new(&socket).parent().unwrap().to_owned();
    let qemu = qemu_pid_using(&socket_dir).unwrap_or_else(|| panic!("no QEMU for {socket}"));
    assert!(output.contains("monitor.sock"), "{output}");
    assert!(
        output.contains("shell    none: the kernel panicked"),
        "a crashed guest has no shell, and says why: {output}"
    );

    if tool_available("gdb") {
        let gdb = Command::new("gdb")
            .args(["-batch", "-nx", &vmlinux])
            .args(["-ex", &format!("target remote {socket}")])
            .args(["-ex", "print init_uts_ns.name.release", "-ex", "detach"])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&gdb.stdout);
        assert!(
            said.contains(&format!("= \"{release}\"")),
            "gdb reads the running kernel's uname -r ({release}): {said}{}",
            String::from_utf8_lossy(&gdb.stderr)
        );
    }

    // Still kept after the debugger left; then Ctrl-C.
    assert!(
        process_alive(qemu),
        "the kept QEMU must stay up until interrupted"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(harness.id()).unwrap()),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let exited = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = harness.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < exited, "the harness must end on SIGINT");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(1), "the run's exit code: a crash");
    assert!(
        !process_alive(qemu),
        "QEMU must be gone after the interrupt"
    );
    assert!(!socket_dir.exists(), "its sockets are removed");
}

/// The QEMU whose command line names `socket_dir` (the cell's sockets).
fn qemu_pid_using(socket_dir: &Path) -> Option<i32> {
    let needle = socket_dir.display().to_string();
    std::fs::read_dir("/proc").ok()?.find_map(|entry| {
        let pid: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline);
        (cmdline.starts_with("qemu-system") || cmdline.contains("/qemu-system"))
            .then_some(())
            .filter(|()| cmdline.contains(&needle))
            .map(|()| pid)
    })
}

/// Whether `pid` runs (a zombie does not).
fn process_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}
