//! Processes inside cgroups without exec: the populate process of each churned cgroup,
//! the CFS workers, the wake-up probe inside a throttled cgroup.
//!
//! Re-executing the 4 MiB runner for every cgroup cost about 40 ms under TCG, as much as
//! the shell reproducers the runner is meant to beat. Instead, a **zygote** is forked at
//! the top of `main`, while the runner is single-threaded; each runner thread that needs
//! children asks it for a **helper** (a fork of the zygote, with a socket of its own),
//! and the helper forks the children on request. Helpers are single-threaded copies of a
//! small process: forking one is cheap, and its children may do anything (allocate,
//! spawn threads), which a fork of the multi-threaded runner could not.
//!
//! A child joins its cgroup **before** it runs its job, so what the job allocates (page
//! cache, dentries, inodes, kernel stacks of its threads) is charged there: on cgroup v2
//! it is born inside it (`clone3` with `CLONE_INTO_CGROUP`, Linux 5.7+); on v1 and
//! hybrid, and for jobs that create threads, it writes `0` to each `cgroup.procs` first.

pub mod cfs_worker;
mod clone;
pub mod populate;
mod raw;
mod server;
pub mod wakeup;
mod wire;

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use kchaos_model::scenario::CgroupMode;
use nix::fcntl::OFlag;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

pub use self::wire::WireError;

/// The zygote's socket, set once by [`start_zygote`].
static ZYGOTE: OnceLock<Mutex<OwnedFd>> = OnceLock::new();

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("The spawn zygote is not running (it is forked at start-up, before any thread)")]
    NoZygote,
    #[error("Cannot fork the spawn zygote")]
    Fork(#[source] nix::Error),
    #[error("The spawn zygote cannot start a helper: {0}")]
    Helper(String),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("Cannot create a pipe for a child process")]
    Pipe(#[source] nix::Error),
    #[error("Cannot start a process in {cgroup}: {reason}")]
    Start { cgroup: String, reason: String },
    #[error("The process in {cgroup} {}", exit_text(*.code, *.signal, .message))]
    Exited {
        cgroup: String,
        code: Option<i32>,
        signal: Option<i32>,
        message: String,
    },
    #[error("Cannot read the output of the process in {cgroup}")]
    Output {
        cgroup: String,
        #[source]
        source: std::io::Error,
    },
    #[error("The spawn helper answered `{got}` where `{expected}` was due")]
    Protocol { expected: &'static str, got: String },
}

/// Forks the zygote. Call once, at the top of `main`, while the process has one thread:
/// the zygote and everything it forks are copies of the process as it is now.
pub fn start_zygote() -> Result<(), SpawnError> {
    let (mine, theirs) = wire::pair()?;
    // SAFETY: the caller guarantees that no other thread exists yet.
    match unsafe { clone::fork() }.map_err(SpawnError::Fork)? {
        clone::Forked::Child => {
            drop(mine);
            server::zygote_main(theirs)
        }
        clone::Forked::Parent(_) => {
            drop(theirs);
            // A second call keeps the first zygote; this one exits when `mine` drops.
            let _ = ZYGOTE.set(Mutex::new(mine));
            Ok(())
        }
    }
}

/// The cgroup a child joins: one directory per v1 hierarchy, or the one v2 directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub dirs: Vec<PathBuf>,
    /// The directory is a cgroup2 one (`clone3` can place the child in it).
    pub unified: bool,
}

impl Target {
    pub fn new(mode: CgroupMode, dirs: Vec<PathBuf>) -> Target {
        Target {
            dirs,
            unified: mode == CgroupMode::V2,
        }
    }

    /// For messages: the first directory (the others differ only in the hierarchy).
    fn describe(&self) -> String {
        self.dirs
            .first()
            .map_or_else(|| "no cgroup".to_owned(), |d| d.display().to_string())
    }
}

/// What a child does once in its cgroup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Job {
    /// cgroup-churn: write `files` files of `size` bytes under the fresh directory `dir`.
    Populate { dir: PathBuf, files: u32, size: u64 },
    /// cfs-quota: threads that burn and threads that run in bursts (on each CPU, pinned,
    /// with `per_cpu`), until stopped.
    CfsWorker {
        burners: u32,
        sleepers: u32,
        run_us: u64,
        sleep_us: u64,
        per_cpu: bool,
    },
    /// wakeup-latency inside a cgroup: measure (pinned to `cpu` when given, or a thread
    /// pinned on each CPU with `per_cpu`) until stopped, then report as JSON.
    Wakeup {
        interval_us: u64,
        cpu: Option<u32>,
        per_cpu: bool,
    },
}

impl Job {
    /// Jobs that start threads must come from a real `fork` (glibc resets its thread
    /// bookkeeping there, not after a raw `clone3`).
    fn creates_threads(&self) -> bool {
        match self {
            Job::Populate { .. } => false,
            Job::CfsWorker { .. } | Job::Wakeup { .. } => true,
        }
    }

    /// Runs in the child; the error text goes to the parent.
    fn run(&self, io: ChildIo) -> Result<(), String> {
        match self {
            // The helper runs populate jobs as raw children (`raw::child`), never here.
            Job::Populate { .. } => Err("a populate job reached the generic child".into()),
            Job::CfsWorker {
                burners,
                sleepers,
                run_us,
                sleep_us,
                per_cpu,
            } => {
                let stop = io.stop.ok_or("no stop pipe")?;
                let shape = cfs_worker::Shape {
                    burners: *burners,
                    sleepers: *sleepers,
                    run_us: *run_us,
                    sleep_us: *sleep_us,
                    per_cpu: *per_cpu,
                };
                cfs_worker::run(shape, stop)
            }
            Job::Wakeup {
                interval_us,
                cpu,
                per_cpu,
            } => {
                let stop = io.stop.ok_or("no stop pipe")?;
                let out = io.out.ok_or("no output pipe")?;
                wakeup::run_child(*interval_us, *cpu, *per_cpu, stop, out)
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// The pipes a long-running child gets: EOF on `stop` tells it to finish; `out` is
/// where it reports.
#[derive(Debug)]
struct ChildIo {
    stop: Option<File>,
    out: Option<File>,
}

/// How a child gets into its cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Join {
    /// Born there: `clone3(CLONE_INTO_CGROUP)`.
    Clone3,
    /// Forked, then writes its pid to each `cgroup.procs` before anything else.
    Procs,
}

/// `clone3` where it can place the child: one cgroup2 directory and a job that starts
/// no threads; everything else joins through `cgroup.procs`.
fn join_how(target: &Target, creates_threads: bool) -> Join {
    if target.unified && target.dirs.len() == 1 && !creates_threads {
        Join::Clone3
    } else {
        Join::Procs
    }
}

/// Moves the calling process into each cgroup directory (its `cgroup.procs`).
fn join_cgroups(dirs: &[PathBuf]) -> Result<(), String> {
    for dir in dirs {
        let procs = dir.join("cgroup.procs");
        std::fs::write(&procs, b"0").map_err(|e| format!("write 0 to {}: {e}", procs.display()))?;
    }
    Ok(())
}

#[derive(Debug, Serialize, Deserialize)]
enum ZygoteRequest {
    /// Fork a helper serving the socket that comes with the request.
    Helper,
}

#[derive(Debug, Serialize, Deserialize)]
enum ZygoteReply {
    Ready,
    Failed(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    target: Target,
    job: Job,
    /// Send `Started` with the pid (long-running jobs, which may have to be killed);
    /// run-to-completion jobs save the round trip.
    notify_start: bool,
}

#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    Started {
        pid: i32,
        /// Born in the cgroup by `clone3` (else joined through `cgroup.procs`).
        into_cgroup: bool,
    },
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
        /// What the job said went wrong.
        message: String,
    },
    Failed(String),
}

impl Reply {
    fn name(&self) -> String {
        match self {
            Reply::Started { .. } => "Started".into(),
            Reply::Exited { .. } => "Exited".into(),
            Reply::Failed(why) => format!("Failed({why})"),
        }
    }
}

/// A client of one helper: starts children one at a time. Not shared between threads;
/// each thread that spawns gets its own (cheap: one fork of the small zygote).
#[derive(Debug)]
pub struct Spawner {
    sock: OwnedFd,
}

impl Spawner {
    pub fn new() -> Result<Spawner, SpawnError> {
        let zygote = ZYGOTE.get().ok_or(SpawnError::NoZygote)?;
        let zygote = zygote.lock().unwrap_or_else(|p| p.into_inner());
        let (mine, theirs) = wire::pair()?;
        wire::send(
            zygote.as_fd(),
            &ZygoteRequest::Helper,
            &[theirs.as_raw_fd()],
        )?;
        drop(theirs);
        match wire::recv::<ZygoteReply>(zygote.as_fd())?.0 {
            ZygoteReply::Ready => Ok(Spawner { sock: mine }),
            ZygoteReply::Failed(why) => Err(SpawnError::Helper(why)),
        }
    }

    /// Runs `job` in a new process in `target` and waits for it to exit successfully.
    pub fn run(&mut self, target: &Target, job: Job) -> Result<(), SpawnError> {
        let request = Request {
            target: target.clone(),
            job,
            notify_start: false,
        };
        wire::send(self.sock.as_fd(), &request, &[])?;
        self.wait(target)
    }

    /// Starts a long-running job; see [`Running`].
    pub fn start(mut self, target: &Target, job: Job) -> Result<Running, SpawnError> {
        let (stop_r, stop_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(SpawnError::Pipe)?;
        let (out_r, out_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(SpawnError::Pipe)?;
        let pid = self.start_raw(target, job, &[stop_r.as_raw_fd(), out_w.as_raw_fd()])?;
        drop((stop_r, out_w));
        Ok(Running {
            spawner: self,
            target: target.clone(),
            pid,
            stop: Some(stop_w),
            out: File::from(out_r),
        })
    }

    fn start_raw(&mut self, target: &Target, job: Job, fds: &[i32]) -> Result<Pid, SpawnError> {
        let request = Request {
            target: target.clone(),
            job,
            notify_start: true,
        };
        wire::send(self.sock.as_fd(), &request, fds)?;
        match wire::recv::<Reply>(self.sock.as_fd())?.0 {
            Reply::Started { pid, .. } => Ok(Pid::from_raw(pid)),
            other => Err(unexpected(other, "Started", target)),
        }
    }

    /// The `Exited` report of the child started last.
    fn wait(&mut self, target: &Target) -> Result<(), SpawnError> {
        match wire::recv::<Reply>(self.sock.as_fd())?.0 {
            Reply::Exited {
                code: Some(0),
                message,
                ..
            } if message.is_empty() => Ok(()),
            Reply::Exited {
                code,
                signal,
                message,
            } => Err(SpawnError::Exited {
                cgroup: target.describe(),
                code,
                signal,
                message,
            }),
            other => Err(unexpected(other, "Exited", target)),
        }
    }
}

/// A reply other than the `expected` one: the helper could not start the child in
/// `target`'s cgroup, or it broke the protocol.
fn unexpected(reply: Reply, expected: &'static str, target: &Target) -> SpawnError {
    match reply {
        Reply::Failed(reason) => SpawnError::Start {
            cgroup: target.describe(),
            reason,
        },
        other => SpawnError::Protocol {
            expected,
            got: other.name(),
        },
    }
}

/// A long-running child (CFS worker, wake-up probe): it runs until its stop pipe
/// closes. Dropping it without [`Running::stop`] closes the pipe and the helper socket;
/// the child then finishes and the helper reaps it and exits.
#[derive(Debug)]
pub struct Running {
    spawner: Spawner,
    target: Target,
    pid: Pid,
    stop: Option<OwnedFd>,
    out: File,
}

impl Running {
    /// The child's pid (to read its threads in `/proc`).
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// Tells the child to finish (`kill`: at once, with SIGKILL), reads what it wrote,
    /// and waits for its exit; a child that fails (or is killed, unless asked) is an
    /// error.
    pub fn stop(mut self, kill: bool) -> Result<Vec<u8>, SpawnError> {
        drop(self.stop.take());
        if kill {
            // The child may have finished and been reaped since the stop pipe closed;
            // its pid is then free, but pids are handed out in sequence, so it cannot
            // have been reused by another process within these microseconds.
            let _ = nix::sys::signal::kill(self.pid, Signal::SIGKILL);
        }
        let mut out = Vec::new();
        let read = self.out.read_to_end(&mut out);
        match self.spawner.wait(&self.target) {
            Err(SpawnError::Exited {
                signal: Some(libc::SIGKILL),
                ..
            }) if kill => {}
            other => other?,
        }
        read.map_err(|source| SpawnError::Output {
            cgroup: self.target.describe(),
            source,
        })?;
        Ok(out)
    }
}

/// "exited with 1: create /tmp/x/f0: No space left on device (os error 28)".
fn exit_text(code: Option<i32>, signal: Option<i32>, message: &str) -> String {
    let how = match (code, signal) {
        (Some(c), _) => format!("exited with {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        (None, None) => "ended".to_owned(),
    };
    if message.is_empty() {
        how
    } else {
        format!("{how}: {message}")
    }
}

#[cfg(test)]
mod tests;
