//! Workloads: what the runner does to the kernel. Each kind is a module; all run on the
//! blocking pool (they are syscall loops) and return their metrics when done.

pub mod cfs_quota;
pub mod cgroup_churn;
pub mod exec;
pub mod hold;
pub mod memcg_reclaim;
pub mod selftest;
pub mod systemd_units;
pub mod veth_storm;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use kchaos_model::metrics::Metric;
use kchaos_model::protocol::WorkloadReport;
use kchaos_model::scenario::{Workload, WorkloadSpec};

use crate::boot::mounts::CgroupLayout;
use crate::link::channel::Reporter;
use crate::metrics::Named;

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

/// Why a workload could not be set up; the workload then reports it as its one error.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("Cannot prepare the workload's cgroups")]
    Cgroup(#[from] crate::boot::mounts::CgroupError),
    #[error("Cannot set the workload's limits")]
    Limit(#[from] crate::limits::LimitError),
}

/// Prepares a workload before probes start (e.g. its parent cgroup, which probes read).
pub fn prepare(workload: &Workload, env: &Env) -> Result<(), PrepareError> {
    match &workload.spec {
        WorkloadSpec::CgroupChurn(spec) => Ok(cgroup_churn::prepare(
            spec,
            env,
            &cgroup_churn::RealOps::new(env.layout.mode),
        )?),
        WorkloadSpec::CfsQuota(spec) => cfs_quota::prepare(spec, env),
        WorkloadSpec::VethStorm(_)
        | WorkloadSpec::Exec(_)
        | WorkloadSpec::Hold(_)
        | WorkloadSpec::SystemdUnits(_)
        | WorkloadSpec::MemcgReclaim(_) => Ok(()),
        WorkloadSpec::Selftest(_) => Ok(()),
    }
}

/// Runs one workload to completion; reports how long it took as `<name>.wall`.
pub fn run(workload: &Workload, env: &Env) -> (WorkloadReport, Vec<(String, Metric)>) {
    let start = Instant::now();
    let (report, mut metrics) = run_kind(workload, env);
    let mut wall = Named::new(&workload.name);
    wall.value(
        "wall",
        kchaos_model::units::Unit::Ns,
        start.elapsed().as_nanos() as f64,
    );
    metrics.extend(wall.into_list());
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
        WorkloadSpec::MemcgReclaim(spec) => memcg_reclaim::run(
            workload,
            spec,
            &env,
            &memcg_reclaim::RealOps::new(env.layout.clone()),
        ),
        WorkloadSpec::CfsQuota(spec) => cfs_quota::run(workload, spec, &env),
        WorkloadSpec::VethStorm(spec) => veth_storm::run(workload, spec, &env),
        WorkloadSpec::SystemdUnits(spec) => systemd_units::run(workload, spec, &env),
        WorkloadSpec::Exec(spec) => exec::run(workload, spec, &env),
        WorkloadSpec::Hold(_) => hold::run(workload, &env),
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
            findings: Vec::new(),
        },
        Vec::new(),
    )
}

/// Hands out iteration numbers to a workload's concurrent slots, paced at `rate` per
/// second, until the iterations are used up, the deadline passes or the host stops the
/// run. Needs a tokio runtime (the pacing timer).
#[derive(Debug)]
pub struct Iterations<'a> {
    workload: &'a Workload,
    env: &'a Env,
    next: AtomicU64,
    pace: Option<tokio::sync::Mutex<tokio::time::Interval>>,
}

impl<'a> Iterations<'a> {
    pub fn new(workload: &'a Workload, env: &'a Env, rate: Option<f64>) -> Iterations<'a> {
        let pace = rate.filter(|r| *r > 0.0).map(|r| {
            let mut i = tokio::time::interval(std::time::Duration::from_secs_f64(1.0 / r));
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tokio::sync::Mutex::new(i)
        });
        Iterations {
            workload,
            env,
            next: AtomicU64::new(0),
            pace,
        }
    }

    /// The next iteration to run, or `None` when the workload is over.
    pub async fn claim(&self) -> Option<u64> {
        if self.env.stop.load(Ordering::Relaxed) || Instant::now() >= self.env.deadline {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        if self.workload.iterations.is_some_and(|limit| n >= limit) {
            return None;
        }
        if let Some(pace) = &self.pace {
            pace.lock().await.tick().await;
        }
        Some(n)
    }

    /// Iteration `n` has finished: the host hears about every 25th.
    pub fn done(&self, n: u64) {
        if n % 25 == 24 {
            self.env
                .reporter
                .send(kchaos_model::protocol::GuestMessage::Progress {
                    workload: self.workload.name.clone(),
                    done: n + 1,
                    total: self.workload.iterations,
                });
        }
    }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kchaos_model::protocol::GuestMessage;

    use super::*;

    fn workload(iterations: u64) -> Workload {
        let toml = format!(
            "[scenario]\nname = \"t\"\n[[workload]]\nkind = \"exec\"\nname = \"w\"\nargv = [\"/bin/true\"]\niterations = {iterations}\n"
        );
        kchaos_model::scenario::parse("t.toml", &toml)
            .unwrap()
            .workloads
            .remove(0)
    }

    fn env() -> (Env, std::sync::mpsc::Receiver<GuestMessage>) {
        let (reporter, rx) = Reporter::discard();
        let env = Env {
            reporter,
            layout: CgroupLayout {
                mode: kchaos_model::scenario::CgroupMode::V2,
                v1: vec![],
                unified: None,
            },
            deadline: Instant::now() + Duration::from_secs(30),
            stop: Arc::new(AtomicBool::new(false)),
            seed: 1,
        };
        (env, rx)
    }

    #[tokio::test]
    async fn iterations_are_handed_out_once_each_and_stop_with_the_host() {
        let w = workload(60);
        let (env, rx) = env();
        let it = Iterations::new(&w, &env, None);
        let mut got = Vec::new();
        while let Some(n) = it.claim().await {
            got.push(n);
            it.done(n);
        }
        assert_eq!(got, (0..60).collect::<Vec<_>>());
        let _ = env.reporter.flush(Duration::from_secs(5));
        let progress: Vec<u64> = rx
            .try_iter()
            .filter_map(|m| match m {
                GuestMessage::Progress { done, .. } => Some(done),
                _ => None,
            })
            .collect();
        assert_eq!(progress, [25, 50]);

        let stopped = Iterations::new(&w, &env, None);
        env.stop.store(true, Ordering::Relaxed);
        assert_eq!(
            stopped.claim().await,
            None,
            "a stopped run hands out nothing"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_paces_the_claims() {
        let w = workload(5);
        let (env, _rx) = env();
        let it = Iterations::new(&w, &env, Some(10.0));
        let start = tokio::time::Instant::now();
        while it.claim().await.is_some() {}
        // Five claims at 10/s: the first at once, then one per 100ms (virtual time).
        assert_eq!(start.elapsed(), Duration::from_millis(400));
    }
}
