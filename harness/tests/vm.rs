//! Real VMs: the Debian 6.1 cloud kernel under QEMU, the static runner as PID 1.
//! Few and short by design; they run in CI on every change.

// Test code: a broken expectation should panic at the line that broke.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const KERNEL: &str = "debian:6.1-cloud";

/// `false` (with a message) when this machine cannot boot VMs. Where a VM is required
/// (CI sets KCHAOS_REQUIRE_VM=1) a missing QEMU is a failure, never a skip.
fn vm_available() -> bool {
    let have_qemu = kchaos_harness::qemu::Qemu::find().is_ok();
    if !have_qemu && std::env::var_os("KCHAOS_REQUIRE_VM").is_some() {
        panic!("KCHAOS_REQUIRE_VM is set but QEMU is not installed");
    }
    if !have_qemu {
        eprintln!("SKIP: qemu-system-x86_64 is not installed (run `kchaos setup`)");
    }
    have_qemu
}

struct Run {
    code: Option<i32>,
    output: String,
    results: Value,
    dir: tempfile::TempDir,
}

fn run(name: &str, scenario: &str) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{name}.toml"));
    std::fs::write(&file, scenario).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kchaos"))
        .args(["run", "--kernel", KERNEL, "--out"])
        .arg(dir.path().join("res"))
        .arg(&file)
        .output()
        .unwrap();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let results = std::fs::read(dir.path().join("res/results.json"))
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap_or(Value::Null);
    Run {
        code: out.status.code(),
        output,
        results,
        dir,
    }
}

impl Run {
    fn cell(&self) -> &Value {
        &self.results["cells"][0]
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
        r#"
[scenario]
name = "memcg-dying-small"
duration = "60s"
settle = "1s"

[vm]
memory = "512MiB"

[[workload]]
kind = "cgroup-churn"
name = "churn"
iterations = 40
batch = 40

[[probe]]
kind = "read-latency"
name = "memory_stat_read"
path = "/sys/fs/cgroup/kchaos/memory.stat"
interval = "50ms"

[[probe]]
kind = "counter"
name = "nr_dying_descendants"
path = "/sys/fs/cgroup/cgroup.stat"
key = "nr_dying_descendants"
interval = "200ms"

[[check]]
assert = "churn.cgroups.value == 40"

[[check]]
assert = "nr_dying_descendants.last >= 30"
because = "removed cgroups whose files remain stay dying: the incident's mechanism"
{extra_check}
"#
    )
}

#[test]
fn memcg_dying_cgroups_passes_on_debian_6_1_with_latency_metrics() {
    if !vm_available() {
        return;
    }
    let r = run("dying", &dying_cgroups(""));
    let cell = r.cell();
    assert_eq!(cell["verdict"], "pass", "{}\n{:#}", r.output, cell);
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
}

#[test]
fn a_violated_check_fails_the_cell_with_its_reason() {
    if !vm_available() {
        return;
    }
    let r = run(
        "dying-strict",
        &dying_cgroups("[[check]]\nassert = \"memory_stat_read.p99 <= 1ns\"\n"),
    );
    let cell = r.cell();
    assert_eq!(cell["verdict"], "fail", "{}\n{:#}", r.output, cell);
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
