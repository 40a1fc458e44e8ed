//! Probes run as tokio tasks for the whole workload phase and the settle time. Each
//! measurement is a blocking file read done on the blocking pool and timed there, so
//! runtime scheduling is not part of the number.

mod counter;
mod dstate;
mod systemd_call;
mod wakeup;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use kchaos_model::metrics::Metric;
use kchaos_model::protocol::{GuestMessage, ProbeReport};
use kchaos_model::scenario::{Probe, ProbeSpec};
use tokio::sync::watch;

pub use self::counter::parse_counter;
use crate::boot::mounts::CgroupLayout;
use crate::histogram::Latency;
use crate::link::channel::Reporter;

/// Error samples kept per probe (the count is exact, the text is for people).
const MAX_ERROR_SAMPLES: usize = 5;

#[derive(Debug, Default)]
struct ProbeState {
    latency: Latency,
    reads: u64,
    errors: u64,
    error_samples: Vec<String>,
}

impl ProbeState {
    fn error(&mut self, msg: String) {
        self.errors += 1;
        if self.error_samples.len() < MAX_ERROR_SAMPLES {
            self.error_samples.push(msg);
        }
    }
}

/// A running probe; [`RunningProbe::finish`] returns its report and metrics.
#[derive(Debug)]
pub struct RunningProbe {
    probe: Probe,
    how: How,
}

#[derive(Debug)]
enum How {
    /// Read, counter, d-state or systemd call: a tokio task polling.
    Polled {
        state: Arc<Mutex<ProbeState>>,
        task: tokio::task::JoinHandle<()>,
    },
    /// Wake-up latency: a thread or a child process of its own (threads, per CPU).
    Wakeup {
        running: wakeup::Running,
        reporter: Reporter,
    },
}

/// Starts a probe. `epoch` is time zero of series samples; `stop` ends polled probes.
/// Series probes (counters, D-state) take their first sample before returning, so it
/// precedes every workload.
pub async fn start(
    probe: Probe,
    reporter: Reporter,
    epoch: Instant,
    stop: watch::Receiver<bool>,
    layout: &CgroupLayout,
) -> RunningProbe {
    let how = match &probe.spec {
        ProbeSpec::WakeupLatency {
            cgroup,
            controllers,
            per_cpu,
        } => How::Wakeup {
            running: wakeup::start(
                probe.interval,
                cgroup.as_deref(),
                controllers,
                *per_cpu,
                layout,
            ),
            reporter,
        },
        ProbeSpec::ReadLatency { .. } | ProbeSpec::Counter { .. } | ProbeSpec::DState => {
            let state = Arc::new(Mutex::new(ProbeState::default()));
            if matches!(probe.spec, ProbeSpec::Counter { .. } | ProbeSpec::DState) {
                measure(&probe, &reporter, epoch, &state).await;
            }
            let task = tokio::spawn(run(
                probe.clone(),
                reporter,
                epoch,
                stop,
                Arc::clone(&state),
            ));
            How::Polled { state, task }
        }
        ProbeSpec::SystemdCall { timeout } => {
            let state = Arc::new(Mutex::new(ProbeState::default()));
            let task = tokio::spawn(systemd_call::run(
                probe.interval,
                *timeout,
                stop,
                Arc::clone(&state),
            ));
            How::Polled { state, task }
        }
    };
    RunningProbe { probe, how }
}

impl RunningProbe {
    /// Waits for the probe to stop (polled probes were sent the stop signal already).
    pub async fn finish(self) -> (ProbeReport, Vec<(String, Metric)>) {
        let name = self.probe.name.clone();
        match self.how {
            How::Polled { state, task } => {
                // A panicked task still leaves what it recorded.
                let _ = task.await;
                let state = {
                    let mut guard = state
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    std::mem::take(&mut *guard)
                };
                let report = ProbeReport {
                    name: name.clone(),
                    reads: state.reads,
                    errors: state.errors,
                    error_samples: state.error_samples,
                };
                let metrics = match self.probe.spec {
                    ProbeSpec::ReadLatency { .. } | ProbeSpec::SystemdCall { .. } => {
                        vec![(name, Metric::Histogram(state.latency.summary()))]
                    }
                    // Series are assembled by the host from the streamed samples.
                    _ => Vec::new(),
                };
                (report, metrics)
            }
            How::Wakeup { running, reporter } => {
                let result = tokio::task::spawn_blocking(move || wakeup::finish(&name, running))
                    .await
                    .map_err(|e| format!("probe panicked: {e}"))
                    .and_then(|r| r.map_err(|e| kchaos_model::error_chain(&e)));
                let mut report = ProbeReport {
                    name: self.probe.name.clone(),
                    ..ProbeReport::default()
                };
                match result {
                    Ok(finished) => {
                        if let Some(note) = finished.note {
                            reporter.note(note);
                        }
                        let metrics = finished.metrics;
                        if let Some((_, Metric::Histogram(wakeups))) = metrics.first() {
                            report.reads = wakeups.count;
                        }
                        (report, metrics)
                    }
                    Err(e) => {
                        report.errors = 1;
                        report.error_samples.push(e);
                        (report, Vec::new())
                    }
                }
            }
        }
    }
}

async fn run(
    probe: Probe,
    reporter: Reporter,
    epoch: Instant,
    mut stop: watch::Receiver<bool>,
    state: Arc<Mutex<ProbeState>>,
) {
    let mut ticker = tokio::time::interval(probe.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = ticker.tick() => *stop.borrow(),
            _ = stop.changed() => true,
        };
        if stopping {
            // Series take one last sample so `.last` is the value after the settle time.
            if matches!(probe.spec, ProbeSpec::Counter { .. } | ProbeSpec::DState) {
                measure(&probe, &reporter, epoch, &state).await;
            }
            if probe.spec == ProbeSpec::DState {
                note_stuck_tasks(&probe.name, &reporter).await;
            }
            return;
        }
        measure(&probe, &reporter, epoch, &state).await;
    }
}

/// Names the tasks still in D state when the run ends, so a failed `d_state.last`
/// check comes with where they sleep.
async fn note_stuck_tasks(name: &str, reporter: &Reporter) {
    if let Ok(Ok(tasks)) = tokio::task::spawn_blocking(dstate::stuck).await {
        if !tasks.is_empty() {
            reporter.note(format!(
                "{name}: {} task(s) in D state at the end of the run: {}",
                tasks.len(),
                tasks.join(", ")
            ));
        }
    }
}

/// What one poll of a probe produced.
enum Reading {
    /// A file's contents (read-latency, counter).
    Text(String),
    /// A number computed on the spot (d-state).
    Number(f64),
}

/// One poll; blocking (file reads, a /proc scan).
fn read_once(spec: &ProbeSpec) -> Result<Reading, String> {
    match spec {
        ProbeSpec::ReadLatency { path } | ProbeSpec::Counter { path, .. } => {
            std::fs::read_to_string(path)
                .map(Reading::Text)
                .map_err(|e| format!("read {path}: {e}"))
        }
        ProbeSpec::DState => dstate::count().map(Reading::Number),
        ProbeSpec::WakeupLatency { .. } | ProbeSpec::SystemdCall { .. } => {
            Err("this probe does not read files".to_owned())
        }
    }
}

async fn measure(probe: &Probe, reporter: &Reporter, epoch: Instant, state: &Mutex<ProbeState>) {
    let spec = probe.spec.clone();
    let read = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let result = read_once(&spec);
        (result, start.elapsed())
    })
    .await;
    let Ok((result, took)) = read else {
        return;
    };
    let mut st = state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let sample = |st: &mut ProbeState, value: f64| {
        st.reads += 1;
        let t_ms = u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        reporter.send(GuestMessage::Sample {
            metric: probe.name.clone(),
            t_ms,
            value,
        });
    };
    match (result, &probe.spec) {
        (Err(e), _) => st.error(e),
        (Ok(_), ProbeSpec::ReadLatency { .. }) => {
            st.reads += 1;
            st.latency.record(took);
        }
        (Ok(Reading::Text(text)), ProbeSpec::Counter { select, path, .. }) => {
            match parse_counter(&text, select) {
                Ok(value) => sample(&mut st, value),
                Err(e) => st.error(format!("{path}: {e}")),
            }
        }
        (Ok(Reading::Number(value)), _) => sample(&mut st, value),
        (Ok(Reading::Text(_)), _) => {}
    }
}
