//! The event loop of one cell: QEMU's console, the control channel, QEMU's exit, the
//! user's interrupt and the timeouts, until exactly one ending.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use kchaos_model::fingerprint::Fingerprint;
use kchaos_model::metrics::Metric;
use kchaos_model::protocol::{GuestMessage, HostMessage, Phase, RunRequest, PROTOCOL_VERSION};
use kchaos_model::signature::SignatureSet;
use kchaos_model::verdict::Observations;
use tokio::sync::mpsc;

use super::watch::Watch;
use super::{error_chain, evidence, millis, CellEnv, CellSpec, CellUpdate, Timeouts};
use crate::channel::{self, ChannelEvent};
use crate::console::{self, ConsoleEvent};
use crate::process::GroupGuard;
use crate::qemu::QemuCommand;

pub(super) struct Outcome {
    pub obs: Observations,
    pub boot_ms: Option<u64>,
    pub guest_ready_ms: Option<u64>,
    pub release: Option<String>,
    pub notes: Vec<String>,
    pub fingerprint: Option<Fingerprint>,
    pub sysrq: Option<PathBuf>,
    pub vmcore: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum LaunchError {
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

/// How a cell that is over, but whose QEMU still runs, gets to its end.
enum Ending {
    /// Hung: sysrq keys were sent; the console is collected until it goes quiet.
    Collecting {
        started: Instant,
        mark: usize,
        last_line: Instant,
    },
    /// Crashed: the rest of the report is printing; then evidence and kill.
    CrashGrace { until: Instant },
}

pub(super) async fn observe(
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

    // Unix socket paths are limited to 108 bytes: keep the sockets in a short temp dir.
    let sock_dir = tempfile::Builder::new()
        .prefix("kchaos-")
        .tempdir()
        .map_err(dir_err)?;
    let sock = sock_dir.path().join("ctl.sock");
    let qmp_sock = sock_dir.path().join("qmp.sock");
    let listener = channel::listen(&sock)?;
    // With a memory dump wanted, a panicked kernel must stay up to be dumped.
    let mut cmdline = QemuCommand::base_cmdline(&cell.id, env.dump.is_none());
    if let Some(level) = &env.guest_log {
        cmdline.push(format!("kchaos.log={level}"));
    }
    cmdline.extend(cell.image.cmdline.iter().cloned());
    cmdline.extend(scenario.vm.cmdline.iter().cloned());
    let command = QemuCommand {
        accel: env.accel,
        memory_mib: scenario.vm.memory_mib,
        cpus: scenario.vm.cpus,
        kernel: cell.kernel.bzimage.clone(),
        boot: cell.image.media.clone(),
        cmdline,
        control_socket: Some(sock),
        qmp_socket: Some(qmp_sock.clone()),
    };
    let args = command.args();
    let printable: Vec<String> = std::iter::once(env.qemu.path.display().to_string())
        .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
        .collect();
    std::fs::write(cell.dir.join("qemu.cmdline"), printable.join(" ") + "\n").map_err(dir_err)?;

    update(CellUpdate::Booting);
    let spawned_at = Instant::now();
    let mut qemu = tokio::process::Command::new(&env.qemu.path);
    qemu.args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // A harness killed outright (SIGKILL, OOM) cannot kill its VMs; the kernel does it
    // for us, so a killed run leaves no QEMU behind and `--resume` starts clean. (The
    // signal follows the spawning thread: a tokio worker, alive as long as the run.)
    // SAFETY: runs in the forked child before exec and only calls prctl(2), which is
    // async-signal-safe; it touches no memory of the parent.
    unsafe {
        qemu.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
    let mut child = qemu.spawn().map_err(|source| LaunchError::Spawn {
        path: env.qemu.path.display().to_string(),
        source,
    })?;
    let mut group = GroupGuard::new(child.id());
    let (console_tx, mut console_rx) = mpsc::unbounded_channel();
    if let Some(stdout) = child.stdout.take() {
        console::spawn(stdout, console_log, console_tx);
    }
    let stderr = child.stderr.take().map(|s| console::collect(s, qemu_log));

    let units = scenario
        .metric_catalog()
        .into_iter()
        .map(|(k, v)| (k, v.unit))
        .collect();
    let mut w = Watch::new(SignatureSet::new(&scenario.signatures)?, units, kmsg_log);
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
    let mut ending: Option<Ending> = None;
    let (mut sysrq, mut vmcore) = (None, None);
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
        let deadline = match (&ending, hello_at, finished_at) {
            _ if exit_status.is_some() => drain_until.unwrap_or_else(Instant::now),
            (
                Some(Ending::Collecting {
                    started, last_line, ..
                }),
                _,
                _,
            ) => (*last_line + timeouts.evidence_quiet).min(*started + timeouts.evidence_max),
            (Some(Ending::CrashGrace { until }), _, _) => *until,
            (None, None, _) => spawned_at + timeouts.boot,
            (None, Some(_), Some(done)) => done + timeouts.poweroff,
            (None, Some(h), None) => (last_seen + timeouts.hang).min(h + run_budget),
        };
        let mut crash_seen = false;
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
                    if let Some(Ending::Collecting { last_line, .. }) = &mut ending {
                        *last_line = Instant::now();
                    }
                    crash_seen = w.console(line);
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
                        GuestMessage::Kmsg(record) => crash_seen = w.kmsg(&record),
                        GuestMessage::Sample { metric, t_ms, value } => w.sample(metric, t_ms, value),
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
                Some(ChannelEvent::Corrupt { bytes, what }) => w.corrupt(bytes, what),
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
                match ending.take() {
                    Some(Ending::Collecting { mark, .. }) => {
                        sysrq = evidence::write_sysrq(&cell.dir, w.console_lines.get(mark..).unwrap_or_default());
                        vmcore = dump(env, &qmp_sock, cell, &mut w.notes).await;
                        kill(&mut group, &mut killed);
                    }
                    Some(Ending::CrashGrace { .. }) => {
                        vmcore = dump(env, &qmp_sock, cell, &mut w.notes).await;
                        kill(&mut group, &mut killed);
                    }
                    None => {
                        let now = Instant::now();
                        let hang = match (hello_at, finished_at) {
                            (None, _) => {
                                if !w.has_crash() {
                                    w.obs.infra.push(format!("the guest did not reach the kchaos runner within {:?}; {}", timeouts.boot, w.tail()));
                                }
                                None
                            }
                            (Some(_), Some(_)) => {
                                w.notes.push(format!("the guest did not power off within {:?} of reporting; killed", timeouts.poweroff));
                                None
                            }
                            (Some(h), None) if now >= h + run_budget => Some(format!(
                                "the run did not finish within {:?} (duration {:?} + settle {:?} + margin) although the guest kept answering: a workload is stuck, likely in the kernel (phase: {})",
                                run_budget, scenario.duration, scenario.settle, phase_name(phase)
                            )),
                            (Some(_), None) => Some(format!("the guest sent nothing for {:?} (phase: {}); {}", timeouts.hang, phase_name(phase), w.tail())),
                        };
                        match hang {
                            Some(reason) => {
                                w.obs.hang = Some(reason);
                                // Evidence before the kill: task dumps on the console.
                                let mark = w.console_lines.len();
                                evidence::send_sysrq(&qmp_sock, &mut w.notes).await;
                                let now = Instant::now();
                                ending = Some(Ending::Collecting { started: now, mark, last_line: now });
                            }
                            None => kill(&mut group, &mut killed),
                        }
                    }
                }
            },
        }
        if crash_seen && ending.is_none() && exit_status.is_none() && !killed {
            ending = Some(Ending::CrashGrace {
                until: Instant::now() + timeouts.crash_grace,
            });
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
    let fingerprint = w.fingerprint();
    Ok(Outcome {
        obs: w.obs,
        boot_ms: hello_at.map(|h| millis(h - spawned_at)),
        guest_ready_ms,
        release,
        notes: w.notes,
        fingerprint,
        sysrq,
        vmcore,
    })
}

async fn dump(
    env: &CellEnv,
    qmp_sock: &std::path::Path,
    cell: &CellSpec,
    notes: &mut Vec<String>,
) -> Option<PathBuf> {
    let policy = env.dump?;
    evidence::dump_memory(
        qmp_sock,
        &cell.dir,
        cell.scenario.model.vm.memory_mib,
        policy,
        notes,
    )
    .await
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
