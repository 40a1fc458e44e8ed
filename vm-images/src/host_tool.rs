//! Running the host tools kernels and images are built with (apt, dpkg-deb, debootstrap,
//! mkfs.ext4, git, patch), with errors that name the command and say what it printed.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("Cannot run `{command}` (is it installed?)")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` did not finish within {}s and was killed", .after.as_secs())]
    TimedOut { command: String, after: Duration },
}

/// Runs `cmd` to completion and returns its standard output. apt's warnings (`W:`) are
/// left out of the error text: they are noise next to the real failure.
pub fn run(cmd: &mut Command) -> Result<String, CommandError> {
    let command = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|source| CommandError::Spawn {
        command: command.clone(),
        source,
    })?;
    if !out.status.success() {
        let stderr = without_warnings(&String::from_utf8_lossy(&out.stderr));
        return Err(CommandError::Failed {
            command,
            status: out.status.to_string(),
            stderr,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Like [`run`], for slow network commands: each line of standard output goes to
/// `on_line` as it comes (apt's progress), and the command, in its own process group, is
/// killed with everything it started if it runs longer than `deadline`.
pub fn run_streaming(
    cmd: &mut Command,
    deadline: Duration,
    on_line: &mut dyn FnMut(&str),
) -> Result<String, CommandError> {
    let command = format!("{cmd:?}").replace('"', "");
    let spawn_err = |source| CommandError::Spawn {
        command: command.clone(),
        source,
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(spawn_err)?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut e) = stderr {
            let _ = e.read_to_string(&mut text);
        }
        text
    });
    // The watchdog kills the group at the deadline unless told (or dropped) first.
    let (done, finished) = mpsc::channel::<()>();
    // Linux pids fit in an i32; a fallback that matches no process is harmless.
    let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
    let watchdog = std::thread::spawn(move || {
        let expired = matches!(
            finished.recv_timeout(deadline),
            Err(mpsc::RecvTimeoutError::Timeout)
        );
        if expired {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        expired
    });
    let mut out = String::new();
    if let Some(stdout) = stdout {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            on_line(&line);
            out.push_str(&line);
            out.push('\n');
        }
    }
    let status = child.wait().map_err(spawn_err);
    let _ = done.send(());
    let timed_out = watchdog.join().unwrap_or(false);
    let stderr = stderr_reader.join().unwrap_or_default();
    let status = status?;
    if timed_out {
        return Err(CommandError::TimedOut {
            command,
            after: deadline,
        });
    }
    if !status.success() {
        return Err(CommandError::Failed {
            command,
            status: status.to_string(),
            stderr: without_warnings(&stderr),
        });
    }
    Ok(out)
}

/// apt's warnings (`W:`) are noise next to the real failure.
fn without_warnings(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| !l.starts_with("W:"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_name_the_command_and_keep_its_stderr() {
        let script = r#"x=hid; echo "W: ${x}den" >&2; echo "the real cause" >&2; exit 3"#;
        let text = run(Command::new("sh").args(["-c", script]))
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("sh -c") && text.contains("the real cause"),
            "{text}"
        );
        assert!(
            !text.contains("hidden"),
            "apt warnings are left out: {text}"
        );
        assert!(matches!(
            run(&mut Command::new("/nonexistent/kchaos-tool")),
            Err(CommandError::Spawn { .. })
        ));
        assert_eq!(
            run(Command::new("sh").args(["-c", "echo ok"])).unwrap(),
            "ok\n"
        );
    }

    #[test]
    fn streaming_passes_lines_as_they_come_and_keeps_stderr_on_failure() {
        let mut seen = Vec::new();
        let out = run_streaming(
            Command::new("sh").args(["-c", "echo one; echo two"]),
            Duration::from_secs(30),
            &mut |l| seen.push(l.to_owned()),
        )
        .unwrap();
        assert_eq!(seen, ["one", "two"]);
        assert_eq!(out, "one\ntwo\n");
        let e = run_streaming(
            Command::new("sh").args(["-c", "x=noi; echo W: ${x}se >&2; echo broken >&2; exit 2"]),
            Duration::from_secs(30),
            &mut |_| {},
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("broken") && !e.contains("noise"), "{e}");
    }

    /// The deadline kills the whole group: a child that keeps stdout open (here a
    /// background `sleep`) must not keep the caller waiting.
    #[test]
    fn streaming_kills_the_group_at_the_deadline() {
        let started = std::time::Instant::now();
        let e = run_streaming(
            Command::new("sh").args(["-c", "sleep 30 & echo started; wait"]),
            Duration::from_millis(300),
            &mut |_| {},
        )
        .unwrap_err();
        assert!(matches!(e, CommandError::TimedOut { .. }), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
