//! Child processes the runner spawns from its own binary (no shell, no second binary in
//! the image): the populate process of cgroup-churn, the CFS worker of each leaf, the
//! wake-up probe inside a cgroup. Each first joins its cgroups, so everything it does is
//! charged there.

use std::ffi::OsString;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// Moves the calling process into each cgroup (`cgroup.procs` files, one per hierarchy).
pub fn join_cgroups(procs: &[PathBuf]) -> Result<(), String> {
    for p in procs {
        std::fs::write(p, b"0").map_err(|e| format!("join {}: {e}", p.display()))?;
    }
    Ok(())
}

/// `cgroup.procs` of each directory.
pub fn procs_files(dirs: &[PathBuf]) -> Vec<PathBuf> {
    dirs.iter().map(|d| d.join("cgroup.procs")).collect()
}

/// Starts `/proc/self/exe SUBCOMMAND ARGS... -- PROCS...` with stdin and stdout piped.
/// Closing its stdin tells it to stop.
pub fn spawn(subcommand: &str, args: &[String], procs: &[PathBuf]) -> std::io::Result<Child> {
    Command::new("/proc/self/exe")
        .arg(subcommand)
        .args(args)
        .arg("--")
        .args(procs)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
}

/// Splits a child's arguments at `--`: its own arguments, then the procs files.
pub fn split_args(args: &[OsString]) -> (Vec<String>, Vec<PathBuf>) {
    let mut own = Vec::new();
    let mut procs = Vec::new();
    let mut after = false;
    for a in args {
        if !after && a == "--" {
            after = true;
        } else if after {
            procs.push(PathBuf::from(a));
        } else {
            own.push(a.to_string_lossy().into_owned());
        }
    }
    (own, procs)
}

/// Blocks until the parent closes our stdin (or dies).
pub fn wait_for_stdin_eof() {
    let mut sink = [0u8; 64];
    let mut stdin = std::io::stdin();
    while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
}

/// Parses one numeric argument of a child.
pub fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Result<T, String> {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("argument {i} ({what}) missing or invalid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_split_at_the_separator() {
        let args: Vec<OsString> = ["4", "8", "--", "/a/cgroup.procs", "/b/cgroup.procs"]
            .iter()
            .map(OsString::from)
            .collect();
        let (own, procs) = split_args(&args);
        assert_eq!(own, ["4", "8"]);
        assert_eq!(
            procs,
            [
                PathBuf::from("/a/cgroup.procs"),
                PathBuf::from("/b/cgroup.procs")
            ]
        );
        assert_eq!(arg::<u32>(&own, 1, "sleepers"), Ok(8));
        assert!(arg::<u32>(&own, 2, "x").is_err());
    }
}
