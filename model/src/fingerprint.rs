//! Crash fingerprints: the signature title plus the top frames of the stack that follows
//! it, with everything that varies between runs stripped (addresses, offsets, CPU and PID
//! numbers, `?` guesses), so two runs of the same bug get the same id and two bugs get
//! different ones.

use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::signature::strip_log_prefix;

/// How many frames identify a stack; deeper frames are the call path into the bug,
/// which varies with the workload that triggered it.
const TOP_FRAMES: usize = 5;
/// How far below the title a stack may start (CPU/Hardware/RIP/register lines come first).
const SEARCH_LINES: usize = 80;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// 8 hex digits, a CRC32 of the title and frames.
    pub id: String,
    /// The signature line, normalised (`BUG: soft lockup - CPU#N stuck for Ns! [kworker/N:N:N]`).
    pub title: String,
    /// Top frames, innermost first (`sysrq_handle_crash`, `nf_hook_slow [nf_tables]`).
    pub frames: Vec<String>,
}

/// Frames that belong to the reporting machinery, not to the bug.
const REPORTING: &[&str] = &[
    "dump_stack",
    "dump_stack_lvl",
    "show_stack",
    "panic",
    "vpanic",
    "__warn",
    "warn_slowpath_fmt",
    "report_bug",
    "handle_bug",
    "exc_invalid_op",
    "asm_exc_invalid_op",
    "oops_end",
    "die",
    "__die",
    "__die_body",
    "die_addr",
    "page_fault_oops",
    "kernelmode_fixup_or_oops",
    "__bad_area_nosemaphore",
    "bad_area_nosemaphore",
    "do_user_addr_fault",
    "exc_page_fault",
    "asm_exc_page_fault",
    "do_trap",
    "do_error_trap",
    "exc_general_protection",
    "asm_exc_general_protection",
    "watchdog_timer_fn",
    "__hrtimer_run_queues",
    "hrtimer_interrupt",
    "__sysvec_apic_timer_interrupt",
    "sysvec_apic_timer_interrupt",
    "asm_sysvec_apic_timer_interrupt",
    "nmi_cpu_backtrace",
    "nmi_trigger_cpumask_backtrace",
    "rcu_dump_cpu_stacks",
    "print_cpu_stall",
    "check_cpu_stall",
    "rcu_sched_clock_irq",
    "update_process_times",
    "tick_sched_handle",
    "tick_sched_timer",
];

/// A regex compiled once into `cell`: the crate's patterns are literals, so compiling
/// cannot fail at run time.
pub(crate) fn lazy_regex(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).unwrap_or_else(|_| unreachable_regex()))
}

/// The patterns are literals exercised by the tests; this cannot run.
#[allow(clippy::panic)]
fn unreachable_regex() -> Regex {
    panic!("the crate's regexes are valid")
}

fn frame_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    // ` func+0x16/0x20 [module]`, optionally preceded by `? ` (an unreliable guess).
    lazy_regex(
        &RE,
        r"^\s*(\? )?([A-Za-z0-9_.$]+)\+0x[0-9a-f]+/0x[0-9a-f]+(?:\s+\[([A-Za-z0-9_]+)\])?\s*$",
    )
}

/// The kernel-mode instruction pointer of a register dump: the innermost frame.
pub(crate) fn rip_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    lazy_regex(&RE, r"^RIP: 0010:([A-Za-z0-9_.$]+)\+0x")
}

fn number_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    lazy_regex(&RE, r"0x[0-9a-fA-F]+|\b[0-9a-fA-F]{8,}\b|\d+")
}

/// A frame as fingerprints and summaries name it: compiler-split parts (`foo.cold`,
/// `foo.isra.0`) are the same function, and a module's function says its module.
pub(crate) fn frame_name(function: &str, module: Option<&str>) -> String {
    let base = function.split('.').next().unwrap_or(function);
    match module {
        Some(m) => format!("{base} [{m}]"),
        None => base.to_owned(),
    }
}

/// Numbers and addresses become `N`: they differ between runs, the words do not.
pub fn normalise_title(line: &str) -> String {
    number_regex()
        .replace_all(strip_log_prefix(line).trim(), "N")
        .into_owned()
}

/// Fingerprints the report whose signature line is `lines[at]`.
pub fn fingerprint(lines: &[String], at: usize) -> Fingerprint {
    let title = lines
        .get(at)
        .map(|l| normalise_title(l))
        .unwrap_or_default();
    let mut frames: Vec<String> = Vec::new();
    let window = lines
        .iter()
        .skip(at + 1)
        .take(SEARCH_LINES)
        .map(|l| strip_log_prefix(l));
    let mut in_trace = false;
    for line in window {
        let trimmed = line.trim();
        if let Some(c) = rip_regex().captures(trimmed) {
            push_frame(&mut frames, &c[1], None);
            continue;
        }
        if trimmed == "Call Trace:" {
            in_trace = true;
            continue;
        }
        if !in_trace {
            continue;
        }
        if matches!(
            trimmed,
            "<TASK>" | "</TASK>" | "<IRQ>" | "</IRQ>" | "<NMI>" | "</NMI>"
        ) {
            continue;
        }
        match frame_regex().captures(line) {
            Some(c) if c.get(1).is_some() => {}
            Some(c) => push_frame(&mut frames, &c[2], c.get(3).map(|m| m.as_str())),
            // The stack ended (registers of the user task, "Kernel Offset", a new report).
            None => break,
        }
        if frames.len() >= TOP_FRAMES {
            break;
        }
    }
    frames.truncate(TOP_FRAMES);
    Fingerprint::new(title, frames)
}

impl Fingerprint {
    /// A fingerprint of `title` and `frames`, its id their CRC32: the same names make
    /// the same id in every run.
    pub fn new(title: String, frames: Vec<String>) -> Fingerprint {
        let mut key = title.clone();
        for f in &frames {
            key.push('|');
            key.push_str(f);
        }
        Fingerprint {
            id: format!("{:08x}", crc32fast::hash(key.as_bytes())),
            title,
            frames,
        }
    }
}

fn push_frame(frames: &mut Vec<String>, function: &str, module: Option<&str>) {
    let base = function.split('.').next().unwrap_or(function);
    if REPORTING.contains(&base) {
        return;
    }
    let frame = frame_name(function, module);
    if frames.last() != Some(&frame) && !frames.contains(&frame) {
        frames.push(frame);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    /// Captured from a real run: Debian 6.1.0-56 cloud under QEMU/TCG, the runner writing
    /// `c` to /proc/sysrq-trigger (scenarios/selftest/panic.toml).
    const SYSRQ_RUN_1: &str = "\
[    2.557247] sysrq: Trigger a crash
[    2.558174] Kernel panic - not syncing: sysrq triggered crash
[    2.558464] CPU: 0 PID: 86 Comm: tokio-rt-worker Not tainted 6.1.0-56-cloud-amd64 #1  Debian 6.1.192-2
[    2.558754] Hardware name: QEMU Standard PC (Q35 + ICH9, 2009), BIOS 1.16.2-debian-1.16.2-1 04/01/2014
[    2.559018] Call Trace:
[    2.559666]  <TASK>
[    2.559883]  dump_stack_lvl+0x44/0x5c
[    2.560341]  panic+0x118/0x2f4
[    2.560817]  ? _printk+0x68/0x83
[    2.561735]  sysrq_handle_crash+0x16/0x20
[    2.562715]  __handle_sysrq.cold+0x44/0x11c
[    2.563692]  write_sysrq_trigger+0x24/0x40
[    2.564283]  proc_reg_write+0x56/0xa0
[    2.564386]  vfs_write+0xc7/0x3f0
[    2.564529]  ? do_truncate+0x94/0xe0
[    2.564616]  ? do_truncate+0xa6/0xe0
[    2.564716]  ? mntput_no_expire+0x4a/0x250
[    2.564815]  ? __fget_light+0x9d/0x100
[    2.564907]  ksys_write+0x6b/0xf0
[    2.564988]  do_syscall_64+0x5d/0x90
[    2.565100]  ? do_filp_open+0xaf/0x160
[    2.565267]  ? kmem_cache_free+0x15/0x310
[    2.565372]  ? do_sys_openat2+0x9b/0x170
[    2.565462]  ? exit_to_user_mode_prepare+0x44/0x240
[    2.565570]  ? syscall_exit_to_user_mode+0x1e/0x40
[    2.565664]  ? do_syscall_64+0x69/0x90
[    2.565747]  ? __sysvec_apic_timer_interrupt+0x5d/0x110
[    2.565853]  ? exit_to_user_mode_prepare+0x44/0x240
[    2.565954]  entry_SYSCALL_64_after_hwframe+0x6e/0xd8
[    2.566264] RIP: 0033:0x7fa37da4009f
[    2.566696] Code: 89 54 24 18 48 89 74 24 10 89 7c 24 08 e8 89 b2 fb ff 48 8b 54 24 18 48 8b 74 24 10 41 89 c0 8b 7c 24 08 b8 01 00 00 00 0f 05 <48> 3d 00 f0 ff ff 77 31 44 89 c7 48 89 44 24 08 e8 dc b2 fb ff 48
[    2.569093] RSP: 002b:00007fa37cb36df0 EFLAGS: 00000293 ORIG_RAX: 0000000000000001
[    2.570554] RAX: ffffffffffffffda RBX: 0000000000000001 RCX: 00007fa37da4009f
[    2.571872] RDX: 0000000000000001 RSI: 00007fa37d7d6763 RDI: 000000000000000c
[    2.572957] RBP: 00007fa37cb37010 R08: 0000000000000000 R09: 00007fa37cb36e38
[    2.573222] R10: 00000000000001b6 R11: 0000000000000293 R12: 00007fa37da40050
[    2.573317] R13: 00000000055c6f9a R14: 00007fa37d7d6763 R15: 000000000000000c
[    2.573491]  </TASK>
[    2.573978] Kernel Offset: 0x27400000 from 0xffffffff81000000 (relocation range: 0xffffffff80000000-0xffffffffbfffffff)";

    #[test]
    fn sysrq_crash_fingerprint_is_the_sysrq_path() {
        let l = lines(SYSRQ_RUN_1);
        let fp = fingerprint(&l, 1);
        assert_eq!(
            fp.title,
            "Kernel panic - not syncing: sysrq triggered crash"
        );
        assert_eq!(
            fp.frames,
            [
                "sysrq_handle_crash",
                "__handle_sysrq",
                "write_sysrq_trigger",
                "proc_reg_write",
                "vfs_write"
            ]
        );
        assert_eq!(fp.id.len(), 8);
    }

    #[test]
    fn run_to_run_noise_does_not_change_the_id() {
        let run2 = SYSRQ_RUN_1
            .replace("[    2.5", "[   19.7")
            .replace("PID: 86", "PID: 812")
            .replace("+0x16/0x20", "+0x1a/0x20")
            .replace("? _printk+0x68/0x83", "? vprintk+0x10/0x80");
        assert_eq!(
            fingerprint(&lines(SYSRQ_RUN_1), 1),
            fingerprint(&lines(&run2), 1)
        );
    }

    #[test]
    fn different_bugs_differ() {
        let oops = "\
[   10.000000] BUG: kernel NULL pointer dereference, address: 0000000000000008
[   10.000100] #PF: supervisor write access in kernel mode
[   10.000200] Oops: 0002 [#1] PREEMPT SMP NOPTI
[   10.000300] RIP: 0010:unthrottle_cfs_rq+0x1f4/0x3a0
[   10.000400] Call Trace:
[   10.000500]  <IRQ>
[   10.000600]  distribute_cfs_runtime+0x1a6/0x260
[   10.000700]  sched_cfs_period_timer+0xed/0x1f0
[   10.000800]  ? sched_cfs_slack_timer+0x30/0x30
[   10.000900]  __hrtimer_run_queues+0x112/0x2b0
[   10.001000]  hrtimer_interrupt+0xfe/0x220
[   10.001100]  </IRQ>";
        let fp = fingerprint(&lines(oops), 0);
        assert_eq!(fp.title, "BUG: kernel NULL pointer dereference, address: N");
        assert_eq!(
            fp.frames,
            [
                "unthrottle_cfs_rq",
                "distribute_cfs_runtime",
                "sched_cfs_period_timer"
            ]
        );
        assert_ne!(fp.id, fingerprint(&lines(SYSRQ_RUN_1), 1).id);
    }

    #[test]
    fn titles_lose_their_numbers() {
        assert_eq!(
            normalise_title(
                "[  22.1] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [kworker/0:1:12]"
            ),
            "watchdog: BUG: soft lockup - CPU#N stuck for Ns! [kworker/N:N:N]"
        );
        assert_eq!(fingerprint(&[], 3).frames, Vec::<String>::new());
    }
}
