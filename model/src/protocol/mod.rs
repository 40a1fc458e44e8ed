//! The host↔guest control protocol, carried over a virtio-serial port.
//!
//! Framing ([`frame`]) is a magic, a length and a CRC32 around a JSON payload: JSON keeps
//! the stream readable in a hex dump and evolvable, the CRC and magic let the reader
//! detect and resynchronise after garbage instead of hanging or panicking. Messages
//! ([`message`]) are versioned by [`PROTOCOL_VERSION`], checked in the handshake.

pub mod frame;
pub mod message;

pub use self::frame::{encode, FrameDecoder, FrameError, FrameEvent, MAX_FRAME};
pub use self::message::{
    GuestMessage, Hello, HostMessage, KmsgRecord, Phase, ProbeReport, RunReport, RunRequest,
    WorkloadReport,
};

/// Bumped on any incompatible change to [`message`]. The harness refuses a runner that
/// speaks another version (rebuild the runner).
///
/// 2: `WorkloadReport` carries `findings` (what a workload itself established, e.g.
/// systemd's cookie overflowed), which fail a cell as the kernel's own signatures do.
/// 3: `RunReport` carries the workloads' `spans` and the latency probes' `timelines`
/// (timed samples), which windowed checks (`memory_stat_read[hold].p50`) need; an
/// older runner would leave them empty and every such check "not tested".
pub const PROTOCOL_VERSION: u32 = 3;

/// The virtio-serial port name both sides agree on (`/sys/class/virtio-ports/*/name`).
pub const CONTROL_PORT_NAME: &str = "org.kchaos.ctl";

/// Every line the runner prints on the console starts with this, so the harness never
/// mistakes the runner's words for the kernel's (the console carries both).
pub const RUNNER_CONSOLE_PREFIX: &str = "kchaos-runner: ";

/// Kernel command-line key that marks a kchaos VM. The runner refuses to run without it.
pub const VM_MARKER: &str = "kchaos.vm=1";
