//! Starting a child process: `clone3` with `CLONE_INTO_CGROUP` (the child is born in its
//! cgroup, Linux 5.7+), or a plain `fork`.

use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::unistd::Pid;

/// `CLONE_INTO_CGROUP` (include/uapi/linux/sched.h); libc declares it with the wrong type.
pub(super) const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` as of Linux 5.7 (`CLONE_ARGS_SIZE_VER2`).
#[repr(C)]
#[derive(Debug, Default)]
pub(super) struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
    pub set_tid: u64,
    pub set_tid_size: u64,
    pub cgroup: u64,
}

/// Which side of the fork this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    Child,
    Parent(Pid),
}

/// Whether a `clone3` failure means the kernel lacks `CLONE_INTO_CGROUP` (before 5.3 no
/// `clone3` at all; 5.3–5.6 a smaller `clone_args`), so joining by `cgroup.procs`
/// after a fork is the way; any other error is the cgroup's and is reported.
pub fn unsupported(e: Errno) -> bool {
    matches!(e, Errno::ENOSYS | Errno::E2BIG)
}

/// A child that starts its life inside the cgroup `dir` (an open directory of cgroup2).
///
/// # Safety
/// As for `fork`: the caller must be single-threaded, because the raw syscall bypasses
/// glibc's fork handlers (its lock resets and its cached thread id), so the child may
/// only use what a single-threaded parent leaves consistent and must not create threads.
pub unsafe fn clone_into(dir: BorrowedFd<'_>) -> Result<Forked, Errno> {
    let fd = u64::try_from(dir.as_raw_fd()).map_err(|_| Errno::EBADF)?;
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: fd,
        ..CloneArgs::default()
    };
    // SAFETY: `args` is a valid clone_args of the size passed, alive across the call;
    // without CLONE_VM or a stack the child continues on a copy of this stack, like
    // fork. The caller guarantees the single-threaded precondition above.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            size_of::<CloneArgs>(),
        )
    };
    match ret {
        -1 => Err(Errno::last()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(Pid::from_raw(
            i32::try_from(pid).map_err(|_| Errno::EOVERFLOW)?,
        ))),
    }
}

/// A plain fork.
///
/// # Safety
/// The caller must be single-threaded (the child may then do anything the parent could).
pub unsafe fn fork() -> Result<Forked, Errno> {
    // SAFETY: forwarded precondition: single-threaded caller.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => Ok(Forked::Child),
        nix::unistd::ForkResult::Parent { child } => Ok(Forked::Parent(child)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_args_has_the_5_7_layout() {
        // CLONE_ARGS_SIZE_VER2: the kernel refuses CLONE_INTO_CGROUP in a smaller struct.
        assert_eq!(size_of::<CloneArgs>(), 88);
        assert!(unsupported(Errno::ENOSYS) && unsupported(Errno::E2BIG));
        assert!(!unsupported(Errno::EBUSY), "a busy cgroup is a real error");
    }
}
