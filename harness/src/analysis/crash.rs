//! `kchaos analyze CELL_DIR`: runs the `crash` utility on a cell's memory dump with the
//! commands an engineer types first — in incident 4 the trigger was found only by
//! reading the dump's run queues (`runq -g`). Without a dump, the tool or the debug
//! kernel, it says exactly what is missing and how to get it. The debug kernel lookup
//! ([`debug_vmlinux`]) is shared with `--gdb`, which needs the same symbols.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use kchaos_images::debian::{self, AptSource};
use kchaos_images::{Cache, Kernel};

use crate::results::CellResult;
use crate::vm::find_in_path;
use kchaos_model::error_chain;

/// What `crash` is asked, in order: every CPU's stack, the run queues with their task
/// groups (throttled cgroups show here), the kernel log.
pub const CRASH_COMMANDS: &[&str] = &["set scroll off", "bt -a", "runq -g", "log", "quit"];

#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    #[error("{0} is not a cell directory (no cell.json)")]
    NotACell(String),
    #[error("Cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid cell result")]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("No memory dump in {0}: rerun the cell with `kchaos run --dump-memory` (a dump is taken when the guest crashes or hangs)")]
    NoDump(String),
    #[error("The `crash` utility is not installed: apt-get install crash")]
    NoCrashTool,
    #[error(transparent)]
    NoVmlinux(#[from] NoVmlinux),
    #[error("Cannot run crash")]
    Spawn(#[source] std::io::Error),
    #[error("Cannot write {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Why a kernel has no debug vmlinux to offer.
#[derive(Debug, thiserror::Error)]
#[error("No debug vmlinux for {kernel}: {detail}")]
pub struct NoVmlinux {
    pub kernel: String,
    pub detail: String,
}

/// Runs the analysis; returns the report's path.
pub fn analyze(dir: &Path, vmlinux: Option<&Path>, cache: &Cache) -> Result<PathBuf, AnalyzeError> {
    let cell_json = dir.join("cell.json");
    if !cell_json.is_file() {
        return Err(AnalyzeError::NotACell(dir.display().to_string()));
    }
    let text = std::fs::read(&cell_json).map_err(|source| AnalyzeError::Read {
        path: cell_json.display().to_string(),
        source,
    })?;
    let cell: CellResult = serde_json::from_slice(&text).map_err(|source| AnalyzeError::Parse {
        path: cell_json.display().to_string(),
        source,
    })?;
    let vmcore = dir.join("vmcore.kdump");
    if !vmcore.is_file() {
        return Err(AnalyzeError::NoDump(dir.display().to_string()));
    }
    let crash = find_in_path("crash").ok_or(AnalyzeError::NoCrashTool)?;
    let vmlinux = match vmlinux {
        Some(v) => v.to_path_buf(),
        None => cell_vmlinux(&cell, cache)?,
    };
    let mut child = Command::new(&crash)
        .args(["-s", "--kaslr", "auto"])
        .arg(&vmlinux)
        .arg(&vmcore)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(AnalyzeError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        let script = CRASH_COMMANDS.join("\n") + "\n";
        let _ = stdin.write_all(script.as_bytes());
    }
    let out = child.wait_with_output().map_err(AnalyzeError::Spawn)?;
    let report = dir.join("analysis.txt");
    let mut text = format!(
        "# kchaos analyze: {} on {} ({})\n# crash {} {} {}\n# commands: {}\n\n",
        cell.id,
        cell.kernel.resolved.as_deref().unwrap_or(&cell.kernel.spec),
        cell.verdict,
        crash.display(),
        vmlinux.display(),
        vmcore.display(),
        CRASH_COMMANDS.join("; ")
    );
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    if !out.stderr.is_empty() {
        text.push_str("\n# crash stderr\n");
        text.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    if !out.status.success() {
        text.push_str(&format!("\n# crash exited with {}\n", out.status));
    }
    std::fs::write(&report, text).map_err(|source| AnalyzeError::Write {
        path: report.display().to_string(),
        source,
    })?;
    Ok(report)
}

/// The debug kernel of the cell: the kernel it recorded, resolved again.
fn cell_vmlinux(cell: &CellResult, cache: &Cache) -> Result<PathBuf, NoVmlinux> {
    let spec = cell
        .kernel
        .resolved
        .clone()
        .unwrap_or_else(|| cell.kernel.spec.clone());
    let kernel = kchaos_images::resolve(cache, &spec).map_err(|e| NoVmlinux {
        kernel: spec.clone(),
        detail: error_chain(&e),
    })?;
    debug_vmlinux(&kernel, cache)
}

/// The vmlinux with symbols of `kernel`, which `crash` and `gdb` need (a bzImage has
/// none): Debian's `-dbg` package (downloaded once, about 300 MB, and cached), or the
/// vmlinux a local build leaves at the top of its tree.
pub fn debug_vmlinux(kernel: &Kernel, cache: &Cache) -> Result<PathBuf, NoVmlinux> {
    let no = |detail: String| NoVmlinux {
        kernel: kernel.resolved.clone(),
        detail,
    };
    if kernel.package.is_some() {
        return debian::debug_vmlinux(cache, kernel, &AptSource::new(cache))
            .map_err(|e| no(error_chain(&e)));
    }
    // A local build keeps vmlinux at the top of its tree, three levels above the bzImage.
    kernel
        .bzimage
        .ancestors()
        .skip(1)
        .take(4)
        .map(|d| d.join("vmlinux"))
        .find(|p| p.is_file())
        .ok_or_else(|| no("no vmlinux next to the build's bzImage; pass --vmlinux PATH".to_owned()))
}
