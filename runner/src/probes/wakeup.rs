//! The `wakeup-latency` probe: a thread in the runner, or a child process inside a
//! cgroup (to measure what a throttled container sees).

use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kchaos_model::metrics::{Gauge, Metric};
use kchaos_model::units::Unit;

use crate::child;
use crate::mounts::CgroupLayout;
use crate::wakeup::{self, WakeupReport};

#[derive(Debug)]
pub enum Running {
    Thread {
        stop: Arc<AtomicBool>,
        handle: std::thread::JoinHandle<wakeup::Wakeups>,
    },
    Child(Child),
    Failed(String),
}

pub fn start(
    interval: Duration,
    cgroup: Option<&str>,
    controllers: &[String],
    layout: &CgroupLayout,
) -> Running {
    match cgroup {
        None => {
            let stop = Arc::new(AtomicBool::new(false));
            let flag = Arc::clone(&stop);
            match std::thread::Builder::new()
                .name("kchaos-wakeup".into())
                .spawn(move || wakeup::measure(interval, &flag))
            {
                Ok(handle) => Running::Thread { stop, handle },
                Err(e) => Running::Failed(format!("start probe thread: {e}")),
            }
        }
        Some(cg) => {
            let procs = child::procs_files(&layout.dirs(controllers, cg));
            let us = u64::try_from(interval.as_micros())
                .unwrap_or(u64::MAX)
                .to_string();
            match child::spawn(wakeup::SUBCOMMAND, &[us], &procs) {
                Ok(c) => Running::Child(c),
                Err(e) => Running::Failed(format!("start probe process in {cg}: {e}")),
            }
        }
    }
}

/// Stops the probe and returns its metrics, or why there are none.
pub fn finish(name: &str, running: Running) -> Result<Vec<(String, Metric)>, String> {
    let report = match running {
        Running::Failed(e) => return Err(e),
        Running::Thread { stop, handle } => {
            stop.store(true, Ordering::Relaxed);
            handle
                .join()
                .map_err(|_| "the probe thread panicked".to_owned())?
                .report()
        }
        Running::Child(mut c) => {
            // Closing stdin is the stop signal.
            drop(c.stdin.take());
            let out = c
                .wait_with_output()
                .map_err(|e| format!("wait for the probe process: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "probe process {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            serde_json::from_slice::<WakeupReport>(&out.stdout)
                .map_err(|e| format!("probe process output: {e}"))?
        }
    };
    let share = if report.wall_ns > 0 {
        report.cpu_ns as f64 / report.wall_ns as f64
    } else {
        0.0
    };
    Ok(vec![
        (name.to_owned(), Metric::Histogram(report.summary)),
        (
            format!("{name}.cpu_share"),
            Metric::Value(Gauge {
                unit: Unit::Ratio,
                value: share,
            }),
        ),
    ])
}
