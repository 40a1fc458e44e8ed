//! `cfs-quota`: a tree of cpu cgroups with small quotas, a busy process in every leaf,
//! quotas retuned while they run, extra cgroups created and removed while throttled.
//!
//! Besides the kernel log (lockups, stalls, crashes), it judges bandwidth control by
//! what each leaf received against what it should have: the allowance of every leaf is
//! computed by water-filling its quota and its threads' demand down the tree, per retune
//! interval. `share_min` far below 1 is a starving group (stuck throttled); `share_max`
//! far above 1 is a group escaping its quota.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kchaos_model::metrics::Metric;
use kchaos_model::protocol::{GuestMessage, WorkloadReport};
use kchaos_model::scenario::workload::CfsQuota;
use kchaos_model::scenario::{CgroupMode, CounterSelect, Workload};
use kchaos_model::units::Unit;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use self::ledger::Ledger;
use super::{Env, Errors};
use crate::boot::mounts;
use crate::histogram::Latency;
use crate::kfile::{self, read_key, KernelFileError};
use crate::limits;
use crate::metrics::Named;
use crate::spawn::{Job, Running, Spawner, Target};

/// The tree: inner nodes (below the parent) and leaves, as paths relative to the roots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    pub inner: Vec<String>,
    pub leaves: Vec<String>,
}

/// `parent/g0`, `parent/g0/g1`, ...: `width` children per level, `depth` levels.
pub fn tree(spec: &CfsQuota) -> Tree {
    let mut level = vec![spec.parent.clone()];
    let mut inner = Vec::new();
    for d in 0..spec.depth {
        let next: Vec<String> = level
            .iter()
            .flat_map(|p| (0..spec.width).map(move |i| format!("{p}/g{i}")))
            .collect();
        if d + 1 < spec.depth {
            inner.extend(next.iter().cloned());
        }
        level = next;
    }
    Tree {
        inner,
        leaves: level,
    }
}

pub fn prepare(spec: &CfsQuota, env: &Env) -> Result<(), super::PrepareError> {
    let t = tree(spec);
    mounts::create_cgroup(&env.layout, &spec.parent, &spec.controllers, true)?;
    for node in &t.inner {
        mounts::create_cgroup(&env.layout, node, &spec.controllers, true)?;
        if let Some(share) = spec.inner_share {
            let period = spec.period.1;
            let quota = period.mul_f64(share);
            limits::set_cpu_bandwidth(env.layout.mode, node, micros(quota), micros(period))?;
        }
    }
    for leaf in &t.leaves {
        mounts::create_cgroup(&env.layout, leaf, &spec.controllers, false)?;
    }
    Ok(())
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Quota and period of one leaf for one interval.
#[derive(Debug, Clone, Copy)]
struct Bandwidth {
    quota: Duration,
    period: Duration,
}

impl Bandwidth {
    fn pick(spec: &CfsQuota, rng: &mut ChaCha8Rng) -> Bandwidth {
        let pick = |rng: &mut ChaCha8Rng, (lo, hi): (Duration, Duration)| {
            if lo == hi {
                lo
            } else {
                Duration::from_micros(rng.random_range(micros(lo)..=micros(hi)))
            }
        };
        Bandwidth {
            quota: pick(rng, spec.quota),
            period: pick(rng, spec.period),
        }
    }

    fn share(self) -> f64 {
        self.quota.as_secs_f64() / self.period.as_secs_f64()
    }
}

/// Gives `total` to claimants with these demands, equal weights: nobody gets more than
/// it asks for, and what one does not use is shared by the others (CFS between siblings).
pub fn waterfill(total: f64, demands: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..demands.len()).collect();
    order.sort_by(|&a, &b| demands[a].total_cmp(&demands[b]));
    let mut out = vec![0.0; demands.len()];
    let mut left = total.max(0.0);
    for (k, &i) in order.iter().enumerate() {
        let fair = left / (demands.len() - k) as f64;
        out[i] = demands[i].min(fair);
        left -= out[i];
    }
    out
}

/// CPU each leaf should get (in CPUs), given the leaves' demands, the tree's shape and
/// the inner nodes' cap.
pub fn allowance(
    leaf_demand: &[f64],
    width: usize,
    depth: u32,
    inner_cap: Option<f64>,
    cpus: f64,
) -> Vec<f64> {
    // Demands level by level, bottom-up: an inner node asks min(cap, sum of its children).
    let mut levels = vec![leaf_demand.to_vec()];
    for _ in 1..depth {
        let below = levels.last().map(Vec::as_slice).unwrap_or_default();
        let up: Vec<f64> = below
            .chunks(width)
            .map(|children| {
                let sum: f64 = children.iter().sum();
                inner_cap.map_or(sum, |cap| cap.min(sum))
            })
            .collect();
        levels.push(up);
    }
    levels.reverse();
    // Top-down: the (unlimited) parent shares the machine among its children, and every
    // node shares its allowance among its own.
    let mut alloc = waterfill(cpus, levels.first().map(Vec::as_slice).unwrap_or_default());
    for level in levels.iter().skip(1) {
        alloc = alloc
            .iter()
            .zip(level.chunks(width))
            .flat_map(|(&a, children)| waterfill(a, children))
            .collect();
    }
    alloc
}

struct Leaf {
    rel: String,
    cpu_dir: PathBuf,
    usage_dir: PathBuf,
    worker: Option<Running>,
}

impl Leaf {
    fn usage_us(&self, mode: CgroupMode) -> Result<f64, KernelFileError> {
        match mode {
            CgroupMode::V2 => read_key(&self.usage_dir.join("cpu.stat"), "usage_usec"),
            CgroupMode::V1 | CgroupMode::Hybrid => {
                kfile::read_number(&self.usage_dir.join("cpuacct.usage"), &CounterSelect::Whole)
                    .map(|ns| ns / 1000.0)
            }
        }
    }
}

pub fn run(
    workload: &Workload,
    spec: &CfsQuota,
    env: &Env,
) -> (WorkloadReport, Vec<(String, Metric)>) {
    let mode = env.layout.mode;
    let mut errors = Errors::default();
    let mut rng = ChaCha8Rng::seed_from_u64(kchaos_model::derive_seed(env.seed, &workload.name));
    let t = tree(spec);
    let cpus = std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64);
    let thread_demand = thread_demand(spec, cpus);
    let mut leaves = leaves(&t, env);

    // Bandwidth first, then the workers, so nothing runs unthrottled.
    let mut bandwidth: Vec<Bandwidth> = leaves
        .iter()
        .map(|_| Bandwidth::pick(spec, &mut rng))
        .collect();
    apply(&leaves, &bandwidth, mode, &mut errors);
    start_workers(&mut leaves, spec, env, &mut errors);
    let stat0: Vec<(f64, f64)> = leaves.iter().map(|l| throttle_counts(&l.cpu_dir)).collect();

    let mut ledger = Ledger::open(&leaves, spec, thread_demand, cpus, mode);
    let mut tally = Tally {
        retunes: 0,
        churned: 0,
        churn_rmdir: Latency::new(),
    };
    let start = Instant::now();
    let mut next_retune = spec.retune_every.map(|d| start + d);
    let mut next_churn = spec.churn_every.map(|d| start + d);
    loop {
        let done = env.stop.load(std::sync::atomic::Ordering::Relaxed)
            || Instant::now() >= env.deadline
            || workload.iterations.is_some_and(|n| tally.retunes >= n);
        if done {
            break;
        }
        let now = Instant::now();
        if next_retune.is_some_and(|t| now >= t) {
            ledger.settle(&leaves, &bandwidth, &mut errors);
            bandwidth = leaves
                .iter()
                .map(|_| Bandwidth::pick(spec, &mut rng))
                .collect();
            apply(&leaves, &bandwidth, mode, &mut errors);
            tally.retunes += 1;
            next_retune = spec.retune_every.map(|d| now + d);
            env.reporter.send(GuestMessage::Progress {
                workload: workload.name.clone(),
                done: tally.retunes,
                total: workload.iterations,
            });
        }
        if next_churn.is_some_and(|t| now >= t) {
            churn::churn_once(
                spec,
                env,
                &t,
                &mut rng,
                tally.churned,
                &mut tally.churn_rmdir,
                &mut errors,
            );
            tally.churned += 1;
            next_churn = spec.churn_every.map(|d| now + d);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    ledger.settle(&leaves, &bandwidth, &mut errors);
    let stat1: Vec<(f64, f64)> = leaves.iter().map(|l| throttle_counts(&l.cpu_dir)).collect();
    // Per CPU, read while the workers still run (their threads vanish when stopped).
    let per_cpu = spec
        .per_cpu
        .then(|| per_cpu_metrics(&workload.name, &leaves, env, &mut errors));
    stop_workers(&mut leaves, &mut errors);
    let metrics = metrics(
        &workload.name,
        &tally,
        &ledger,
        &stat0,
        &stat1,
        &errors,
        per_cpu,
    );
    let report = WorkloadReport {
        name: workload.name.clone(),
        iterations: tally.retunes,
        errors: errors.count,
        error_samples: errors.samples,
        findings: Vec::new(),
    };
    (report, metrics)
}

/// What the loop counted.
struct Tally {
    retunes: u64,
    churned: u64,
    churn_rmdir: Latency,
}

/// Threads that want a CPU in each leaf: every burner, and each sleeper for the part of
/// its cycle it runs; with `per_cpu`, that on every CPU.
fn thread_demand(spec: &CfsQuota, cpus: f64) -> f64 {
    let duty = {
        let (r, s) = (spec.burst_run.as_secs_f64(), spec.burst_sleep.as_secs_f64());
        if r + s > 0.0 {
            r / (r + s)
        } else {
            0.0
        }
    };
    // With `per_cpu` every CPU runs the leaf's threads.
    let threads_per = if spec.per_cpu { cpus } else { 1.0 };
    (f64::from(spec.burners) + f64::from(spec.sleepers) * duty) * threads_per
}

/// The tree's leaves with the directories their counters are read from (`cpuacct`
/// holds usage on v1), no worker yet.
fn leaves(t: &Tree, env: &Env) -> Vec<Leaf> {
    t.leaves
        .iter()
        .map(|rel| {
            let dir_of = |c: &str| {
                env.layout
                    .dirs(&[c.to_owned()], rel)
                    .into_iter()
                    .next()
                    .unwrap_or_default()
            };
            let usage_dir = if env.layout.mode == CgroupMode::V2 {
                dir_of("cpu")
            } else {
                dir_of("cpuacct")
            };
            Leaf {
                rel: rel.clone(),
                cpu_dir: dir_of("cpu"),
                usage_dir,
                worker: None,
            }
        })
        .collect()
}

/// Starts a CFS worker in every leaf; a leaf whose worker does not start is an error
/// and runs empty.
fn start_workers(leaves: &mut [Leaf], spec: &CfsQuota, env: &Env, errors: &mut Errors) {
    for leaf in leaves {
        let target = Target::new(
            env.layout.mode,
            env.layout.dirs(&spec.controllers, &leaf.rel),
        );
        let job = Job::CfsWorker {
            burners: spec.burners,
            sleepers: spec.sleepers,
            run_us: micros(spec.burst_run),
            sleep_us: micros(spec.burst_sleep),
            per_cpu: spec.per_cpu,
        };
        match Spawner::new().and_then(|s| s.start(&target, job)) {
            Ok(c) => leaf.worker = Some(c),
            Err(e) => errors.push(format!(
                "start worker in {}: {}",
                leaf.rel,
                kchaos_model::error_chain(&e)
            )),
        }
    }
}

fn stop_workers(leaves: &mut [Leaf], errors: &mut Errors) {
    for leaf in leaves {
        if let Some(c) = leaf.worker.take() {
            if let Err(e) = c.stop(true) {
                errors.push(format!(
                    "worker in {}: {}",
                    leaf.rel,
                    kchaos_model::error_chain(&e)
                ));
            }
        }
    }
}

/// The workload's metrics: the loop's counts, each leaf's share of its allowance, the
/// throttled ratio between the two `cpu.stat` readings, and the per-CPU ones if taken.
/// Only what was measured is reported.
fn metrics(
    name: &str,
    tally: &Tally,
    ledger: &Ledger<'_>,
    stat0: &[(f64, f64)],
    stat1: &[(f64, f64)],
    errors: &Errors,
    per_cpu: Option<Vec<(String, Metric)>>,
) -> Vec<(String, Metric)> {
    let shares: Vec<f64> = ledger
        .used_us
        .iter()
        .zip(&ledger.allowed_us)
        .filter(|(_, &a)| a > 0.0)
        .map(|(&u, &a)| u / a)
        .collect();
    let (periods, throttled) = stat0.iter().zip(stat1).fold((0.0, 0.0), |(p, t), (a, b)| {
        (p + (b.0 - a.0), t + (b.1 - a.1))
    });
    let mut metrics = Named::new(name);
    metrics
        .count("retunes", tally.retunes)
        .count("churned", tally.churned)
        .latency("churn_rmdir", &tally.churn_rmdir)
        .count("errors", errors.count);
    // Only report what was measured: no shares without usage, no ratio without periods.
    if let (Some(min), Some(max)) = (
        shares.iter().copied().reduce(f64::min),
        shares.iter().copied().reduce(f64::max),
    ) {
        metrics
            .value("share_min", Unit::Ratio, min)
            .value("share_max", Unit::Ratio, max);
    }
    if periods > 0.0 {
        metrics.value("throttled_ratio", Unit::Ratio, throttled / periods);
    }
    let mut metrics = metrics.into_list();
    metrics.extend(per_cpu.into_iter().flatten());
    metrics
}

fn apply(leaves: &[Leaf], bandwidth: &[Bandwidth], mode: CgroupMode, errors: &mut Errors) {
    for (leaf, bw) in leaves.iter().zip(bandwidth) {
        if let Err(e) =
            limits::set_cpu_bandwidth(mode, &leaf.rel, micros(bw.quota), micros(bw.period))
        {
            errors.push(kchaos_model::error_chain(&e));
        }
    }
}

/// `percpu_share_min` / `_max` over the leaves' pinned threads, and a note with each
/// CPU's totals and the starving (leaf, CPU). Nothing when no thread could be read.
fn per_cpu_metrics(
    name: &str,
    leaves: &[Leaf],
    env: &Env,
    errors: &mut Errors,
) -> Vec<(String, Metric)> {
    let mut threads = Vec::with_capacity(leaves.len());
    for leaf in leaves {
        let Some(worker) = &leaf.worker else {
            threads.push(Vec::new());
            continue;
        };
        match crate::cpus::pinned_threads(worker.pid()) {
            Ok(t) => threads.push(t),
            Err(e) => {
                errors.push(format!(
                    "per-CPU times of {}: {}",
                    leaf.rel,
                    kchaos_model::error_chain(&e)
                ));
                threads.push(Vec::new());
            }
        }
    }
    let Some((min, max)) = percpu::extremes(&threads) else {
        return Vec::new();
    };
    let rel = |i: usize| leaves.get(i).map_or("?", |l| l.rel.as_str());
    env.reporter.note(format!(
        "{name} per CPU (the leaves' pinned threads): {}; lowest: {} on cpu{} at {:.2} of its other CPUs' median, highest: {} on cpu{} at {:.2}",
        percpu::describe(&threads),
        rel(min.leaf),
        min.cpu,
        min.ratio,
        rel(max.leaf),
        max.cpu,
        max.ratio
    ));
    let mut metrics = Named::new(name);
    metrics
        .value("percpu_share_min", Unit::Ratio, min.ratio)
        .value("percpu_share_max", Unit::Ratio, max.ratio);
    metrics.into_list()
}

/// `(nr_periods, nr_throttled)`; zeros if unreadable (the usage read reports errors).
fn throttle_counts(cpu_dir: &std::path::Path) -> (f64, f64) {
    let stat = cpu_dir.join("cpu.stat");
    (
        read_key(&stat, "nr_periods").unwrap_or(0.0),
        read_key(&stat, "nr_throttled").unwrap_or(0.0),
    )
}

mod churn;
mod ledger;
mod percpu;
#[cfg(test)]
mod tests;
