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
    pub summary: Summary,
    pub cpu_ns: u64,
    pub wall_ns: u64,
    /// `(CLOCK_MONOTONIC ms, lateness ns)` per wake-up, thinned evenly past a bound.
    #[serde(default)]
    pub samples: Vec<(u64, f64)>,
}

impl Wakeups {
    pub fn report(self) -> WakeupReport {
        WakeupReport {
            summary: self.latency.summary(),
            cpu_ns: nanos(self.cpu),
            wall_ns: nanos(self.wall),
            samples: self.timeline.into_series().samples,
        }
    }
}

/// CLOCK_MONOTONIC in milliseconds (what `Instant` reads on Linux).
pub fn monotonic_ms() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| u64::try_from(Duration::from(t).as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
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
    #[error(transparent)]
    Pin(crate::pin::PinError),
}

/// The probe as a child inside a cgroup: measures (pinned to `cpu` when given) until
/// `stop` closes, then writes a [`WakeupReport`] as JSON to `out`.
pub fn run_child(
    interval_us: u64,
    cpu: Option<u32>,
    stop: File,
    mut out: File,
) -> Result<(), WakeupError> {
    if let Some(cpu) = cpu {
        // Before the worker starts: it inherits the affinity.
        pin_current_thread(cpu).map_err(WakeupError::Pin)?;
    }
    let done = AtomicBool::new(false);
    let wakeups = std::thread::scope(|s| {
        let worker = s.spawn(|| measure(Duration::from_micros(interval_us), &done));
        crate::spawn::cfs_worker::wait_for_eof(stop);
        done.store(true, Ordering::Relaxed);
        worker.join().unwrap_or_default()
    });
    let json = serde_json::to_vec(&wakeups.report()).map_err(WakeupError::Encode)?;
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
}
