//! Where a stuck kernel is stuck, read from the task dumps a hang collects: the tasks
//! that sysrq `w` (or a hung-task report) shows blocked in D state with their stacks,
//! and the CPUs that sysrq `l` shows busy in the kernel. A `hang` verdict then names
//! the code path (`msleep <- cgroup_rmdir <- kernfs_iop_rmdir <- vfs_rmdir`) instead of
//! "a workload is stuck", and its fingerprint lets repro, gate and known issues match it.
//!
//! Pure: lines in, a summary out. The dump formats are the kernel's (`sched_show_task`
//! since 5.8 `task:comm state:D stack:0 pid:45 …`, before it `comm D 0 45 2 0x…`;
//! `NMI backtrace for cpu N`), with the log prefixes of the console or kmsg.

use std::sync::OnceLock;

use regex::Regex;

use crate::fingerprint::{frame_name, lazy_regex as regex, rip_regex, Fingerprint};
use crate::signature::strip_log_prefix;

/// Frames that only say a task sleeps: the code that made it sleep comes after them.
const SLEEPING: &[&str] = &[
    "__schedule",
    "schedule",
    "schedule_timeout",
    "schedule_timeout_uninterruptible",
    "schedule_preempt_disabled",
    "schedule_hrtimeout_range_clock",
    "schedule_hrtimeout_range",
    "schedule_hrtimeout",
    "io_schedule",
    "io_schedule_timeout",
    "__wait_for_common",
    "wait_for_common",
    "preempt_schedule_common",
    "__cond_resched",
];

/// Frames of the dump's own machinery (sysrq `l`'s NMI handler) or of an idle CPU.
const MACHINERY: &[&str] = &[
    "nmi_cpu_backtrace",
    "nmi_cpu_backtrace_handler",
    "nmi_handle",
    "default_do_nmi",
    "exc_nmi",
    "end_repeat_nmi",
    "show_regs",
    "dump_stack",
    "dump_stack_lvl",
    "arch_trigger_cpumask_backtrace",
    "nmi_trigger_cpumask_backtrace",
    "sysrq_handle_showallcpus",
    "__handle_sysrq",
];
/// A CPU whose stack has one of these is not stuck: it is handling the very sysrq key
/// that asked for the dump, or switching tasks.
const NOT_STUCK: &[&str] = &["sysrq_filter", "__handle_sysrq", "__schedule", "schedule"];
const IDLE: &[&str] = &[
    "default_idle",
    "default_idle_call",
    "do_idle",
    "cpu_startup_entry",
    "cpuidle_enter_state",
    "native_safe_halt",
    "arch_cpu_idle",
    "acpi_idle_do_entry",
    "mwait_idle",
    "poll_idle",
];

/// Frames named in a summary per task or CPU.
const SHOWN_FRAMES: usize = 4;
/// Distinct stacks named in a summary.
const SHOWN_STACKS: usize = 3;

/// A task the dump shows blocked in uninterruptible sleep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockedTask {
    pub comm: String,
    pub pid: u32,
    /// Innermost first, sleeping machinery dropped, names without offsets.
    pub frames: Vec<String>,
    /// It entered the kernel through a system call: a process's own request is stuck,
    /// not only a kernel thread's background work.
    pub in_syscall: bool,
}

/// A CPU a backtrace shows running kernel code (not idle).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusyCpu {
    pub cpu: u32,
    pub frames: Vec<String>,
}

/// Everything a dump says about where the kernel is stuck.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stuck {
    pub blocked: Vec<BlockedTask>,
    pub busy: Vec<BusyCpu>,
}

/// `task:comm state:D stack:0 pid:45 …` (5.8+) or `comm D 0 45 2 0x…` (older).
fn task_header(line: &str) -> Option<(String, char, u32)> {
    static NEW: OnceLock<Regex> = OnceLock::new();
    static OLD: OnceLock<Regex> = OnceLock::new();
    let new = regex(
        &NEW,
        r"^task:(.{1,16}?)\s+state:(\S)\s+stack:\s*\d+\s+pid:\s*(\d+)",
    );
    let old = regex(
        &OLD,
        r"^(\S.{0,15}?)\s+([RSDTtXZPI])\s+\d+\s+(\d+)\s+\d+\s+0x[0-9a-f]+",
    );
    let c = new.captures(line).or_else(|| old.captures(line))?;
    let state = c[2].chars().next()?;
    Some((c[1].trim().to_owned(), state, c[3].parse().ok()?))
}

/// A stack frame's function (`msleep+0x2d/0x40` → `msleep`, `__mutex_lock.constprop.0`
/// → `__mutex_lock`); `None` for a `?` guess or a line that is no frame.
fn frame(line: &str) -> Option<String> {
    static FRAME: OnceLock<Regex> = OnceLock::new();
    let re = regex(
        &FRAME,
        r"^(?:\[<[0-9a-f]+>\]\s*)?(\? )?([A-Za-z0-9_.$]+)\+0x[0-9a-f]+/0x[0-9a-f]+(?:\s+\[([A-Za-z0-9_]+)\])?\s*$",
    );
    let c = re.captures(line)?;
    if c.get(1).is_some() {
        return Some(String::new());
    }
    Some(frame_name(&c[2], c.get(3).map(|m| m.as_str())))
}

/// Lines a stack may have besides frames without ending.
fn stack_noise(line: &str) -> bool {
    matches!(
        line,
        "Call Trace:" | "<TASK>" | "</TASK>" | "<IRQ>" | "</IRQ>" | "<NMI>" | "</NMI>"
    ) || line.starts_with("Workqueue:")
        || line.starts_with("CPU:")
        || line.starts_with("Hardware name:")
        || line.starts_with("RIP:")
        || line.starts_with("RSP:")
        || line.starts_with("Code:")
        || line.starts_with("R") && line.len() > 3 && line.as_bytes().get(3) == Some(&b':')
        || line.starts_with("FS:")
        || line.starts_with("CS:")
        || line.starts_with("CR2:")
        || line.starts_with("DR")
        || line.starts_with("PKRU:")
        || line.starts_with("EFLAGS")
}

fn base_of(frame: &str) -> &str {
    frame.split(' ').next().unwrap_or(frame)
}

/// Reads every blocked task and busy CPU in `lines` (console or kmsg, prefixes and all);
/// a task shown twice (`w` and `t`) counts once.
pub fn parse(lines: &[String]) -> Stuck {
    let mut reader = DumpReader::default();
    for raw in lines {
        reader.line(strip_log_prefix(raw).trim());
    }
    reader.finish()
}

/// What the line being read belongs to.
#[derive(Debug, Clone, Copy, Default)]
enum Reading {
    #[default]
    Nothing,
    /// The stack of `blocked[i]`.
    Task(usize),
    /// The backtrace of `busy[i]`.
    Cpu(usize),
}

/// A dump read line by line: the tasks and CPUs so far, and the stack being read.
#[derive(Debug, Default)]
struct DumpReader {
    stuck: Stuck,
    reading: Reading,
    /// Each busy CPU's frames as read, before idle and machinery are told apart.
    raw_cpu: Vec<Vec<String>>,
}

impl DumpReader {
    fn line(&mut self, line: &str) {
        static NMI: OnceLock<Regex> = OnceLock::new();
        if let Some((comm, state, pid)) = task_header(line) {
            self.task(comm, state, pid);
        } else if let Some(c) = regex(&NMI, r"NMI backtrace for cpu (\d+)").captures(line) {
            self.cpu(c[1].parse().unwrap_or(0));
        } else {
            self.reading = match self.reading {
                Reading::Nothing => Reading::Nothing,
                Reading::Task(i) => self.task_line(i, line),
                Reading::Cpu(i) => self.cpu_line(i, line),
            };
        }
    }

    /// A task header: its stack is read when it is blocked and not seen before.
    fn task(&mut self, comm: String, state: char, pid: u32) {
        self.reading = Reading::Nothing;
        if state == 'D' && !self.stuck.blocked.iter().any(|t| t.pid == pid) {
            self.stuck.blocked.push(BlockedTask {
                comm,
                pid,
                frames: Vec::new(),
                in_syscall: false,
            });
            self.reading = Reading::Task(self.stuck.blocked.len() - 1);
        }
    }

    /// `NMI backtrace for cpu N`: its backtrace follows.
    fn cpu(&mut self, cpu: u32) {
        self.stuck.busy.push(BusyCpu {
            cpu,
            frames: Vec::new(),
        });
        self.raw_cpu.push(Vec::new());
        self.reading = Reading::Cpu(self.stuck.busy.len() - 1);
    }

    /// A line of blocked task `i`'s stack; what to read next.
    fn task_line(&mut self, i: usize, line: &str) -> Reading {
        match frame(line) {
            Some(f) if f.is_empty() => {}
            Some(f) => {
                let t = &mut self.stuck.blocked[i];
                if f.starts_with("do_syscall_64") || f.starts_with("entry_SYSCALL") {
                    t.in_syscall = true;
                }
                let sleeping = t.frames.is_empty() && SLEEPING.contains(&base_of(&f));
                if !sleeping && !t.frames.contains(&f) {
                    t.frames.push(f);
                }
            }
            None if stack_noise(line) => {}
            None => return Reading::Nothing,
        }
        Reading::Task(i)
    }

    /// A line of busy CPU `i`'s backtrace; what to read next.
    fn cpu_line(&mut self, i: usize, line: &str) -> Reading {
        let frames = &mut self.raw_cpu[i];
        if let Some(c) = rip_regex().captures(line) {
            frames.push(frame_name(&c[1], None));
            return Reading::Cpu(i);
        }
        match frame(line) {
            Some(f) if f.is_empty() => {}
            Some(f) => {
                if !frames.contains(&f) {
                    frames.push(f);
                }
            }
            None if stack_noise(line) || line.starts_with("Sending NMI") => {}
            None => return Reading::Nothing,
        }
        Reading::Cpu(i)
    }

    /// A CPU is busy unless its stack is an idle loop, the dump's own key or a task
    /// switch; the dump's own frames go, and a CPU shown twice (the key pressed again)
    /// counts once.
    fn finish(self) -> Stuck {
        let mut stuck = self.stuck;
        for (cpu, frames) in stuck.busy.iter_mut().zip(self.raw_cpu) {
            let idle = frames
                .iter()
                .any(|f| IDLE.contains(&base_of(f)) || NOT_STUCK.contains(&base_of(f)));
            cpu.frames = if idle {
                Vec::new()
            } else {
                frames
                    .into_iter()
                    .filter(|f| !MACHINERY.contains(&base_of(f)))
                    .collect()
            };
        }
        stuck.busy.retain(|c| !c.frames.is_empty());
        let mut seen = Vec::new();
        stuck.busy.retain(|c| {
            let new = !seen.contains(&c.cpu);
            seen.push(c.cpu);
            new
        });
        stuck
    }
}

impl Stuck {
    pub fn is_empty(&self) -> bool {
        self.blocked.is_empty() && self.busy.is_empty()
    }

    /// Blocked tasks, a process's own system call first (the workload stuck in the
    /// kernel), then kernel threads; tasks with the same stack grouped.
    fn groups(&self) -> Vec<(Vec<&BlockedTask>, &[String])> {
        let mut ordered: Vec<&BlockedTask> = self.blocked.iter().collect();
        ordered.sort_by_key(|t| !t.in_syscall);
        let mut groups: Vec<(Vec<&BlockedTask>, &[String])> = Vec::new();
        for t in ordered {
            let top = &t.frames[..t.frames.len().min(SHOWN_FRAMES)];
            match groups.iter_mut().find(|(_, f)| *f == top) {
                Some((tasks, _)) => tasks.push(t),
                None => groups.push((vec![t], top)),
            }
        }
        groups
    }

    /// One line for a verdict's reason: `2 tasks blocked in D state: `exe` (pid 45) in
    /// msleep <- cgroup_rmdir <- kernfs_iop_rmdir <- vfs_rmdir; `kworker/0:1` (pid 12)
    /// in __mutex_lock <- css_killed_work_fn` (then busy CPUs), or `None` when the
    /// dumps show nothing stuck.
    pub fn summary(&self) -> Option<String> {
        let mut parts = Vec::new();
        if !self.blocked.is_empty() {
            let groups = self.groups();
            let shown: Vec<String> = groups
                .iter()
                .take(SHOWN_STACKS)
                .map(|(tasks, frames)| {
                    let who = match tasks.as_slice() {
                        [one] => format!("`{}` (pid {})", one.comm, one.pid),
                        [first, rest @ ..] => {
                            format!(
                                "`{}` (pid {}) and {} more",
                                first.comm,
                                first.pid,
                                rest.len()
                            )
                        }
                        [] => String::new(),
                    };
                    if frames.is_empty() {
                        who
                    } else {
                        format!("{who} in {}", frames.join(" <- "))
                    }
                })
                .collect();
            let more = groups.len().saturating_sub(SHOWN_STACKS);
            let n = self.blocked.len();
            parts.push(format!(
                "{n} task{} blocked in D state: {}{}",
                if n == 1 { "" } else { "s" },
                shown.join("; "),
                if more > 0 {
                    format!("; {more} more stacks")
                } else {
                    String::new()
                }
            ));
        }
        // Busy CPUs explain a hang that has no blocked task; beside blocked tasks they
        // are wherever the NMI caught them.
        if self.blocked.is_empty() {
            for c in self.busy.iter().take(SHOWN_STACKS) {
                let top = &c.frames[..c.frames.len().min(SHOWN_FRAMES)];
                parts.push(format!("CPU {} busy in {}", c.cpu, top.join(" <- ")));
            }
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    /// A fingerprint of the hang: the first blocked stack (a system call's first), else
    /// the first busy CPU's; stable across runs (names only).
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        let (title, frames) = if let Some((_, frames)) = self.groups().first() {
            ("hang: task blocked in D state", frames.to_vec())
        } else {
            let cpu = self.busy.first()?;
            (
                "hang: CPU busy in the kernel",
                cpu.frames[..cpu.frames.len().min(SHOWN_FRAMES)].to_vec(),
            )
        };
        Some(Fingerprint::new(title.to_owned(), frames))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::lines;

    /// The issue's case: a cgroup removal sleeping 25 s under cgroup_mutex, as sysrq `w`
    /// prints it on Debian's 6.1 (console prefixes), and a kworker waiting for the
    /// mutex.
    const RMDIR_STALL: &str = include_str!("../testdata/rmdir-stall.log");

    #[test]
    fn a_cgroup_rmdir_stall_is_named_where_it_sleeps() {
        let stuck = parse(&lines(RMDIR_STALL));
        assert_eq!(stuck.blocked.len(), 2, "{stuck:?}");
        assert_eq!(
            stuck.summary().unwrap(),
            "2 tasks blocked in D state: `exe` (pid 45) in msleep <- cgroup_rmdir <- kernfs_iop_rmdir <- vfs_rmdir; `kworker/0:2` (pid 12) in __mutex_lock <- css_killed_work_fn <- process_one_work <- worker_thread"
        );
        let fp = stuck.fingerprint().unwrap();
        assert_eq!(fp.frames[..2], ["msleep", "cgroup_rmdir"]);
        assert_eq!(fp.title, "hang: task blocked in D state");
    }

    #[test]
    fn the_same_stall_from_kmsg_and_in_another_run_has_the_same_fingerprint() {
        // kmsg records carry no console prefix; another run has other pids and offsets.
        let kmsg: Vec<String> = RMDIR_STALL
            .lines()
            .map(|l| strip_log_prefix(l).to_owned())
            .collect();
        let other = RMDIR_STALL
            .replace("pid:45", "pid:301")
            .replace("+0x5a/0x140", "+0x61/0x140");
        let fp = |l: &[String]| parse(l).fingerprint().unwrap().id;
        assert_eq!(fp(&kmsg), fp(&lines(RMDIR_STALL)));
        assert_eq!(fp(&lines(&other)), fp(&lines(RMDIR_STALL)));
    }

    #[test]
    fn a_task_in_both_dumps_counts_once_and_same_stacks_group() {
        let twice = format!("{RMDIR_STALL}\n[   41.0] sysrq: Show State\n{RMDIR_STALL}");
        assert_eq!(parse(&lines(&twice)).blocked.len(), 2);
        let two_workers = RMDIR_STALL.replace(
            "task:kworker/1:1     state:I stack:0     pid:20",
            "task:exe             state:D stack:0     pid:46    ppid:1      flags:0x0\n Call Trace:\n msleep+0x2d/0x40\n cgroup_rmdir+0x5a/0x140\n kernfs_iop_rmdir+0x76/0xc0\n vfs_rmdir+0x9a/0x1e0\n do_syscall_64+0x58/0xc0",
        );
        let summary = parse(&lines(&two_workers)).summary().unwrap();
        assert!(
            summary.starts_with("3 tasks blocked in D state: `exe` (pid 45) and 1 more in msleep"),
            "{summary}"
        );
    }

    #[test]
    fn the_pre_5_8_format_is_read_too() {
        let old = include_str!("../testdata/blocked-pre-5.8.log");
        let stuck = parse(&lines(old));
        assert_eq!(stuck.blocked[0].comm, "kworker/u2:1");
        assert_eq!(stuck.blocked[0].frames, ["rtnl_lock", "cleanup_net"]);
    }

    #[test]
    fn a_busy_cpu_is_named_and_idle_ones_are_not() {
        let l = include_str!("../testdata/busy-cpu.log");
        let stuck = parse(&lines(l));
        assert!(stuck.blocked.is_empty());
        assert_eq!(
            stuck.summary().unwrap(),
            "CPU 1 busy in sched_cfs_period_timer <- __hrtimer_run_queues <- hrtimer_interrupt <- __sysvec_apic_timer_interrupt"
        );
        assert_eq!(
            stuck.fingerprint().unwrap().title,
            "hang: CPU busy in the kernel"
        );
    }

    /// From a real run (veth storm on the netdev-leak defect kernel): beside the
    /// blocked task, the `l` dump showed the CPU handling the sysrq key and one in a
    /// task switch; neither is where the kernel is stuck.
    #[test]
    fn the_cpu_handling_the_key_and_a_task_switch_are_not_stuck() {
        let l = include_str!("../testdata/sysrq-key-and-task-switch.log");
        let stuck = parse(&lines(l));
        assert!(stuck.busy.is_empty(), "{stuck:?}");
        assert_eq!(
            stuck.summary().unwrap(),
            "1 task blocked in D state: `tokio-rt-worker` (pid 48) in msleep <- netdev_run_todo <- rtnetlink_rcv_msg <- netlink_rcv_skb"
        );
    }

    #[test]
    fn nothing_stuck_says_nothing() {
        let stuck = parse(&lines(
            "[ 1.0] sysrq: Show Blocked State\n[ 1.1] sysrq: Show State",
        ));
        assert!(stuck.is_empty());
        assert_eq!(stuck.summary(), None);
        assert_eq!(stuck.fingerprint(), None);
    }
}
