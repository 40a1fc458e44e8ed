//! Evidence from a guest that crashed or stopped answering, collected before QEMU is
//! killed: sysrq task dumps (through the emulated keyboard, so they work on a wedged
//! guest) and, when asked for, a compressed dump of guest memory for `crash`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::vm::qmp::Qmp;
use kchaos_model::error_chain;

/// The task dumps asked of a hung guest, each key with the header the kernel prints on
/// the console when it handles it (`sysrq: ` and the key's action, the same text from
/// 4.x to 6.x): `7` first, the console's loglevel raised to 7 so the task lines
/// (KERN_INFO) reach the console too, the witness that survives a runner that no
/// longer forwards kmsg; `w`, blocked (D state) tasks; `t`, every task with its stack;
/// `l`, backtraces of every active CPU.
pub const SYSRQ_DUMPS: [(char, &str); 4] = [
    ('7', "Changing Loglevel"),
    ('w', "Show Blocked State"),
    ('t', "Show State"),
    ('l', "Show backtrace of all active CPUs"),
];

/// Every key of [`SYSRQ_DUMPS`], in order.
pub fn sysrq_keys() -> Vec<char> {
    SYSRQ_DUMPS.iter().map(|(key, _)| *key).collect()
}

/// How many times a key whose dump never showed is pressed in all.
pub const SYSRQ_ATTEMPTS: u8 = 3;

/// The keys of [`SYSRQ_DUMPS`] whose header is not among the console `lines`. A key
/// pressed while the guest stalls can be lost (the emulated keyboard's queue is short,
/// and a stalled guest does not drain it), which once left a hang without its blocked
/// tasks; the harness presses those keys again.
pub fn missing_dumps(lines: &[String]) -> Vec<char> {
    SYSRQ_DUMPS
        .iter()
        .filter(|(_, header)| {
            !lines.iter().any(|line| {
                let line = line.trim_end();
                line.to_ascii_lowercase().contains("sysrq") && line.ends_with(header)
            })
        })
        .map(|(key, _)| *key)
        .collect()
}

/// Sends sysrq `keys`. Errors become notes: evidence is best effort.
pub async fn send_sysrq(qmp_socket: &Path, keys: &[char], notes: &mut Vec<String>) {
    let mut qmp = match Qmp::connect(qmp_socket).await {
        Ok(q) => q,
        Err(e) => {
            notes.push(format!("no sysrq dump: {}", error_chain(&e)));
            return;
        }
    };
    for &key in keys {
        if let Err(e) = qmp.sysrq(key).await {
            notes.push(format!("sysrq {key} failed: {}", error_chain(&e)));
        }
        // Let one dump reach the console before the next starts.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Injects an NMI, on which a kernel booted with `unknown_nmi_panic` panics: its
/// report names every CPU, and the dump that follows catches each one parked in
/// `panic()` instead of wherever it was (a vCPU caught on its entry stack defeats
/// `crash`'s `bt`).
pub async fn inject_nmi(qmp_socket: &Path) -> Result<(), String> {
    let mut qmp = Qmp::connect(qmp_socket)
        .await
        .map_err(|e| error_chain(&e))?;
    qmp.inject_nmi().await.map_err(|e| error_chain(&e))
}

/// `sysrq.txt`: the console lines of the dumps, then the kmsg records of the same
/// window (the whole dump, whatever the console's loglevel let through).
pub fn sysrq_text(console: Vec<String>, kmsg: Vec<String>) -> Vec<String> {
    let mut lines = console;
    if !kmsg.is_empty() {
        lines.push("--- the same window in the kernel log (kmsg, every level) ---".to_owned());
        lines.extend(kmsg);
    }
    lines
}

/// Writes the console lines the sysrq dumps produced.
pub fn write_sysrq(dir: &Path, lines: &[String]) -> Option<PathBuf> {
    let path = dir.join("sysrq.txt");
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(&path, text).ok().map(|()| path)
}

/// How large a guest may be to have its memory dumped, and how long the dump may take.
#[derive(Debug, Clone, Copy)]
pub struct DumpPolicy {
    pub max_mib: u64,
    pub timeout: Duration,
}

/// Dumps guest memory to `dir/vmcore.kdump` if the guest is small enough.
pub async fn dump_memory(
    qmp_socket: &Path,
    dir: &Path,
    memory_mib: u64,
    policy: DumpPolicy,
    notes: &mut Vec<String>,
) -> Option<PathBuf> {
    if memory_mib > policy.max_mib {
        notes.push(format!("no memory dump: the guest has {memory_mib} MiB, more than the {} MiB limit (--dump-max)", policy.max_mib));
        return None;
    }
    let path = dir.join("vmcore.kdump");
    let started = std::time::Instant::now();
    let result = match Qmp::connect(qmp_socket).await {
        Ok(mut qmp) => qmp.dump_memory(&path, policy.timeout).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => {
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            notes.push(format!(
                "guest memory dumped to vmcore.kdump ({:.1} MiB in {:.1}s)",
                size as f64 / 1_048_576.0,
                started.elapsed().as_secs_f64()
            ));
            Some(path)
        }
        Err(e) => {
            notes.push(format!("memory dump failed: {}", error_chain(&e)));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dumps_missing_from_the_console_are_pressed_again() {
        let lines = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // (console lines since the keys were sent, keys to press again)
        let cases: Vec<(Vec<String>, Vec<char>)> = vec![
            (lines(&[]), vec!['7', 'w', 't', 'l']),
            (
                lines(&[
                    "[   40.0] sysrq: Changing Loglevel",
                    "[   40.1] sysrq: Show Blocked State",
                    "[   40.2] task:kworker state:D",
                    "[   40.5] sysrq: Show State",
                    "[   41.0] sysrq: Show backtrace of all active CPUs",
                ]),
                vec![],
            ),
            // The flaky CI run: `w` lost while the guest stalled, `t` and `l` printed.
            (
                lines(&[
                    "[   40.4] sysrq: Changing Loglevel",
                    "[   40.5] sysrq: Show State\r",
                    "[   41.0] sysrq: Show backtrace of all active CPUs",
                ]),
                vec!['w'],
            ),
            // 4.x spelling; "Show State" is not "Show Blocked State".
            (
                lines(&["SysRq : Show Blocked State", "SysRq : Show Blocked State"]),
                vec!['7', 't', 'l'],
            ),
            // The words alone, without the sysrq header, are not the dump.
            (
                lines(&[
                    "kchaos: Show State",
                    "echo Show backtrace of all active CPUs",
                ]),
                vec!['7', 'w', 't', 'l'],
            ),
        ];
        for (console, missing) in cases {
            assert_eq!(missing_dumps(&console), missing, "{console:?}");
        }
    }
}
