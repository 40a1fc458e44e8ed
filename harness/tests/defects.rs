//! The defect kernel (`build:defects`): per incident family, the shipped scenarios
//! declared to catch a defect fail on it naming the mechanism, and pass on the same
//! kernel without the defect (its stock twin). Each test is one `kchaos detect` run.
//!
//! The kernel takes a quarter of an hour to build the first time: CI builds it in
//! `.ci/run` (`kchaos fetch build:defects`), cached by its inputs. Elsewhere these tests
//! skip unless the kernel is already built or KCHAOS_REQUIRE_VM is set.

// Test code: a broken expectation should panic at the line that broke.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Whether the defect kernel can be used here without a surprise build.
fn defect_kernel_available() -> bool {
    let have_qemu = kchaos_harness::vm::Qemu::find().is_ok();
    let required = std::env::var_os("KCHAOS_REQUIRE_VM").is_some();
    if !have_qemu {
        assert!(
            !required,
            "KCHAOS_REQUIRE_VM is set but QEMU is not installed"
        );
        eprintln!("SKIP: qemu-system-x86_64 is not installed (run `kchaos setup`)");
        return false;
    }
    let built = kchaos_images::Cache::default_root()
        .join("kernels/build")
        .read_dir()
        .map(|entries| {
            entries.flatten().any(|e| {
                e.file_name().to_string_lossy().starts_with("defects_")
                    && e.path().join(".complete").exists()
            })
        })
        .unwrap_or(false);
    if !built && !required {
        eprintln!("SKIP: the defect kernel is not built (`kchaos fetch build:defects`)");
    }
    built || required
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `kchaos detect --defect NAME`: (exit code, output, detection.json).
fn detect(defect: &str) -> (Option<i32>, String, Value) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("det");
    let run = Command::new(env!("CARGO_BIN_EXE_kchaos"))
        .current_dir(workspace())
        .args([
            "detect",
            "--defect",
            defect,
            "--max-runs",
            "2",
            "--jobs",
            "1",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let json = std::fs::read(out.join("detection.json"))
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap_or(Value::Null);
    (run.status.code(), output, json)
}

/// Every declared scenario caught `defect` with evidence matching one of `named`, and
/// every stock-twin cell passed.
fn assert_caught(defect: &str, named: &[&str]) {
    let (code, output, json) = detect(defect);
    let rows = json["defects"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 1, "{output}");
    let attempts = rows[0]["attempts"].as_array().cloned().unwrap_or_default();
    assert!(!attempts.is_empty(), "{output}");
    for a in &attempts {
        let evidence = a["evidence"].as_str().unwrap_or_default();
        assert_eq!(
            a["detected"],
            Value::Bool(true),
            "{}: {evidence}\n{output}",
            a["scenario"]
        );
        assert!(
            named.iter().any(|n| evidence.contains(n)),
            "{}: the evidence `{evidence}` names none of {named:?}",
            a["scenario"]
        );
        assert!(
            matches!(a["verdict"].as_str(), Some("fail" | "crash" | "hang")),
            "{a}"
        );
    }
    let stock = json["stock"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        stock.len(),
        attempts.len(),
        "one stock twin per scenario: {output}"
    );
    for cell in &stock {
        assert_eq!(
            cell["verdict"], "pass",
            "a false alarm on the stock twin: {cell}"
        );
    }
    assert_eq!(json["false_alarms"]["failed"], 0);
    assert_eq!(code, Some(0), "{output}");
}

#[test]
fn a_netdev_reference_leak_fails_the_veth_storms_naming_unregister_netdevice() {
    if defect_kernel_available() {
        assert_caught(
            "netdev-ref-leak",
            &["unregister_netdevice: waiting for", "leaked"],
        );
    }
}

#[test]
fn a_memcg_reference_leak_fails_the_memcg_scenarios_naming_the_dying_cgroups() {
    if defect_kernel_available() {
        assert_caught("memcg-ref-leak", &["dying"]);
    }
}

#[test]
fn a_memory_stat_read_that_stalls_per_dying_cgroup_fails_the_hold_naming_its_latency() {
    if defect_kernel_available() {
        assert_caught("memcg-stat-stall", &["memory_stat_read[", "net_rtt["]);
    }
}

#[test]
fn kmem_allocation_failures_fail_the_churn_naming_the_kernels_own_report() {
    if defect_kernel_available() {
        assert_caught(
            "kmem-alloc-failures",
            &[
                "SLUB: Unable to allocate",
                "page allocation failure",
                "Cannot allocate memory",
            ],
        );
    }
}

#[test]
fn cfs_over_throttling_fails_the_quota_scenario_naming_the_starving_group() {
    if defect_kernel_available() {
        assert_caught("cfs-over-throttle", &["share_min"]);
    }
}
