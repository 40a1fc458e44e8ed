//! One cell: boot a disposable VM, hand the scenario to the runner, watch the console and
//! the channel, decide the verdict. Every way out of here yields exactly one result.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs::File;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kchaos_images::Kernel;
use kchaos_model::metrics::{Metric, Series};
use kchaos_model::protocol::{GuestMessage, HostMessage, Phase, RunRequest, PROTOCOL_VERSION};
use kchaos_model::scenario::Scenario;
use kchaos_model::signature::{LogSource, SignatureHit, SignatureSet};
use kchaos_model::verdict::{self, Observations, Verdict};
use tokio::sync::{mpsc, watch};

use crate::channel::{self, ChannelEvent};
use crate::console::{self, ConsoleEvent};
use crate::process::GroupGuard;
use crate::qemu::{Accel, Qemu, QemuCommand};
use crate::results::{now_rfc3339, write_json, Artifacts, CellResult, KernelInfo};

/// A scenario file as loaded: where it came from, its text (kept as evidence) and model.
#[derive(Debug, Clone)]
pub struct LoadedScenario {
    pub path: PathBuf,
    pub source: String,
    pub model: Scenario,
}

/// Everything needed to run one cell.
#[derive(Debug, Clone)]
pub struct CellSpec {
    pub id: String,
    pub scenario: Arc<LoadedScenario>,
    pub kernel: Arc<Kernel>,
    pub initrd: PathBuf,
    pub seed: u64,
    pub repeat: u32,
    /// Results directory and this cell's directory inside it.
    pub results_dir: PathBuf,
    pub dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct CellEnv {
    pub qemu: Qemu,
    pub accel: Accel,
    /// Flips to `true` when the user interrupts the run.
    pub cancel: watch::Receiver<bool>,
    /// The runner's log level (`kchaos.log=` on the guest command line), if set.
    pub guest_log: Option<String>,
    /// Overrides the accelerator-scaled boot timeout (slow or nested hosts).
    pub boot_timeout: Option<Duration>,
}

/// Bounds for one cell, scaled for the accelerator.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// QEMU start → control socket connection.
    pub connect: Duration,
    /// QEMU start → runner `Hello`.
    pub boot: Duration,
    /// Longest silence on the channel before the guest is declared hung.
    pub hang: Duration,
    /// `Hello` → results: the scenario's duration and settle plus this much.
    pub overrun: Duration,
    /// Results → QEMU exit.
    pub poweroff: Duration,
}

impl Timeouts {
    pub fn new(accel: Accel, scenario: &Scenario) -> Timeouts {
        let s = accel.slowdown();
        Timeouts {
            connect: Duration::from_secs(10),
            boot: Duration::from_secs(15) * s,
            hang: scenario
                .vm
                .hang_timeout
                .unwrap_or(Duration::from_secs(8) * s),
            overrun: Duration::from_secs(15) * s,
            poweroff: Duration::from_secs(3) * s,
        }
    }
}

/// Progress reported while a cell runs.
#[derive(Debug, Clone)]
pub enum CellUpdate {
    Booting,
    Phase(Phase),
    Progress {
        workload: String,
        done: u64,
        total: Option<u64>,
    },
}

#[derive(Debug, thiserror::Error)]
enum LaunchError {
    #[error("Cannot prepare the cell directory {path}")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Channel(#[from] channel::ChannelError),
    #[error("Cannot start QEMU ({path})")]
    Spawn {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Invalid signature in the scenario: {0}")]
    Signature(#[from] regex::Error),
}

/// Runs the cell and writes `cell.json`. Never fails: problems become the verdict.
pub async fn run(
    cell: &CellSpec,
    env: &CellEnv,
    update: &(dyn Fn(CellUpdate) + Sync),
) -> CellResult {
    let started_at = now_rfc3339();
    let start = Instant::now();
    let mut result = CellResult {
        id: cell.id.clone(),
        scenario: cell.scenario.model.name.clone(),
        scenario_file: cell.scenario.path.display().to_string(),
        kernel: KernelInfo {
            spec: cell.kernel.spec.clone(),
            resolved: Some(cell.kernel.resolved.clone()),
            release: Some(cell.kernel.release.clone()),
            package: cell.kernel.package.clone(),
        },
        accel: Some(env.accel.as_str().to_owned()),
        seed: cell.seed,
        repeat: cell.repeat,
        verdict: Verdict::Error,
        reasons: Vec::new(),
        boot_ms: None,
        guest_ready_ms: None,
        duration_ms: 0,
        metrics: BTreeMap::new(),
        signatures: Vec::new(),
        notes: Vec::new(),
        artifacts: Artifacts::default(),
        started_at,
    };
    match observe(cell, env, update).await {
        Ok(o) => {
            let decision = verdict::decide(&cell.scenario.model, &o.obs);
            result.verdict = decision.verdict;
            result.reasons = decision.reasons;
            result.boot_ms = o.boot_ms;
            result.guest_ready_ms = o.guest_ready_ms;
            result.metrics = o.obs.metrics;
            result.signatures = o.obs.hits;
            result.notes = o.notes;
            if let Some(release) = o.release {
                result.kernel.release = Some(release);
            }
            let rel = |name: &str| {
                cell.dir
                    .join(name)
                    .strip_prefix(&cell.results_dir)
                    .ok()
                    .map(|p| p.display().to_string())
            };
            result.artifacts = Artifacts {
                dir: rel(""),
                console: rel("console.log"),
                kmsg: rel("kmsg.log"),
                qemu_log: rel("qemu.log"),
            };
        }
        Err(e) => result.reasons.push(error_chain(&e)),
    }
    result.duration_ms = millis(start.elapsed());
    if let Err(e) = write_json(&cell.dir.join("cell.json"), &result) {
        tracing::error!("{}", error_chain(&e));
    }
    result
}

struct Outcome {
    obs: Observations,
    boot_ms: Option<u64>,
    guest_ready_ms: Option<u64>,
    release: Option<String>,
    notes: Vec<String>,
}

/// What the loop has seen so far.
struct Watch {
    signatures: SignatureSet,
    seen_hits: HashSet<(String, String)>,
    obs: Observations,
    series: BTreeMap<String, Series>,
    units: BTreeMap<String, kchaos_model::units::Unit>,
    notes: Vec<String>,
    console_tail: VecDeque<String>,
    corrupt_bytes: usize,
    corrupt_first: Option<String>,
    kmsg_log: Option<File>,
}

const CONSOLE_TAIL: usize = 20;

impl Watch {
    fn classify(&mut self, line: &str, source: LogSource) {
        if let Some(hit) = self.signatures.classify(line, source) {
            if self.seen_hits.insert((hit.id.clone(), hit.line.clone())) {
                self.obs.hits.push(hit);
            }
        }
    }

    fn console(&mut self, line: String) {
        self.classify(&line, LogSource::Console);
        if self.console_tail.len() == CONSOLE_TAIL {
            self.console_tail.pop_front();
        }
        self.console_tail.push_back(line);
    }

    fn tail(&self) -> String {
        let lines: Vec<&str> = self
            .console_tail
            .iter()
            .rev()
            .take(3)
            .rev()
            .map(String::as_str)
            .collect();
        if lines.is_empty() {
            "the console printed nothing".to_owned()
        } else {
            format!("last console lines: {}", lines.join(" | "))
        }
    }

    fn has_crash(&self) -> bool {
        self.obs
            .hits
            .iter()
            .any(|h: &SignatureHit| h.severity != kchaos_model::signature::Severity::Fail)
    }
}

async fn observe(
    cell: &CellSpec,
    env: &CellEnv,
    update: &(dyn Fn(CellUpdate) + Sync),
) -> Result<Outcome, LaunchError> {
    let scenario = &cell.scenario.model;
    let mut timeouts = Timeouts::new(env.accel, scenario);
    if let Some(boot) = env.boot_timeout {
        timeouts.boot = boot;
    }
    let dir_err = |source| LaunchError::Dir {
        path: cell.dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&cell.dir).map_err(dir_err)?;
    std::fs::write(cell.dir.join("scenario.toml"), &cell.scenario.source).map_err(dir_err)?;
    let console_log = File::create(cell.dir.join("console.log")).map_err(dir_err)?;
    let qemu_log = File::create(cell.dir.join("qemu.log")).map_err(dir_err)?;
    let kmsg_log = File::create(cell.dir.join("kmsg.log")).map_err(dir_err)?;

    // Unix socket paths are limited to 108 bytes: keep the socket in a short temp dir.
    let sock_dir = tempfile::Builder::new()
        .prefix("kchaos-")
        .tempdir()
        .map_err(dir_err)?;
    let sock = sock_dir.path().join("ctl.sock");
    let listener = channel::listen(&sock)?;
    let mut cmdline = QemuCommand::base_cmdline(&cell.id);
    if let Some(level) = &env.guest_log {
        cmdline.push(format!("kchaos.log={level}"));
    }
    cmdline.extend(scenario.vm.cmdline.iter().cloned());
    let command = QemuCommand {
        accel: env.accel,
        memory_mib: scenario.vm.memory_mib,
        cpus: scenario.vm.cpus,
        kernel: cell.kernel.bzimage.clone(),
        initrd: cell.initrd.clone(),
        cmdline,
        control_socket: Some(sock),
    };
    let args = command.args();
    let printable: Vec<String> = std::iter::once(env.qemu.path.display().to_string())
        .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
        .collect();
    std::fs::write(cell.dir.join("qemu.cmdline"), printable.join(" ") + "\n").map_err(dir_err)?;

    update(CellUpdate::Booting);
    let spawned_at = Instant::now();
    let mut child = tokio::process::Command::new(&env.qemu.path)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| LaunchError::Spawn {
            path: env.qemu.path.display().to_string(),
            source,
        })?;
    let mut group = GroupGuard::new(child.id());
    let (console_tx, mut console_rx) = mpsc::unbounded_channel();
    if let Some(stdout) = child.stdout.take() {
        console::spawn(stdout, console_log, console_tx);
    }
    let stderr = child.stderr.take().map(|s| console::collect(s, qemu_log));

    let mut w = Watch {
        signatures: SignatureSet::new(&scenario.signatures)?,
        seen_hits: HashSet::new(),
        obs: Observations::default(),
        series: BTreeMap::new(),
        units: scenario
            .metric_catalog()
            .into_iter()
            .map(|(k, v)| (k, v.unit))
            .collect(),
        notes: Vec::new(),
        console_tail: VecDeque::new(),
        corrupt_bytes: 0,
        corrupt_first: None,
        kmsg_log: Some(kmsg_log),
    };
    let (chan_tx, mut chan_rx) = mpsc::unbounded_channel();
    let mut sender = None;
    let accept = channel::accept(&listener, timeouts.connect, chan_tx);
    tokio::pin!(accept);

    let mut hello_at: Option<Instant> = None;
    let mut last_seen = spawned_at;
    let mut finished_at: Option<Instant> = None;
    let mut release = None;
    let mut guest_ready_ms = None;
    let mut phase: Option<Phase> = None;
    let mut exit_status = None;
    let mut killed = false;
    let mut console_open = true;
    let mut channel_open = true;
    let mut drain_until: Option<Instant> = None;
    let mut cancel = env.cancel.clone();
    // The caller checks for an earlier interruption before starting a cell; this one
    // reacts to interruptions while it runs.
    let mut cancel_armed = true;
    let run_budget = scenario.duration + scenario.settle + timeouts.overrun;

    loop {
        if exit_status.is_some()
            && (!console_open && !channel_open || drain_until.is_some_and(|d| Instant::now() >= d))
        {
            break;
        }
        let deadline = match (hello_at, finished_at) {
            _ if exit_status.is_some() => drain_until.unwrap_or_else(Instant::now),
            (None, _) => spawned_at + timeouts.boot,
            (Some(_), Some(done)) => done + timeouts.poweroff,
            (Some(h), None) => (last_seen + timeouts.hang).min(h + run_budget),
        };
        tokio::select! {
            accepted = &mut accept, if sender.is_none() && channel_open => match accepted {
                Ok(s) => {
                    tracing::debug!(cell = %cell.id, after_ms = millis(spawned_at.elapsed()), "QEMU connected the control channel");
                    sender = Some(s);
                }
                Err(e) => {
                    w.obs.infra.push(error_chain(&e));
                    channel_open = false;
                    kill(&mut group, &mut killed);
                }
            },
            ev = console_rx.recv(), if console_open => match ev {
                Some(ConsoleEvent::Line(line)) => {
                    if w.console_tail.is_empty() {
                        tracing::debug!(cell = %cell.id, after_ms = millis(spawned_at.elapsed()), "first console output");
                    }
                    w.console(line);
                }
                Some(ConsoleEvent::Closed) | None => console_open = false,
            },
            ev = chan_rx.recv(), if channel_open && sender.is_some() => match ev {
                Some(ChannelEvent::Message(msg)) => {
                    last_seen = Instant::now();
                    match *msg {
                        GuestMessage::Hello(hello) => {
                            hello_at = Some(last_seen);
                            tracing::debug!(cell = %cell.id, after_ms = millis(spawned_at.elapsed()), guest_uptime_ms = hello.uptime_ms, "runner ready");
                            w.obs.reached_runner = true;
                            release = Some(hello.kernel_release.clone());
                            guest_ready_ms = Some(hello.uptime_ms);
                            if hello.protocol != PROTOCOL_VERSION {
                                w.obs.infra.push(format!("the runner speaks protocol {} but this harness {}; rebuild the runner", hello.protocol, PROTOCOL_VERSION));
                                kill(&mut group, &mut killed);
                            } else if let Some(s) = sender.as_mut() {
                                let request = RunRequest { protocol: PROTOCOL_VERSION, scenario: scenario.clone(), seed: cell.seed, cell: cell.id.clone() };
                                if let Err(e) = s.send(&HostMessage::Run(Box::new(request))).await {
                                    w.obs.infra.push(error_chain(&e));
                                }
                            }
                        }
                        GuestMessage::Heartbeat { uptime_ms, .. } => {
                            tracing::trace!(cell = %cell.id, host_minus_guest_ms = millis(spawned_at.elapsed()).saturating_sub(uptime_ms), "heartbeat");
                        }
                        GuestMessage::Phase { phase: p } => {
                            phase = Some(p);
                            update(CellUpdate::Phase(p));
                        }
                        GuestMessage::Kmsg(record) => {
                            if let Some(log) = w.kmsg_log.as_mut() {
                                use std::io::Write;
                                let _ = writeln!(log, "[{:>5}.{:06}] <{}> {}", record.ts_us / 1_000_000, record.ts_us % 1_000_000, record.level, record.text);
                            }
                            w.classify(&record.text, LogSource::Kmsg);
                        }
                        GuestMessage::Sample { metric, t_ms, value } => {
                            let unit = w.units.get(&metric).copied().unwrap_or_default();
                            w.series.entry(metric).or_insert_with(|| Series::new(unit)).samples.push((t_ms, value));
                        }
                        GuestMessage::Progress { workload, done, total } => update(CellUpdate::Progress { workload, done, total }),
                        GuestMessage::Note { message } => w.notes.push(message),
                        GuestMessage::Skip { reason } => w.obs.skip = Some(reason),
                        GuestMessage::Fatal { message } => w.obs.fatal = Some(message),
                        GuestMessage::Finished(report) => {
                            finished_at = Some(last_seen);
                            w.obs.report = Some(report);
                            if let Some(s) = sender.as_mut() {
                                // The guest powers off either way; a lost Ack only delays it.
                                let _ = s.send(&HostMessage::Ack).await;
                            }
                        }
                    }
                    if (w.obs.skip.is_some() || w.obs.fatal.is_some()) && finished_at.is_none() {
                        finished_at = Some(last_seen);
                        if let Some(s) = sender.as_mut() {
                            let _ = s.send(&HostMessage::Ack).await;
                        }
                    }
                }
                Some(ChannelEvent::Corrupt { bytes, what }) => {
                    w.corrupt_bytes += bytes;
                    w.corrupt_first.get_or_insert(what);
                }
                Some(ChannelEvent::Closed) | None => channel_open = false,
            },
            status = child.wait(), if exit_status.is_none() => {
                group.disarm();
                exit_status = Some(status);
                if sender.is_none() {
                    // QEMU never connected and never will.
                    channel_open = false;
                }
                // Let the console and channel deliver what QEMU wrote before dying.
                drain_until = Some(Instant::now() + Duration::from_secs(3));
            },
            changed = cancel.changed(), if exit_status.is_none() && cancel_armed => match changed {
                Ok(()) if *cancel.borrow() => {
                    cancel_armed = false;
                    w.obs.infra.push("interrupted".to_owned());
                    if let Some(s) = sender.as_mut() {
                        let _ = s.send(&HostMessage::Abort { reason: "interrupted".to_owned() }).await;
                    }
                    kill(&mut group, &mut killed);
                }
                Ok(()) => {}
                // The sender is gone: nobody can interrupt this cell any more.
                Err(_) => cancel_armed = false,
            },
            () = tokio::time::sleep_until(deadline.into()), if !killed || exit_status.is_some() => {
                if exit_status.is_some() {
                    continue;
                }
                let now = Instant::now();
                match (hello_at, finished_at) {
                    (None, _) => {
                        if !w.has_crash() {
                            w.obs.infra.push(format!("the guest did not reach the kchaos runner within {:?}; {}", timeouts.boot, w.tail()));
                        }
                    }
                    (Some(_), Some(_)) => w.notes.push(format!("the guest did not power off within {:?} of reporting; killed", timeouts.poweroff)),
                    (Some(h), None) if now >= h + run_budget => {
                        w.obs.hang = Some(format!(
                            "the run did not finish within {:?} (duration {:?} + settle {:?} + margin) although the guest kept answering: a workload is stuck, likely in the kernel (phase: {})",
                            run_budget, scenario.duration, scenario.settle, phase_name(phase)
                        ));
                    }
                    (Some(_), None) => {
                        w.obs.hang = Some(format!("the guest sent nothing for {:?} (phase: {}); {}", timeouts.hang, phase_name(phase), w.tail()));
                    }
                }
                kill(&mut group, &mut killed);
            },
        }
    }

    let stderr_text = match stderr {
        Some(handle) => handle.await.unwrap_or_default(),
        None => String::new(),
    };
    if w.corrupt_bytes > 0 {
        w.obs.infra.push(format!(
            "the control channel carried {} corrupt bytes (first: {})",
            w.corrupt_bytes,
            w.corrupt_first.take().unwrap_or_default()
        ));
    }
    let ended_cleanly = w.obs.report.is_some() || w.obs.skip.is_some() || w.obs.fatal.is_some();
    if !killed && !ended_cleanly && !w.has_crash() {
        let status = exit_status
            .as_ref()
            .map_or("unknown".to_owned(), |s| match s {
                Ok(st) => st.to_string(),
                Err(e) => e.to_string(),
            });
        let qemu_said = stderr_text
            .lines()
            .find(|l| !l.trim().is_empty())
            .map(|l| format!("; QEMU said: {}", l.trim()))
            .unwrap_or_default();
        let when = if hello_at.is_some() {
            "before the runner reported results"
        } else {
            "before the guest reached the runner"
        };
        w.obs.infra.push(format!(
            "QEMU exited ({status}) {when}{qemu_said}; {}",
            w.tail()
        ));
    }
    let mut metrics: BTreeMap<String, Metric> = w
        .obs
        .report
        .as_ref()
        .map(|r| r.metrics.clone())
        .unwrap_or_default();
    for (name, series) in std::mem::take(&mut w.series) {
        metrics.insert(name, Metric::Series(series));
    }
    w.obs.metrics = metrics;
    Ok(Outcome {
        obs: w.obs,
        boot_ms: hello_at.map(|h| millis(h - spawned_at)),
        guest_ready_ms,
        release,
        notes: w.notes,
    })
}

fn kill(group: &mut GroupGuard, killed: &mut bool) {
    group.kill();
    *killed = true;
}

fn phase_name(phase: Option<Phase>) -> &'static str {
    match phase {
        None => "before setup",
        Some(Phase::Setup) => "setup",
        Some(Phase::Workload) => "workload",
        Some(Phase::Settle) => "settle",
        Some(Phase::Collect) => "collect",
    }
}

pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// An error with all its causes, on one line.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
