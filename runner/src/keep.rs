//! What the runner does for a VM the host may keep for an engineer (`kchaos run
//! --keep-on-failure`), asked on the kernel command line:
//! - `kchaos.keep=1`: after its report, wait for the host's `Ack` without a bound. The
//!   host withholds it from a VM it keeps, so the guest stays up as the failure left it
//!   instead of powering off.
//! - `kchaos.shell=ttyS1`: a shell on that console for reading /proc, /sys and cgroup
//!   files at the moment of failure. The shell comes from the image (`[vm] tools` in an
//!   initramfs, the userland of the systemd image); without one, the console says so.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where `[vm] tools` puts programs, and where a userland keeps them.
const PATH: &str = "/bin:/usr/bin:/sbin:/usr/sbin";
/// Shells in order of preference (the harness names the same ones).
const SHELLS: &[&str] = &["sh", "bash", "dash", "busybox"];
/// A shell that keeps dying at once is not restarted forever.
const QUICK_EXITS: u32 = 5;

static KEEP: OnceLock<bool> = OnceLock::new();

/// Reads the options from the kernel command line and starts the shell if asked.
pub fn init(cmdline: &str) {
    let _ = KEEP.set(option(cmdline, "keep").is_some_and(|v| v == "1"));
    if let Some(tty) = option(cmdline, "shell") {
        let tty = Path::new("/dev").join(tty);
        let started = std::thread::Builder::new()
            .name("kchaos-shell".to_owned())
            .spawn(move || serve(&tty));
        if let Err(e) = started {
            tracing::warn!("cannot start the shell thread: {e}");
        }
    }
}

/// How long to wait for the host's `Ack`: `default`, or (practically) forever when the
/// host may keep this VM.
pub fn ack_wait(default: Duration) -> Duration {
    if KEEP.get().copied().unwrap_or(false) {
        Duration::from_secs(365 * 24 * 3600)
    } else {
        default
    }
}

fn option<'a>(cmdline: &'a str, name: &str) -> Option<&'a str> {
    cmdline.split_whitespace().find_map(|p| {
        p.strip_prefix("kchaos.")?
            .strip_prefix(name)?
            .strip_prefix('=')
    })
}

/// The first shell of [`SHELLS`] found in [`PATH`].
fn find_shell() -> Option<PathBuf> {
    SHELLS.iter().find_map(|name| {
        PATH.split(':')
            .map(|dir| Path::new(dir).join(name))
            .find(|p| p.is_file())
    })
}

/// Runs a shell on `tty`, again whenever it exits (the engineer typed `exit`), until it
/// keeps dying at once.
fn serve(tty: &Path) {
    let Some(shell) = find_shell() else {
        let _ = std::fs::write(
            tty,
            "kchaos: no shell in this guest image: list one in the scenario's [vm] tools, e.g. tools = [\"sh\", \"cat\", \"ls\"]\r\n",
        );
        tracing::info!("no shell for {}", tty.display());
        return;
    };
    let mut quick = 0;
    while quick < QUICK_EXITS {
        let started = Instant::now();
        if let Err(e) = run_shell(&shell, tty) {
            tracing::warn!("cannot start {} on {}: {e}", shell.display(), tty.display());
            return;
        }
        quick = if started.elapsed() < Duration::from_secs(2) {
            quick + 1
        } else {
            0
        };
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One interactive shell session with `tty` as its controlling terminal (job control,
/// Ctrl-C reaching the foreground command).
fn run_shell(shell: &Path, tty: &Path) -> std::io::Result<()> {
    let term = OpenOptions::new().read(true).write(true).open(tty)?;
    let mut cmd = Command::new(shell);
    if shell.ends_with("busybox") {
        cmd.arg("sh");
    }
    cmd.arg("-i")
        .env_clear()
        .env("PATH", PATH)
        .env("HOME", "/")
        .env("TERM", "vt100")
        .env("PS1", "kchaos# ")
        .current_dir("/")
        .stdin(Stdio::from(term.try_clone()?))
        .stdout(Stdio::from(term.try_clone()?))
        .stderr(Stdio::from(term));
    // SAFETY: runs in the forked child before exec and only calls setsid(2) and
    // ioctl(2), both async-signal-safe; it touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            // The tty (stdin) becomes the new session's controlling terminal.
            if libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.status().map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_come_from_the_kernel_command_line() {
        let cmdline = "console=ttyS0 kchaos.vm=1 kchaos.keep=1 kchaos.shell=ttyS1";
        assert_eq!(option(cmdline, "keep"), Some("1"));
        assert_eq!(option(cmdline, "shell"), Some("ttyS1"));
        assert_eq!(option("kchaos.vm=1", "shell"), None);
    }
}
