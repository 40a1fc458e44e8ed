//! The `wakeup-latency` probe: a thread in the runner, or a child process inside a
//! cgroup (to measure what a throttled container sees).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::time::Instant;

use kchaos_model::metrics::{Metric, Series};
use kchaos_model::units::Unit;

use crate::boot::mounts::CgroupLayout;
use crate::metrics::Named;
use crate::spawn::wakeup::{self, CpuWakeups, WakeupReport};
use crate::spawn::{Job, Running as Child, SpawnError, Spawner, Target};

#[derive(Debug, thiserror::Error)]
pub enum WakeupProbeError {
    #[error("Cannot start the probe thread")]
    Thread(#[source] std::io::Error),
    #[error("The probe thread panicked")]
    Panicked,
    #[error("Wake-up probe in {cgroup}")]
    Child {
        cgroup: String,
        #[source]
        source: SpawnError,
    },
    #[error("Cannot pin the probe's threads")]
    Pin(String),
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
        handle: std::thread::JoinHandle<Result<WakeupReport, String>>,
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
    per_cpu: bool,
    layout: &CgroupLayout,
) -> Running {
    match cgroup {
        None => {
            let stop = Arc::new(AtomicBool::new(false));
            let flag = Arc::clone(&stop);
            match std::thread::Builder::new()
                .name("kchaos-wakeup".into())
                .spawn(move || wakeup::measure_as(interval, cpu, per_cpu, &flag))
            {
                Ok(handle) => Running::Thread { stop, handle },
                Err(e) => Running::Failed(WakeupProbeError::Thread(e)),
            }
        }
        Some(cg) => {
            let target = Target::new(layout.mode, layout.dirs(controllers, cg));
            let interval_us = u64::try_from(interval.as_micros()).unwrap_or(u64::MAX);
            let job = Job::Wakeup {
                interval_us,
                cpu,
                per_cpu,
            };
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

/// What a stopped probe measured: its metrics, its timeline (time zero at the run's
/// epoch), and with `per_cpu` a line naming each CPU's median for the notes.
#[derive(Debug)]
pub struct Finished {
    pub metrics: Vec<(String, Metric)>,
    pub timeline: Series,
    pub note: Option<String>,
}

/// Stops the probe and returns what it measured, or why there is nothing.
pub fn finish(name: &str, running: Running, epoch: Instant) -> Result<Finished, WakeupProbeError> {
    let report = match running {
        Running::Failed(e) => return Err(e),
        Running::Thread { stop, handle } => {
            stop.store(true, Ordering::Relaxed);
            handle
                .join()
                .map_err(|_| WakeupProbeError::Panicked)?
                .map_err(WakeupProbeError::Pin)?
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
    let mut named = Named::new(name);
    named.value("cpu_share", Unit::Ratio, share);
    let mut note = None;
    if let Some(worst) = skew(&report.cpus) {
        named.value("cpu_skew", Unit::Ratio, worst.skew).value(
            "worst_cpu_p50",
            Unit::Ns,
            worst.p50 as f64,
        );
        let each: Vec<String> = report
            .cpus
            .iter()
            .map(|c| format!("cpu{} {}", c.cpu, format_ms(c.summary.p50)))
            .collect();
        note = Some(format!(
            "{name}: median wake-up latency per CPU: {}; the latest, cpu{}, at {:.2}x the median of the others",
            each.join(", "),
            worst.cpu,
            worst.skew
        ));
    }
    let mut metrics = vec![(name.to_owned(), Metric::Histogram(report.summary))];
    metrics.extend(named.into_list());
    Ok(Finished {
        metrics,
        timeline,
        note,
    })
}

fn format_ms(ns: u64) -> String {
    format!("{:.2} ms", ns as f64 / 1e6)
}

/// The CPU that woke latest at the median, against the median of the other CPUs'
/// medians.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Skew {
    pub cpu: usize,
    pub p50: u64,
    pub skew: f64,
}

/// The latest CPU's skew; `None` without per-CPU data (or when nothing woke anywhere).
/// With one CPU there is no other to be slower than: its skew is 1.
pub fn skew(cpus: &[CpuWakeups]) -> Option<Skew> {
    let measured: Vec<&CpuWakeups> = cpus.iter().filter(|c| c.summary.count > 0).collect();
    // The latest; on a tie the lowest-numbered CPU.
    let worst = measured
        .iter()
        .max_by(|a, b| a.summary.p50.cmp(&b.summary.p50).then(b.cpu.cmp(&a.cpu)))?;
    let mut others: Vec<u64> = measured
        .iter()
        .filter(|c| c.cpu != worst.cpu)
        .map(|c| c.summary.p50)
        .collect();
    others.sort_unstable();
    let skew = if others.is_empty() {
        1.0
    } else {
        let mid = others.len() / 2;
        let median = if others.len() % 2 == 0 {
            (others[mid - 1] as f64 + others[mid] as f64) / 2.0
        } else {
            others[mid] as f64
        };
        if median <= 0.0 {
            return None;
        }
        worst.summary.p50 as f64 / median
    };
    Some(Skew {
        cpu: worst.cpu,
        p50: worst.summary.p50,
        skew,
    })
}

#[cfg(test)]
mod tests {
    use kchaos_model::metrics::Summary;

    use super::*;

    fn cpu(cpu: usize, p50_us: u64, count: u64) -> CpuWakeups {
        CpuWakeups {
            cpu,
            summary: Summary {
                unit: Unit::Ns,
                count,
                p50: p50_us * 1000,
                ..Summary::default()
            },
        }
    }

    #[test]
    fn the_latest_cpu_is_judged_against_the_median_of_the_others() {
        // (per-CPU medians in µs, wake-ups each) -> (latest CPU, its skew)
        type Case = (&'static [(u64, u64)], Option<(usize, f64)>);
        let cases: &[Case] = &[
            (&[(400, 100), (400, 100)], Some((0, 1.0))),
            (&[(400, 100), (1200, 100)], Some((1, 3.0))),
            // Four CPUs: CPU 3 against the median (500) of 400, 500 and 600.
            (
                &[(400, 100), (500, 100), (600, 100), (2000, 100)],
                Some((3, 4.0)),
            ),
            // One CPU: nothing to be slower than.
            (&[(700, 100)], Some((0, 1.0))),
            // A CPU that never woke is left out, not read as zero.
            (&[(400, 100), (9000, 0)], Some((0, 1.0))),
            (&[], None),
        ];
        for (cpus, want) in cases {
            let cpus: Vec<CpuWakeups> = cpus
                .iter()
                .enumerate()
                .map(|(i, &(p, n))| cpu(i, p, n))
                .collect();
            let got = skew(&cpus).map(|s| (s.cpu, s.skew));
            assert_eq!(got, *want, "{cpus:?}");
        }
    }
}
