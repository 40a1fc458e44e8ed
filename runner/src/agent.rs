//! One session: handshake, setup, workloads with probes, settle, report.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kchaos_model::metrics::Metric;
use kchaos_model::protocol::{
    GuestMessage, HostMessage, Phase, RunReport, RunRequest, WorkloadReport, PROTOCOL_VERSION,
};
use kchaos_model::scenario::{ProbeSpec, Scenario, Workload, WorkloadSpec};
use kchaos_model::timeline::Span;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::watch;

use crate::boot::mounts::{self, CgroupSetupError};
use crate::boot::setup::{self, Applied};
use crate::link::channel::Reporter;
use crate::probes::{self, RunningProbe};
use crate::workloads::{self, Env};
use crate::VERSION;

/// How long the host may take to answer `Hello` with a scenario.
const RUN_WAIT: Duration = Duration::from_secs(60);
/// How long systemd may take to answer on the system bus after the runner started.
const SYSTEMD_WAIT: Duration = Duration::from_secs(30);
/// How long to wait for the host's `Ack` of the results before powering off anyway.
const ACK_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("The host sent no scenario within {0:?}")]
    NoRun(Duration),
    #[error("The host closed the control channel")]
    Closed,
    #[error("The host speaks protocol {host}, this runner {runner}; rebuild the runner")]
    Protocol { host: u32, runner: u32 },
    #[error(transparent)]
    Sysctl(#[from] setup::SysctlError),
    #[error(transparent)]
    Mount(#[from] mounts::MountError),
    #[error(transparent)]
    Systemd(#[from] crate::systemd::SystemdError),
    #[error("Aborted by the host: {0}")]
    Aborted(String),
}

/// Runs the session; every error is also reported to the host as `Fatal`.
pub async fn session(
    reporter: Reporter,
    mut inbox: UnboundedReceiver<HostMessage>,
    cgroups_mounted: bool,
) -> Result<(), SessionError> {
    let result = run(&reporter, &mut inbox, cgroups_mounted).await;
    if let Err(e) = &result {
        reporter.send(GuestMessage::Fatal {
            message: kchaos_model::error_chain(e),
        });
    }
    result
}

async fn run(
    reporter: &Reporter,
    inbox: &mut UnboundedReceiver<HostMessage>,
    cgroups_mounted: bool,
) -> Result<(), SessionError> {
    let request = wait_for_run(inbox).await?;
    if request.protocol != PROTOCOL_VERSION {
        return Err(SessionError::Protocol {
            host: request.protocol,
            runner: PROTOCOL_VERSION,
        });
    }
    let scenario = &request.scenario;
    tracing::info!(cell = %request.cell, scenario = %scenario.name, seed = request.seed, "running");
    reporter.send(GuestMessage::Phase {
        phase: Phase::Setup,
    });
    apply_vm(reporter, scenario).await?;
    let controllers = controllers_needed(scenario);
    let layout = match mounts::mount_cgroups(scenario.vm.cgroup, &controllers, cgroups_mounted) {
        Ok(layout) => layout,
        Err(CgroupSetupError::Unsupported(why)) => {
            reporter.send(GuestMessage::Skip { reason: why.0 });
            return finish(reporter, inbox).await;
        }
        Err(CgroupSetupError::Mount(e)) => return Err(e.into()),
    };

    let mut env = Env {
        reporter: reporter.clone(),
        layout,
        deadline: Instant::now(),
        stop: Arc::new(AtomicBool::new(false)),
        seed: request.seed,
    };
    // Workloads set up what probes read (their parent cgroups) before anything is measured.
    let (mut results, ready) = prepare_workloads(scenario, &env).await;

    reporter.send(GuestMessage::Phase {
        phase: Phase::Workload,
    });
    let epoch = Instant::now();
    env.deadline = epoch + scenario.duration;
    let (stop_probes, probe_stop) = watch::channel(false);
    let running = start_probes(scenario, reporter, epoch, &probe_stop, &env).await;
    let (spans, aborted) =
        run_workloads(scenario, &env, epoch, ready, &mut results, reporter, inbox).await;
    let workload_ms = u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
    if let Some(reason) = aborted {
        return Err(SessionError::Aborted(reason));
    }

    reporter.send(GuestMessage::Phase {
        phase: Phase::Settle,
    });
    tokio::time::sleep(scenario.settle).await;
    let _ = stop_probes.send(true);
    reporter.send(GuestMessage::Phase {
        phase: Phase::Collect,
    });

    let report = collect(reporter, workload_ms, spans, results, running).await;
    reporter.send(GuestMessage::Finished(report));
    finish(reporter, inbox).await
}

/// A workload's outcome, by its place in the scenario.
type Outcome = (usize, (WorkloadReport, Vec<(String, Metric)>));

/// Runs the ready workloads, each on a blocking thread: together, except those that run
/// `after` another, which start when it has finished (or failed to start). An `Abort`
/// from the host, or the channel closing, sets `env.stop` for the workloads to see.
/// Every outcome goes into `results`, a failure for each workload whose `after` never
/// finished; returns when each workload ran, and why the host aborted, if it did.
async fn run_workloads(
    scenario: &Scenario,
    env: &Env,
    epoch: Instant,
    ready: Vec<(usize, Workload)>,
    results: &mut Vec<Outcome>,
    reporter: &Reporter,
    inbox: &mut UnboundedReceiver<HostMessage>,
) -> (Vec<Span>, Option<String>) {
    let mut finished: HashSet<String> = results
        .iter()
        .map(|(i, _)| scenario.workloads[*i].name.clone())
        .collect();
    let (mut waiting, now): (Vec<_>, Vec<_>) = ready
        .into_iter()
        .partition(|(_, w)| w.after.as_ref().is_some_and(|a| !finished.contains(a)));
    let mut tasks = tokio::task::JoinSet::new();
    // When each workload ran: its phase, for checks that judge one on its own.
    let mut spans: Vec<Span> = Vec::new();
    let spawn = |tasks: &mut tokio::task::JoinSet<_>, index: usize, workload: Workload| {
        let env = env.clone();
        tasks.spawn_blocking(move || {
            let start_ms = since(epoch);
            let result = workloads::run(&workload, &env);
            let span = Span {
                name: workload.name.clone(),
                start_ms,
                end_ms: since(epoch),
            };
            (index, result, span)
        });
    };
    for (index, workload) in now {
        spawn(&mut tasks, index, workload);
    }
    let mut aborted = None;
    while !tasks.is_empty() {
        tokio::select! {
            done = tasks.join_next() => match done {
                Some(Ok((index, result, span))) => {
                    finished.insert(scenario.workloads[index].name.clone());
                    results.push((index, result));
                    spans.push(span);
                    let (start, still): (Vec<_>, Vec<_>) = std::mem::take(&mut waiting)
                        .into_iter()
                        .partition(|(_, w)| w.after.as_ref().is_some_and(|a| finished.contains(a)));
                    waiting = still;
                    for (index, workload) in start {
                        spawn(&mut tasks, index, workload);
                    }
                }
                Some(Err(e)) => reporter.send(GuestMessage::Fatal { message: format!("workload task failed: {e}") }),
                None => break,
            },
            msg = inbox.recv(), if aborted.is_none() => match msg {
                Some(HostMessage::Abort { reason }) => {
                    env.stop.store(true, Ordering::Relaxed);
                    aborted = Some(reason);
                }
                None => {
                    env.stop.store(true, Ordering::Relaxed);
                    aborted = Some("the host closed the control channel".to_owned());
                }
                Some(_) => {}
            },
        }
    }
    for (index, workload) in waiting {
        let why = format!(
            "did not start: `{}`, which it runs after, never finished",
            workload.after.as_deref().unwrap_or("?")
        );
        results.push((index, workloads::failed(&workload, why)));
    }
    (spans, aborted)
}

/// Applies what `[vm]` asks of a running kernel: its sysctls (a key this kernel lacks
/// is a note, not an error) and, on a systemd image, waits for systemd to answer on the
/// bus.
async fn apply_vm(reporter: &Reporter, scenario: &Scenario) -> Result<(), SessionError> {
    for (key, value) in &scenario.vm.sysctl {
        if setup::apply_sysctl(key, value)? == Applied::Missing {
            reporter.note(format!(
                "sysctl {key} does not exist on this kernel; not set"
            ));
        }
    }
    if scenario.vm.image.runs_systemd() {
        let version = crate::systemd::wait_ready(SYSTEMD_WAIT).await?;
        tracing::info!(%version, "systemd answers");
    }
    Ok(())
}

/// Prepares each workload on a blocking thread, in order: the ready ones, and the
/// outcome (a failure) of each that could not be prepared.
async fn prepare_workloads(
    scenario: &Scenario,
    env: &Env,
) -> (Vec<Outcome>, Vec<(usize, Workload)>) {
    let mut results = Vec::new();
    let mut ready = Vec::new();
    for (index, workload) in scenario.workloads.iter().cloned().enumerate() {
        let prepare_env = env.clone();
        let w = workload.clone();
        match tokio::task::spawn_blocking(move || workloads::prepare(&w, &prepare_env)).await {
            Ok(Ok(())) => ready.push((index, workload)),
            Ok(Err(e)) => {
                results.push((
                    index,
                    workloads::failed(&workload, kchaos_model::error_chain(&e)),
                ));
            }
            Err(e) => results.push((
                index,
                workloads::failed(&workload, format!("prepare panicked: {e}")),
            )),
        }
    }
    (results, ready)
}

/// Starts every probe, in order. Counters take their first sample here, before any
/// workload starts: `.first` is the baseline and `.delta` what the workloads left
/// behind.
async fn start_probes(
    scenario: &Scenario,
    reporter: &Reporter,
    epoch: Instant,
    stop: &watch::Receiver<bool>,
    env: &Env,
) -> Vec<RunningProbe> {
    let mut running = Vec::with_capacity(scenario.probes.len());
    for p in &scenario.probes {
        running.push(
            probes::start(
                p.clone(),
                reporter.clone(),
                epoch,
                stop.clone(),
                &env.layout,
            )
            .await,
        );
    }
    running
}

/// The run's report: the workloads' outcomes in the scenario's order, then each
/// probe's, once it has stopped (a probe's note goes to the host as it is read).
async fn collect(
    reporter: &Reporter,
    workload_ms: u64,
    spans: Vec<Span>,
    mut results: Vec<Outcome>,
    running: Vec<RunningProbe>,
) -> RunReport {
    let mut report = RunReport {
        workload_ms,
        spans,
        ..RunReport::default()
    };
    results.sort_by_key(|(i, _)| *i);
    for (_, (w, metrics)) in results {
        report.workloads.push(w);
        report.metrics.extend(metrics);
    }
    for probe in running {
        let done = probe.finish().await;
        if let Some(timeline) = done.timeline {
            report.timelines.insert(done.report.name.clone(), timeline);
        }
        if let Some(note) = done.note {
            reporter.note(note);
        }
        report.probes.push(done.report);
        report.metrics.extend(done.metrics);
    }
    report
}

/// Waits (bounded) for the host to confirm it has everything.
async fn finish(
    reporter: &Reporter,
    inbox: &mut UnboundedReceiver<HostMessage>,
) -> Result<(), SessionError> {
    let _ = tokio::task::block_in_place(|| reporter.flush(ACK_WAIT));
    // Unbounded when the host may keep this VM: it withholds the Ack then.
    let deadline = tokio::time::sleep(crate::keep::ack_wait(ACK_WAIT));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            msg = inbox.recv() => match msg {
                Some(HostMessage::Ack) | None => return Ok(()),
                Some(_) => {}
            },
            _ = &mut deadline => {
                tracing::warn!("no Ack from the host; powering off anyway");
                return Ok(());
            }
        }
    }
}

async fn wait_for_run(
    inbox: &mut UnboundedReceiver<HostMessage>,
) -> Result<Box<RunRequest>, SessionError> {
    let deadline = tokio::time::sleep(RUN_WAIT);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            msg = inbox.recv() => match msg {
                Some(HostMessage::Run(req)) => return Ok(req),
                Some(HostMessage::Abort { reason }) => return Err(SessionError::Aborted(reason)),
                Some(HostMessage::Ack) => {}
                None => return Err(SessionError::Closed),
            },
            _ = &mut deadline => return Err(SessionError::NoRun(RUN_WAIT)),
        }
    }
}

/// Controllers the scenario needs mounted: required ones plus the workloads'.
fn controllers_needed(scenario: &Scenario) -> Vec<String> {
    let mut set: BTreeSet<String> = scenario
        .requires
        .cgroup_controllers
        .iter()
        .cloned()
        .collect();
    for w in &scenario.workloads {
        match &w.spec {
            WorkloadSpec::CgroupChurn(c) => set.extend(c.controllers.iter().cloned()),
            WorkloadSpec::CfsQuota(c) => set.extend(c.controllers.iter().cloned()),
            // Counts dying cgroups in the churn's hierarchy (a v1 memory mount).
            WorkloadSpec::MemcgReclaim(_) => {
                set.insert("memory".to_owned());
            }
            WorkloadSpec::Selftest(_)
            | WorkloadSpec::VethStorm(_)
            | WorkloadSpec::Exec(_)
            | WorkloadSpec::Hold(_)
            | WorkloadSpec::SystemdUnits(_) => {}
        }
    }
    for p in &scenario.probes {
        if let ProbeSpec::WakeupLatency {
            cgroup: Some(_),
            controllers,
            ..
        } = &p.spec
        {
            set.extend(controllers.iter().cloned());
        }
    }
    set.into_iter().collect()
}

/// Milliseconds since `epoch`: the time base of every sample and span.
fn since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

pub fn hello(kernel_release: String) -> GuestMessage {
    GuestMessage::Hello(kchaos_model::protocol::Hello {
        protocol: PROTOCOL_VERSION,
        runner_version: VERSION.to_owned(),
        kernel_release,
        uptime_ms: crate::link::heartbeat::uptime_ms(),
    })
}
