//! One QEMU process and what it takes: the binary and its accelerator, the command line,
//! the guest image with the runner in it, and the three streams the harness watches —
//! the serial console, the control channel, the QMP monitor — in a process group that
//! dies with the harness.

pub mod accel;
pub mod channel;
pub mod command;
pub mod console;
pub mod image;
pub mod launch;
pub mod process;
pub mod qemu;
pub mod qmp;
pub mod runner;
pub mod sockets;

pub use self::accel::{detect as detect_accel, Accel, AccelChoice, AccelDecision};
pub use self::command::{BootMedia, DebugAccess, QemuCommand, CONTROL_CHARDEV};
pub use self::qemu::{find_in_path, Qemu, QemuError};
