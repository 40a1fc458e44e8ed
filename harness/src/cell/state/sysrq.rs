//! The sysrq task dumps as the state machine decides them: which keys a hung guest is
//! asked for, how each dump shows on the console, which are missing and pressed again,
//! and what `sysrq.txt` holds. Pure, beside the state machine that uses it; the keys
//! are pressed and the file written by `cell/evidence.rs`.

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
