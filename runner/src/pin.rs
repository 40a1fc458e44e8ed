//! Pinning a thread to one CPU: the probes that measure "the CPU that reads
//! `memory.stat`" must all be on it.

use nix::sched::{sched_setaffinity, CpuSet};
use nix::unistd::Pid;

#[derive(Debug, thiserror::Error)]
#[error("Cannot pin the thread to CPU {cpu}: {errno}")]
pub struct PinError {
    pub cpu: u32,
    pub errno: nix::errno::Errno,
}

/// Pins the calling thread (only it: affinity is per thread) to `cpu`.
pub fn pin_current_thread(cpu: u32) -> Result<(), PinError> {
    let fail = |errno| PinError { cpu, errno };
    let index = usize::try_from(cpu).map_err(|_| fail(nix::errno::Errno::EINVAL))?;
    let mut set = CpuSet::new();
    set.set(index).map_err(fail)?;
    sched_setaffinity(Pid::from_raw(0), &set).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_runs_where_it_is_pinned_and_a_missing_cpu_is_an_error() {
        let on = std::thread::spawn(|| {
            pin_current_thread(0)?;
            // SAFETY: sched_getcpu takes no arguments and only reads the current CPU.
            let cpu = unsafe { libc::sched_getcpu() };
            Ok::<_, PinError>(cpu)
        })
        .join()
        .unwrap();
        assert_eq!(on.unwrap(), 0);
        let e = pin_current_thread(100_000).unwrap_err();
        assert_eq!(e.errno, nix::errno::Errno::EINVAL);
        assert!(e.to_string().contains("CPU 100000"), "{e}");
    }
}
