//! Cyclictest-style wake-up latency: sleep for an interval, record how late the thread
//! woke. Used by the `wakeup-latency` probe, in the runner or in a child process inside a
//! throttled cgroup. The thread's own CPU time is measured too: the probe's cost.

use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kchaos_model::metrics::Summary;
use nix::time::{clock_gettime, ClockId};
use serde::{Deserialize, Serialize};

use crate::histogram::Latency;

/// What one probe run measured.
#[derive(Debug, Default)]
pub struct Wakeups {
    pub latency: Latency,
    pub cpu: Duration,
    pub wall: Duration,
}

/// The form a child reports on stdout when stopped.
#[derive(Debug, Serialize, Deserialize)]
pub struct WakeupReport {
    /// Every wake-up, on whichever CPU.
    pub summary: Summary,
    /// CPU time of the probe's threads, together.
    pub cpu_ns: u64,
    pub wall_ns: u64,
    /// With a thread pinned on each CPU: each CPU's own wake-ups.
    #[serde(default)]
    pub cpus: Vec<CpuWakeups>,
}

/// The wake-ups of the probe thread pinned on one CPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuWakeups {
    pub cpu: usize,
    pub summary: Summary,
}

impl Wakeups {
    pub fn report(&self) -> WakeupReport {
        WakeupReport {
            summary: self.latency.summary(),
            cpu_ns: nanos(self.cpu),
            wall_ns: nanos(self.wall),
            cpus: Vec::new(),
        }
    }
}

/// One report of the threads pinned on each CPU: all wake-ups merged, their CPU time
/// summed, each CPU's own summary kept.
pub fn merged_report(per_cpu: &[(usize, Wakeups)]) -> WakeupReport {
    let mut all = Latency::new();
    let (mut cpu, mut wall) = (Duration::ZERO, Duration::ZERO);
    for (_, w) in per_cpu {
        all.merge(&w.latency);
        cpu += w.cpu;
        wall = wall.max(w.wall);
    }
    WakeupReport {
        summary: all.summary(),
        cpu_ns: nanos(cpu),
        wall_ns: nanos(wall),
        cpus: per_cpu
            .iter()
            .map(|(c, w)| CpuWakeups {
                cpu: *c,
                summary: w.latency.summary(),
            })
            .collect(),
    }
}

/// A thread pinned on each CPU the caller may use, measuring until `stop`. A thread that
/// cannot be pinned measures nothing and says why.
pub fn measure_per_cpu(
    interval: Duration,
    stop: &AtomicBool,
) -> Result<Vec<(usize, Wakeups)>, String> {
    let cpus = crate::cpus::allowed();
    std::thread::scope(|s| {
        let workers: Vec<_> = cpus
            .iter()
            .map(|&cpu| {
                s.spawn(move || {
                    crate::cpus::pin(cpu)?;
                    Ok::<_, String>((cpu, measure(interval, stop)))
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err("a probe thread panicked".to_owned()))
            })
            .collect()
    })
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn thread_cpu() -> Duration {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

/// Sleeps `interval` again and again until `stop`, recording the overshoot of each wake.
pub fn measure(interval: Duration, stop: &AtomicBool) -> Wakeups {
    let mut out = Wakeups::default();
    let (cpu0, wall0) = (thread_cpu(), Instant::now());
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        std::thread::sleep(interval);
        out.latency.record(t.elapsed().saturating_sub(interval));
    }
    out.cpu = thread_cpu().saturating_sub(cpu0);
    out.wall = wall0.elapsed();
    out
}

#[derive(Debug, thiserror::Error)]
pub enum WakeupError {
    #[error("Cannot encode the wake-up report")]
    Encode(#[source] serde_json::Error),
    #[error("Cannot write the wake-up report to the probe's pipe")]
    Write(#[source] std::io::Error),
    #[error("Per-CPU wake-up probe: {0}")]
    Pin(String),
}

/// The probe as a child inside a cgroup: measures (on each CPU with `per_cpu`) until
/// `stop` closes, then writes a [`WakeupReport`] as JSON to `out`.
pub fn run_child(
    interval_us: u64,
    per_cpu: bool,
    stop: File,
    mut out: File,
) -> Result<(), WakeupError> {
    let done = AtomicBool::new(false);
    let interval = Duration::from_micros(interval_us);
    let report = std::thread::scope(|s| {
        let worker = s.spawn(|| {
            if per_cpu {
                measure_per_cpu(interval, &done).map(|w| merged_report(&w))
            } else {
                Ok(measure(interval, &done).report())
            }
        });
        crate::spawn::cfs_worker::wait_for_eof(stop);
        done.store(true, Ordering::Relaxed);
        worker
            .join()
            .unwrap_or_else(|_| Err("the probe thread panicked".to_owned()))
    })
    .map_err(WakeupError::Pin)?;
    let json = serde_json::to_vec(&report).map_err(WakeupError::Encode)?;
    out.write_all(&json).map_err(WakeupError::Write)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn measures_overshoot_and_own_cpu() {
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let start = Instant::now();
        let worker = std::thread::spawn(move || measure(Duration::from_millis(2), &s));
        std::thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::Relaxed);
        let w = worker.join().unwrap();
        let elapsed = start.elapsed();
        let r = w.report();
        assert!(r.summary.count >= 10, "{}", r.summary.count);
        // The worker may start late on a loaded machine: its wall time is what it ran,
        // within what the test waited.
        assert!(r.wall_ns > 0 && u128::from(r.wall_ns) <= elapsed.as_nanos());
        // Sleeping costs far less CPU than it takes wall time.
        assert!(r.cpu_ns < r.wall_ns / 2, "{} of {}", r.cpu_ns, r.wall_ns);
    }

    #[test]
    fn per_cpu_threads_report_each_cpu_and_the_merge() {
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let worker =
            std::thread::spawn(move || measure_per_cpu(Duration::from_millis(2), &s).unwrap());
        std::thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::Relaxed);
        let per_cpu = worker.join().unwrap();
        let cpus: Vec<usize> = per_cpu.iter().map(|(c, _)| *c).collect();
        assert_eq!(cpus, crate::cpus::allowed());
        let r = merged_report(&per_cpu);
        assert_eq!(r.cpus.len(), cpus.len());
        let each: u64 = r.cpus.iter().map(|c| c.summary.count).sum();
        assert_eq!(r.summary.count, each, "the merge holds every wake-up");
        assert!(r.cpus.iter().all(|c| c.summary.count >= 5), "{:?}", r.cpus);
    }
}
