//! The `kchaos` binary on bad input: clear messages and the documented exit codes, no VM.

// Test code: a broken expectation should panic at the line that broke.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

mod common;

use self::common::{kchaos, read_json, scratch, workspace, Ran};

const GOOD: &str = "[scenario]\nname = \"s\"\n[[probe]]\nkind = \"d-state\"\nname = \"d\"\n";

/// `kchaos run` of [`GOOD`] in `dir` on a kernel that is not there: an error cell,
/// recorded in `dir/res`.
fn run_on_a_missing_kernel(dir: &Path) -> Ran {
    let kernel = "path:/nonexistent/bzImage";
    kchaos(&["run", "s.toml", "--kernel", kernel, "--out", "res"], dir)
}

#[test]
fn validate_accepts_the_shipped_scenarios() {
    kchaos(&["validate", "scenarios"], &workspace())
        .exits(0)
        .says("ok: scenarios/memcg-dying-cgroups.toml");
}

#[test]
fn validate_reports_file_line_column_and_exits_2() {
    let dir = scratch(&[
        (
            "good.toml",
            "[scenario]\nname = \"good\"\n[[probe]]\nkind = \"d-state\"\nname = \"d\"\n",
        ),
        ("bad.toml", "[scenario]\nname = \"bad\"\n\n[[workload]]\nkind = \"cgroup-churn\"\nbatch = 0\nfiles = 2\n"),
    ]);
    kchaos(&["validate", "good.toml", "bad.toml"], dir.path())
        .exits(2)
        .says("ok: good.toml")
        .says("bad.toml:7:1: workload[0].files: unknown key `files`");
}

#[test]
fn run_refuses_invalid_scenarios_before_booting_anything() {
    let dir = scratch(&[(
        "s.toml",
        "[scenario]\nname = \"s\"\nduration = \"forever\"\n",
    )]);
    kchaos(&["run", "s.toml", "--out", "res"], dir.path())
        .exits(2)
        .says("s.toml:3:12: scenario.duration: `forever` is not a duration");
    assert!(!dir.path().join("res").exists(), "nothing should have run");
}

#[test]
fn missing_scenario_path_is_a_usage_error() {
    let dir = scratch(&[]);
    kchaos(&["run", "nosuch.toml", "--out", "res"], dir.path())
        .exits(2)
        .says("nosuch.toml: no such file or directory");
}

/// Issue #15: outside a checkout, `kchaos run` runs the scenarios shipped with it.
#[test]
fn outside_a_checkout_the_shipped_scenarios_and_kernel_list_are_used() {
    let dir = scratch(&[]);
    let cache = dir.path().join("cache");
    let args = [
        "--cache",
        cache.to_str().unwrap(),
        "run",
        "--plan",
        "--kernel",
        "deb61",
    ];
    let out = kchaos(&args, dir.path());
    out.exits(0)
        .says("shipped with kchaos")
        .says("memcg-dying-cgroups\tdebian:6.1-cloud\t-\t0");
    assert!(
        !out.text.contains("selftest"),
        "self-tests run only when named: {}",
        out.text
    );
}

#[test]
fn a_missing_local_kernel_is_a_recorded_error_verdict() {
    let dir = scratch(&[("s.toml", GOOD)]);
    let out = run_on_a_missing_kernel(dir.path());
    assert_eq!(
        out.code,
        Some(3),
        "infrastructure errors only: {}",
        out.text
    );
    let results = read_json(&dir.path().join("res/results.json"));
    common::keep_results(&dir.path().join("res"));
    let cell = &results["cells"][0];
    assert_eq!(cell["verdict"], "error");
    let reason = cell["reasons"][0].as_str().unwrap();
    assert!(
        reason.contains("/nonexistent/bzImage does not exist") || reason.contains("QEMU"),
        "{reason}"
    );
    let cell_dir = dir
        .path()
        .join("res")
        .join(cell["artifacts"]["dir"].as_str().unwrap());
    assert!(
        cell_dir.join("cell.json").exists(),
        "each cell's result is written on its own too"
    );
}

#[test]
fn bad_kernel_spec_says_what_is_allowed() {
    let dir = scratch(&[]);
    let out = kchaos(&["fetch", "ubuntu:6.8"], dir.path());
    assert_eq!(out.code, Some(2), "a malformed spec is a usage error");
    out.says("expected debian:<version>[-<flavour>]");
}

/// Issue #11: what the user got wrong is a usage error (2), never infrastructure (3),
/// and is found before anything runs, `--plan` included.
#[test]
fn usage_errors_exit_2_before_anything_runs() {
    let tools = "[scenario]\nname = \"t\"\n[vm]\ntools = [\"kchaos-no-such-tool\"]\n[[probe]]\nkind = \"d-state\"\nname = \"d\"\n";
    let dir = scratch(&[("s.toml", GOOD), ("t.toml", tools)]);
    for args in [
        vec!["run", "s.toml", "--kernel", "ubuntu:6.8", "--out", "res"],
        vec!["run", "s.toml", "--kernel", "ubuntu:6.8", "--plan"],
        vec!["run", "--resume", "no-such-dir"],
        vec!["repro", "s.toml", "--kernel", "path:", "--out", "res"],
    ] {
        kchaos(&args, dir.path()).exits(2);
    }
    assert!(!dir.path().join("res").exists(), "nothing ran");
    for args in [
        vec!["validate", "t.toml"],
        vec!["run", "t.toml", "--out", "res"],
    ] {
        kchaos(&args, dir.path())
            .exits(2)
            .says("t.toml:4:10: vm.tools[0]: `kchaos-no-such-tool`: Host program");
    }
}

/// Topologies are a dimension of the matrix: `--topology` for every scenario, a
/// scenario's own `cpus` list otherwise; bad lists are refused before anything runs.
#[test]
fn topologies_are_planned_like_kernels() {
    let listed = GOOD.replace(
        "[scenario]\nname = \"s\"",
        "[scenario]\nname = \"listed\"\n[vm]\ncpus = [1, \"2s1c\"]",
    );
    assert_ne!(listed, GOOD);
    let dir = scratch(&[("s.toml", GOOD), ("l.toml", &listed)]);
    let plan = |args: &[&str]| {
        let mut all = vec!["run", "--kernel", "debian:6.1-cloud", "--plan"];
        all.extend_from_slice(args);
        kchaos(&all, dir.path()).exits(0).stdout.clone()
    };
    // Off any axis: the scenario's own `[vm] cpus`, no topology.
    assert_eq!(
        plan(&["s.toml"]),
        "SCENARIO\tKERNEL\tTOPOLOGY\tREPEAT\ns\tdebian:6.1-cloud\t-\t0\n"
    );
    // A scenario's list is an axis of its own.
    assert_eq!(
        plan(&["l.toml"]),
        "SCENARIO\tKERNEL\tTOPOLOGY\tREPEAT\nlisted\tdebian:6.1-cloud\t1\t0\nlisted\tdebian:6.1-cloud\t2s1c\t0\n"
    );
    // --topology puts every scenario on each, in the order given, before repeats.
    let both = plan(&["s.toml", "l.toml", "--topology", "2s2c,4", "--repeat", "2"]);
    let rows: Vec<&str> = both.lines().skip(1).collect();
    assert_eq!(rows.len(), 8, "{both}");
    assert_eq!(rows[0], "s\tdebian:6.1-cloud\t2s2c\t0");
    assert_eq!(rows[1], "s\tdebian:6.1-cloud\t2s2c\t1");
    assert_eq!(rows[2], "s\tdebian:6.1-cloud\t4\t0");
    assert_eq!(rows[7], "listed\tdebian:6.1-cloud\t4\t1");
    for (bad, why) in [
        ("2x2", "`2x2` is not a topology"),
        ("1,1", "`1` is listed twice"),
        ("128", "`128` is 128 CPUs; a kchaos VM has at most 64"),
        ("9s1c", "`9s1c`: at most 8 sockets"),
        ("1,2,3,4,5,6,7,8,9", "9 topologies; at most 8 in one run"),
    ] {
        kchaos(&["run", "s.toml", "--topology", bad, "--plan"], dir.path())
            .exits(2)
            .says(&format!("--topology: {why}"));
    }
    kchaos(&["run", "--resume", "r", "--topology", "2"], dir.path()).exits(2);
}

/// Issue #11: `validate` never blocks on a FIFO or reads a device.
#[test]
fn validate_refuses_fifos_and_devices_at_once() {
    let dir = scratch(&[]);
    nix::unistd::mkfifo(&dir.path().join("fifo.toml"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero.toml")).unwrap();
    let started = std::time::Instant::now();
    let out = kchaos(&["validate", "fifo.toml", "zero.toml"], dir.path());
    out.exits(2);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    out.says("fifo.toml: not a regular file")
        .says("zero.toml: not a regular file");
}

/// Issue #11: a results directory belongs to one run; earlier results are never
/// replaced without --resume.
#[test]
fn results_are_never_silently_replaced() {
    let dir = scratch(&[("s.toml", GOOD)]);
    let run = || run_on_a_missing_kernel(dir.path());
    // Another run holds the directory.
    let res = dir.path().join("res");
    std::fs::create_dir(&res).unwrap();
    let lock = std::fs::File::create(res.join(".kchaos.lock")).unwrap();
    let held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
    run().exits(2).says("is in use by another kchaos run");
    assert!(!res.join("results.json").exists());
    drop(held);
    // The first run records its (error) cell ...
    run().exits(3);
    let first = std::fs::read(res.join("results.json")).unwrap();
    // ... and a second one into the same directory is refused, the results untouched.
    run()
        .exits(2)
        .says("already holds the results of an earlier run");
    assert_eq!(std::fs::read(res.join("results.json")).unwrap(), first);
}

/// Issue #11: a report that cannot be written fails the command.
#[test]
fn a_report_that_cannot_be_written_fails_the_command() {
    let dir = scratch(&[("s.toml", GOOD)]);
    run_on_a_missing_kernel(dir.path());
    // report.html cannot be replaced by a file: it is a non-empty directory.
    std::fs::remove_file(dir.path().join("res/report.html")).unwrap();
    std::fs::create_dir_all(dir.path().join("res/report.html/x")).unwrap();
    let out = kchaos(&["report", "res"], dir.path());
    out.exits(3).says("report.html");
    assert!(
        out.text.contains("junit: "),
        "JUnit is still written: {}",
        out.text
    );
}

#[test]
fn analyze_says_what_is_missing() {
    let dir = scratch(&[]);
    kchaos(&["analyze", "."], dir.path())
        .exits(3)
        .says("is not a cell directory (no cell.json)");
    // A cell without a dump: the fix is named.
    let cell = serde_json::json!({
        "id": "s/k", "scenario": "s", "scenario_file": "s.toml",
        "kernel": {"spec": "debian:6.1-cloud", "resolved": null, "release": null, "package": null},
        "accel": "tcg", "seed": 1, "repeat": 0, "verdict": "hang", "reasons": [], "fingerprint": null,
        "boot_ms": null, "guest_ready_ms": null, "duration_ms": 0, "metrics": {}, "signatures": [],
        "notes": [], "artifacts": {"dir": null, "console": null, "kmsg": null, "qemu_log": null, "sysrq": null, "vmcore": null},
        "started_at": "2026-11-23T00:00:00Z"
    });
    std::fs::write(dir.path().join("cell.json"), cell.to_string()).unwrap();
    kchaos(&["analyze", "."], dir.path())
        .exits(3)
        .says("rerun the cell with `kchaos run --dump-memory`");
}

/// The `kchaos run` lines of the shipped CI examples plan a real matrix from this
/// checkout (shard 1 of 4, as the first job or completion index 0 would).
#[test]
fn ci_examples_run_lines_plan_the_matrix() {
    let root = workspace();
    for file in [
        "examples/ci/github-actions.yml",
        "examples/ci/k8s-indexed-job.yaml",
    ] {
        let example = std::fs::read_to_string(root.join(file)).unwrap();
        let lines: Vec<&str> = example
            .lines()
            .map(str::trim)
            .filter(|l| l.contains("kchaos run "))
            .collect();
        assert_eq!(lines.len(), 1, "{file}: {lines:?}");
        let line = lines[0]
            .replace("$SHARDS", "4")
            .replace("$SHARD", "1")
            .replace('"', "");
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = words.iter().position(|w| *w == "run").unwrap();
        let mut args = words[at..].to_vec();
        args.push("--plan");
        let out = kchaos(&args, &root);
        assert_eq!(out.code, Some(0), "{file}: {args:?}\n{}", out.text);
        let plan = &out.stdout;
        // @nightly is four kernels, shard 1/4 a quarter of the matrix.
        assert!(
            plan.starts_with("SCENARIO\tKERNEL\tTOPOLOGY\tREPEAT\n"),
            "{plan}"
        );
        out.says(" cells");
        // Merge and compare follow, on the shards' output.
        assert!(example.contains("kchaos merge ") && example.contains("kchaos compare "));
    }
}

/// `compare` says what is wrong instead of comparing nothing.
#[test]
fn compare_without_results_is_a_usage_error() {
    let dir = scratch(&[]);
    kchaos(
        &["compare", "--baseline", "deb61", "--candidate", "deb612"],
        dir.path(),
    )
    .exits(2)
    .says("not a results directory or database");
    kchaos(&["report", "/nonexistent/results"], dir.path())
        .exits(2)
        .says("neither a results directory");
}

/// Issue #12: `--kernel-list` means the same in every command that names kernels.
#[test]
fn every_command_uses_the_kernel_list_it_is_given() {
    let dir = scratch(&[
        ("s.toml", GOOD),
        (
            "list.toml",
            "[kernels.mine]\nspec = \"path:/nonexistent/mine/bzImage\"\n[kernels.other]\nspec = \"path:/nonexistent/other/bzImage\"\n[sets]\nboth = [\"mine\", \"other\"]\n",
        ),
    ]);
    // repro resolves `mine` through the list (the kernel itself is missing: nothing can
    // be judged, 125) ...
    kchaos(
        &[
            "repro",
            "s.toml",
            "--kernel",
            "mine",
            "--kernel-list",
            "list.toml",
            "--max-runs",
            "1",
            "--jobs",
            "1",
            "--out",
            "repro",
        ],
        dir.path(),
    )
    .exits(125);
    let results = std::fs::read_to_string(dir.path().join("repro/results.json")).unwrap();
    assert!(
        results.contains("path:/nonexistent/mine/bzImage"),
        "{results}"
    );
    // ... run and compare too.
    kchaos(
        &[
            "run",
            "s.toml",
            "--kernel",
            "@both",
            "--kernel-list",
            "list.toml",
            "--out",
            "run",
        ],
        dir.path(),
    )
    .exits(3);
    let compare = |list: &[&str]| {
        let mut args = vec!["compare", "run"];
        args.extend_from_slice(list);
        args.extend(["--baseline", "mine", "--candidate", "other"]);
        kchaos(&args, dir.path())
    };
    compare(&["--kernel-list", "list.toml"])
        .exits(0)
        .says("baseline mine (1 cells) vs candidate other (1 cells)");
    // Without the list, `mine` means nothing.
    compare(&[]).exits(2).says("no cells for kernel `mine`");
    // A broken list is named.
    std::fs::write(dir.path().join("bad.toml"), "[kernels.x]\nspec = 1\n").unwrap();
    for args in [
        vec![
            "repro",
            "s.toml",
            "--kernel",
            "x",
            "--kernel-list",
            "bad.toml",
        ],
        vec![
            "compare",
            "run",
            "--kernel-list",
            "bad.toml",
            "--baseline",
            "x",
            "--candidate",
            "y",
        ],
        vec![
            "bisect",
            "s.toml",
            "--kernel",
            "x",
            "--good",
            "x",
            "--bad",
            "x",
            "--kernel-list",
            "bad.toml",
        ],
    ] {
        kchaos(&args, dir.path()).exits(2).says("bad.toml:2:");
    }
}

/// A results directory with the given cells (scenario, kernel spec, verdict, reason).
fn results_dir(dir: &Path, name: &str, cells: &[(&str, &str, &str, &str)]) -> String {
    let cells: Vec<serde_json::Value> = cells
        .iter()
        .enumerate()
        .map(|(i, (scenario, kernel, verdict, reason))| {
            serde_json::json!({
                "id": format!("{scenario}/k/r{i}"), "scenario": scenario, "scenario_file": "s.toml",
                "kernel": {"spec": kernel, "resolved": kernel, "release": "6.1.0-56-cloud-amd64", "package": null},
                "accel": "tcg", "seed": 1, "repeat": i, "verdict": verdict,
                "reasons": if reason.is_empty() { vec![] } else { vec![*reason] },
                "fingerprint": null, "boot_ms": 1, "guest_ready_ms": 1, "duration_ms": 1,
                "metrics": {}, "signatures": [], "notes": [],
                "artifacts": {"dir": null, "console": null, "kmsg": null, "qemu_log": null, "sysrq": null, "vmcore": null},
                "started_at": "2026-11-23T00:00:00Z"
            })
        })
        .collect();
    let results = serde_json::json!({
        "kchaos_version": "0", "started_at": "2026-11-23T00:00:00Z", "finished_at": null,
        "host": {"qemu": null, "accel": null, "accel_reason": null}, "cells": cells
    });
    std::fs::create_dir_all(dir.join(name)).unwrap();
    std::fs::write(dir.join(name).join("results.json"), results.to_string()).unwrap();
    name.to_owned()
}

/// Issue #16: a known issue turns a failure into `known` and the gate passes; once the
/// entry expires the same failure fails the gate again; a regression or missing cells
/// are never excused.
#[test]
fn the_gate_classifies_and_known_issues_excuse_only_what_they_describe() {
    let dir = scratch(&[]);
    let lockup = "kernel log: [soft-lockup] watchdog: BUG: soft lockup - CPU#0 stuck for 22s!";
    results_dir(
        dir.path(),
        "base",
        &[
            ("a", "deb", "pass", ""),
            ("b", "deb", "pass", ""),
            ("c", "deb", "fail", lockup),
        ],
    );
    results_dir(
        dir.path(),
        "cand",
        &[
            ("a", "deb", "pass", ""),
            ("b", "deb", "fail", lockup),
            ("c", "deb", "fail", lockup),
        ],
    );
    let gate = |known: &str| {
        std::fs::write(dir.path().join("known-issues.toml"), known).unwrap();
        kchaos(
            &[
                "gate",
                "--baseline",
                "base",
                "--candidate",
                "cand",
                "--json",
                "gate.json",
            ],
            dir.path(),
        )
    };
    // No entry: b regressed, c fails persistently.
    gate("")
        .exits(1)
        .says("regression")
        .says("persistent-failure");
    // An entry for the soft lockup on b and c: both known, the gate passes.
    let entry = |expires: &str| {
        format!("[[issue]]\nid = \"lockup-1\"\nlink = \"https://bugs.example/1\"\nscenario = \"[bc]\"\nmatch = \"soft lockup\"\nexpires = \"{expires}\"\n")
    };
    gate(&entry("2099-01-01"))
        .exits(0)
        .says("known issues matched: lockup-1 (3)");
    let json = read_json(&dir.path().join("gate.json"));
    let class = |s: &str| {
        json["gate"]["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["scenario"] == s)
            .unwrap()["class"]
            .clone()
    };
    assert_eq!(class("b"), "known");
    assert_eq!(class("a"), "pass");
    // Expired: the same failures fail the gate again, and it says why.
    gate(&entry("2020-01-01"))
        .exits(1)
        .says("expired (no longer excuse their failures): lockup-1");
    // An entry that matches nothing is reported as possibly fixed.
    gate("[[issue]]\nid = \"gone\"\nlink = \"https://bugs.example/2\"\nscenario = \"zzz\"\n")
        .says("possibly fixed (matched nothing): gone");
    // Missing cells are incomplete (3).
    results_dir(
        dir.path(),
        "partial",
        &[("a", "deb", "pass", ""), ("b", "deb", "pass", "")],
    );
    kchaos(
        &[
            "gate",
            "--baseline",
            "base",
            "--candidate",
            "partial",
            "--no-known-issues",
        ],
        dir.path(),
    )
    .exits(3)
    .says("missing");
    // A broken known-issues file is located, for gate and validate alike.
    std::fs::write(
        dir.path().join("known-issues.toml"),
        "[[issue]]\nid = \"x\"\nlink = \"nope\"\nscenario = \"a\"\n",
    )
    .unwrap();
    for args in [vec!["gate", "cand"], vec!["validate", "known-issues.toml"]] {
        kchaos(&args, dir.path())
            .exits(2)
            .says("known-issues.toml:3:8: issue[0].link: `nope` is not a link");
    }
}

/// Issue #24: `report --kcidb` writes KernelCI's objects: a test per cell, triaged with
/// the known-issues file as `gate` is; the same again gives the same bytes; what KCIDB
/// cannot take is refused before anything is written.
#[test]
fn report_exports_kcidb_and_refuses_what_kcidb_cannot_take() {
    let dir = scratch(&[(
        "known-issues.toml",
        "[[issue]]\nid = \"lockup-1\"\nlink = \"https://bugs.example/1\"\nmatch = \"soft lockup\"\nnote = \"seen since 6.1.0-50\"\n",
    )]);
    let lockup = "kernel log: [soft-lockup] watchdog: BUG: soft lockup - CPU#0 stuck for 22s!";
    results_dir(
        dir.path(),
        "run",
        &[
            ("a", "debian:6.1.0-56-cloud", "pass", ""),
            ("b", "debian:6.1.0-56-cloud", "fail", lockup),
            ("c", "debian:6.1.0-56-cloud", "error", "QEMU died"),
        ],
    );
    let export = |file: &str, extra: &[&str]| {
        let mut args = vec!["report", "run", "--kcidb", file];
        args.extend_from_slice(extra);
        kchaos(&args, dir.path())
    };
    export("k1.json", &["--kcidb-origin", "lab_1"])
        .exits(0)
        .says("kcidb: k1.json (3 tests, 0 of them checks; 1 incidents)");
    assert!(dir.path().join("run/report.html").is_file());
    let json = read_json(&dir.path().join("k1.json"));
    let statuses: Vec<(&str, &str)> = json["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["id"].as_str().unwrap(), t["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("lab_1:20261123T000000Z:a/k/r0", "PASS"),
            ("lab_1:20261123T000000Z:b/k/r1", "FAIL"),
            ("lab_1:20261123T000000Z:c/k/r2", "ERROR"),
        ]
    );
    assert_eq!(json["issues"][0]["id"], "lab_1:lockup-1");
    assert_eq!(json["issues"][0]["comment"], "seen since 6.1.0-50");
    assert_eq!(
        json["incidents"][0]["test_id"],
        "lab_1:20261123T000000Z:b/k/r1"
    );
    // Exported again: the same bytes.
    export("k2.json", &["--kcidb-origin", "lab_1"]).exits(0);
    assert_eq!(
        std::fs::read(dir.path().join("k1.json")).unwrap(),
        std::fs::read(dir.path().join("k2.json")).unwrap()
    );
    // Without the file, nothing is known: no issue, no incident.
    export("k3.json", &["--no-known-issues"])
        .exits(0)
        .says("0 incidents");
    // Usage errors, each before anything is written.
    results_dir(dir.path(), "other", &[("a", "deb", "pass", "")]);
    for (args, why) in [
        (vec!["--kcidb-origin", "My-Lab"], "is not a KCIDB origin"),
        (
            vec!["--kcidb-base-url", "ci.example/r"],
            "not an absolute URL",
        ),
        (
            vec!["other", "--kcidb-base-url", "https://ci.example/r"],
            "put {dir} where each run's directory name goes",
        ),
    ] {
        export("bad.json", &args).exits(2).says(why);
        assert!(!dir.path().join("bad.json").exists());
    }
    // A file that cannot be written fails the command (3).
    std::fs::create_dir_all(dir.path().join("taken.json/x")).unwrap();
    export("taken.json", &[]).exits(3).says("taken.json");
}
