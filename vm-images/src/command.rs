//! Running the host tools images are built with (apt, dpkg-deb, debootstrap, mkfs.ext4),
//! with errors that name the command and say what it printed.

use std::process::Command;

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
        let stderr = String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| !l.starts_with("W:"))
            .collect::<Vec<_>>()
            .join(" ");
        return Err(CommandError::Failed {
            command,
            status: out.status.to_string(),
            stderr,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
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
}
