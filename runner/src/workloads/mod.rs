//! Workloads: what the runner does to the kernel. Each kind is a module; all run on the
//! blocking pool (they are syscall loops) and return their metrics when done.

pub mod cfs_quota;
pub mod cgroup_churn;
pub mod exec;
pub mod selftest;
pub mod veth_storm;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use kchaos_model::metrics::Metric;
use kchaos_model::protocol::WorkloadReport;
use kchaos_model::scenario::{Workload, WorkloadSpec};

use crate::channel::Reporter;
use crate::mounts::CgroupLayout;

/// Error samples kept per workload (the count is exact, the text is for people).
pub const MAX_ERROR_SAMPLES: usize = 5;

/// What every workload gets.
#[derive(Debug, Clone)]
pub struct Env {
    pub reporter: Reporter,
    pub layout: CgroupLayout,
    pub deadline: Instant,
    pub stop: Arc<AtomicBool>,
    /// The run's seed; workloads derive their own from it and their name.
    pub seed: u64,
}

/// Prepares a workload before probes start (e.g. its parent cgroup, which probes read).
pub fn prepare(workload: &Workload, env: &Env) -> Result<(), String> {
    match &workload.spec {
        WorkloadSpec::CgroupChurn(spec) => {
            cgroup_churn::prepare(spec, env, &cgroup_churn::RealOps::new(env.layout.mode))
        }
        WorkloadSpec::CfsQuota(spec) => cfs_quota::prepare(spec, env),
        WorkloadSpec::VethStorm(_) | WorkloadSpec::Exec(_) => Ok(()),
        WorkloadSpec::Selftest(_) => Ok(()),
    }
}

/// Runs one workload to completion; reports how long it took as `<name>.wall`.
pub fn run(workload: &Workload, env: &Env) -> (WorkloadReport, Vec<(String, Metric)>) {
    let start = Instant::now();
    let (report, mut metrics) = run_kind(workload, env);
    let wall = start.elapsed().as_nanos() as f64;
    metrics.push((
        format!("{}.wall", workload.name),
        Metric::Value(kchaos_model::metrics::Gauge {
            unit: kchaos_model::units::Unit::Ns,
            value: wall,
        }),
    ));
    (report, metrics)
}

fn run_kind(workload: &Workload, env: &Env) -> (WorkloadReport, Vec<(String, Metric)>) {
    let deadline = match workload.duration {
        Some(d) => env.deadline.min(Instant::now() + d),
        None => env.deadline,
    };
    let env = Env {
        deadline,
        ..env.clone()
    };
    match &workload.spec {
        WorkloadSpec::CgroupChurn(spec) => cgroup_churn::run(
            workload,
            spec,
            &env,
            &cgroup_churn::RealOps::new(env.layout.mode),
        ),
        WorkloadSpec::CfsQuota(spec) => cfs_quota::run(workload, spec, &env),
        WorkloadSpec::VethStorm(spec) => veth_storm::run(workload, spec, &env),
        WorkloadSpec::Exec(spec) => exec::run(workload, spec, &env),
        WorkloadSpec::Selftest(spec) => (selftest::run(workload, spec, &env), Vec::new()),
    }
}

/// The report of a workload that could not start.
pub fn failed(workload: &Workload, error: String) -> (WorkloadReport, Vec<(String, Metric)>) {
    (
        WorkloadReport {
            name: workload.name.clone(),
            iterations: 0,
            errors: 1,
            error_samples: vec![error],
        },
        Vec::new(),
    )
}

/// Counts errors and keeps the first few verbatim.
#[derive(Debug, Default)]
pub struct Errors {
    pub count: u64,
    pub samples: Vec<String>,
}

impl Errors {
    pub fn push(&mut self, msg: String) {
        self.count += 1;
        if self.samples.len() < MAX_ERROR_SAMPLES {
            self.samples.push(msg);
        }
    }

    pub fn merge(&mut self, other: Errors) {
        self.count += other.count;
        for s in other.samples {
            if self.samples.len() < MAX_ERROR_SAMPLES {
                self.samples.push(s);
            }
        }
    }
}
