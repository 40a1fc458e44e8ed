//! The other side of the spawn path: the zygote, forked once while the runner is still
//! single-threaded, and the helpers it forks on request, one per runner client. A helper
//! forks (or clones into a cgroup) the child that does one job, waits for it and reports
//! how it ended. Both stay single-threaded, so their children may allocate, spawn
//! threads and use the standard library as freely as any new process.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::signal::{signal, SigHandler, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitStatus};

use super::clone::{self, Forked};
use super::raw;
use super::wire::{self, WireError};
use super::{join_how, ChildIo, Job, Join, Reply, Request, ZygoteReply, ZygoteRequest};

/// Exit code of a child whose job panicked (as Rust's runtime uses).
const PANIC_EXIT: i32 = 101;

/// Closes every descriptor the zygote inherited but stdio and its socket. It lives as long
/// as the runner: a pipe's write end it kept by accident (another thread's, open at the
/// fork) would keep that pipe's reader from ever seeing end-of-file.
fn close_inherited(sock: &OwnedFd) {
    let keep = u32::try_from(sock.as_raw_fd()).unwrap_or(u32::MAX);
    let ranges = [
        (3, keep.saturating_sub(1)),
        (keep.saturating_add(1), u32::MAX),
    ];
    for (first, last) in ranges {
        if first <= last && first >= 3 {
            // SAFETY: close_range(2) only closes descriptors; none of those in range is
            // used by this single-threaded process. ENOSYS (before 5.9) leaves them open.
            unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
        }
    }
}

/// The zygote: serves `Helper` requests until the runner closes its socket.
pub(super) fn zygote_main(sock: OwnedFd) -> ! {
    close_inherited(&sock);
    // Helpers exit when their client hangs up; with SIGCHLD ignored the kernel reaps
    // them, so nobody has to wait here.
    // SAFETY: installs SIG_IGN, no handler code runs; this process is single-threaded.
    let _ = unsafe { signal(Signal::SIGCHLD, SigHandler::SigIgn) };
    loop {
        let (request, fds) = match wire::recv::<ZygoteRequest>(sock.as_fd()) {
            Ok(r) => r,
            Err(WireError::Closed) => exit_now(0),
            Err(e) => {
                let _ = wire::send(sock.as_fd(), &ZygoteReply::Failed(e.to_string()), &[]);
                continue;
            }
        };
        let ZygoteRequest::Helper = request;
        let Some(client) = fds.into_iter().next() else {
            let _ = wire::send(
                sock.as_fd(),
                &ZygoteReply::Failed("no socket came with the request".into()),
                &[],
            );
            continue;
        };
        // SAFETY: the zygote is single-threaded (forked before any thread started).
        match unsafe { clone::fork() } {
            Ok(Forked::Child) => {
                drop(sock);
                helper_main(client)
            }
            Ok(Forked::Parent(_)) => {
                drop(client);
                let _ = wire::send(sock.as_fd(), &ZygoteReply::Ready, &[]);
            }
            Err(e) => {
                let _ = wire::send(
                    sock.as_fd(),
                    &ZygoteReply::Failed(format!("fork a spawn helper: {e}")),
                    &[],
                );
            }
        }
    }
}

/// A helper: one request at a time from its client, until the client hangs up.
fn helper_main(sock: OwnedFd) -> ! {
    // SAFETY: restores the default disposition (no handler); single-threaded process.
    let _ = unsafe { signal(Signal::SIGCHLD, SigHandler::SigDfl) };
    let mut sock = sock;
    loop {
        match wire::recv::<Request>(sock.as_fd()) {
            Ok((request, fds)) => sock = serve(sock, request, fds),
            Err(WireError::Closed) => exit_now(0),
            Err(e) => {
                let _ = wire::send(sock.as_fd(), &Reply::Failed(e.to_string()), &[]);
            }
        }
    }
}

/// Starts one child, reports `Started`, waits for it, reports `Exited`. Takes the socket
/// and hands it back, so the child can close its copy.
fn serve(sock: OwnedFd, request: Request, fds: Vec<OwnedFd>) -> OwnedFd {
    let fail = |sock: OwnedFd, why: String| {
        let _ = wire::send(sock.as_fd(), &Reply::Failed(why), &[]);
        sock
    };
    let (err_r, err_w) = match nix::unistd::pipe2(OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return fail(sock, format!("create a pipe: {e}")),
    };
    let mut join = join_how(&request.target, request.job.creates_threads());
    // Populate children run on a plan made here, before the clone (see `raw`).
    let plan = match &request.job {
        Job::Populate { dir, files, size } => {
            match raw::Plan::new(&request.target, dir, *files, *size) {
                Some(plan) => Some(plan),
                None => {
                    return fail(
                        sock,
                        format!("a path with a NUL byte under {}", dir.display()),
                    )
                }
            }
        }
        _ => None,
    };
    let dir = match (&join, request.target.dirs.first()) {
        (Join::Clone3, Some(dir)) => match open_dir(dir) {
            Ok(fd) => Some(fd),
            Err(e) => return fail(sock, format!("open {}: {e}", dir.display())),
        },
        _ => None,
    };
    let forked = match &dir {
        // SAFETY: a helper is single-threaded; the child runs only `child_main`, which
        // creates no threads for jobs routed here (`join_how`).
        Some(fd) => match unsafe { clone::clone_into(fd.as_fd()) } {
            Err(e) if clone::unsupported(e) => {
                join = Join::Procs;
                // SAFETY: single-threaded helper.
                unsafe { clone::fork() }
            }
            other => other,
        },
        // SAFETY: single-threaded helper.
        None => unsafe { clone::fork() },
    };
    match forked {
        Err(e) => fail(sock, format!("clone/fork: {e}")),
        Ok(Forked::Child) => {
            // The helper's socket is the helper's: a child holding it would keep the
            // client's end open after the helper exits.
            drop((sock, err_r));
            if let Some(plan) = &plan {
                exit_now(raw::child(plan, join == Join::Procs, err_w.as_fd()));
            }
            child_main(request, join, fds, err_w)
        }
        Ok(Forked::Parent(pid)) => {
            drop((fds, err_w, dir));
            let started = Reply::Started {
                pid: pid.as_raw(),
                into_cgroup: join == Join::Clone3,
            };
            if request.notify_start && wire::send(sock.as_fd(), &started, &[]).is_err() {
                // The client is gone; the child still has to be reaped.
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            }
            let status = loop {
                match waitpid(pid, None) {
                    Err(nix::Error::EINTR) => continue,
                    other => break other,
                }
            };
            let mut report = Vec::new();
            let _ = File::from(err_r).read_to_end(&mut report);
            let message = match plan.as_ref().and_then(|p| p.describe(&report)) {
                Some(e) => e.chain(),
                None => String::from_utf8_lossy(&report).into_owned(),
            };
            let reply = match status {
                Ok(WaitStatus::Exited(_, code)) => Reply::Exited {
                    code: Some(code),
                    signal: None,
                    message,
                },
                Ok(WaitStatus::Signaled(_, sig, _)) => Reply::Exited {
                    code: None,
                    signal: Some(sig as i32),
                    message,
                },
                Ok(other) => Reply::Failed(format!("unexpected wait status {other:?}")),
                Err(e) => Reply::Failed(format!("wait for {pid}: {e}")),
            };
            let _ = wire::send(sock.as_fd(), &reply, &[]);
            sock
        }
    }
}

fn open_dir(dir: &Path) -> nix::Result<OwnedFd> {
    nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// The child: joins its cgroups unless it was born in one, runs the job, exits. It
/// never returns into the helper's loop, whatever happens.
fn child_main(request: Request, join: Join, mut fds: Vec<OwnedFd>, err_w: OwnedFd) -> ! {
    let io = ChildIo {
        stop: (!fds.is_empty()).then(|| File::from(fds.remove(0))),
        out: (!fds.is_empty()).then(|| File::from(fds.remove(0))),
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if join == Join::Procs {
            super::join_cgroups(&request.target.dirs)?;
        }
        request.job.run(io)
    }));
    let (code, message) = match result {
        Ok(Ok(())) => (0, String::new()),
        Ok(Err(e)) => (1, e),
        Err(_) => (PANIC_EXIT, "the job panicked".to_owned()),
    };
    if !message.is_empty() {
        let _ = File::from(err_w).write_all(message.as_bytes());
    }
    exit_now(code)
}

/// Ends this process at once: no destructors, no atexit handlers, no flush of stdio
/// buffers (in a child they are copies of the parent's and would print twice).
fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` takes no pointers and does not return; nothing runs after it.
    unsafe { libc::_exit(code) }
}
