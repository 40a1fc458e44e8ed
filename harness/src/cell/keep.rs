//! Kept VMs: with `--keep-on-failure` (or `--keep`) a cell's VM is not killed at its
//! verdict but handed to the session's [`Keeper`], so an engineer can read /proc, /sys
//! and the cgroup files at the moment of failure, attach gdb, or poke QEMU's monitor.
//! The verdict is recorded first (results never wait for a debugging session); the VM
//! stays up until the user interrupts (Ctrl-C), QEMU exits, or the harness is killed.
//! With `--gdb` any cell, kept or not, has QEMU's gdb stub ([`Gdb`]). Which cells keep
//! their VM ([`KeepPolicy`](super::KeepPolicy)) the state machine decides; this module
//! holds the VMs it keeps.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::task::JoinSet;

/// Holds the kept VMs of a session until they are released. At most `capacity` at a
/// time: a run over a broken kernel must not pile up a VM per failing cell.
#[derive(Debug)]
pub struct Keeper {
    capacity: usize,
    /// Places taken: admitted, and not yet released.
    admitted: Arc<AtomicUsize>,
    held: Mutex<JoinSet<()>>,
}

impl Keeper {
    pub fn new(capacity: usize) -> Keeper {
        Keeper {
            capacity: capacity.max(1),
            admitted: Arc::new(AtomicUsize::new(0)),
            held: Mutex::new(JoinSet::new()),
        }
    }

    /// Reserves a place for one more VM, or says why there is none.
    pub fn admit(&self) -> Result<(), String> {
        self.admitted
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .map(|_| ())
            .map_err(|n| format!("{n} VMs are kept already (at most one per --jobs slot)"))
    }

    /// Runs `waiting` (a kept VM's wait for its release, after [`Keeper::admit`])
    /// until it ends; its place is free again then.
    pub fn hold(&self, waiting: impl std::future::Future<Output = ()> + Send + 'static) {
        let admitted = Arc::clone(&self.admitted);
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.spawn(async move {
            waiting.await;
            admitted.fetch_sub(1, Ordering::SeqCst);
        });
    }

    /// How many VMs are kept now (released ones, ended from their monitor, not counted).
    pub fn kept(&self) -> usize {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        while held.try_join_next().is_some() {}
        held.len()
    }

    /// Waits until every kept VM is released.
    pub async fn wait(&self) {
        let mut held = {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *held)
        };
        while held.join_next().await.is_some() {}
    }
}

/// QEMU's gdb stub for a cell (`--gdb`): whether the guest waits for the debugger
/// before it boots, and the kernel's symbols (or why there are none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gdb {
    pub wait: bool,
    pub vmlinux: Result<PathBuf, String>,
}

impl Gdb {
    /// The command line to paste: gdb with the kernel's symbols, attached to the stub
    /// on `socket` (the kernel boots with `nokaslr`, so the symbols' addresses hold).
    pub fn command(&self, socket: &Path) -> String {
        let target = format!("-ex 'target remote {}'", socket.display());
        match &self.vmlinux {
            Ok(vmlinux) => format!("gdb {} {target}", quote(vmlinux)),
            Err(why) => format!("gdb {target}   (no kernel symbols: {why})"),
        }
    }

    /// What is printed when the stub is up.
    pub fn describe(&self, socket: &Path) -> String {
        let mut text = format!("gdb stub ready; attach with:\n    {}", self.command(socket));
        if self.wait {
            text.push_str(
                "\n    the guest waits for the debugger: `continue` in gdb boots it (the boot timeout starts then)",
            );
        }
        text
    }
}

/// How an engineer reaches a kept VM (the paths live in the cell's socket directory).
#[derive(Debug, Clone)]
pub struct Access {
    pub console_log: PathBuf,
    pub monitor: Option<PathBuf>,
    pub qmp: PathBuf,
    /// The second console's socket and whether a shell can answer there; `Err` says
    /// why there is none.
    pub shell: Result<PathBuf, String>,
    /// The ready-to-paste gdb command line, when `--gdb` was given.
    pub gdb: Option<String>,
}

impl Access {
    /// What is printed when the VM is kept: one command per way in.
    pub fn describe(&self) -> String {
        let mut out = "VM kept until Ctrl-C (its verdict is recorded); reach it with:\n".to_owned();
        let mut line = |what: &str, how: String| {
            out.push_str(&format!("    {what:<8} {how}\n"));
        };
        line(
            "console",
            format!(
                "tail -f {}   (ttyS0, output only)",
                quote(&self.console_log)
            ),
        );
        match &self.shell {
            Ok(sock) => line(
                "shell",
                format!(
                    "socat -,raw,echo=0 UNIX-CONNECT:{}   (ttyS1; press Enter for a prompt)",
                    quote(sock)
                ),
            ),
            Err(why) => line("shell", format!("none: {why}")),
        }
        if let Some(mon) = &self.monitor {
            line(
                "monitor",
                format!(
                    "socat - UNIX-CONNECT:{}   (QEMU's monitor: info registers, nmi, dump-guest-memory, quit)",
                    quote(mon)
                ),
            );
        }
        line("qmp", format!("socat - UNIX-CONNECT:{}", quote(&self.qmp)));
        if let Some(gdb) = &self.gdb {
            line("gdb", gdb.clone());
        }
        out.trim_end().to_owned()
    }
}

/// A path for a shell command line: quoted when it needs to be.
pub fn quote(path: &Path) -> String {
    let text = path.display().to_string();
    if text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:=@,".contains(c))
    {
        text
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// Why a kept guest has no shell on its second console, if it has none: the harness
/// knows what the image holds (`[vm] tools` for an initramfs, a whole userland for the
/// systemd image) and whether the kernel is still alive to run one.
pub fn shell_missing(
    image: kchaos_model::scenario::ImageKind,
    tools: &[String],
    panicked: bool,
) -> Option<String> {
    if panicked {
        return Some("the kernel panicked (the monitor and gdb still work)".to_owned());
    }
    let has_shell = image.runs_systemd()
        || tools.iter().any(|t| {
            let name = t.rsplit('/').next().unwrap_or(t);
            SHELLS.contains(&name)
        });
    (!has_shell).then(|| {
        "the initramfs holds no shell; list one in the scenario's [vm] tools (e.g. tools = [\"sh\", \"cat\", \"ls\"])".to_owned()
    })
}

/// The programs the runner starts on the second console, in its order of preference.
pub const SHELLS: &[&str] = &["sh", "bash", "dash", "busybox"];

#[cfg(test)]
mod tests {
    use kchaos_model::scenario::ImageKind;

    use super::*;

    #[tokio::test]
    async fn the_keeper_admits_up_to_its_capacity_and_frees_released_places() {
        let keeper = Keeper::new(2);
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        assert!(keeper.admit().is_ok());
        keeper.hold(async move {
            let _ = released.await;
        });
        assert!(keeper.admit().is_ok());
        keeper.hold(std::future::pending());
        let refused = keeper.admit().unwrap_err();
        assert!(refused.contains("2 VMs are kept already"), "{refused}");
        assert_eq!(keeper.kept(), 2);
        // One VM is released (its QEMU quit): its place is free again.
        release.send(()).unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while keeper.kept() != 1 {
            assert!(tokio::time::Instant::now() < deadline, "never released");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(keeper.admit().is_ok());
    }

    #[test]
    fn a_shell_needs_one_in_the_image_and_a_live_kernel() {
        let tools = |t: &[&str]| t.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert!(shell_missing(ImageKind::Initramfs, &tools(&["ip"]), false)
            .is_some_and(|w| w.contains("[vm] tools")));
        assert_eq!(
            shell_missing(
                ImageKind::Initramfs,
                &tools(&["ip", "/usr/bin/bash"]),
                false
            ),
            None
        );
        assert_eq!(shell_missing(ImageKind::Systemd, &[], false), None);
        assert!(
            shell_missing(ImageKind::Systemd, &[], true).is_some_and(|w| w.contains("panicked"))
        );
    }

    #[test]
    fn access_is_printed_as_commands_to_paste() {
        let access = Access {
            console_log: "/r/selftest-panic/debian-6.1.0-56-cloud/console.log".into(),
            monitor: Some("/tmp/kchaos-1-a/monitor.sock".into()),
            qmp: "/tmp/kchaos-1-a/qmp.sock".into(),
            shell: Err("the kernel panicked".into()),
            gdb: Some("gdb /v -ex 'target remote /tmp/kchaos-1-a/gdb.sock'".into()),
        };
        let text = access.describe();
        assert!(text.contains("tail -f /r/selftest-panic/debian-6.1.0-56-cloud/console.log"));
        assert!(text.contains("socat - UNIX-CONNECT:/tmp/kchaos-1-a/monitor.sock"));
        assert!(
            text.contains("shell    none: the kernel panicked"),
            "{text}"
        );
        assert!(text.contains("gdb      gdb /v -ex"), "{text}");
        assert_eq!(quote(Path::new("/a b/c'd")), r"'/a b/c'\''d'");
    }

    #[test]
    fn the_gdb_command_names_the_symbols_or_why_there_are_none() {
        let sock = Path::new("/tmp/kchaos-1-a/gdb.sock");
        let with = Gdb {
            wait: true,
            vmlinux: Ok("/c/vmlinux-6.1.0-56-cloud-amd64".into()),
        };
        assert_eq!(
            with.command(sock),
            "gdb /c/vmlinux-6.1.0-56-cloud-amd64 -ex 'target remote /tmp/kchaos-1-a/gdb.sock'"
        );
        assert!(with.describe(sock).contains("`continue` in gdb boots it"));
        let without = Gdb {
            wait: false,
            vmlinux: Err("apt offers no linux-image-x-dbg".into()),
        };
        assert!(without
            .command(sock)
            .ends_with("(no kernel symbols: apt offers no linux-image-x-dbg)"));
        assert!(!without.describe(sock).contains("continue"));
    }
}
