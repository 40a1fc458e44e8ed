//! Probes on a thread of their own pinned to one CPU: a monitoring agent's reads of
//! `memory.stat` on the CPU whose interrupts the incident blocked. The tokio pool cannot
//! pin (its threads run anything), so these pace themselves.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::ProbeState;
use crate::pin::pin_current_thread;

/// The longest a paced thread sleeps before it looks at its stop flag again.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// A probe thread; [`Running::stop`] ends it.
#[derive(Debug)]
pub struct Running {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Asks the thread to stop and waits for it (blocking: call from the blocking pool).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Reads `path` every `interval` from a thread pinned to `cpu`, timing each whole read.
pub fn start_read(
    name: &str,
    path: String,
    cpu: u32,
    interval: Duration,
    epoch: Instant,
    state: Arc<Mutex<ProbeState>>,
) -> Running {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let failed = Arc::clone(&state);
    let spawned = std::thread::Builder::new()
        .name(format!("kchaos-{name}"))
        .spawn(move || {
            if let Err(e) = pin_current_thread(cpu) {
                lock(&state).error(kchaos_model::error_chain(&e));
                return;
            }
            pace(interval, &flag, || {
                let start = Instant::now();
                let read = std::fs::read_to_string(&path);
                let took = start.elapsed();
                let mut st = lock(&state);
                match read {
                    Ok(_) => st.latency_at(epoch, start, took),
                    Err(e) => st.error(format!("read {path}: {e}")),
                }
            });
        });
    let handle = match spawned {
        Ok(h) => Some(h),
        Err(e) => {
            lock(&failed).error(format!("cannot start the probe thread: {e}"));
            None
        }
    };
    Running { stop, handle }
}

pub(super) fn lock(state: &Mutex<ProbeState>) -> std::sync::MutexGuard<'_, ProbeState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Calls `tick` every `interval` until `stop`. A tick that runs late does not make the
/// next ones bunch up: the next is an interval after it (tokio's `Delay`).
pub fn pace(interval: Duration, stop: &AtomicBool, mut tick: impl FnMut()) {
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        tick();
        next += interval;
        let now = Instant::now();
        if next < now {
            next = now;
        }
        loop {
            let now = Instant::now();
            if stop.load(Ordering::Relaxed) || now >= next {
                break;
            }
            std::thread::sleep((next - now).min(STOP_CHECK));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_ticks_at_the_interval_and_stops_when_asked() {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let start = Instant::now();
        let ticks = std::thread::spawn(move || {
            let mut n = 0u32;
            pace(Duration::from_millis(10), &flag, || n += 1);
            n
        });
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
        let n = ticks.join().unwrap();
        let elapsed = start.elapsed();
        // At most one tick per interval (plus the first), whatever the machine's load.
        let most = u32::try_from(elapsed.as_millis() / 10).unwrap() + 1;
        assert!(n >= 1 && n <= most, "{n} ticks in {elapsed:?}");
    }

    #[test]
    fn a_pinned_read_probe_times_each_read_and_counts_failures() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("stat");
        std::fs::write(&file, "file 4096\n").unwrap();
        let state = Arc::new(Mutex::new(ProbeState::default()));
        let epoch = Instant::now();
        let running = start_read(
            "t",
            file.display().to_string(),
            0,
            Duration::from_millis(5),
            epoch,
            Arc::clone(&state),
        );
        std::thread::sleep(Duration::from_millis(100));
        std::fs::remove_file(&file).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        running.stop();
        let st = std::mem::take(&mut *lock(&state));
        assert!(
            st.reads >= 1 && st.errors >= 1,
            "{} {}",
            st.reads,
            st.errors
        );
        assert!(
            st.error_samples[0].contains("No such file"),
            "{:?}",
            st.error_samples
        );
        let timeline = st.timeline.into_series();
        assert_eq!(timeline.samples.len() as u64, st.reads);
        assert!(timeline.samples.windows(2).all(|w| w[0].0 <= w[1].0));
    }
}
