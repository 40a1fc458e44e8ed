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
    use crate::test_support::lines;

    /// Captured from a real run: Debian 6.1.0-56 cloud under QEMU/TCG, the runner writing
    /// `c` to /proc/sysrq-trigger (scenarios/selftest/panic.toml).
    const SYSRQ_RUN_1: &str = include_str!("../testdata/sysrq-crash-6.1.log");

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
        let oops = include_str!("../testdata/cfs-null-deref-oops.log");
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
