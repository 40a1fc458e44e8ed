//! Running `build.sh` on a source tree: progress on stderr while the compiler runs
//! (minutes), the full log kept, the `path:` spec it prints parsed back. Shared by the
//! recipe builds (`build:defects`) and the builds of a git tree's commits (`kchaos
//! bisect --source`, [`crate::tree`]), which also hand it an environment (the compiler
//! cache) and a way to stop it when the user interrupts.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::ccache::CcacheCounts;
use crate::file_io::{io, IoError};
use crate::host_tool::CommandError;
use crate::kernel::bzimage::BzImageError;
use crate::kernel::spec::KernelSpec;
use crate::resolved::SourceCommit;

/// How often a progress line is printed while the compiler runs.
const PROGRESS_EVERY: Duration = Duration::from_secs(30);
/// Lines of the build log quoted in an error.
const TAIL_LINES: usize = 30;
/// How often a cancellable build looks at its cancel flag when the log is quiet
/// (linking prints nothing for tens of seconds).
const CANCEL_POLL: Duration = Duration::from_millis(500);

/// What one line of build.sh's stderr means for the progress display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Line {
    /// A fragment option Kconfig did not take.
    ConfigWarning(String),
    /// A compiler or assembler step (`  CC      mm/slub.o`).
    Compiled,
    /// A step worth a line of its own.
    Phase(&'static str),
    Other,
}

pub(crate) fn classify(line: &str) -> Line {
    if let Some(rest) = line.strip_prefix("build.sh: not set as asked: ") {
        return Line::ConfigWarning(rest.to_owned());
    }
    let mut words = line.split_whitespace();
    match (words.next(), words.next()) {
        (Some("LD"), Some("vmlinux")) => Line::Phase("linking vmlinux"),
        (Some("Kernel:"), Some("arch/x86/boot/bzImage")) => Line::Phase("bzImage ready"),
        (Some("INSTALL"), Some(p)) if p.ends_with(".ko") => Line::Phase("installing modules"),
        (Some("CC" | "AS"), Some(_)) if line.starts_with("  ") => Line::Compiled,
        _ => Line::Other,
    }
}

/// One run of `build.sh SRC OUT FRAGMENT...`.
pub(crate) struct Script<'a> {
    /// What is being built, for progress lines (`build:defects`, a commit).
    pub label: &'a str,
    pub script: &'a Path,
    pub src: &'a Path,
    pub out: &'a Path,
    pub fragments: &'a [String],
    /// Extra environment (the compiler cache).
    pub env: &'a [(String, String)],
    /// Where the full log goes.
    pub log: &'a Path,
    /// Where build.sh's stdout (the spec) goes.
    pub stdout: &'a Path,
    /// Polled while it runs: `true` stops the build (it then runs in its own process
    /// group, killed as a whole). `None`: it shares kchaos's process group, so the
    /// terminal's Ctrl-C stops both, as for any foreground command.
    pub cancel: Option<&'a dyn Fn() -> bool>,
    /// Called with the build's process group once it started (cancellable builds).
    pub started: Option<&'a dyn Fn(i32)>,
}

/// What build.sh reported: the spec it printed, parsed, and the config warnings.
#[derive(Debug, Clone)]
pub(crate) struct Produced {
    pub bzimage: PathBuf,
    pub modules: Option<PathBuf>,
    pub config: PathBuf,
    pub release: String,
    pub warnings: Vec<String>,
    /// Compiler and assembler steps: the files that were (re)built.
    pub compiled: u64,
    /// What ccache did, filled in by the caller that set it up.
    pub ccache: Option<CcacheCounts>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ScriptError {
    #[error(transparent)]
    Spawn(#[from] CommandError),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("build.sh failed ({status})")]
    Failed { status: String, tail: String },
    #[error("the build was interrupted")]
    Interrupted,
    #[error("build.sh printed `{0}`, not a path: kernel spec")]
    BadOutput(String),
    #[error(transparent)]
    BzImage(#[from] BzImageError),
}

/// Runs the script to its end (or until cancelled) and reads back what it built.
pub(crate) fn run(s: &Script<'_>) -> Result<Produced, ScriptError> {
    let stdout = File::create(s.stdout).map_err(io("create", s.stdout))?;
    let mut log = File::create(s.log).map_err(io("create", s.log))?;
    let mut cmd = Command::new("sh");
    cmd.arg(s.script)
        .arg(s.src)
        .arg(s.out)
        .args(s.fragments)
        .envs(s.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped());
    if s.cancel.is_some() {
        cmd.process_group(0);
    }
    let command = format!("{cmd:?}").replace('"', "");
    let mut child = cmd.spawn().map_err(|source| CommandError::Spawn {
        command: command.clone(),
        source,
    })?;
    if let Some(started) = s.started {
        started(i32::try_from(child.id()).unwrap_or(0));
    }
    tracing::info!(
        "building kernel {}: configuring, then compiling; log: {}",
        s.label,
        s.log.display()
    );
    let (warnings, compiled, cancelled) = follow(s, &mut child, &mut log);
    if cancelled {
        kill_group(&mut child);
        return Err(ScriptError::Interrupted);
    }
    let status = child.wait().map_err(io("wait for", s.script))?;
    if !status.success() {
        return Err(ScriptError::Failed {
            status: status.to_string(),
            tail: tail(s.log),
        });
    }
    let printed = std::fs::read_to_string(s.stdout).map_err(io("read", s.stdout))?;
    let printed = printed.trim();
    match KernelSpec::parse(printed) {
        Ok(KernelSpec::Path {
            bzimage,
            modules,
            config: Some(config),
            ..
        }) => {
            let release = crate::kernel::bzimage::release_of(&bzimage)?;
            Ok(Produced {
                bzimage,
                modules,
                config,
                release,
                warnings,
                compiled,
                ccache: None,
            })
        }
        _ => Err(ScriptError::BadOutput(printed.to_owned())),
    }
}

/// Copies the child's stderr into the log, line by line, with progress; returns the
/// config warnings, the files compiled and whether it was cancelled.
fn follow(s: &Script<'_>, child: &mut Child, log: &mut File) -> (Vec<String>, u64, bool) {
    let (tx, rx) = mpsc::channel::<String>();
    let reader = child.stderr.take().map(|stderr| {
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        })
    });
    let mut warnings = Vec::new();
    let mut compiled = 0u64;
    let started = Instant::now();
    let mut last = Instant::now();
    let cancelled = loop {
        if s.cancel.is_some_and(|c| c()) {
            break true;
        }
        let line = match rx.recv_timeout(CANCEL_POLL) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break false,
        };
        let _ = writeln!(log, "{line}");
        match classify(&line) {
            Line::ConfigWarning(w) => {
                tracing::warn!("kernel {}: config option not set as asked: {w}", s.label);
                warnings.push(w);
            }
            Line::Compiled => compiled += 1,
            Line::Phase(p) => {
                tracing::info!(
                    "building kernel {}: {p} ({})",
                    s.label,
                    minutes(started.elapsed())
                );
            }
            Line::Other => {}
        }
        if last.elapsed() >= PROGRESS_EVERY {
            last = Instant::now();
            tracing::info!(
                "building kernel {}: {compiled} files compiled ({})",
                s.label,
                minutes(started.elapsed())
            );
        }
    };
    if !cancelled {
        if let Some(r) = reader {
            let _ = r.join();
        }
    }
    (warnings, compiled, cancelled)
}

/// Stops a cancellable build: its whole process group (make and every compiler).
fn kill_group(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let _ = child.wait();
}

/// The last lines of a log, for an error message.
pub(crate) fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

pub(crate) fn minutes(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}m{:02}s", s / 60, s % 60)
}

/// The `kchaos-source` file build.sh leaves in its output directory, if any.
pub(crate) fn source_of(out: &Path) -> Option<SourceCommit> {
    std::fs::read_to_string(out.join(crate::resolved::SOURCE_FILE))
        .ok()
        .and_then(|t| SourceCommit::parse(&t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_lines_become_progress() {
        let cases = [
            ("  CC      mm/slub.o", Line::Compiled),
            ("  CC [M]  drivers/net/veth.o", Line::Compiled),
            ("  AS      arch/x86/entry/entry_64.o", Line::Compiled),
            ("  LD      vmlinux", Line::Phase("linking vmlinux")),
            (
                "Kernel: arch/x86/boot/bzImage is ready  (#1)",
                Line::Phase("bzImage ready"),
            ),
            (
                "  INSTALL /x/mods/lib/modules/6.1.192-kchaos/kernel/drivers/net/veth.ko",
                Line::Phase("installing modules"),
            ),
            (
                "build.sh: not set as asked: CONFIG_MEMCG_V1=y (unknown to this kernel version; from kchaos.config)",
                Line::ConfigWarning(
                    "CONFIG_MEMCG_V1=y (unknown to this kernel version; from kchaos.config)"
                        .into(),
                ),
            ),
            ("make[1]: Entering directory '/x'", Line::Other),
            ("CC is not a step without its indent", Line::Other),
        ];
        for (line, want) in cases {
            assert_eq!(classify(line), want, "{line}");
        }
    }

    #[test]
    fn durations_read_as_minutes() {
        assert_eq!(minutes(Duration::from_secs(272)), "4m32s");
        assert_eq!(minutes(Duration::from_secs(5)), "0m05s");
    }

    /// A stand-in for build.sh: prints progress, fails or prints a spec.
    fn fake(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("build.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        path
    }

    fn script<'a>(
        dir: &'a Path,
        files: &'a (PathBuf, PathBuf),
        script: &'a Path,
        cancel: Option<&'a dyn Fn() -> bool>,
    ) -> Script<'a> {
        Script {
            label: "test",
            script,
            src: dir,
            out: dir,
            fragments: &[],
            env: &[],
            log: &files.0,
            stdout: &files.1,
            cancel,
            started: None,
        }
    }

    #[test]
    fn a_failing_build_keeps_its_log_tail_and_a_cancelled_one_stops() {
        let dir = tempfile::tempdir().unwrap();
        let files = (dir.path().join("build.log"), dir.path().join("spec.out"));
        let failing = fake(
            dir.path(),
            "echo '  CC      a.o' >&2; echo 'a.c:1: error: x' >&2; exit 2",
        );
        match run(&script(dir.path(), &files, &failing, None)) {
            Err(ScriptError::Failed { tail, .. }) => assert!(tail.contains("a.c:1: error: x")),
            other => panic!("{other:?}"),
        }
        let slow = fake(dir.path(), "echo start >&2; sleep 60");
        let started = Instant::now();
        let stop = || started.elapsed() > Duration::from_millis(300);
        match run(&script(dir.path(), &files, &slow, Some(&stop))) {
            Err(ScriptError::Interrupted) => {}
            other => panic!("{other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the sleep was killed"
        );
        let odd = fake(dir.path(), "echo not-a-spec");
        assert!(matches!(
            run(&script(dir.path(), &files, &odd, None)),
            Err(ScriptError::BadOutput(p)) if p == "not-a-spec"
        ));
    }
}
