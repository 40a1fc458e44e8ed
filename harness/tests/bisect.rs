//! `kchaos bisect` on bad input and on points it cannot judge: clear messages, the
//! documented exit codes, `bisect.json` written, no kernel built or booted. The
//! bisection over a real kernel tree is `bisect_source.rs`.

// Test code: a broken expectation should panic at the line that broke.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

mod common;

use self::common::{read_json, Ran};

/// `kchaos ARGS` in `cwd`, with a cache of its own there (bisections keep worktrees and
/// builds in the cache).
fn kchaos(args: &[&str], cwd: &Path) -> Ran {
    common::ran(
        common::kchaos_command()
            .args(args)
            .current_dir(cwd)
            .env("KCHAOS_CACHE", cwd.join("cache")),
    )
}

const SCENARIO: &str = "[scenario]\nname = \"s\"\n[[probe]]\nkind = \"d-state\"\nname = \"d\"\n";

/// A scratch directory with the scenario and a small git repository (`repo`, commits
/// c1..c4 on main, tag `v1` at c1, a side branch `side` off c2).
fn setup() -> tempfile::TempDir {
    let dir = common::scratch(&[("s.toml", SCENARIO)]);
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    let script = "git init -q -b main . && for i in 1 2 3 4; do echo $i > f; git add f; git commit -qm c$i; done
         git tag -a -m v1 v1 HEAD~3
         git branch side HEAD~2 && git checkout -q side && echo s > s && git add s && git commit -qm side && git checkout -q main";
    let made = common::fixed_git_identity(Command::new("sh").arg("-ec").arg(script))
        .current_dir(&repo)
        .status()
        .unwrap()
        .success();
    assert!(made, "{script}");
    dir
}

/// `git ARGS` on the repository in `dir`: what it printed.
fn git(dir: &Path, args: &[&str]) -> String {
    common::ran(
        Command::new("git")
            .args(["-C", "repo"])
            .args(args)
            .current_dir(dir),
    )
    .stdout
    .trim()
    .to_owned()
}

/// The user's checkout is as it was: still on main.
fn assert_still_on_main(dir: &Path) {
    let head = std::fs::read_to_string(dir.join("repo/.git/HEAD")).unwrap();
    assert_eq!(head.trim(), "ref: refs/heads/main");
}

#[test]
fn bad_ranges_and_trees_are_usage_errors_before_anything_is_built() {
    let dir = setup();
    recorded_run(dir.path(), "red", "fail", "null");
    // (arguments after `bisect s.toml`, words of the error)
    let cases = [
        (
            "--source s.toml --good v1 --bad main",
            "is not a git repository",
        ),
        ("--source repo --good v9 --bad main", "`v9` is not a commit"),
        ("--source repo --good side --bad main", "is not an ancestor"),
        ("--source repo --good main --bad main", "the same commit"),
        (
            "--source repo --good v1 --bad main --fragment nope.config",
            "unknown config fragment `nope.config`",
        ),
        (
            "--source repo --good v1 --bad red",
            "both be revisions or both be recorded runs",
        ),
        (
            "--source repo --good v1 --bad main --set vm.cpus=1,2",
            "one value per --set",
        ),
        (
            "--source repo --good v1 --bad main --confidence 1",
            "between 0 and 1",
        ),
        ("--good a --bad b", "give the kernels to bisect"),
        (
            "--kernel path:/k/a --good path:/k/b --bad path:/k/a",
            "is not in the kernel list",
        ),
        (
            "--kernel path:/k/a --kernel path:/k/b --good path:/k/b --bad path:/k/a",
            "must come before",
        ),
    ];
    for (extra, words) in cases {
        let mut args = vec!["bisect", "s.toml", "--out", "b"];
        args.extend(extra.split_whitespace());
        kchaos(&args, dir.path()).exits(2).says(words);
        assert!(
            !dir.path().join("b").exists(),
            "{extra}: a bisection that never started leaves nothing"
        );
    }
    // The user's checkout was never touched: still on main, no worktree of ours.
    assert_still_on_main(dir.path());
}

/// A results directory holding one cell of scenario `s` with `verdict`, on a kernel
/// that records `source` (a JSON object or null).
fn recorded_run(dir: &Path, name: &str, verdict: &str, source: &str) {
    let run = dir.join(name);
    std::fs::create_dir_all(&run).unwrap();
    let cell = format!(
        r#"{{"id":"s/k","scenario":"s","scenario_file":"s.toml",
            "kernel":{{"spec":"path:/k/bzImage","resolved":"path:/k/bzImage","release":"6.1.192-kchaos+","package":null,"source":{source}}},
            "accel":"tcg","seed":1,"repeat":0,"verdict":"{verdict}","reasons":["x"],"fingerprint":null,
            "boot_ms":2000,"guest_ready_ms":1500,"duration_ms":9000,"metrics":{{}},"signatures":[],"notes":[],
            "artifacts":{{"dir":null,"console":null,"kmsg":null,"qemu_log":null,"sysrq":null,"vmcore":null}},
            "started_at":"2026-12-07T00:00:00Z"}}"#
    );
    let results = format!(
        r#"{{"kchaos_version":"0.1.0","started_at":"2026-12-07T00:00:00Z","finished_at":null,"host":{{}},"cells":[{cell}]}}"#
    );
    std::fs::write(run.join("results.json"), results).unwrap();
}

#[test]
fn two_recorded_runs_name_the_range_or_say_why_they_cannot() {
    let dir = setup();
    let hash = |rev: &str| git(dir.path(), &["rev-parse", rev]);
    let src = |rev: &str| format!(r#"{{"commit":"{}","describe":"x"}}"#, hash(rev));
    recorded_run(dir.path(), "green", "pass", &src("v1"));
    recorded_run(dir.path(), "red", "fail", &src("main"));
    recorded_run(dir.path(), "unknown", "fail", "null");
    recorded_run(
        dir.path(),
        "dirty",
        "fail",
        &format!(r#"{{"commit":"{}","dirty":true}}"#, hash("main")),
    );
    let bisect = |good: &str, bad: &str| {
        let args = [
            "bisect", "s.toml", "--source", "repo", "--good", good, "--bad", bad, "--out", "b",
        ];
        kchaos(&args, dir.path())
    };
    // (good, bad, words of the error)
    for (good, bad, words) in [
        ("green", "unknown", "records no source commit"),
        ("green", "dirty", "built from a modified tree"),
        ("red", "red", "cannot be the good end"),
        ("green", "green", "no cell of `s` that is a hit"),
    ] {
        bisect(good, bad).exits(2).says(words);
    }
    // A good pair names its commits; building then needs a kernel tree, which this is
    // not: the bad end does not build, and the bisection ends without an answer (125),
    // recorded.
    let args = [
        "bisect", "s.toml", "--source", "repo", "--good", "green", "--bad", "red", "--out", "b",
        "--jobs", "1",
    ];
    kchaos(&args, dir.path())
        .says(&format!("from the recorded runs: good {}", hash("v1")))
        .exits(125);
    let record = read_json(&dir.path().join("b/bisect.json"));
    assert_eq!(record["outcome"]["kind"], "end-untestable", "{record}");
    assert_eq!(record["points"].as_array().unwrap().len(), 4);
    assert_eq!(record["steps"][0]["verdict"], "skip");
    assert!(
        record["steps"][0]["why"]
            .as_str()
            .unwrap()
            .contains("does not build"),
        "{record}"
    );
    assert!(record["steps"][0]["build"]["log"]
        .as_str()
        .is_some_and(|l| l.ends_with(".failed.log")));
    assert!(dir.path().join("b/report.html").exists());
    // The user's checkout is as it was; the worktree is kchaos's own, in the cache.
    assert_still_on_main(dir.path());
    let status = git(dir.path(), &["status", "--porcelain"]);
    assert!(status.is_empty(), "{status}");
    // Finished: --resume refuses to run it again; a new bisection into it is refused.
    kchaos(&["bisect", "--resume", "--out", "b"], dir.path())
        .exits(2)
        .says("is finished");
    bisect("v1", "main")
        .exits(2)
        .says("already holds a bisection");
}

#[test]
fn kernels_that_cannot_be_judged_end_the_bisection_with_125_and_a_record() {
    let dir = setup();
    kchaos(
        &[
            "bisect",
            "s.toml",
            "--kernel",
            "path:/nonexistent/a/bzImage",
            "--kernel",
            "path:/nonexistent/b/bzImage",
            "--kernel",
            "path:/nonexistent/c/bzImage",
            "--good",
            "path:/nonexistent/a/bzImage",
            "--bad",
            "path:/nonexistent/c/bzImage",
            "--calibrate",
            "2",
            "--jobs",
            "1",
            "--out",
            "b",
        ],
        dir.path(),
    )
    .exits(125)
    .says("could not be judged");
    let record = read_json(&dir.path().join("b/bisect.json"));
    assert_eq!(record["outcome"]["kind"], "end-untestable");
    assert_eq!(record["steps"][0]["phase"], "calibrate");
    assert!(record["steps"][0]["errors"].as_u64() >= Some(1), "{record}");
    // Every step's cells are in the bisection's one database.
    assert!(dir.path().join("b/results.db").exists());
    assert!(dir.path().join("b/calibrate-2/results.json").exists());
}
