//! The short-lived process each churned cgroup gets: it joins the cgroup, then writes
//! files under a fresh directory so page cache, dentries and inodes are charged to it
//! (the incident's proof of concept). It is this same binary re-executed, so no shell
//! and no second binary are needed in the image.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// `argv[1]` that selects this mode.
pub const SUBCOMMAND: &str = "__populate";

/// Child side: `__populate DIR FILES SIZE PROCS_FILE...`
pub fn child_main(args: &[OsString]) -> ExitCode {
    match child(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "{e}");
            ExitCode::FAILURE
        }
    }
}

fn child(args: &[OsString]) -> Result<(), String> {
    let [dir, files, size, procs @ ..] = args else {
        return Err("usage: __populate DIR FILES SIZE PROCS_FILE...".to_owned());
    };
    let files: u32 = files
        .to_string_lossy()
        .parse()
        .map_err(|_| "FILES must be a number".to_owned())?;
    let size: usize = size
        .to_string_lossy()
        .parse()
        .map_err(|_| "SIZE must be a number".to_owned())?;
    // Join first: everything written after this is charged to the cgroup.
    for p in procs {
        std::fs::write(p, b"0").map_err(|e| format!("join {}: {e}", Path::new(p).display()))?;
    }
    let dir = PathBuf::from(dir);
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
    let out = Command::new("/proc/self/exe")
        .arg(SUBCOMMAND)
        .arg(dir)
        .arg(files.to_string())
        .arg(size.to_string())
        .args(procs)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("spawn populate process: {e}"))?;
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
