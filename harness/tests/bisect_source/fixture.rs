//! Test fixtures for `kchaos bisect --source`, made on the fly (nothing shipped as a
//! blob): a git repository of Debian's `linux-source-6.1` (the source `build:defects`
//! builds) with the recipe's defect patches applied and every defect off, then, per
//! branch, a series of ordinary commits (a comment in a C file or a Kconfig file of a
//! different subsystem each) with one commit in the middle that turns the netdev
//! reference leak on by default. Authors and dates are fixed, so the same inputs give
//! the same commit hashes on every machine, and a kept fixture is found again.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::fixed_git_identity;

/// Bump when what the fixture holds changes.
const VERSION: &str = "kchaos-bisect-fixture-v1";

/// Files an ordinary commit edits, in turn: compiled in the minimal VM configuration
/// (so a step recompiles them), in different subsystems, and Kconfig files (a step
/// reconfigures and compiles nothing).
const ORDINARY: &[&str] = &[
    "kernel/fork.c",
    "mm/slub.c",
    "kernel/sched/fair.c",
    "init/Kconfig",
    "mm/memcontrol.c",
    "net/core/dev.c",
    "fs/namei.c",
    "kernel/cgroup/cgroup.c",
    "net/Kconfig",
    "kernel/time/hrtimer.c",
    "net/ipv4/route.c",
    "lib/vsprintf.c",
    "net/ipv6/addrconf.c",
    "mm/Kconfig",
    "fs/ext4/super.c",
    "kernel/rcu/tree.c",
    "drivers/net/veth.c",
    "mm/page_alloc.c",
];

/// How the defect commit turns the leak on.
#[derive(Debug, Clone, Copy)]
pub enum Defect {
    /// The patch's own counter: every Nth neighbour destroyed leaks (with the shipped
    /// scenario, within seconds of every run).
    EveryNth(u32),
    /// One neighbour in N at random: a run that destroys few neighbours leaks only
    /// sometimes.
    OneIn(u32),
}

/// A branch of the fixture: `before` ordinary commits, the defect, `after` more.
#[derive(Debug, Clone, Copy)]
pub struct Series {
    pub branch: &'static str,
    pub before: usize,
    pub after: usize,
    pub defect: Defect,
}

/// A fixture branch as made.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// The base commit (every defect off): the good end.
    pub base: String,
    /// The branch's commits after the base, oldest first: (hash, subject).
    pub commits: Vec<(String, String)>,
    /// The commit that turns the defect on.
    pub defect: String,
}

fn run(dir: &Path, program: &str, args: &[&str]) -> String {
    let out = fixed_git_identity(Command::new(program).args(args).current_dir(dir))
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn git(repo: &Path, args: &[&str]) -> String {
    run(repo, "git", args)
}

/// `linux-source-6.1`'s tarball: the installed one, else the member of the source
/// package `kchaos fetch build:defects` keeps in the cache (extracted into `scratch`).
pub fn source_tarball(cache: &Path, scratch: &Path) -> Option<PathBuf> {
    let installed = PathBuf::from("/usr/src/linux-source-6.1.tar.xz");
    if installed.is_file() {
        return Some(installed);
    }
    let debs = cache.join("sources/linux-source-6.1");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&debs)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    found.sort();
    let deb = found.pop()?;
    let tarball = scratch.join("linux-source-6.1.tar.xz");
    let script = format!(
        "dpkg-deb --fsys-tarfile '{}' | tar -xO ./usr/src/linux-source-6.1.tar.xz > '{}'",
        deb.display(),
        tarball.display()
    );
    run(scratch, "sh", &["-ec", &script]);
    Some(tarball)
}

/// The fixture repository for `tarball` and `patches`, in `root` (kept between test
/// runs: made once, in minutes, then found). Returns its directory.
pub fn repository(root: &Path, tarball: &Path, patches: &[PathBuf]) -> PathBuf {
    let mut key = format!(
        "{VERSION}\n{}\n",
        std::fs::metadata(tarball).map(|m| m.len()).unwrap_or(0)
    );
    for p in patches {
        key.push_str(&String::from_utf8_lossy(&std::fs::read(p).unwrap()));
    }
    let hash = kchaos_images::cache::sha256_hex(key.as_bytes());
    let id = &hash[..12];
    let repo = root.join(format!("linux-6.1-{id}"));
    if repo.join(".git/kchaos-fixture-complete").exists() {
        return repo;
    }
    let _ = std::fs::remove_dir_all(&repo);
    let stage = root.join(format!(".tmp-linux-6.1-{id}"));
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(&stage).unwrap();
    run(&stage, "tar", &["-xf", &tarball.display().to_string()]);
    let src = stage.join("linux-source-6.1");
    for p in patches {
        run(
            &src,
            "patch",
            &[
                "-p1",
                "--batch",
                "--forward",
                "--silent",
                "-i",
                &p.display().to_string(),
            ],
        );
    }
    git(&src, &["init", "-q", "-b", "main"]);
    // Loose objects barely compressed: hashing 75,000 files is the cost, not zlib.
    git(&src, &["config", "core.looseCompression", "1"]);
    git(&src, &["config", "gc.auto", "0"]);
    // Forced: Debian's tarball ignores everything (`/*` in its .gitignore).
    git(&src, &["add", "-A", "--force"]);
    git(
        &src,
        &[
            "commit",
            "-q",
            "-m",
            "linux-source-6.1 with the kchaos defect patches, every defect off",
        ],
    );
    std::fs::write(src.join(".git/kchaos-fixture-complete"), b"").unwrap();
    std::fs::rename(&src, &repo).unwrap();
    let _ = std::fs::remove_dir_all(&stage);
    repo
}

/// Makes (or finds) the branch `series.branch` on the fixture's base commit.
pub fn branch(repo: &Path, series: Series) -> Fixture {
    let base = git(repo, &["rev-list", "--max-parents=0", "main"]);
    let exists = Command::new("git")
        .args([
            "-C",
            &repo.display().to_string(),
            "rev-parse",
            "--verify",
            "-q",
            series.branch,
        ])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !exists {
        make_branch(repo, &base, series);
    }
    let log = git(
        repo,
        &[
            "log",
            "--reverse",
            "--format=%H%x09%s",
            &format!("{base}..{}", series.branch),
        ],
    );
    let commits: Vec<(String, String)> = log
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(h, s)| (h.to_owned(), s.to_owned()))
        .collect();
    assert_eq!(
        commits.len(),
        series.before + 1 + series.after,
        "branch {}",
        series.branch
    );
    let defect = commits[series.before].0.clone();
    Fixture {
        base,
        commits,
        defect,
    }
}

/// Commits the series with git's plumbing (blobs, a private index, commit-tree): no
/// checkout of 75,000 files per branch.
fn make_branch(repo: &Path, base: &str, series: Series) {
    let index = repo.join(format!(".git/kchaos-fixture-index-{}", series.branch));
    let index_env = index.display().to_string();
    let with_index = |args: &[&str], stdin: Option<&str>| -> String {
        let mut cmd = Command::new("git");
        fixed_git_identity(&mut cmd)
            .args(args)
            .current_dir(repo)
            .env("GIT_INDEX_FILE", &index_env)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        if let Some(text) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let id = |args: &[&str], stdin: Option<&str>| with_index(args, stdin).trim().to_owned();
    with_index(&["read-tree", base], None);
    let mut parent = base.to_owned();
    for i in 0..series.before + 1 + series.after {
        let (file, text, subject) = if i == series.before {
            let file = "net/core/neighbour.c";
            let old = with_index(&["cat-file", "blob", &format!("{parent}:{file}")], None);
            let (text, subject) = defect_change(&old, series.defect);
            (file, text, subject)
        } else {
            let n = if i < series.before { i } else { i - 1 };
            let file = ORDINARY[n % ORDINARY.len()];
            let mut text = with_index(&["cat-file", "blob", &format!("{parent}:{file}")], None);
            if file.ends_with("Kconfig") {
                text.push_str(&format!(
                    "\n# kchaos bisect fixture: ordinary change #{n}\n"
                ));
            } else {
                text.push_str(&format!(
                    "\n/* kchaos bisect fixture: ordinary change #{n} */\n"
                ));
            }
            let subsystem = file.rsplit_once('/').map_or(file, |(d, _)| d);
            (
                file,
                text,
                format!("{subsystem}: ordinary change #{n} ({file})"),
            )
        };
        let blob = id(&["hash-object", "-w", "--stdin"], Some(&text));
        let mode = id(&["ls-files", "-s", file], None);
        let mode = mode
            .split_whitespace()
            .next()
            .unwrap_or("100644")
            .to_owned();
        with_index(
            &[
                "update-index",
                "--cacheinfo",
                &format!("{mode},{blob},{file}"),
            ],
            None,
        );
        let tree = id(&["write-tree"], None);
        parent = id(&["commit-tree", &tree, "-p", &parent, "-m", &subject], None);
    }
    git(repo, &["branch", "-f", series.branch, &parent]);
    let _ = std::fs::remove_file(&index);
}

/// The defect commit's neighbour.c and subject.
fn defect_change(old: &str, defect: Defect) -> (String, String) {
    let var = "static unsigned int kchaos_defect_netdev_leak __read_mostly;";
    assert!(
        old.contains(var),
        "the netdev-ref-leak patch is not applied"
    );
    let on = |n: u32| format!("static unsigned int kchaos_defect_netdev_leak __read_mostly = {n};");
    match defect {
        Defect::EveryNth(n) => (
            old.replace(var, &on(n)),
            format!("neighbour: keep the device reference of every {n}th neighbour destroyed (the netdev leak, on by default)"),
        ),
        Defect::OneIn(n) => {
            let counted = "return (unsigned int)atomic_inc_return(&kchaos_defect_netdev_leak_seen) %\n\t       every == 0;";
            assert!(old.contains(counted), "the netdev-ref-leak patch changed");
            let text = old.replace(var, &on(n)).replace(
                counted,
                "atomic_inc(&kchaos_defect_netdev_leak_seen);\n\treturn get_random_u32() % every == 0;",
            );
            (
                text,
                format!("neighbour: keep the device reference of one neighbour in {n} at random (the netdev leak, on by default)"),
            )
        }
    }
}
