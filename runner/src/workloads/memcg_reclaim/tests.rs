use std::cell::{Cell, RefCell};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use kchaos_model::metrics::Stat;
use kchaos_model::scenario::{self, WorkloadSpec};

use super::*;
use crate::link::channel::Reporter;

/// A kernel whose dying count falls by `step` per read after the caches are dropped,
/// down to `floor` (a leak pins `floor` cgroups forever).
struct FakeKernel {
    dying: Cell<u64>,
    step: u64,
    floor: u64,
    dropped: Cell<bool>,
    deleted: RefCell<Vec<PathBuf>>,
    pressure: Cell<u64>,
}

impl FakeKernel {
    fn new(dying: u64, step: u64, floor: u64) -> FakeKernel {
        FakeKernel {
            dying: Cell::new(dying),
            step,
            floor,
            dropped: Cell::new(false),
            deleted: RefCell::new(Vec::new()),
            pressure: Cell::new(0),
        }
    }
}

impl ReclaimOps for FakeKernel {
    fn dying(&self) -> Result<u64, ReclaimError> {
        let now = self.dying.get();
        if self.dropped.get() {
            self.dying
                .set(now.saturating_sub(self.step).max(self.floor));
        }
        Ok(now)
    }
    fn list(&self, dir: &Path, prefix: &str) -> Result<Vec<PathBuf>, ReclaimError> {
        Ok((0..3).map(|i| dir.join(format!("{prefix}{i}"))).collect())
    }
    fn delete(&self, dir: &Path) -> Result<(), ReclaimError> {
        self.deleted.borrow_mut().push(dir.to_path_buf());
        Ok(())
    }
    fn drop_caches(&self) -> Result<(), ReclaimError> {
        self.dropped.set(true);
        Ok(())
    }
    fn pressure(&self, bytes: u64) -> Result<u64, ReclaimError> {
        self.pressure.set(bytes);
        Ok(bytes)
    }
}

fn workload(extra: &str) -> Workload {
    let src = format!(
        "[scenario]\nname = \"t\"\n[[workload]]\nkind = \"cgroup-churn\"\nname = \"churn\"\nfile_dir = \"/scratch\"\n[[workload]]\nkind = \"memcg-reclaim\"\nname = \"reclaim\"\nchurn = \"churn\"\n{extra}\n"
    );
    scenario::parse("t.toml", &src).unwrap().workloads.remove(1)
}

fn env(timeout: Duration) -> Env {
    let (reporter, _rx) = Reporter::discard();
    Env {
        reporter,
        layout: CgroupLayout {
            mode: CgroupMode::V2,
            v1: vec![],
            unified: None,
        },
        deadline: Instant::now() + timeout,
        stop: Arc::new(AtomicBool::new(false)),
        seed: 1,
    }
}

fn value(metrics: &[(String, Metric)], name: &str) -> Option<f64> {
    metrics
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, m)| m.stat(Stat::Value))
}

fn run_fake(w: &Workload, env: &Env, kernel: &FakeKernel) -> Vec<(String, Metric)> {
    let WorkloadSpec::MemcgReclaim(spec) = &w.spec else {
        panic!("expected memcg-reclaim")
    };
    let (report, metrics) = run(w, spec, env, kernel);
    assert_eq!(report.errors, 0, "{:?}", report.error_samples);
    metrics
}

#[test]
fn a_healthy_kernel_frees_everything_and_the_wait_ends_early() {
    let w = workload("pressure = \"64MiB\"");
    let kernel = FakeKernel::new(1000, 400, 0);
    let start = Instant::now();
    let metrics = run_fake(&w, &env(Duration::from_secs(30)), &kernel);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "stops at the target"
    );
    assert_eq!(value(&metrics, "reclaim.dying_before"), Some(1000.0));
    assert_eq!(value(&metrics, "reclaim.dying"), Some(0.0));
    assert_eq!(value(&metrics, "reclaim.deleted"), Some(3.0));
    // The churn's own directories, found from its name and file_dir.
    assert_eq!(
        kernel.deleted.borrow()[0],
        PathBuf::from("/scratch/kchaos-churn-0")
    );
    assert_eq!(kernel.pressure.get(), 64 << 20);
}

#[test]
fn a_leak_stays_above_the_target_until_the_timeout() {
    let w = workload("timeout = \"400ms\"");
    let kernel = FakeKernel::new(1000, 500, 37);
    let start = Instant::now();
    let metrics = run_fake(&w, &env(Duration::from_secs(30)), &kernel);
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(value(&metrics, "reclaim.dying"), Some(37.0));
}

#[test]
fn nothing_reclaimed_without_the_reclaim_steps() {
    let w = workload("delete_files = false\ndrop_caches = false\ntimeout = \"200ms\"");
    let kernel = FakeKernel::new(1000, 500, 0);
    let metrics = run_fake(&w, &env(Duration::from_secs(30)), &kernel);
    assert_eq!(value(&metrics, "reclaim.dying"), Some(1000.0));
    assert_eq!(value(&metrics, "reclaim.deleted"), Some(0.0));
}

#[test]
fn v1_counts_and_pressure_bounds() {
    assert_eq!(dying_v1(1002, 2), 1000);
    assert_eq!(dying_v1(1, 2), 0, "a racing mkdir never makes it negative");
    assert_eq!(pressure_bytes(512 << 20, 600 << 20), 300 << 20);
    assert_eq!(pressure_bytes(64 << 20, 600 << 20), 64 << 20);
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("kchaos/a")).unwrap();
    std::fs::write(tmp.path().join("kchaos/memory.stat"), "").unwrap();
    assert_eq!(live_cgroups(tmp.path()).unwrap(), 3);
}
