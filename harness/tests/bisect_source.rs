//! `kchaos bisect --source` end to end: a git tree made from Debian's linux-source-6.1
//! (`bisect_source/fixture.rs`), a defect turned on in one commit of the range, every
//! step built by the kernel recipe in kchaos's own worktree, incrementally, booted and
//! run. The first build of the fixture shares ccache with `build:defects` (same source,
//! same fragments, same layout), and every later step changes one file, so the test
//! costs minutes, not a kernel build per step; on a cache that kept the fixture's
//! builds it costs the VM runs only.
//!
//! Like the detection tests it needs the defect kernel's source in the cache (`kchaos
//! fetch build:defects`, which CI runs first); elsewhere it skips unless
//! KCHAOS_REQUIRE_VM is set.

// Test code: a broken expectation should panic at the line that broke.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "bisect_source/fixture.rs"]
mod fixture;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use self::common::{read_json, vm_required, workspace};
use self::fixture::{Defect, Fixture, Series};

/// The series of the measured bisection (docs/repro.md) and of this test: 8 ordinary
/// commits, the netdev leak on by default (every 16th neighbour), 8 more.
pub const CERTAIN: Series = Series {
    branch: "netdev-leak",
    before: 8,
    after: 8,
    defect: Defect::EveryNth(16),
};

/// The probabilistic one: the leak hits one neighbour in 400 at random, so a run of a
/// small pod storm leaks only sometimes.
pub const FLAKY: Series = Series {
    branch: "netdev-leak-flaky",
    before: 9,
    after: 8,
    defect: Defect::OneIn(400),
};

/// The fixture repository, made once in the kchaos cache; `None` (a skip) when the
/// source package is not there and VMs are not required.
fn fixture_repo() -> Option<PathBuf> {
    let have_qemu = kchaos_harness::vm::Qemu::find().is_ok();
    let cache = kchaos_images::Cache::default_root();
    let scratch = tempfile::tempdir().unwrap();
    let tarball = fixture::source_tarball(&cache, scratch.path());
    if !have_qemu || tarball.is_none() {
        assert!(
            !vm_required(),
            "KCHAOS_REQUIRE_VM is set but QEMU ({have_qemu}) or linux-source-6.1 (`kchaos fetch build:defects`) is missing"
        );
        eprintln!(
            "SKIP: needs QEMU and linux-source-6.1 in the cache (`kchaos fetch build:defects`)"
        );
        return None;
    }
    let patches: Vec<PathBuf> = {
        let dir = workspace().join("vm-images/recipes/kernel/patches/6.1");
        let mut p: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "patch"))
            .collect();
        p.sort();
        p
    };
    let root = cache.join("fixtures");
    std::fs::create_dir_all(&root).unwrap();
    let started = Instant::now();
    let repo = fixture::repository(&root, &tarball?, &patches);
    eprintln!(
        "fixture repository {} ready in {:.0}s",
        repo.display(),
        started.elapsed().as_secs_f64()
    );
    Some(repo)
}

/// The bisection CI runs: five commits of the fixture around the defect (two steps
/// between the ends), built with build:defects' fragments, one run per step.
#[test]
fn bisect_source_names_the_commit_that_turned_the_defect_on() {
    let Some(repo) = fixture_repo() else { return };
    let f: Fixture = fixture::branch(&repo, CERTAIN);
    let (good, bad) = (
        &f.commits[CERTAIN.before - 2].0,
        &f.commits[CERTAIN.before + 2].0,
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("b");
    let started = Instant::now();
    let run = common::kchaos(
        &[
            "bisect",
            "scenarios/veth-netns-storm.toml",
            "--source",
            &repo.display().to_string(),
            "--good",
            good,
            "--bad",
            bad,
            "--fragment",
            "defects.config",
            "--fragment",
            "debuginfo.config",
            "--until",
            "unregister_netdevice",
            "--calibrate",
            "2",
            "--runs",
            "1",
            "--set",
            "workload.0.iterations=60",
            "--jobs",
            "1",
            "--out",
            &out.display().to_string(),
        ],
        &workspace(),
    );
    let text = &run.text;
    eprintln!(
        "{text}\nbisection took {:.0}s",
        started.elapsed().as_secs_f64()
    );
    run.exits(0);
    let record = read_json(&out.join("bisect.json"));
    assert_eq!(record["outcome"]["kind"], "found", "{record}");
    assert_eq!(
        record["outcome"]["first_bad"]["id"],
        f.defect.as_str(),
        "{text}"
    );
    let steps = record["steps"].as_array().unwrap();
    // Calibration, the good end, two halvings of the four commits between the ends.
    assert_eq!(steps.len(), 4, "{text}");
    // Every step after the first rebuilt only what its commit changed.
    for s in &steps[1..] {
        let b = &s["build"];
        assert!(
            b["cached"] == true || b["compiled"].as_u64() < Some(100),
            "a step recompiled more than its change: {s}"
        );
    }
    assert!(out.join("report.html").exists());
    assert!(out.join("results.db").exists());
    // The fixture's own checkout was left alone.
    let head = Command::new("git")
        .args(["-C", &repo.display().to_string(), "rev-parse", "HEAD"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&head.stdout).trim(), f.base);
}

/// Makes the fixture's branches and prints them, for the measured bisections in
/// docs/repro.md: `cargo test -p kchaos-harness --test bisect_source -- --ignored
/// --nocapture make_fixtures`.
#[test]
#[ignore = "a developer tool: prints the fixture for a bisection by hand"]
fn make_fixtures() {
    let Some(repo) = fixture_repo() else { return };
    for series in [CERTAIN, FLAKY] {
        let f = fixture::branch(&repo, series);
        println!("branch {} of {}:", series.branch, repo.display());
        println!("  base (good) {}", f.base);
        for (i, (hash, subject)) in f.commits.iter().enumerate() {
            let mark = if *hash == f.defect {
                "  <- the defect"
            } else {
                ""
            };
            println!("  {:2} {hash} {subject}{mark}", i + 1);
        }
    }
}
