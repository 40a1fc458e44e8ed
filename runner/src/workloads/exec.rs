//! `exec`: run a program from the image (brought in with `[vm] tools`) and time it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kchaos_model::metrics::{Gauge, Metric};
use kchaos_model::protocol::WorkloadReport;
use kchaos_model::scenario::workload::Exec;
use kchaos_model::scenario::Workload;
use kchaos_model::units::Unit;

use super::{Env, Errors};
use crate::histogram::Latency;

/// The PATH programs run with: where `[vm] tools` puts them.
const PATH: &str = "/bin:/usr/bin:/sbin:/usr/sbin";

pub fn run(workload: &Workload, spec: &Exec, env: &Env) -> (WorkloadReport, Vec<(String, Metric)>) {
    let mut elapsed = Latency::new();
    let mut errors = Errors::default();
    let mut runs = 0;
    let iterations = workload.iterations.unwrap_or(1);
    while runs < iterations
        && !env.stop.load(std::sync::atomic::Ordering::Relaxed)
        && Instant::now() < env.deadline
    {
        match run_once(&workload.name, runs, spec, env.deadline) {
            Ok(took) => elapsed.record(took),
            Err(e) => errors.push(e),
        }
        runs += 1;
    }
    let name = &workload.name;
    let metrics = vec![
        (
            format!("{name}.elapsed"),
            Metric::Histogram(elapsed.summary()),
        ),
        (
            format!("{name}.errors"),
            Metric::Value(Gauge {
                unit: Unit::Count,
                value: errors.count as f64,
            }),
        ),
    ];
    (
        WorkloadReport {
            name: name.clone(),
            iterations: runs,
            errors: errors.count,
            error_samples: errors.samples,
        },
        metrics,
    )
}

/// One run; output goes to a file (a chatty program must not block on a full pipe) and
/// its tail is quoted when the run fails.
fn run_once(name: &str, n: u64, spec: &Exec, deadline: Instant) -> Result<Duration, String> {
    let program = spec.argv.first().ok_or("empty argv")?;
    let log_path = format!("/tmp/kchaos-exec-{name}-{n}.log");
    let log = std::fs::File::create(&log_path).map_err(|e| format!("create {log_path}: {e}"))?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut child = Command::new(program)
        .args(&spec.argv[1..])
        .env_clear()
        .env("PATH", PATH)
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2))
        .spawn()
        .map_err(|e| format!("start {program}: {e}"))?;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{program} still running at the scenario's deadline; killed"
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => return Err(format!("wait for {program}: {e}")),
        }
    };
    let took = start.elapsed();
    if status.success() {
        return Ok(took);
    }
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    let tail: Vec<&str> = output.lines().rev().take(3).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(format!("{program} {status}: {}", tail.join(" | ")))
}
