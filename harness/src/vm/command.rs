//! The QEMU command line for one cell. Every choice here is about boot time under TCG
//! or about isolation. Measured on these machines: q35 boots faster than pc; qboot
//! instead of SeaBIOS saves ~0.5 s of firmware; microvm needs virtio-mmio modules on
//! Debian kernels, hangs calibrating its timers without a PIT and a PIC, and with them
//! hung in 4 of 6 boots under load: not used.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use kchaos_model::protocol::{CONTROL_PORT_NAME, VM_MARKER};

use kchaos_model::topology::Topology;

use super::accel::Accel;

pub const CONTROL_CHARDEV: &str = "kchaos-ctl";

/// The kernel modules the control channel needs (virtio-serial over PCI).
pub const CHANNEL_MODULES: &[&str] = &["virtio_pci", "virtio_console"];

/// What the kernel boots into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootMedia {
    /// An initramfs; the runner is its init.
    Initrd(PathBuf),
    /// A raw ext4 disk on NVMe (built into Debian's cloud kernels, so no initramfs is
    /// needed), attached with `snapshot=on`: the guest's writes go to a temporary overlay
    /// and the cached image stays pristine for the next cell.
    Disk(PathBuf),
}

/// The guest's name for the disk of [`BootMedia::Disk`].
pub const ROOT_DEVICE: &str = "/dev/nvme0n1";

#[derive(Debug, Clone)]
pub struct QemuCommand {
    pub accel: Accel,
    pub memory_mib: u64,
    /// vCPUs, and with several sockets one NUMA node per socket.
    pub topology: Topology,
    pub kernel: PathBuf,
    pub boot: BootMedia,
    pub cmdline: Vec<String>,
    /// Unix socket the harness listens on; QEMU connects as a client, so there is no
    /// start-up race. `None` boots without the control channel (the boot benchmark's
    /// baseline).
    pub control_socket: Option<PathBuf>,
    /// QEMU's monitor (QMP), for evidence from a guest that stopped answering.
    pub qmp_socket: Option<PathBuf>,
    /// Ways in for an engineer (`--keep`, `--gdb`); none by default.
    pub debug: DebugAccess,
    /// `-bios`: the firmware (qboot), or QEMU's default (SeaBIOS).
    pub firmware: Option<PathBuf>,
}

/// What an engineer can reach besides the harness's own streams, each on a Unix socket
/// QEMU listens on (without waiting: nobody has to connect).
#[derive(Debug, Clone, Default)]
pub struct DebugAccess {
    /// QEMU's human monitor (HMP): `info registers`, `nmi`, `dump-guest-memory`, `quit`.
    pub monitor: Option<PathBuf>,
    /// A second serial port, `ttyS1` in the guest (built into every kernel, no module
    /// to load), where the runner starts a shell when asked (`kchaos.shell=ttyS1`).
    pub shell: Option<PathBuf>,
    /// QEMU's gdb stub (`gdb -ex 'target remote SOCKET'`).
    pub gdb: Option<PathBuf>,
    /// Start with the vCPUs stopped (`-S`) until a debugger (or the monitor's `cont`)
    /// resumes them.
    pub wait_for_debugger: bool,
}

pub const GDB_CHARDEV: &str = "kchaos-gdb";

/// The guest's name for [`DebugAccess::shell`]'s port.
pub const SHELL_TTY: &str = "ttyS1";

impl QemuCommand {
    /// The parameters every kchaos VM gets. `loglevel=5` puts warnings and worse on the
    /// console (the witness that survives a dead guest) without the boot chatter.
    /// `sysrq_always_enabled`: Debian's default mask refuses the task-dump keys the
    /// harness sends to a hung guest. `reboot_on_panic`: `panic=-1` ends QEMU at once
    /// (with -no-reboot); `panic=0` keeps a panicked guest up to be dumped.
    pub fn base_cmdline(cell: &str, reboot_on_panic: bool) -> Vec<String> {
        vec![
            "console=ttyS0".to_owned(),
            "loglevel=5".to_owned(),
            if reboot_on_panic {
                "panic=-1"
            } else {
                "panic=0"
            }
            .to_owned(),
            "sysrq_always_enabled".to_owned(),
            // The crypto self-tests are the longest initcall under TCG (~0.3-0.6 s of a
            // ~2.5 s boot); they test the crypto code, not what scenarios exercise.
            "cryptomgr.notests".to_owned(),
            // Two more self-tests, outside cryptomgr, that run as built-in initcalls of
            // Debian's 6.1 kernels: the SP800-108 KDF's (hmac(sha256), 75-105 ms under
            // TCG) and BLAKE2s's (~10 ms). Their initcalls do nothing else; a kernel
            // without them ignores the names.
            "initcall_blacklist=crypto_kdf108_init,blake2s_mod_init".to_owned(),
            // No BIOS disk-geometry probe in the real-mode stub: a kchaos VM has no disk.
            "edd=off".to_owned(),
            VM_MARKER.to_owned(),
            format!("kchaos.cell={cell}"),
        ]
    }

    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
        push(&self.accel.args());
        push(&[
            "-machine",
            "q35",
            "-nodefaults",
            "-no-user-config",
            "-no-reboot",
        ]);
        push(&["-display", "none", "-nic", "none"]);
        if let Some(firmware) = &self.firmware {
            push(&["-bios", &firmware.display().to_string()]);
        }
        match &self.debug.monitor {
            Some(socket) => push(&["-monitor", &listen(socket)]),
            None => push(&["-monitor", "none"]),
        }
        let shape = machine_shape(self.memory_mib, self.topology);
        a.extend(shape.iter().map(OsString::from));
        let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
        push(&["-serial", "stdio"]);
        if let Some(socket) = &self.debug.shell {
            push(&["-serial", &listen(socket)]);
        }
        if let Some(socket) = &self.debug.gdb {
            let chardev = format!(
                "socket,id={GDB_CHARDEV},path={},server=on,wait=off",
                escape(socket)
            );
            push(&[
                "-chardev",
                &chardev,
                "-gdb",
                &format!("chardev:{GDB_CHARDEV}"),
            ]);
        }
        if self.debug.wait_for_debugger {
            push(&["-S"]);
        }
        a.push("-kernel".into());
        a.push(self.kernel.clone().into());
        let mut cmdline = self.cmdline.clone();
        match &self.boot {
            BootMedia::Initrd(path) => {
                a.push("-initrd".into());
                a.push(path.clone().into());
            }
            BootMedia::Disk(path) => {
                a.push("-drive".into());
                a.push(
                    format!(
                        "file={},if=none,id=kchaos-root,format=raw,snapshot=on",
                        escape(path)
                    )
                    .into(),
                );
                a.push("-device".into());
                a.push("nvme,drive=kchaos-root,serial=kchaos-root".into());
                cmdline.extend([
                    format!("root={ROOT_DEVICE}"),
                    "rootfstype=ext4".to_owned(),
                    "rw".to_owned(),
                ]);
            }
        }
        a.push("-append".into());
        a.push(cmdline.join(" ").into());
        if let Some(socket) = &self.qmp_socket {
            a.push("-qmp".into());
            a.push(listen(socket).into());
        }
        if let Some(socket) = &self.control_socket {
            a.push("-chardev".into());
            a.push(chardev(socket).into());
            a.push("-device".into());
            a.push("virtio-serial-pci,id=kchaos-vser".into());
            a.push("-device".into());
            a.push(
                format!("virtserialport,bus=kchaos-vser.0,chardev={CONTROL_CHARDEV},name={CONTROL_PORT_NAME}")
                    .into(),
            );
        }
        a
    }
}

/// `-m` and `-smp`, and for several sockets a NUMA node per socket, each with its
/// share of the memory (the last takes what does not divide evenly): QEMU's newer
/// machine types take node memory only as memory backends.
pub fn machine_shape(memory_mib: u64, topology: Topology) -> Vec<String> {
    let mut a = vec!["-m".to_owned(), memory_mib.to_string(), "-smp".to_owned()];
    let cpus = topology.cpus();
    if topology.sockets == 1 && topology.threads == 1 {
        a.push(cpus.to_string());
    } else {
        a.push(format!(
            "{cpus},sockets={},cores={},threads={}",
            topology.sockets, topology.cores, topology.threads
        ));
    }
    let nodes = u64::from(topology.numa_nodes());
    if nodes > 1 {
        let each = memory_mib / nodes;
        for node in 0..nodes {
            let size = if node + 1 == nodes {
                memory_mib - each * (nodes - 1)
            } else {
                each
            };
            a.extend([
                "-object".to_owned(),
                format!("memory-backend-ram,id=kchaos-mem{node},size={size}M"),
                "-numa".to_owned(),
                format!("node,nodeid={node},memdev=kchaos-mem{node}"),
                "-numa".to_owned(),
                format!("cpu,node-id={node},socket-id={node}"),
            ]);
        }
    }
    a
}

/// A Unix socket QEMU listens on without waiting for anyone to connect.
fn listen(socket: &Path) -> String {
    format!("unix:{},server=on,wait=off", escape(socket))
}

fn chardev(socket: &Path) -> String {
    format!(
        "socket,id={CONTROL_CHARDEV},path={},server=off",
        escape(socket)
    )
}

/// A path as a QEMU option value: commas are escaped by doubling.
fn escape(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The arguments joined into one line, and the kernel command line.
    fn render(boot: BootMedia, control_socket: Option<PathBuf>) -> (String, String) {
        let cmd = QemuCommand {
            accel: Accel::Tcg,
            memory_mib: 512,
            topology: Topology::flat(1),
            kernel: "/k/vmlinuz".into(),
            boot,
            cmdline: QemuCommand::base_cmdline("s/k", true),
            control_socket,
            qmp_socket: None,
            debug: DebugAccess::default(),
            firmware: Some("/usr/share/qemu/qboot.rom".into()),
        };
        let args: Vec<String> = cmd
            .args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let append = args[args.iter().position(|a| a == "-append").unwrap() + 1].clone();
        (args.join(" "), append)
    }

    #[test]
    fn command_line_has_console_channel_and_marker() {
        let (joined, append) = render(
            BootMedia::Initrd("/k/init.cpio".into()),
            Some("/tmp/a,b/ctl.sock".into()),
        );
        assert!(joined.contains("-accel tcg -cpu max,la57=off"));
        assert!(joined.contains("-bios /usr/share/qemu/qboot.rom"));
        assert!(joined.contains("socket,id=kchaos-ctl,path=/tmp/a,,b/ctl.sock,server=off"));
        assert!(joined.contains("name=org.kchaos.ctl"));
        assert!(append.contains("kchaos.vm=1") && append.contains("console=ttyS0"));
        assert!(
            !append.contains("root="),
            "an initramfs boot names no root device"
        );
    }

    #[test]
    fn debug_access_listens_on_sockets_only_when_asked() {
        let (plain, _) = render(BootMedia::Initrd("/k/i".into()), None);
        assert!(plain.contains("-monitor none"), "{plain}");
        assert_eq!(plain.matches("-serial").count(), 1);
        let cmd = QemuCommand {
            accel: Accel::Tcg,
            memory_mib: 512,
            topology: Topology::flat(1),
            kernel: "/k/vmlinuz".into(),
            boot: BootMedia::Initrd("/k/i".into()),
            cmdline: Vec::new(),
            control_socket: None,
            qmp_socket: None,
            debug: DebugAccess {
                monitor: Some("/s/monitor.sock".into()),
                shell: Some("/s/shell.sock".into()),
                gdb: Some("/s/gdb.sock".into()),
                wait_for_debugger: true,
            },
            firmware: None,
        };
        let joined = cmd
            .args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            joined.contains("-monitor unix:/s/monitor.sock,server=on,wait=off"),
            "{joined}"
        );
        // The console stays ttyS0; the shell's port comes second, so it is ttyS1.
        assert!(
            joined.contains("-serial stdio -serial unix:/s/shell.sock,server=on,wait=off"),
            "{joined}"
        );
        assert!(
            joined.contains(
                "-chardev socket,id=kchaos-gdb,path=/s/gdb.sock,server=on,wait=off -gdb chardev:kchaos-gdb"
            ),
            "{joined}"
        );
        assert!(joined.split(' ').any(|a| a == "-S"), "{joined}");
        assert!(!plain.split(' ').any(|a| a == "-S"), "{plain}");
    }

    #[test]
    fn topologies_become_smp_and_a_numa_node_per_socket() {
        let shape = |mib, t: &str| machine_shape(mib, Topology::parse(t).unwrap()).join(" ");
        assert_eq!(shape(1024, "2"), "-m 1024 -smp 2");
        assert_eq!(
            shape(1024, "1s2c2t"),
            "-m 1024 -smp 4,sockets=1,cores=2,threads=2"
        );
        assert_eq!(
            shape(1000, "3s1c"),
            "-m 1000 -smp 3,sockets=3,cores=1,threads=1 \
             -object memory-backend-ram,id=kchaos-mem0,size=333M -numa node,nodeid=0,memdev=kchaos-mem0 -numa cpu,node-id=0,socket-id=0 \
             -object memory-backend-ram,id=kchaos-mem1,size=333M -numa node,nodeid=1,memdev=kchaos-mem1 -numa cpu,node-id=1,socket-id=1 \
             -object memory-backend-ram,id=kchaos-mem2,size=334M -numa node,nodeid=2,memdev=kchaos-mem2 -numa cpu,node-id=2,socket-id=2"
        );
    }

    #[test]
    fn a_disk_boots_from_nvme_without_touching_the_image() {
        let (joined, append) = render(BootMedia::Disk("/c/disk,1.img".into()), None);
        assert!(
            joined.contains("file=/c/disk,,1.img,if=none,id=kchaos-root,format=raw,snapshot=on")
        );
        assert!(joined.contains("-device nvme,drive=kchaos-root"));
        assert!(!joined.contains("-initrd"));
        assert!(
            append.ends_with("root=/dev/nvme0n1 rootfstype=ext4 rw"),
            "{append}"
        );
    }
}
