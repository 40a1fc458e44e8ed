//! Evidence from a guest that crashed or stopped answering, collected before QEMU is
//! killed: sysrq task dumps (through the emulated keyboard, so they work on a wedged
//! guest) and, when asked for, a compressed dump of guest memory for `crash`. Which
//! keys to press, and whether their dumps showed, the state machine decides
//! (`state/sysrq.rs`); this module only talks to QEMU and writes the files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::vm::qmp::Qmp;
use kchaos_model::error_chain;

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
