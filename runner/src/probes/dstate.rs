//! Counts tasks (threads) in uninterruptible sleep, state `D`: a kernel path stuck on a
//! lock or a refcount shows up here long before `hung_task` reports it.

use std::path::PathBuf;

/// Scans `/proc/<pid>/task/<tid>/stat`. Tasks that exit during the scan are skipped.
pub fn count() -> Result<f64, String> {
    Ok(scan()?.len() as f64)
}

/// The tasks in D state, each as `comm (tid N) in <wchan>`: what a kernel engineer
/// looks for first (the function the task sleeps in).
pub fn stuck() -> Result<Vec<String>, String> {
    Ok(scan()?
        .into_iter()
        .map(|(task, stat)| {
            let tid = task
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let wchan = std::fs::read_to_string(task.join("wchan"))
                .ok()
                .filter(|w| !w.trim().is_empty() && w.trim() != "0")
                .unwrap_or_else(|| "?".to_owned());
            format!("{} (tid {tid}) in {}", comm(&stat), wchan.trim())
        })
        .collect())
}

/// `/proc/<pid>/task/<tid>` and its `stat` line for every task in D state.
fn scan() -> Result<Vec<(PathBuf, String)>, String> {
    let procs = std::fs::read_dir("/proc").map_err(|e| format!("read /proc: {e}"))?;
    let mut found = Vec::new();
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
                    found.push((task.path(), stat));
                }
            }
        }
    }
    Ok(found)
}

/// The command name of a `stat` line: between the first `(` and the last `)`.
fn comm(stat: &str) -> &str {
    match (stat.find('('), stat.rfind(')')) {
        (Some(a), Some(b)) if a < b => stat.get(a + 1..b).unwrap_or(""),
        _ => "",
    }
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
        assert_eq!(comm("7 (a (weird) name) S 1 7"), "a (weird) name");
        assert_eq!(comm("garbage"), "");
        assert!(count().unwrap() >= 0.0);
    }
}
