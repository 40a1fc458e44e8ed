//! `cfs-quota`'s churn: an extra cgroup created under the tree, throttled for a few
//! periods and removed while its quota still applies (the incident's "merely setting a
//! quota on a parent cgroup" path).

use std::time::{Duration, Instant};

use kchaos_model::scenario::workload::CfsQuota;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{micros, Bandwidth, Tree};
use crate::boot::mounts;
use crate::histogram::Latency;
use crate::limits;
use crate::spawn::{Job, Spawner, Target};
use crate::workloads::{Env, Errors};

/// One extra cgroup under a random inner node (or the parent): given a quota, a
/// burner moved in, left to be throttled for a few periods, then emptied and removed.
pub(super) fn churn_once(
    spec: &CfsQuota,
    env: &Env,
    t: &Tree,
    rng: &mut ChaCha8Rng,
    n: u64,
    rmdir: &mut Latency,
    errors: &mut Errors,
) {
    let mode = env.layout.mode;
    let parents: Vec<&String> = std::iter::once(&spec.parent)
        .chain(t.inner.iter())
        .collect();
    let parent = parents[rng.random_range(0..parents.len())];
    let rel = format!("{parent}/churn-{n}");
    if let Err(e) = mounts::create_cgroup(&env.layout, &rel, &spec.controllers, false) {
        errors.push(kchaos_model::error_chain(&e));
        return;
    }
    let bw = Bandwidth::pick(spec, rng);
    if let Err(e) = limits::set_cpu_bandwidth(mode, &rel, micros(bw.quota), micros(bw.period)) {
        errors.push(kchaos_model::error_chain(&e));
    }
    let dirs = env.layout.dirs(&spec.controllers, &rel);
    let burner = Job::CfsWorker {
        burners: 1,
        sleepers: 0,
        run_us: 0,
        sleep_us: 0,
        per_cpu: false,
    };
    match Spawner::new().and_then(|s| s.start(&Target::new(mode, dirs.clone()), burner)) {
        Ok(c) => {
            std::thread::sleep(bw.period * 3);
            if let Err(e) = c.stop(true) {
                errors.push(format!(
                    "worker in {rel}: {}",
                    kchaos_model::error_chain(&e)
                ));
            }
        }
        Err(e) => errors.push(format!(
            "start worker in {rel}: {}",
            kchaos_model::error_chain(&e)
        )),
    }
    for dir in dirs.iter().rev() {
        let start = Instant::now();
        // The exited task can linger in the cgroup for a moment after it is reaped.
        let mut result = std::fs::remove_dir(dir);
        for _ in 0..50 {
            match &result {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(Duration::from_millis(10));
                    result = std::fs::remove_dir(dir);
                }
                _ => break,
            }
        }
        match result {
            Ok(()) => rmdir.record(start.elapsed()),
            Err(e) => errors.push(format!("rmdir {} (throttled cgroup): {e}", dir.display())),
        }
    }
}
