//! Shared by the integration tests that run the `kchaos` binary: running it and reading
//! what it printed and recorded, the checkout's files, whether VMs can run here, and
//! keeping the results CI checks.

// Each test binary compiles this module and uses only its own part of it.
#![allow(dead_code)]
// Test code: a broken expectation should panic at the line that broke.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The checkout's root: the shipped scenarios, the kernel list, the CI examples.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The `kchaos` binary these tests were built with, before any argument.
pub fn kchaos_command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kchaos"))
}

/// Runs `kchaos ARGS` in `cwd` and waits for it.
pub fn kchaos(args: &[&str], cwd: &Path) -> Ran {
    ran(kchaos_command().args(args).current_dir(cwd))
}

/// Runs `cmd` to its end.
pub fn ran(cmd: &mut Command) -> Ran {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    Ran::new(cmd, &out)
}

/// How a command ended and what it printed; the checks on it show all of that when
/// they fail, so a broken expectation is read in one place.
#[derive(Debug)]
pub struct Ran {
    /// The program's name and its arguments, to name the run in a failure.
    pub command: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// stdout then stderr: where a message is looked for when either will do.
    pub text: String,
}

impl Ran {
    fn new(cmd: &Command, out: &Output) -> Ran {
        let program = Path::new(cmd.get_program())
            .file_name()
            .unwrap_or(cmd.get_program());
        let command = std::iter::once(program)
            .chain(cmd.get_args())
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        Ran {
            command,
            code: out.status.code(),
            text: format!("{stdout}{stderr}"),
            stdout,
            stderr,
        }
    }

    /// Asserts the exit code.
    #[track_caller]
    pub fn exits(&self, code: i32) -> &Ran {
        assert_eq!(
            self.code,
            Some(code),
            "`{}` exited {:?}, not {code}:\n{}",
            self.command,
            self.code,
            self.text
        );
        self
    }

    /// Asserts that stdout or stderr holds `words`.
    #[track_caller]
    pub fn says(&self, words: &str) -> &Ran {
        assert!(
            self.text.contains(words),
            "`{}` did not say `{words}`:\n{}",
            self.command,
            self.text
        );
        self
    }
}

/// A scratch directory holding `files` (name, contents).
pub fn scratch(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, contents) in files {
        std::fs::write(dir.path().join(name), contents).unwrap();
    }
    dir
}

/// The JSON document at `path` (a results.json, a bisect.json ...), which must be there.
#[track_caller]
pub fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse_json(path, &bytes)
}

/// The JSON document at `path`, or null when the run wrote none (it failed before);
/// a document that is there must parse.
#[track_caller]
pub fn read_json_if_any(path: &Path) -> Value {
    std::fs::read(path).map_or(Value::Null, |bytes| parse_json(path, &bytes))
}

#[track_caller]
fn parse_json(path: &Path, bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Whether VMs are required here (CI sets KCHAOS_REQUIRE_VM=1): then anything a VM test
/// needs and does not find is a failure, never a skip.
pub fn vm_required() -> bool {
    std::env::var_os("KCHAOS_REQUIRE_VM").is_some()
}

/// `false` (with a message) when this machine cannot boot VMs. Where a VM is required a
/// missing QEMU is a failure, never a skip.
pub fn vm_available() -> bool {
    let have_qemu = kchaos_harness::vm::Qemu::find().is_ok();
    if !have_qemu {
        assert!(
            !vm_required(),
            "KCHAOS_REQUIRE_VM is set but QEMU is not installed"
        );
        eprintln!("SKIP: qemu-system-x86_64 is not installed (run `kchaos setup`)");
    }
    have_qemu
}

/// Gives `git` run by `cmd` a fixed author, committer and date, so the same commits
/// get the same hashes on every machine and no git configuration is needed.
pub fn fixed_git_identity(cmd: &mut Command) -> &mut Command {
    cmd.env("GIT_AUTHOR_NAME", "kchaos fixture")
        .env("GIT_AUTHOR_EMAIL", "fixture@kchaos.invalid")
        .env("GIT_COMMITTER_NAME", "kchaos fixture")
        .env("GIT_COMMITTER_EMAIL", "fixture@kchaos.invalid")
        .env("GIT_AUTHOR_DATE", "2026-12-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2026-12-01T00:00:00Z")
}

/// With `KCHAOS_KEEP_TEST_RESULTS=DIR` (CI sets it), a copy of the results of a run a
/// test made (`results.json`, `results.db`) is kept in `DIR/<test's temp dir>/res/`:
/// `.ci/check-kcidb` then exports these real recorded runs to KCIDB and validates them
/// with KCIDB's own library. Best effort: keeping a copy never fails the test.
pub fn keep_results(res: &Path) {
    let Some(keep) = std::env::var_os("KCHAOS_KEEP_TEST_RESULTS") else {
        return;
    };
    let Some(name) = res.parent().and_then(Path::file_name) else {
        return;
    };
    let dest = Path::new(&keep).join(name).join("res");
    if !res.join("results.json").is_file() || std::fs::create_dir_all(&dest).is_err() {
        return;
    }
    for file in ["results.json", "results.db"] {
        if let Err(e) = std::fs::copy(res.join(file), dest.join(file)) {
            eprintln!(
                "not kept for check-kcidb: {}: {e}",
                res.join(file).display()
            );
        }
    }
}
