//! Counts tasks (threads) in uninterruptible sleep, state `D`: a kernel path stuck on a
//! lock or a refcount shows up here long before `hung_task` reports it.

/// Scans `/proc/<pid>/task/<tid>/stat`. Tasks that exit during the scan are skipped.
pub fn count() -> Result<f64, String> {
    let procs = std::fs::read_dir("/proc").map_err(|e| format!("read /proc: {e}"))?;
    let mut d = 0u64;
    for entry in procs.filter_map(Result::ok) {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(tasks) = std::fs::read_dir(entry.path().join("task")) else {
            continue;
        };
        for task in tasks.filter_map(Result::ok) {
            if let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) {
                if state(&stat) == Some('D') {
                    d += 1;
                }
            }
        }
    }
    Ok(d as f64)
}

/// The state letter of a `stat` line: `pid (comm) S ...`; comm may contain spaces and
/// parentheses, so it is found after the last `)`.
fn state(stat: &str) -> Option<char> {
    stat.rfind(')')
        .and_then(|i| stat.get(i + 1..))
        .and_then(|rest| rest.trim_start().chars().next())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_after_the_command_name() {
        assert_eq!(state("42 (kworker/0:1) D 2 0 0"), Some('D'));
        assert_eq!(state("7 (a (weird) name) S 1 7"), Some('S'));
        assert_eq!(state("garbage"), None);
        assert!(count().unwrap() >= 0.0);
    }
}
