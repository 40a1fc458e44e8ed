//! `memcg-reclaim`: after a churn, delete its files, drop caches, apply memory pressure,
//! and wait for the removed memory cgroups to be freed. What is still dying afterwards
//! is pinned by something other than charged memory: a leaked reference.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kchaos_model::metrics::Metric;
use kchaos_model::protocol::WorkloadReport;
use kchaos_model::scenario::workload::MemcgReclaim;
use kchaos_model::scenario::{CgroupMode, CounterSelect, Workload};
use kchaos_model::units::Unit;

use super::{Env, Errors};
use crate::boot::mounts::CgroupLayout;
use crate::kfile::{self, KernelFileError};
use crate::metrics::Named;
use kchaos_model::error_chain;

/// How often the dying count is read while waiting.
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum ReclaimError {
    #[error("Cannot count dying memory cgroups")]
    Count(#[source] KernelFileError),
    #[error("No memory controller hierarchy is mounted; nothing to count dying cgroups in")]
    NoMemoryHierarchy,
    #[error("Cannot list {path}")]
    List {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot delete {path}")]
    Delete {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot drop caches")]
    DropCaches(#[source] KernelFileError),
    #[error("Cannot apply {bytes} bytes of memory pressure")]
    Pressure {
        bytes: u64,
        #[source]
        source: std::collections::TryReserveError,
    },
    #[error("Cannot read MemAvailable")]
    MemAvailable(#[source] KernelFileError),
}

/// What the workload does to the kernel; faked in unit tests.
pub trait ReclaimOps {
    /// Removed memory cgroups the kernel still holds.
    fn dying(&self) -> Result<u64, ReclaimError>;
    /// The directories under `dir` whose names start with `prefix`.
    fn list(&self, dir: &Path, prefix: &str) -> Result<Vec<PathBuf>, ReclaimError>;
    fn delete(&self, dir: &Path) -> Result<(), ReclaimError>;
    fn drop_caches(&self) -> Result<(), ReclaimError>;
    /// Touches up to `bytes` of anonymous memory and frees it; returns what it touched.
    fn pressure(&self, bytes: u64) -> Result<u64, ReclaimError>;
}

#[derive(Debug)]
pub struct RealOps {
    layout: CgroupLayout,
}

impl RealOps {
    pub fn new(layout: CgroupLayout) -> RealOps {
        RealOps { layout }
    }
}

impl ReclaimOps for RealOps {
    fn dying(&self) -> Result<u64, ReclaimError> {
        match (self.layout.mode, &self.layout.unified) {
            (CgroupMode::V2, Some(root)) => {
                kfile::read_key(&root.join("cgroup.stat"), "nr_dying_descendants")
                    .map(count)
                    .map_err(ReclaimError::Count)
            }
            _ => {
                let root = self
                    .layout
                    .v1
                    .iter()
                    .find(|(c, _)| c == "memory")
                    .map(|(_, p)| p.clone())
                    .ok_or(ReclaimError::NoMemoryHierarchy)?;
                let all = kfile::read_number(
                    Path::new("/proc/cgroups"),
                    &CounterSelect::Cell {
                        row: "memory".into(),
                        column: "num_cgroups".into(),
                    },
                )
                .map_err(ReclaimError::Count)?;
                Ok(dying_v1(count(all), live_cgroups(&root)?))
            }
        }
    }

    fn list(&self, dir: &Path, prefix: &str) -> Result<Vec<PathBuf>, ReclaimError> {
        let entries = std::fs::read_dir(dir).map_err(|source| ReclaimError::List {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
            .map(|e| e.path())
            .collect())
    }

    fn delete(&self, dir: &Path) -> Result<(), ReclaimError> {
        std::fs::remove_dir_all(dir).map_err(|source| ReclaimError::Delete {
            path: dir.to_path_buf(),
            source,
        })
    }

    fn drop_caches(&self) -> Result<(), ReclaimError> {
        // Dirty pages are not dropped: write them back first.
        nix::unistd::sync();
        kfile::write(Path::new("/proc/sys/vm/drop_caches"), "3").map_err(ReclaimError::DropCaches)
    }

    fn pressure(&self, bytes: u64) -> Result<u64, ReclaimError> {
        let available = kfile::read_number(
            Path::new("/proc/meminfo"),
            &CounterSelect::Key {
                key: "MemAvailable".into(),
            },
        )
        .map_err(ReclaimError::MemAvailable)?;
        let bytes = pressure_bytes(bytes, count(available));
        let len = usize::try_from(bytes).unwrap_or(usize::MAX);
        let mut block: Vec<u8> = Vec::new();
        block
            .try_reserve_exact(len)
            .map_err(|source| ReclaimError::Pressure { bytes, source })?;
        // Every byte written: every page faulted in, so the kernel must reclaim for it.
        block.resize(len, 0x5a);
        std::hint::black_box(&block);
        Ok(bytes)
    }
}

/// A kernel counter as an integer (they are integers; the parser reads floats).
// Counts of cgroups are far below 2^53: the conversion is exact.
#[allow(clippy::cast_possible_truncation)]
fn count(value: f64) -> u64 {
    if value.is_finite() && value > 0.0 {
        value as u64
    } else {
        0
    }
}

/// v1 has no `nr_dying_descendants`: `/proc/cgroups` counts every memory cgroup the
/// kernel holds, the hierarchy's directories only the live ones.
fn dying_v1(num_cgroups: u64, live: u64) -> u64 {
    num_cgroups.saturating_sub(live)
}

/// Never more than half of what is available: the runner is PID 1, which the OOM
/// killer spares, so an OOM would find nothing to kill and panic the guest.
fn pressure_bytes(asked: u64, available: u64) -> u64 {
    asked.min(available / 2)
}

/// Live cgroups of a v1 hierarchy: its directories, the root included.
fn live_cgroups(root: &Path) -> Result<u64, ReclaimError> {
    let mut n = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        n += 1;
        let entries = std::fs::read_dir(&dir).map_err(|source| ReclaimError::List {
            path: dir.clone(),
            source,
        })?;
        for e in entries.filter_map(Result::ok) {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    Ok(n)
}

pub fn run(
    workload: &Workload,
    spec: &MemcgReclaim,
    env: &Env,
    ops: &dyn ReclaimOps,
) -> (WorkloadReport, Vec<(String, Metric)>) {
    let mut errors = Errors::default();
    let push = |errors: &mut Errors, e: ReclaimError| errors.push(error_chain(&e));
    let before = match ops.dying() {
        Ok(n) => Some(n),
        Err(e) => {
            push(&mut errors, e);
            None
        }
    };
    let start = Instant::now();
    let mut deleted = 0u64;
    if spec.delete_files {
        match ops.list(Path::new(&spec.file_dir), &spec.file_prefix) {
            Ok(dirs) => {
                for dir in dirs {
                    match ops.delete(&dir) {
                        Ok(()) => deleted += 1,
                        Err(e) => push(&mut errors, e),
                    }
                }
            }
            Err(e) => push(&mut errors, e),
        }
    }
    if spec.drop_caches {
        if let Err(e) = ops.drop_caches() {
            push(&mut errors, e);
        }
    }
    if let Some(bytes) = spec.pressure {
        if let Err(e) = ops.pressure(bytes) {
            push(&mut errors, e);
        }
    }
    // The kernel frees removed cgroups asynchronously (RCU, then a workqueue): wait
    // until the count reaches the target, the timeout passes or the run ends.
    let deadline = env.deadline.min(start + spec.timeout);
    let mut after = None;
    loop {
        match ops.dying() {
            Ok(n) => after = Some(n),
            Err(e) => {
                push(&mut errors, e);
                break;
            }
        }
        let done = after.is_some_and(|n| n <= spec.target)
            || env.stop.load(Ordering::Relaxed)
            || Instant::now() + POLL > deadline;
        if done {
            break;
        }
        std::thread::sleep(POLL);
    }
    let waited = start.elapsed();
    if let (Some(b), Some(a)) = (before, after) {
        if a > spec.target {
            env.reporter.note(format!(
                "{a} removed memory cgroups still dying {:.1}s after reclaim ({b} before; {deleted} file directories deleted{}{})",
                waited.as_secs_f64(),
                if spec.drop_caches { ", caches dropped" } else { "" },
                spec.pressure.map(|p| format!(", {} MiB of pressure", p >> 20)).unwrap_or_default(),
            ));
        }
    }
    let name = &workload.name;
    let mut metrics = Named::new(name);
    metrics
        .count("deleted", deleted)
        .value("wait", Unit::Ns, waited.as_nanos() as f64)
        .count("errors", errors.count);
    // Counts that could not be read are missing, never zero.
    if let Some(b) = before {
        metrics.count("dying_before", b);
    }
    if let Some(a) = after {
        metrics.count("dying", a);
    }
    let report = WorkloadReport {
        name: name.clone(),
        iterations: 1,
        errors: errors.count,
        error_samples: errors.samples,
        findings: Vec::new(),
    };
    (report, metrics.into_list())
}

#[cfg(test)]
mod tests;
