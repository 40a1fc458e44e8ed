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
use crate::pin::pin_current_thread;
use crate::probes::timeline::Timeline;

/// What one probe run measured.
#[derive(Debug, Default)]
pub struct Wakeups {
    pub latency: Latency,
    /// Each wake-up's lateness at the CLOCK_MONOTONIC millisecond its sleep began: the
    /// clock every process shares, so a child's samples line up with the runner's.
    pub timeline: Timeline,
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
    /// `(CLOCK_MONOTONIC ms, lateness ns)` per wake-up, thinned evenly past a bound
    /// (every CPU's, in time order, with `per_cpu`).
    #[serde(default)]
    pub samples: Vec<(u64, f64)>,
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
    pub fn report(self) -> WakeupReport {
        WakeupReport {
            summary: self.latency.summary(),
            cpu_ns: nanos(self.cpu),
            wall_ns: nanos(self.wall),
            samples: self.timeline.into_series().samples,
            cpus: Vec::new(),
        }
    }
}

/// CLOCK_MONOTONIC in milliseconds (what `Instant` reads on Linux).
pub fn monotonic_ms() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| u64::try_from(Duration::from(t).as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// Measures until `stop`, as the probe asked: one thread (pinned to `cpu` when given),
/// or with `per_cpu` a thread pinned on each CPU. The one place both the runner's
/// thread and the child in a cgroup decide how to measure.
pub fn measure_as(
    interval: Duration,
    cpu: Option<u32>,
    per_cpu: bool,
    stop: &AtomicBool,
) -> Result<WakeupReport, String> {
    if per_cpu {
        return measure_per_cpu(interval, stop).map(merged_report);
    }
    if let Some(cpu) = cpu {
        pin_current_thread(cpu).map_err(|e| e.to_string())?;
    }
    Ok(measure(interval, stop).report())
}

/// One report of the threads pinned on each CPU: all wake-ups merged (their samples in
/// time order), their CPU time summed, each CPU's own summary kept.
pub fn merged_report(per_cpu: Vec<(usize, Wakeups)>) -> WakeupReport {
    let mut all = Latency::new();
    let (mut cpu, mut wall) = (Duration::ZERO, Duration::ZERO);
    let mut cpus = Vec::with_capacity(per_cpu.len());
    let mut samples = Vec::new();
    for (c, w) in per_cpu {
        all.merge(&w.latency);
        cpu += w.cpu;
        wall = wall.max(w.wall);
        cpus.push(CpuWakeups {
            cpu: c,
            summary: w.latency.summary(),
        });
        samples.extend(w.timeline.into_series().samples);
    }
    samples.sort_by_key(|&(at, _)| at);
    WakeupReport {
        summary: all.summary(),
        cpu_ns: nanos(cpu),
        wall_ns: nanos(wall),
        samples,
        cpus,
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
        let at = monotonic_ms();
        let t = Instant::now();
        std::thread::sleep(interval);
        let late = t.elapsed().saturating_sub(interval);
        out.latency.record(late);
        out.timeline.push(at, late.as_nanos() as f64);
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
    #[error("Wake-up probe: {0}")]
    Pin(String),
}

/// The probe as a child inside a cgroup: measures (pinned to `cpu`, or on each CPU with
/// `per_cpu`) until `stop` closes, then writes a [`WakeupReport`] as JSON to `out`.
pub fn run_child(
    interval_us: u64,
    cpu: Option<u32>,
    per_cpu: bool,
    stop: File,
    mut out: File,
) -> Result<(), WakeupError> {
    let done = AtomicBool::new(false);
    let interval = Duration::from_micros(interval_us);
    let report = std::thread::scope(|s| {
        let worker = s.spawn(|| measure_as(interval, cpu, per_cpu, &done));
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
        // Every wake-up is on the timeline, at the monotonic clock's time.
        assert_eq!(r.samples.len() as u64, r.summary.count);
        assert!(r.samples[0].0 <= monotonic_ms());
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
        let r = merged_report(per_cpu);
        assert_eq!(r.cpus.len(), cpus.len());
        assert_eq!(r.samples.len() as u64, r.summary.count);
        assert!(
            r.samples.windows(2).all(|w| w[0].0 <= w[1].0),
            "in time order"
        );
        let each: u64 = r.cpus.iter().map(|c| c.summary.count).sum();
        assert_eq!(r.summary.count, each, "the merge holds every wake-up");
        assert!(r.cpus.iter().all(|c| c.summary.count >= 5), "{:?}", r.cpus);
    }
}
