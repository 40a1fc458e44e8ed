//! The `wakeup-latency` probe: a thread in the runner, or a child process inside a
//! cgroup (to measure what a throttled container sees).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::time::Instant;

use kchaos_model::metrics::{Gauge, Metric, Series};
use kchaos_model::units::Unit;

use crate::boot::mounts::CgroupLayout;
use crate::pin::{pin_current_thread, PinError};
use crate::spawn::wakeup::{self, WakeupReport};
use crate::spawn::{Job, Running as Child, SpawnError, Spawner, Target};

#[derive(Debug, thiserror::Error)]
pub enum WakeupProbeError {
    #[error("Cannot start the probe thread")]
    Thread(#[source] std::io::Error),
    #[error("The probe thread panicked")]
    Panicked,
    #[error(transparent)]
    Pin(PinError),
    #[error("Wake-up probe in {cgroup}")]
    Child {
        cgroup: String,
        #[source]
        source: SpawnError,
    },
    #[error("Malformed report from the probe process in {cgroup}")]
    Report {
        cgroup: String,
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Debug)]
pub enum Running {
    Thread {
        stop: Arc<AtomicBool>,
        handle: std::thread::JoinHandle<Result<wakeup::Wakeups, PinError>>,
    },
    Child {
        cgroup: String,
        child: Child,
    },
    Failed(WakeupProbeError),
}

pub fn start(
    interval: Duration,
    cgroup: Option<&str>,
    controllers: &[String],
    cpu: Option<u32>,
    layout: &CgroupLayout,
) -> Running {
    match cgroup {
        None => {
            let stop = Arc::new(AtomicBool::new(false));
            let flag = Arc::clone(&stop);
            match std::thread::Builder::new()
                .name("kchaos-wakeup".into())
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        pin_current_thread(cpu)?;
                    }
                    Ok(wakeup::measure(interval, &flag))
                }) {
                Ok(handle) => Running::Thread { stop, handle },
                Err(e) => Running::Failed(WakeupProbeError::Thread(e)),
            }
        }
        Some(cg) => {
            let target = Target::new(layout.mode, layout.dirs(controllers, cg));
            let interval_us = u64::try_from(interval.as_micros()).unwrap_or(u64::MAX);
            let job = Job::Wakeup { interval_us, cpu };
            match Spawner::new().and_then(|s| s.start(&target, job)) {
                Ok(child) => Running::Child {
                    cgroup: cg.to_owned(),
                    child,
                },
                Err(source) => Running::Failed(WakeupProbeError::Child {
                    cgroup: cg.to_owned(),
                    source,
                }),
            }
        }
    }
}

/// Stops the probe and returns its metrics and timeline (time zero at `epoch`), or why
/// there are none.
pub fn finish(
    name: &str,
    running: Running,
    epoch: Instant,
) -> Result<(Vec<(String, Metric)>, Series), WakeupProbeError> {
    let report = match running {
        Running::Failed(e) => return Err(e),
        Running::Thread { stop, handle } => {
            stop.store(true, Ordering::Relaxed);
            handle
                .join()
                .map_err(|_| WakeupProbeError::Panicked)?
                .map_err(WakeupProbeError::Pin)?
                .report()
        }
        Running::Child { cgroup, child } => {
            // Closing the stop pipe ends the measurement; the report follows.
            let out = child
                .stop(false)
                .map_err(|source| WakeupProbeError::Child {
                    cgroup: cgroup.clone(),
                    source,
                })?;
            serde_json::from_slice::<WakeupReport>(&out)
                .map_err(|source| WakeupProbeError::Report { cgroup, source })?
        }
    };
    let share = if report.wall_ns > 0 {
        report.cpu_ns as f64 / report.wall_ns as f64
    } else {
        0.0
    };
    // The samples carry the monotonic clock; the run's time zero is `epoch` on it.
    let zero = wakeup::monotonic_ms()
        .saturating_sub(u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX));
    let timeline = Series {
        unit: Unit::Ns,
        samples: report
            .samples
            .iter()
            .map(|&(at, ns)| (at.saturating_sub(zero), ns))
            .collect(),
    };
    let metrics = vec![
        (name.to_owned(), Metric::Histogram(report.summary)),
        (
            format!("{name}.cpu_share"),
            Metric::Value(Gauge {
                unit: Unit::Ratio,
                value: share,
            }),
        ),
    ];
    Ok((metrics, timeline))
}
