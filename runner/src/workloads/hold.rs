//! `hold`: touch nothing for the workload's `duration`, so what the workloads before it
//! left (removed memory cgroups still dying) lasts while the probes measure it.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kchaos_model::metrics::Metric;
use kchaos_model::protocol::WorkloadReport;
use kchaos_model::scenario::Workload;

use super::Env;

/// How often the hold looks at the host's stop request.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// Waits until the workload's deadline (its `duration`, capped by the scenario's) or
/// until the host stops the run.
pub fn run(workload: &Workload, env: &Env) -> (WorkloadReport, Vec<(String, Metric)>) {
    loop {
        let now = Instant::now();
        if env.stop.load(Ordering::Relaxed) || now >= env.deadline {
            break;
        }
        std::thread::sleep((env.deadline - now).min(STOP_CHECK));
    }
    let report = WorkloadReport {
        name: workload.name.clone(),
        iterations: 1,
        ..WorkloadReport::default()
    };
    (report, Vec::new())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use kchaos_model::scenario::CgroupMode;

    use super::*;
    use crate::boot::mounts::CgroupLayout;
    use crate::link::channel::Reporter;

    fn hold() -> Workload {
        let toml = "[scenario]\nname = \"t\"\n[[workload]]\nkind = \"hold\"\nname = \"hold\"\nduration = \"1s\"\n";
        kchaos_model::scenario::parse("t.toml", toml)
            .unwrap()
            .workloads
            .remove(0)
    }

    fn env(deadline: Instant) -> Env {
        Env {
            reporter: Reporter::discard().0,
            layout: CgroupLayout {
                mode: CgroupMode::V2,
                v1: vec![],
                unified: None,
            },
            deadline,
            stop: Arc::new(AtomicBool::new(false)),
            seed: 1,
        }
    }

    #[test]
    fn a_hold_ends_at_its_deadline_or_when_the_host_stops_the_run() {
        let start = Instant::now();
        let (report, metrics) = run(&hold(), &env(start + Duration::from_millis(150)));
        assert!(start.elapsed() >= Duration::from_millis(150));
        assert_eq!((report.iterations, report.errors), (1, 0));
        assert!(metrics.is_empty());

        let stopped = env(Instant::now() + Duration::from_secs(60));
        stopped.stop.store(true, Ordering::Relaxed);
        let start = Instant::now();
        run(&hold(), &stopped);
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
