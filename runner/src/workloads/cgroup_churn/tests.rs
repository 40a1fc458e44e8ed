use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kchaos_model::scenario::{self, WorkloadSpec};

use super::*;
use crate::boot::mounts::CgroupLayout;
use crate::link::channel::Reporter;

/// cgroupfs in a tempdir, with injectable mkdir failures.
struct FakeOps {
    fail_mkdir_at: Option<usize>,
    mkdirs: Mutex<usize>,
    populated: Mutex<Vec<(PathBuf, Target)>>,
    kmem: std::io::ErrorKind,
    /// What `memory.stat` says is charged, per cgroup directory read.
    charged: Mutex<Vec<PathBuf>>,
}

impl FakeOps {
    fn new() -> FakeOps {
        FakeOps {
            fail_mkdir_at: None,
            mkdirs: Mutex::new(0),
            populated: Mutex::new(Vec::new()),
            kmem: std::io::ErrorKind::Unsupported,
            charged: Mutex::new(Vec::new()),
        }
    }
}

impl ChurnOps for FakeOps {
    fn mkdir(&self, path: &Path) -> std::io::Result<()> {
        let mut n = self.mkdirs.lock().unwrap();
        *n += 1;
        if Some(*n) == self.fail_mkdir_at {
            return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
        }
        std::fs::create_dir(path)
    }
    fn rmdir(&self, path: &Path) -> std::io::Result<()> {
        std::fs::remove_dir(path)
    }
    fn set_memory_limit(&self, _rel: &str, _bytes: u64) -> Result<(), LimitError> {
        Ok(())
    }
    fn set_kmem_limit(&self, dir: &Path, bytes: u64) -> Result<(), KernelFileError> {
        Err(KernelFileError::Write {
            path: dir.join("memory.kmem.limit_in_bytes"),
            value: bytes.to_string(),
            source: if self.kmem == std::io::ErrorKind::Unsupported {
                std::io::Error::from_raw_os_error(libc::EOPNOTSUPP)
            } else {
                std::io::Error::from_raw_os_error(libc::EIO)
            },
        })
    }
    fn populate(&self, target: &Target, dir: &Path, _: &CgroupChurn) -> Result<(), SpawnError> {
        self.populated
            .lock()
            .unwrap()
            .push((dir.to_path_buf(), target.clone()));
        Ok(())
    }
    fn file_charged(&self, dir: &Path) -> Result<f64, KernelFileError> {
        self.charged.lock().unwrap().push(dir.to_path_buf());
        // The cgroup still exists when its charge is read: it is read before rmdir.
        assert!(dir.is_dir(), "{} read after its removal", dir.display());
        Ok(4096.0 * (1 + self.charged.lock().unwrap().len()) as f64)
    }
    fn remove_files(&self, _dir: &Path) -> std::io::Result<()> {
        Ok(())
    }
    fn prepare_parent(&self, layout: &CgroupLayout, spec: &CgroupChurn) -> Result<(), CgroupError> {
        for d in layout.dirs(&spec.controllers, &spec.parent) {
            std::fs::create_dir_all(&d).map_err(|source| CgroupError::Mkdir { path: d, source })?;
        }
        Ok(())
    }
}

fn workload(extra: &str, cgroup: &str) -> Workload {
    let src = format!("[scenario]\nname = \"t\"\n[vm]\ncgroup = \"{cgroup}\"\n[[workload]]\nkind = \"cgroup-churn\"\nname = \"churn\"\n{extra}\n");
    scenario::parse("t.toml", &src).unwrap().workloads.remove(0)
}

fn env(root: &Path, mode: CgroupMode) -> (Env, std::sync::mpsc::Receiver<GuestMessage>) {
    let layout = match mode {
        CgroupMode::V2 => CgroupLayout {
            mode,
            v1: vec![],
            unified: Some(root.to_path_buf()),
        },
        _ => CgroupLayout {
            mode,
            v1: vec![
                ("memory".into(), root.join("memory")),
                ("pids".into(), root.join("pids")),
            ],
            unified: None,
        },
    };
    let (reporter, rx) = Reporter::discard();
    (
        Env {
            reporter,
            layout,
            deadline: Instant::now() + Duration::from_secs(30),
            stop: Arc::new(AtomicBool::new(false)),
            seed: 1,
        },
        rx,
    )
}

fn run_fake(w: &Workload, env: &Env, ops: &FakeOps) -> (WorkloadReport, Vec<(String, Metric)>) {
    let WorkloadSpec::CgroupChurn(spec) = &w.spec else {
        panic!("expected cgroup-churn")
    };
    prepare(spec, env, ops).unwrap();
    run(w, spec, env, ops)
}

fn metric<'a>(metrics: &'a [(String, Metric)], name: &str) -> &'a Metric {
    &metrics.iter().find(|(n, _)| n == name).unwrap().1
}

#[test]
fn batch_of_all_creates_everything_then_removes_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (env, _rx) = env(dir.path(), CgroupMode::V2);
    let ops = FakeOps::new();
    let w = workload("iterations = 20\nbatch = 20", "v2");
    let (report, metrics) = run_fake(&w, &env, &ops);
    assert_eq!((report.iterations, report.errors), (20, 0));
    assert_eq!(
        metric(&metrics, "churn.mkdir").stat(kchaos_model::metrics::Stat::Count),
        Some(20.0)
    );
    assert_eq!(
        metric(&metrics, "churn.rmdir").stat(kchaos_model::metrics::Stat::Count),
        Some(20.0)
    );
    assert_eq!(
        metric(&metrics, "churn.cgroups").stat(kchaos_model::metrics::Stat::Value),
        Some(20.0)
    );
    // Every cgroup got its process, born in that cgroup (v2: one directory).
    let populated = ops.populated.lock().unwrap();
    assert_eq!(populated.len(), 20);
    assert!(populated[0].1.unified);
    assert!(
        populated[0].1.dirs[0].ends_with("kchaos/churn-0"),
        "{:?}",
        populated[0]
    );
    // Cgroups 0 and 10 had their charge read before removal; the smallest is reported.
    assert_eq!(ops.charged.lock().unwrap().len(), 2);
    assert_eq!(
        metric(&metrics, "churn.file_charged_min").stat(kchaos_model::metrics::Stat::Value),
        Some(8192.0)
    );
    // Only the parent is left.
    assert_eq!(
        std::fs::read_dir(dir.path().join("kchaos"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn v1_creates_one_directory_per_hierarchy() {
    let dir = tempfile::tempdir().unwrap();
    let (env, _rx) = env(dir.path(), CgroupMode::V1);
    let ops = FakeOps::new();
    let w = workload(
        "iterations = 3\ncontrollers = [\"memory\", \"pids\"]\nremove = false",
        "v1",
    );
    let (report, metrics) = run_fake(&w, &env, &ops);
    assert_eq!(report.iterations, 3);
    assert_eq!(
        metric(&metrics, "churn.mkdir").stat(kchaos_model::metrics::Stat::Count),
        Some(6.0)
    );
    assert!(dir.path().join("memory/kchaos/churn-2").is_dir());
    assert!(dir.path().join("pids/kchaos/churn-2").is_dir());
    let populated = ops.populated.lock().unwrap();
    assert_eq!(populated[0].1.dirs.len(), 2);
    assert!(!populated[0].1.unified, "v1 joins through cgroup.procs");
    // Not removed: no charge is read (it is read just before removal).
    assert!(ops.charged.lock().unwrap().is_empty());
    assert!(metrics.iter().all(|(n, _)| n != "churn.file_charged_min"));
}

#[test]
fn mkdir_failure_is_counted_with_errno_and_the_run_continues() {
    let dir = tempfile::tempdir().unwrap();
    let (env, _rx) = env(dir.path(), CgroupMode::V2);
    let ops = FakeOps {
        fail_mkdir_at: Some(5),
        ..FakeOps::new()
    };
    let w = workload("iterations = 10\nbatch = 2", "v2");
    let (report, _) = run_fake(&w, &env, &ops);
    assert_eq!(report.errors, 1);
    assert_eq!(report.iterations, 9);
    assert!(
        report.error_samples[0].contains("churn-4")
            && report.error_samples[0].contains("os error 28"),
        "{:?}",
        report.error_samples
    );
}

#[test]
fn concurrent_workers_share_the_iteration_budget_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (env, _rx) = env(dir.path(), CgroupMode::V2);
    let ops = FakeOps::new();
    let w = workload("iterations = 101\nbatch = 7\nconcurrency = 4", "v2");
    let (report, _) = run_fake(&w, &env, &ops);
    assert_eq!(report.iterations, 101);
    assert_eq!(ops.populated.lock().unwrap().len(), 101);
}

#[test]
fn deadline_bounds_an_unbounded_workload() {
    let dir = tempfile::tempdir().unwrap();
    let (mut env, _rx) = env(dir.path(), CgroupMode::V2);
    env.deadline = Instant::now() + Duration::from_millis(200);
    let ops = FakeOps::new();
    let w = workload("batch = 10", "v2");
    let start = Instant::now();
    let (report, _) = run_fake(&w, &env, &ops);
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(report.iterations > 0);
}

#[test]
fn refused_kmem_limit_is_a_note_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (env, rx) = env(dir.path(), CgroupMode::V1);
    let ops = FakeOps::new();
    let w = workload("iterations = 3\nkmem_limit = \"1MiB\"", "v1");
    let (report, _) = run_fake(&w, &env, &ops);
    assert_eq!(report.errors, 0);
    assert!(env.reporter.flush(Duration::from_secs(1)));
    let notes: Vec<_> = rx
        .try_iter()
        .filter(|m| matches!(m, GuestMessage::Note { .. }))
        .collect();
    assert_eq!(notes.len(), 1, "one note, not one per cgroup");
    let ops = FakeOps {
        kmem: std::io::ErrorKind::Other,
        ..FakeOps::new()
    };
    let dir = tempfile::tempdir().unwrap();
    let (env, _rx) = self::env(dir.path(), CgroupMode::V1);
    let (report, _) = run_fake(&w, &env, &ops);
    assert_eq!(report.errors, 3, "a real write error is an error");
}
