//! `exec`: run a program from the image (brought in with `[vm] tools`) and time it.

use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use kchaos_model::metrics::Metric;
use kchaos_model::protocol::WorkloadReport;
use kchaos_model::scenario::workload::Exec;
use kchaos_model::scenario::Workload;

use super::{Env, Errors};
use crate::histogram::Latency;
use crate::metrics::Named;

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
            Err(e) => errors.push(kchaos_model::error_chain(&e)),
        }
        runs += 1;
    }
    let name = &workload.name;
    let mut metrics = Named::new(name);
    metrics
        .latency("elapsed", &elapsed)
        .count("errors", errors.count);
    (
        WorkloadReport {
            name: name.clone(),
            iterations: runs,
            errors: errors.count,
            error_samples: errors.samples,
            findings: Vec::new(),
        },
        metrics.into_list(),
    )
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("The argv is empty")]
    EmptyArgv,
    #[error("Cannot create the output file {path}")]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot start {program}")]
    Start {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} still running at the scenario's deadline; killed")]
    Deadline { program: String },
    #[error("Cannot wait for {program}")]
    Wait {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} {status}: {tail}")]
    Failed {
        program: String,
        status: ExitStatus,
        /// The last lines of its output.
        tail: String,
    },
}

/// The next wait between two looks at a running program: short at first (most runs
/// are quick), growing to 50 ms so a long script is not slowed by a poller sharing its
/// one vCPU.
fn next_poll(d: Duration) -> Duration {
    (d * 2).min(Duration::from_millis(50))
}

/// One run; output goes to a file (a chatty program must not block on a full pipe) and
/// its tail is quoted when the run fails.
fn run_once(name: &str, n: u64, spec: &Exec, deadline: Instant) -> Result<Duration, ExecError> {
    let (program, args) = spec.argv.split_first().ok_or(ExecError::EmptyArgv)?;
    let log_path = PathBuf::from(format!("/tmp/kchaos-exec-{name}-{n}.log"));
    let output_error = |source| ExecError::Output {
        path: log_path.clone(),
        source,
    };
    let log = std::fs::File::create(&log_path).map_err(output_error)?;
    let log2 = log.try_clone().map_err(output_error)?;
    let start = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", PATH)
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2))
        .spawn()
        .map_err(|source| ExecError::Start {
            program: program.clone(),
            source,
        })?;
    let mut poll = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ExecError::Deadline {
                    program: program.clone(),
                });
            }
            Ok(None) => {
                std::thread::sleep(poll);
                poll = next_poll(poll);
            }
            Err(source) => {
                return Err(ExecError::Wait {
                    program: program.clone(),
                    source,
                })
            }
        }
    };
    let took = start.elapsed();
    if status.success() {
        return Ok(took);
    }
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    let tail: Vec<&str> = output.lines().rev().take(3).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(ExecError::Failed {
        program: program.clone(),
        status,
        tail: tail.join(" | "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polling_backs_off_to_a_bound() {
        let mut d = Duration::from_millis(1);
        let mut seen = Vec::new();
        for _ in 0..8 {
            seen.push(d.as_millis());
            d = next_poll(d);
        }
        assert_eq!(seen, [1, 2, 4, 8, 16, 32, 50, 50]);
    }

    #[test]
    fn a_failed_run_quotes_its_last_lines() {
        let spec = Exec {
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo one; echo two; echo three; echo four; exit 3".into(),
            ],
            env: Default::default(),
        };
        let e = run_once(
            "t",
            std::process::id().into(),
            &spec,
            Instant::now() + Duration::from_secs(30),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("/bin/sh exit status: 3: two | three | four"),
            "{e}"
        );
    }
}
