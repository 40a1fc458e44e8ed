//! The short-lived process each churned cgroup gets: it joins the cgroup, then writes
//! files under a fresh directory so page cache, dentries and inodes are charged to it
//! (the incident's proof of concept).

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::child;

/// `argv[1]` that selects this mode.
pub const SUBCOMMAND: &str = "__populate";

/// Child side: `__populate DIR FILES SIZE -- PROCS...`
pub fn child_main(args: &[OsString]) -> ExitCode {
    let (own, procs) = child::split_args(args);
    match run(&own, &procs) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(own: &[String], procs: &[PathBuf]) -> Result<(), String> {
    let dir = PathBuf::from(
        own.first()
            .ok_or("usage: __populate DIR FILES SIZE -- PROCS...")?,
    );
    let files: u32 = child::arg(own, 1, "files")?;
    let size: usize = child::arg(own, 2, "size")?;
    // Join first: everything written after this is charged to the cgroup.
    child::join_cgroups(procs)?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let block = vec![0x6bu8; size.min(1 << 20)];
    for i in 0..files {
        let path = dir.join(format!("f{i}"));
        let mut f =
            std::fs::File::create(&path).map_err(|e| format!("create {}: {e}", path.display()))?;
        let mut left = size;
        while left > 0 {
            let n = left.min(block.len());
            f.write_all(&block[..n])
                .map_err(|e| format!("write {}: {e}", path.display()))?;
            left -= n;
        }
    }
    Ok(())
}

/// Parent side: runs the child to completion and returns how long it took.
pub fn spawn(dir: &Path, files: u32, size: u64, procs: &[PathBuf]) -> Result<Duration, String> {
    let start = Instant::now();
    let args = [
        dir.display().to_string(),
        files.to_string(),
        size.to_string(),
    ];
    let mut process = child::spawn(SUBCOMMAND, &args, procs)
        .map_err(|e| format!("spawn populate process: {e}"))?;
    // It does not read stdin; closing it keeps the protocol uniform.
    drop(process.stdin.take());
    let out = process
        .wait_with_output()
        .map_err(|e| format!("wait for populate process: {e}"))?;
    let took = start.elapsed();
    if out.status.success() {
        Ok(took)
    } else {
        Err(format!(
            "populate process {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
