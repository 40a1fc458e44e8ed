//! Probes run as tokio tasks for the whole workload phase and the settle time. Each
//! measurement is a blocking file read done on the blocking pool and timed there, so
//! runtime scheduling is not part of the number. A probe pinned to one CPU, the
//! wake-up probe and the network probe run on threads of their own.
//!
//! Every latency is also kept with the time it was taken ([`timeline`]), so the host can
//! judge a phase or a condition of the run on its own.

mod counter;
mod dstate;
mod net;
mod pinned;
mod systemd_call;
pub mod timeline;
mod wakeup;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kchaos_model::metrics::{Metric, Series};
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
    timeline: timeline::Timeline,
    /// Time zero of the timeline; latencies are not placed on it without one.
    epoch: Option<Instant>,
    reads: u64,
    errors: u64,
    error_samples: Vec<String>,
}

impl ProbeState {
    fn new(epoch: Instant) -> ProbeState {
        ProbeState {
            epoch: Some(epoch),
            ..ProbeState::default()
        }
    }

    fn error(&mut self, msg: String) {
        self.errors += 1;
        if self.error_samples.len() < MAX_ERROR_SAMPLES {
            self.error_samples.push(msg);
        }
    }

    /// A measurement that started at `start` (time zero `epoch`) and took `took`.
    fn latency_at(&mut self, epoch: Instant, start: Instant, took: Duration) {
        self.reads += 1;
        self.latency.record(took);
        self.timeline.latency(epoch, start, took);
    }

    /// A measurement that just ended and took `took`.
    fn record_latency(&mut self, took: Duration) {
        let now = Instant::now();
        let start = now.checked_sub(took).unwrap_or(now);
        match self.epoch {
            Some(epoch) => self.latency_at(epoch, start, took),
            None => {
                self.reads += 1;
                self.latency.record(took);
            }
        }
    }
}

/// What a probe left when it stopped.
#[derive(Debug)]
pub struct Finished {
    pub report: ProbeReport,
    pub metrics: Vec<(String, Metric)>,
    /// Its latencies with the time each was taken; `None` for counters (their samples
    /// streamed already).
    pub timeline: Option<Series>,
    /// A note for the results, e.g. that the timeline was thinned.
    pub note: Option<String>,
}

/// A running probe; [`RunningProbe::finish`] returns its report and metrics.
#[derive(Debug)]
pub struct RunningProbe {
    probe: Probe,
    how: How,
    epoch: Instant,
}

#[derive(Debug)]
enum How {
    /// Read, counter, d-state or systemd call: a tokio task polling.
    Polled {
        state: Arc<Mutex<ProbeState>>,
        task: tokio::task::JoinHandle<()>,
    },
    /// A read on a pinned thread, or the network probe's threads.
    Threads {
        state: Arc<Mutex<ProbeState>>,
        running: Threads,
    },
    /// Wake-up latency: a thread or a child process of its own.
    Wakeup(wakeup::Running),
}

#[derive(Debug)]
enum Threads {
    Pinned(pinned::Running),
    Net(net::Running),
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
            cpu,
            per_cpu,
        } => How::Wakeup(wakeup::start(
            probe.interval,
            cgroup.as_deref(),
            controllers,
            *cpu,
            *per_cpu,
            layout,
        )),
        ProbeSpec::ReadLatency {
            path,
            cpu: Some(cpu),
        } => {
            let state = Arc::new(Mutex::new(ProbeState::new(epoch)));
            let running = pinned::start_read(
                &probe.name,
                path.clone(),
                *cpu,
                probe.interval,
                epoch,
                Arc::clone(&state),
            );
            How::Threads {
                state,
                running: Threads::Pinned(running),
            }
        }
        ProbeSpec::NetLatency(spec) => {
            let state = Arc::new(Mutex::new(ProbeState::new(epoch)));
            let running = net::start(spec, probe.interval, epoch, Arc::clone(&state)).await;
            How::Threads {
                state,
                running: Threads::Net(running),
            }
        }
        ProbeSpec::ReadLatency { .. } | ProbeSpec::Counter { .. } | ProbeSpec::DState => {
            let state = Arc::new(Mutex::new(ProbeState::new(epoch)));
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
            let state = Arc::new(Mutex::new(ProbeState::new(epoch)));
            let task = tokio::spawn(systemd_call::run(
                probe.interval,
                *timeout,
                stop,
                Arc::clone(&state),
            ));
            How::Polled { state, task }
        }
    };
    RunningProbe { probe, how, epoch }
}

impl RunningProbe {
    /// Waits for the probe to stop (polled probes were sent the stop signal already;
    /// threads are stopped here).
    pub async fn finish(self) -> Finished {
        let name = self.probe.name.clone();
        let epoch = self.epoch;
        let state = match self.how {
            How::Polled { state, task } => {
                // A panicked task still leaves what it recorded.
                let _ = task.await;
                state
            }
            How::Threads { state, running } => {
                let _ = tokio::task::spawn_blocking(move || match running {
                    Threads::Pinned(r) => r.stop(),
                    Threads::Net(r) => r.stop(),
                })
                .await;
                state
            }
            How::Wakeup(running) => return finish_wakeup(name, running, epoch).await,
        };
        let state = std::mem::take(&mut *pinned::lock(&state));
        let latency = matches!(
            self.probe.spec,
            ProbeSpec::ReadLatency { .. }
                | ProbeSpec::SystemdCall { .. }
                | ProbeSpec::NetLatency(_)
        );
        let report = ProbeReport {
            name: name.clone(),
            reads: state.reads,
            errors: state.errors,
            error_samples: state.error_samples,
        };
        if !latency {
            // Series are assembled by the host from the streamed samples.
            return Finished {
                report,
                metrics: Vec::new(),
                timeline: None,
                note: None,
            };
        }
        let note = thinned(&name, state.timeline.stride());
        Finished {
            report,
            metrics: vec![(name, Metric::Histogram(state.latency.summary()))],
            timeline: Some(state.timeline.into_series()),
            note,
        }
    }
}

async fn finish_wakeup(name: String, running: wakeup::Running, epoch: Instant) -> Finished {
    let who = name.clone();
    let result = tokio::task::spawn_blocking(move || wakeup::finish(&who, running, epoch))
        .await
        .map_err(|e| format!("probe panicked: {e}"))
        .and_then(|r| r.map_err(|e| kchaos_model::error_chain(&e)));
    let mut report = ProbeReport {
        name,
        ..ProbeReport::default()
    };
    match result {
        Ok(wakeup::Finished {
            metrics,
            timeline,
            note: per_cpu,
        }) => {
            if let Some((_, Metric::Histogram(wakeups))) = metrics.first() {
                report.reads = wakeups.count;
            }
            // A child's samples were thinned by its own bound; say so when they were.
            let stride = if (timeline.samples.len() as u64) < report.reads {
                report.reads / (timeline.samples.len() as u64).max(1)
            } else {
                1
            };
            // Each CPU's median (with `per_cpu`), then whether samples were thinned.
            let note = match (per_cpu, thinned(&report.name, stride)) {
                (Some(a), Some(b)) => Some(format!("{a}; {b}")),
                (a, b) => a.or(b),
            };
            Finished {
                report,
                metrics,
                timeline: Some(timeline),
                note,
            }
        }
        Err(e) => {
            report.errors = 1;
            report.error_samples.push(e);
            Finished {
                report,
                metrics: Vec::new(),
                timeline: None,
                note: None,
            }
        }
    }
}

/// A note when a probe's timeline kept only one sample in `stride`.
fn thinned(name: &str, stride: u64) -> Option<String> {
    (stride > 1).then(|| {
        format!(
            "{name}: more than {} samples; its timeline (for phase and condition checks) keeps about one in {stride}, evenly",
            timeline::MAX_SAMPLES
        )
    })
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
        ProbeSpec::ReadLatency { path, .. } | ProbeSpec::Counter { path, .. } => {
            std::fs::read_to_string(path)
                .map(Reading::Text)
                .map_err(|e| format!("read {path}: {e}"))
        }
        ProbeSpec::DState => dstate::count().map(Reading::Number),
        ProbeSpec::WakeupLatency { .. }
        | ProbeSpec::SystemdCall { .. }
        | ProbeSpec::NetLatency(_) => Err("this probe does not read files".to_owned()),
    }
}

async fn measure(probe: &Probe, reporter: &Reporter, epoch: Instant, state: &Mutex<ProbeState>) {
    let spec = probe.spec.clone();
    let read = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let result = read_once(&spec);
        (result, start, start.elapsed())
    })
    .await;
    let Ok((result, start, took)) = read else {
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
        (Ok(_), ProbeSpec::ReadLatency { .. }) => st.latency_at(epoch, start, took),
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
