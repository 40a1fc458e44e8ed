//! The guest's CPUs for per-CPU measures: which ones the calling thread may run on,
//! pinning a thread to one, and reading what each thread of a process received on the
//! CPU it is pinned to.

use std::path::{Path, PathBuf};

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

use crate::kfile::{self, KernelFileError};

/// The CPUs the calling thread may run on, in order (every online CPU for the runner
/// and its children; never empty: the thread itself runs on one).
pub fn allowed() -> Vec<usize> {
    let set = sched_getaffinity(Pid::from_raw(0)).unwrap_or_else(|_| CpuSet::new());
    let cpus: Vec<usize> = (0..CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect();
    if cpus.is_empty() {
        vec![0]
    } else {
        cpus
    }
}

/// Pins the calling thread to `cpu`.
pub fn pin(cpu: usize) -> Result<(), String> {
    let mut set = CpuSet::new();
    set.set(cpu)
        .map_err(|e| format!("CPU {cpu} is beyond the CPU set: {e}"))?;
    sched_setaffinity(Pid::from_raw(0), &set)
        .map_err(|e| format!("pin a thread to CPU {cpu} (sched_setaffinity): {e}"))
}

/// What one thread received: CPU time, and time runnable but waiting for a CPU when the
/// kernel keeps it (`SCHED_INFO`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThreadTime {
    /// The one CPU the thread may run on.
    pub cpu: usize,
    pub run_ns: f64,
    pub delay_ns: Option<f64>,
}

/// Every thread of `pid` pinned to a single CPU (`Cpus_allowed_list` of one CPU), with
/// what it received: `schedstat` where the kernel has it, else `utime + stime` from
/// `stat` (clock ticks). Threads that may run anywhere (the process's main thread,
/// waiting to be stopped) are left out.
pub fn pinned_threads(pid: i32) -> Result<Vec<ThreadTime>, KernelFileError> {
    let dir = PathBuf::from(format!("/proc/{pid}/task"));
    let entries = std::fs::read_dir(&dir).map_err(|source| KernelFileError::Read {
        path: dir.clone(),
        source,
    })?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let task = entry.path();
        // A thread that exits meanwhile is not an error: it has nothing left to say.
        let Ok(status) = kfile::read(&task.join("status")) else {
            continue;
        };
        let Some(cpu) = single_cpu(&status) else {
            continue;
        };
        match times(&task) {
            Ok((run_ns, delay_ns)) => out.push(ThreadTime {
                cpu,
                run_ns,
                delay_ns,
            }),
            Err(e) if e.errno() == Some(libc::ENOENT) || e.errno() == Some(libc::ESRCH) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// `(run, delay)` of one thread, in nanoseconds.
fn times(task: &Path) -> Result<(f64, Option<f64>), KernelFileError> {
    let schedstat = task.join("schedstat");
    match kfile::read(&schedstat) {
        Ok(text) => parse_schedstat(&text)
            .map(|(run, delay)| (run, Some(delay)))
            .ok_or_else(|| KernelFileError::Parse {
                path: schedstat,
                reason: format!("not `run_ns delay_ns slices`: `{}`", text.trim()),
            }),
        Err(e) if e.errno() == Some(libc::ENOENT) => {
            let stat = task.join("stat");
            let text = kfile::read(&stat)?;
            let ticks = parse_stat_ticks(&text).ok_or_else(|| KernelFileError::Parse {
                path: stat,
                reason: "no utime and stime fields".to_owned(),
            })?;
            Ok((ticks * 1e9 / clock_ticks(), None))
        }
        Err(e) => Err(e),
    }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

/// The CPU of a `status` file whose `Cpus_allowed_list` names exactly one.
pub fn single_cpu(status: &str) -> Option<usize> {
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
        .trim();
    if list.contains([',', '-']) {
        return None;
    }
    list.parse().ok()
}

/// `/proc/.../schedstat`: time on the CPU and time waiting on a run queue (ns).
pub fn parse_schedstat(text: &str) -> Option<(f64, f64)> {
    let mut fields = text.split_whitespace().map(str::parse::<f64>);
    match (fields.next(), fields.next()) {
        (Some(Ok(run)), Some(Ok(delay))) => Some((run, delay)),
        _ => None,
    }
}

/// `utime + stime` (clock ticks) of a `stat` line; the command name may hold spaces and
/// parentheses, so fields are counted after its last `)`.
pub fn parse_stat_ticks(text: &str) -> Option<f64> {
    let rest = &text[text.rfind(')')? + 1..];
    // After the name: state is field 3, utime field 14, stime field 15.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_read_by_their_own_rules() {
        let status = "Name:\tcfs\nCpus_allowed:\t2\nCpus_allowed_list:\t1\n";
        assert_eq!(single_cpu(status), Some(1));
        for many in ["0-1", "0,2", ""] {
            assert_eq!(
                single_cpu(&format!("Cpus_allowed_list:\t{many}\n")),
                None,
                "{many}"
            );
        }
        assert_eq!(single_cpu("Name:\tx\n"), None);
        assert_eq!(
            parse_schedstat("123456 7890 12\n"),
            Some((123_456.0, 7890.0))
        );
        assert_eq!(parse_schedstat("123456\n"), None);
        let stat = "42 (a) b) c) R 1 42 42 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 1 0";
        assert_eq!(parse_stat_ticks(stat), Some(281.0));
        assert_eq!(parse_stat_ticks("42 (x) R 1"), None);
    }

    #[test]
    fn a_pinned_thread_is_found_with_what_it_received() {
        let cpu = allowed()[0];
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::spawn(move || {
            pin(cpu).unwrap();
            // 30 ms of CPU, however long a loaded host takes to give it.
            let cpu_time = || {
                nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
                    .map(std::time::Duration::from)
                    .unwrap()
            };
            while cpu_time() < std::time::Duration::from_millis(30) {
                std::hint::black_box(0u64);
            }
            tx.send(()).unwrap();
            done_rx.recv().unwrap();
        });
        rx.recv().unwrap();
        let threads = pinned_threads(i32::try_from(std::process::id()).unwrap()).unwrap();
        done_tx.send(()).unwrap();
        worker.join().unwrap();
        // Other tests' threads may be pinned too; this one burned 30 ms of CPU.
        assert!(
            threads.iter().any(|t| t.cpu == cpu && t.run_ns >= 25e6),
            "{threads:?}"
        );
    }
}
