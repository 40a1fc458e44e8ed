//! A cell's VM built apart from running it (firecracker's way: the VM is built, then
//! its loop runs): the kernel command line the cell's options ask for, the QEMU command
//! around it, and the QEMU process started in a process group of its own that dies
//! with the harness. The cell's loop (`cell/drive.rs`) only drives what this starts.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use kchaos_model::scenario::VmSpec;

use super::command::{DebugAccess, QemuCommand, SHELL_TTY};
use super::image::GuestImage;
use super::{Accel, Qemu};

/// What a cell asks of its VM besides its scenario and image.
#[derive(Debug, Clone, Copy)]
pub struct CellVm<'a> {
    pub cell: &'a str,
    /// Guest memory is dumped at the end (`--dump-memory`).
    pub dump: bool,
    /// A decided cell may keep its VM (`--keep-on-failure`, `--keep`).
    pub keep: bool,
    /// QEMU's gdb stub (`--gdb`), and whether the guest waits for the debugger.
    pub gdb: Option<bool>,
    /// The runner's log level (`kchaos.log=`).
    pub guest_log: Option<&'a str>,
}

impl CellVm<'_> {
    /// The kernel command line: kchaos's base, what the cell's options need, then the
    /// image's parameters and the scenario's `[vm] cmdline` (last, so they win).
    pub fn kernel_cmdline(&self, image: &[String], scenario: &[String]) -> Vec<String> {
        // With a memory dump wanted, a panicked kernel must stay up to be dumped, and
        // one that has not panicked is made to panic by an NMI before the dump (see
        // `cell/state`); a VM to keep must stay up in its panic too.
        let mut cmdline = QemuCommand::base_cmdline(self.cell, !self.dump && !self.keep);
        if self.dump {
            cmdline.push("unknown_nmi_panic".to_owned());
        }
        if self.keep {
            // The runner then waits for the Ack without a bound (no Ack: the VM is
            // kept) and starts a shell on the second console.
            cmdline.push("kchaos.keep=1".to_owned());
            cmdline.push(format!("kchaos.shell={SHELL_TTY}"));
        }
        if self.gdb.is_some() {
            // The symbols of the debug vmlinux are where they say only without KASLR.
            cmdline.push("nokaslr".to_owned());
        }
        if let Some(level) = self.guest_log {
            cmdline.push(format!("kchaos.log={level}"));
        }
        cmdline.extend(image.iter().cloned());
        cmdline.extend(scenario.iter().cloned());
        cmdline
    }

    /// The ways in for an engineer, each a socket in `sockets`: the monitor and a shell
    /// for a VM that may be kept, the gdb stub with `--gdb`.
    pub fn debug_access(&self, sockets: &Path) -> DebugAccess {
        let mut debug = DebugAccess::default();
        if self.keep {
            debug.monitor = Some(sockets.join("monitor.sock"));
            debug.shell = Some(sockets.join("shell.sock"));
        }
        if let Some(wait) = self.gdb {
            debug.gdb = Some(sockets.join("gdb.sock"));
            debug.wait_for_debugger = wait;
        }
        debug
    }

    /// The QEMU command for the cell, its sockets in `sockets` (a short path: Unix
    /// socket paths are limited to 108 bytes).
    pub fn command(
        &self,
        qemu: &Qemu,
        accel: Accel,
        image: &GuestImage,
        vm: &VmSpec,
        sockets: &Path,
    ) -> QemuCommand {
        QemuCommand {
            accel,
            memory_mib: vm.memory_mib,
            topology: vm.topology,
            kernel: image.kernel.path.clone(),
            boot: image.media.clone(),
            cmdline: self.kernel_cmdline(&image.cmdline, &vm.cmdline),
            control_socket: Some(control_socket(sockets)),
            qmp_socket: Some(qmp_socket(sockets)),
            debug: self.debug_access(sockets),
            firmware: qemu.firmware.clone(),
        }
    }
}

/// The control channel's socket in a cell's socket directory.
pub fn control_socket(sockets: &Path) -> PathBuf {
    sockets.join("ctl.sock")
}

/// QMP's socket in a cell's socket directory.
pub fn qmp_socket(sockets: &Path) -> PathBuf {
    sockets.join("qmp.sock")
}

/// QEMU with `args` and the command line as it is recorded (`qemu.cmdline`).
pub fn printable(qemu: &Qemu, args: &[OsString]) -> String {
    std::iter::once(qemu.path.display().to_string())
        .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Starts QEMU with `args`, its console on stdout and its own messages on stderr, in a
/// process group of its own (the caller's [`GroupGuard`](super::process::GroupGuard)
/// kills it) that also dies with the harness.
pub fn spawn(qemu: &Qemu, args: &[OsString]) -> std::io::Result<tokio::process::Child> {
    let mut command = tokio::process::Command::new(&qemu.path);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // A harness killed outright (SIGKILL, OOM) cannot kill its VMs; the kernel does it
    // for us, so a killed run leaves no QEMU behind and `--resume` starts clean. (The
    // signal follows the spawning thread: a tokio worker, alive as long as the run.)
    // SAFETY: runs in the forked child before exec and only calls prctl(2), which is
    // async-signal-safe; it touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
    command.spawn()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(dump: bool, keep: bool, gdb: Option<bool>) -> CellVm<'static> {
        CellVm {
            cell: "c",
            dump,
            keep,
            gdb,
            guest_log: Some("debug"),
        }
    }

    #[test]
    fn the_kernel_command_line_follows_the_cells_options() {
        let image = ["root=/dev/nvme0n1".to_owned()];
        let scenario = ["quiet".to_owned()];
        let tail = |cmdline: Vec<String>| -> Vec<String> {
            let base = QemuCommand::base_cmdline("c", true).len();
            cmdline[base..].to_vec()
        };
        // A plain cell: panic ends QEMU; then the image's, then the scenario's.
        let plain = vm(false, false, None).kernel_cmdline(&image, &scenario);
        assert!(plain.contains(&"panic=-1".to_owned()), "{plain:?}");
        assert_eq!(
            tail(plain),
            ["kchaos.log=debug", "root=/dev/nvme0n1", "quiet"]
        );
        // A dump, a kept VM and gdb: the kernel stays up in its panic, an NMI panics
        // it, the runner waits and serves a shell, no KASLR.
        let all = vm(true, true, Some(false)).kernel_cmdline(&image, &scenario);
        assert!(all.contains(&"panic=0".to_owned()), "{all:?}");
        assert_eq!(
            tail(all),
            [
                "unknown_nmi_panic",
                "kchaos.keep=1",
                "kchaos.shell=ttyS1",
                "nokaslr",
                "kchaos.log=debug",
                "root=/dev/nvme0n1",
                "quiet"
            ]
        );
        let dump_only = vm(true, false, None).kernel_cmdline(&[], &[]);
        assert!(dump_only.contains(&"panic=0".to_owned()));
    }

    #[test]
    fn a_vm_that_may_be_kept_gets_a_monitor_and_a_shell() {
        let dir = Path::new("/tmp/kchaos-1-a");
        let plain = vm(false, false, None).debug_access(dir);
        assert_eq!(
            (
                plain.monitor,
                plain.shell,
                plain.gdb,
                plain.wait_for_debugger
            ),
            (None, None, None, false)
        );
        let kept = vm(false, true, Some(true)).debug_access(dir);
        assert_eq!(kept.monitor, Some(dir.join("monitor.sock")));
        assert_eq!(kept.shell, Some(dir.join("shell.sock")));
        assert_eq!(kept.gdb, Some(dir.join("gdb.sock")));
        assert!(kept.wait_for_debugger);
    }
}
