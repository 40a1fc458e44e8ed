//! `cgroup-churn`: create cgroups in batches, put a file-writing process in each, remove
//! them. mkdir and rmdir are timed one syscall each (no library retries or extra writes
//! inside the measurement).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use kchaos_model::metrics::Metric;
use kchaos_model::protocol::{GuestMessage, WorkloadReport};
use kchaos_model::scenario::workload::CgroupChurn;
use kchaos_model::scenario::{CgroupMode, CounterSelect, Workload};
use kchaos_model::units::Unit;

use super::{Env, Errors};
use crate::boot::mounts::{self, CgroupError, CgroupLayout};
use crate::histogram::Latency;
use crate::kfile::{self, KernelFileError};
use crate::limits::LimitError;
use crate::metrics::Named;
use crate::spawn::{Job, SpawnError, Spawner, Target};
use kchaos_model::error_chain;

/// Every this many cgroups, the page cache charged to one is read from its
/// `memory.stat` just before its removal (`<name>.file_charged_min`): the proof that
/// the populate process wrote from inside the cgroup. Sampled, to keep the churn fast.
const CHARGE_SAMPLE_EVERY: u64 = 10;

/// The kernel operations the workload performs; faked in unit tests.
pub trait ChurnOps: Sync {
    fn mkdir(&self, path: &Path) -> std::io::Result<()>;
    fn rmdir(&self, path: &Path) -> std::io::Result<()>;
    /// `memory.max` / `memory.limit_in_bytes` of cgroup `rel`.
    fn set_memory_limit(&self, rel: &str, bytes: u64) -> Result<(), LimitError>;
    /// Writes `memory.kmem.limit_in_bytes`; the errno lets the caller tell a kernel that
    /// refuses the knob from a real failure.
    fn set_kmem_limit(&self, dir: &Path, bytes: u64) -> Result<(), KernelFileError>;
    /// Runs the populate process in `target` to completion: it writes the spec's
    /// `files_per_cgroup` files of `file_size` bytes into `dir`.
    fn populate(&self, target: &Target, dir: &Path, spec: &CgroupChurn) -> Result<(), SpawnError>;
    /// Page cache charged to the memory cgroup `dir` (`memory.stat`: `file` on v2,
    /// `cache` on v1), in bytes.
    fn file_charged(&self, dir: &Path) -> Result<f64, KernelFileError>;
    fn remove_files(&self, dir: &Path) -> std::io::Result<()>;
    /// Creates the spec's parent cgroup in every hierarchy and, in v2, enables its
    /// controllers at each level down to it (not measured).
    fn prepare_parent(&self, layout: &CgroupLayout, spec: &CgroupChurn) -> Result<(), CgroupError>;
}

/// The real thing: syscalls on cgroupfs, cgroups-rs for limits, populate processes
/// from the spawn helpers (one helper per worker thread, kept between cgroups).
#[derive(Debug)]
pub struct RealOps {
    mode: CgroupMode,
    spawners: Mutex<Vec<Spawner>>,
}

impl RealOps {
    pub fn new(mode: CgroupMode) -> RealOps {
        RealOps {
            mode,
            spawners: Mutex::new(Vec::new()),
        }
    }
}

impl ChurnOps for RealOps {
    fn mkdir(&self, path: &Path) -> std::io::Result<()> {
        std::fs::create_dir(path)
    }

    fn rmdir(&self, path: &Path) -> std::io::Result<()> {
        std::fs::remove_dir(path)
    }

    fn set_memory_limit(&self, rel: &str, bytes: u64) -> Result<(), LimitError> {
        crate::limits::set_memory_limit(self.mode, rel, bytes)
    }

    fn set_kmem_limit(&self, dir: &Path, bytes: u64) -> Result<(), KernelFileError> {
        kfile::write(&dir.join("memory.kmem.limit_in_bytes"), &bytes.to_string())
    }

    fn populate(&self, target: &Target, dir: &Path, spec: &CgroupChurn) -> Result<(), SpawnError> {
        let pooled = self
            .spawners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        let mut spawner = match pooled {
            Some(s) => s,
            None => Spawner::new()?,
        };
        let job = Job::Populate {
            dir: dir.to_path_buf(),
            files: spec.files_per_cgroup,
            size: spec.file_size,
        };
        let result = spawner.run(target, job);
        // A helper whose socket failed is not reused.
        if !matches!(result, Err(SpawnError::Wire(_))) {
            self.spawners
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(spawner);
        }
        result
    }

    /// The page cache in `memory.stat`; when that reads 0, the cgroup's page counter.
    /// Before 5.13 `memory.stat` is batched per CPU (up to 32 pages per CPU not yet
    /// folded in), so a cgroup whose process wrote one page reads `file 0` on 5.10 while
    /// the page counter, charged at once, already holds it.
    fn file_charged(&self, dir: &Path) -> Result<f64, KernelFileError> {
        let (key, counter) = match self.mode {
            CgroupMode::V2 => ("file", "memory.current"),
            CgroupMode::V1 | CgroupMode::Hybrid => ("cache", "memory.usage_in_bytes"),
        };
        let stat = kfile::read_key(&dir.join("memory.stat"), key)?;
        if stat > 0.0 {
            return Ok(stat);
        }
        kfile::read_number(&dir.join(counter), &CounterSelect::Whole).or(Ok(stat))
    }

    fn remove_files(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::remove_dir_all(dir)
    }

    fn prepare_parent(&self, layout: &CgroupLayout, spec: &CgroupChurn) -> Result<(), CgroupError> {
        mounts::create_cgroup(layout, &spec.parent, &spec.controllers, true)
    }
}

/// Per-worker measurements, merged at the end.
#[derive(Debug, Default)]
struct Stats {
    mkdir: Latency,
    rmdir: Latency,
    populate: Latency,
    created: u64,
    /// Smallest page cache seen charged to a sampled cgroup before its removal.
    file_charged_min: Option<f64>,
    errors: Errors,
}

impl Stats {
    fn merge(&mut self, other: Stats) {
        self.mkdir.merge(&other.mkdir);
        self.rmdir.merge(&other.rmdir);
        self.populate.merge(&other.populate);
        self.created += other.created;
        self.file_charged_min = match (self.file_charged_min, other.file_charged_min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.errors.merge(other.errors);
    }
}

/// A cgroup created in the current batch.
struct Live {
    n: u64,
    dirs: Vec<PathBuf>,
    files: Option<PathBuf>,
}

struct Shared<'a> {
    workload: &'a Workload,
    spec: &'a CgroupChurn,
    env: &'a Env,
    ops: &'a dyn ChurnOps,
    next: AtomicU64,
    kmem_refused: AtomicBool,
}

/// Creates the parent cgroup (not measured; done before probes start).
pub fn prepare(spec: &CgroupChurn, env: &Env, ops: &dyn ChurnOps) -> Result<(), CgroupError> {
    ops.prepare_parent(&env.layout, spec)
}

pub fn run(
    workload: &Workload,
    spec: &CgroupChurn,
    env: &Env,
    ops: &dyn ChurnOps,
) -> (WorkloadReport, Vec<(String, Metric)>) {
    let mut total = Stats::default();
    let shared = Shared {
        workload,
        spec,
        env,
        ops,
        next: AtomicU64::new(0),
        kmem_refused: AtomicBool::new(false),
    };
    let results: Vec<Stats> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..spec.concurrency)
            .map(|_| scope.spawn(|| worker(&shared)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    for r in results {
        total.merge(r);
    }
    let name = &workload.name;
    let charged = total.file_charged_min;
    let report = WorkloadReport {
        name: name.clone(),
        iterations: total.created,
        errors: total.errors.count,
        error_samples: total.errors.samples,
        findings: Vec::new(),
    };
    let mut metrics = Named::new(name);
    metrics
        .latency("mkdir", &total.mkdir)
        .latency("rmdir", &total.rmdir)
        .latency("populate", &total.populate)
        .count("cgroups", total.created)
        .count("errors", report.errors);
    if let Some(bytes) = charged {
        metrics.value("file_charged_min", Unit::Bytes, bytes);
    }
    (report, metrics.into_list())
}

fn out_of_time(sh: &Shared<'_>) -> bool {
    sh.env.stop.load(Ordering::Relaxed) || Instant::now() >= sh.env.deadline
}

fn worker(sh: &Shared<'_>) -> Stats {
    let mut stats = Stats::default();
    loop {
        let mut batch = Vec::new();
        while (batch.len() as u64) < sh.spec.batch && !out_of_time(sh) {
            let n = sh.next.fetch_add(1, Ordering::Relaxed);
            if sh.workload.iterations.is_some_and(|limit| n >= limit) {
                break;
            }
            if let Some(live) = create_one(sh, n, &mut stats) {
                batch.push(live);
            }
        }
        if batch.is_empty() {
            return stats;
        }
        if sh.spec.remove {
            for live in &batch {
                sample_charge(sh, live, &mut stats);
                // Children before parents is irrelevant here (flat), but v1 hierarchies
                // are removed in reverse creation order like a runtime would.
                for dir in live.dirs.iter().rev() {
                    let start = Instant::now();
                    match sh.ops.rmdir(dir) {
                        Ok(()) => stats.rmdir.record(start.elapsed()),
                        Err(e) => stats.errors.push(format!("rmdir {}: {e}", dir.display())),
                    }
                }
            }
        }
        if !sh.spec.keep_files {
            for files in batch.iter().filter_map(|l| l.files.as_ref()) {
                if let Err(e) = sh.ops.remove_files(files) {
                    stats
                        .errors
                        .push(format!("remove {}: {e}", files.display()));
                }
            }
        }
        let done = sh
            .next
            .load(Ordering::Relaxed)
            .min(sh.workload.iterations.unwrap_or(u64::MAX));
        sh.env.reporter.send(GuestMessage::Progress {
            workload: sh.workload.name.clone(),
            done,
            total: sh.workload.iterations,
        });
    }
}

fn create_one(sh: &Shared<'_>, n: u64, stats: &mut Stats) -> Option<Live> {
    let spec = sh.spec;
    let rel = format!("{}/{}-{n}", spec.parent, sh.workload.name);
    let dirs = sh.env.layout.dirs(&spec.controllers, &rel);
    let mut made = Vec::with_capacity(dirs.len());
    for dir in &dirs {
        let start = Instant::now();
        match sh.ops.mkdir(dir) {
            Ok(()) => {
                stats.mkdir.record(start.elapsed());
                made.push(dir.clone());
            }
            Err(e) => {
                // ENOSPC/ENOMEM here was the incident's symptom: count it, undo the rest.
                stats.errors.push(format!("mkdir {}: {e}", dir.display()));
                for d in made.iter().rev() {
                    let _ = sh.ops.rmdir(d);
                }
                return None;
            }
        }
    }
    stats.created += 1;
    if let Some(limit) = spec.memory_limit {
        if let Err(e) = sh.ops.set_memory_limit(&rel, limit) {
            stats.errors.push(error_chain(&e));
        }
    }
    if let Some(limit) = spec.kmem_limit {
        if let Some(mem_dir) = sh.env.layout.dirs(&["memory".to_owned()], &rel).first() {
            if let Err(e) = sh.ops.set_kmem_limit(mem_dir, limit) {
                note_kmem_refusal(sh, &e, stats);
            }
        }
    }
    let mut files = None;
    if spec.files_per_cgroup > 0 {
        let dir = Path::new(&spec.file_dir).join(format!("kchaos-{}-{n}", sh.workload.name));
        let target = Target::new(sh.env.layout.mode, made.clone());
        let start = Instant::now();
        match sh.ops.populate(&target, &dir, spec) {
            Ok(()) => stats.populate.record(start.elapsed()),
            Err(e) => stats.errors.push(error_chain(&e)),
        }
        files = Some(dir);
    }
    Some(Live {
        n,
        dirs: made,
        files,
    })
}

/// Reads what a sampled cgroup has charged for its files, just before its removal.
fn sample_charge(sh: &Shared<'_>, live: &Live, stats: &mut Stats) {
    let spec = sh.spec;
    let writes = spec.files_per_cgroup > 0 && spec.file_size > 0;
    if !writes
        || live.n % CHARGE_SAMPLE_EVERY != 0
        || !spec.controllers.iter().any(|c| c == "memory")
    {
        return;
    }
    let rel = format!("{}/{}-{}", spec.parent, sh.workload.name, live.n);
    let Some(dir) = sh
        .env
        .layout
        .dirs(&["memory".to_owned()], &rel)
        .into_iter()
        .next()
    else {
        return;
    };
    match sh.ops.file_charged(&dir) {
        Ok(bytes) => {
            stats.file_charged_min = Some(stats.file_charged_min.map_or(bytes, |m| m.min(bytes)));
        }
        Err(e) => stats.errors.push(error_chain(&e)),
    }
}

/// A kernel without the knob (the file is gone) or refusing it (EOPNOTSUPP) still
/// accounts kmem, so that is a note, once. Anything else is an error. (5.16+ accept the
/// write and ignore it, saying so in the kernel log.)
fn note_kmem_refusal(sh: &Shared<'_>, e: &KernelFileError, stats: &mut Stats) {
    if kmem_refused(e.errno()) {
        if !sh.kmem_refused.swap(true, Ordering::Relaxed) {
            sh.env.reporter.note(format!("kernel refuses memory.kmem.limit_in_bytes ({}); continuing without a kmem limit (kmem is still accounted)", error_chain(e)));
        }
    } else {
        stats.errors.push(error_chain(e));
    }
}

/// The errnos of a kernel without the knob (file gone) or refusing it.
fn kmem_refused(errno: Option<i32>) -> bool {
    const ENOTSUPP: i32 = 524;
    matches!(
        errno,
        Some(libc::EOPNOTSUPP | ENOTSUPP | libc::ENOENT | libc::EINVAL)
    )
}

#[cfg(test)]
mod tests;
