//! Child processes live in their own process group, killed when the guard drops: no
//! QEMU outlives the harness, whatever path the harness leaves by.

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

#[derive(Debug)]
pub struct GroupGuard {
    pgid: Option<Pid>,
}

impl GroupGuard {
    /// For a child spawned with `process_group(0)`: its pid is its group id.
    pub fn new(pid: Option<u32>) -> GroupGuard {
        GroupGuard {
            pgid: pid.and_then(|p| i32::try_from(p).ok()).map(Pid::from_raw),
        }
    }

    pub fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // ESRCH (already gone) is the common, fine case.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }

    /// The group exited by itself; nothing to kill.
    pub fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// This process's peak resident memory (`VmHWM`), in KiB; `None` off Linux.
pub fn peak_rss_kib() -> Option<u64> {
    status_kib("self", "VmHWM:")
}

/// A process's resident memory now (`VmRSS`), in KiB; `None` when it is gone.
pub fn rss_kib(pid: &str) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

fn status_kib(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}
