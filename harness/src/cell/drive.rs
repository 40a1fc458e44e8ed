//! The I/O around one cell: start QEMU, turn its console, the control channel, its exit,
//! the user's interrupt and the clock into events for [`CellState`], and carry out the
//! actions it decides. Nothing here decides a verdict.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use kchaos_model::protocol::{GuestMessage, HostMessage};
use kchaos_model::signature::SignatureSet;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::keep::{self, Access};
use super::state::{kmsg_line, Action, CellState, Endings, Event, Outcome};
use super::watch::Watch;
use super::KeepPolicy;
use super::{evidence, monitor};
use super::{CellEnv, CellSpec, CellUpdate, Timeouts};
use crate::vm::channel::{self, ChannelEvent};
use crate::vm::command::SHELL_TTY;
use crate::vm::console::{self, ConsoleEvent};
use crate::vm::process::GroupGuard;
use crate::vm::sockets::SocketDir;
use crate::vm::{DebugAccess, QemuCommand};
use kchaos_model::error_chain;

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

/// How long QEMU's monitor may take to answer before QEMU itself is called frozen.
const LIVENESS_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) async fn drive(
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
    let mut kmsg_log = File::create(cell.dir.join("kmsg.log")).map_err(dir_err)?;

    // Unix socket paths are limited to 108 bytes: keep the sockets in a short temp dir,
    // named after this process so a later run can sweep it if this one is killed.
    let sockets = SocketDir::create().map_err(dir_err)?;
    let sock = sockets.path().join("ctl.sock");
    let qmp_sock = sockets.path().join("qmp.sock");
    let listener = channel::listen(&sock)?;
    let keeping = env.keep != KeepPolicy::Never;
    let mut debug = DebugAccess::default();
    if keeping {
        debug.monitor = Some(sockets.path().join("monitor.sock"));
        debug.shell = Some(sockets.path().join("shell.sock"));
    }
    // With a memory dump wanted, a panicked kernel must stay up to be dumped, and one
    // that has not panicked is made to panic by an NMI before the dump (see `state`);
    // a VM to keep must stay up in its panic too.
    let mut cmdline = QemuCommand::base_cmdline(&cell.id, env.dump.is_none() && !keeping);
    if env.dump.is_some() {
        cmdline.push("unknown_nmi_panic".to_owned());
    }
    if keeping {
        // The runner then waits for the Ack without a bound (no Ack: the VM is kept)
        // and starts a shell on the second console.
        cmdline.push("kchaos.keep=1".to_owned());
        cmdline.push(format!("kchaos.shell={SHELL_TTY}"));
    }
    if let Some(gdb) = &env.gdb {
        debug.gdb = Some(sockets.path().join("gdb.sock"));
        debug.wait_for_debugger = gdb.wait;
        // The symbols of the debug vmlinux are where they say only without KASLR.
        cmdline.push("nokaslr".to_owned());
    }
    if let Some(level) = &env.guest_log {
        cmdline.push(format!("kchaos.log={level}"));
    }
    cmdline.extend(cell.image.cmdline.iter().cloned());
    cmdline.extend(scenario.vm.cmdline.iter().cloned());
    let command = QemuCommand {
        accel: env.accel,
        memory_mib: scenario.vm.memory_mib,
        topology: scenario.vm.topology,
        kernel: cell.image.kernel.path.clone(),
        boot: cell.image.media.clone(),
        cmdline,
        control_socket: Some(sock),
        qmp_socket: Some(qmp_sock.clone()),
        debug: debug.clone(),
        firmware: env.qemu.firmware.clone(),
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
    let pid = child.id();
    let mut group = GroupGuard::new(pid);
    let (console_tx, mut console_rx) = mpsc::unbounded_channel();
    if let Some(stdout) = child.stdout.take() {
        console::spawn(stdout, console_log, console_tx);
    }
    let stderr = child.stderr.take().map(|s| console::collect(s, qemu_log));
    if let (Some(gdb), Some(sock)) = (&env.gdb, &debug.gdb) {
        let mut text = gdb.describe(sock);
        if !keeping {
            text.push_str(
                "\n    the VM ends with its cell; --keep-on-failure keeps a failed one for the debugger",
            );
        }
        update(CellUpdate::Info(text));
    }
    // With --gdb-wait the boot clock starts when the guest first runs.
    let (resumed_tx, mut resumed_rx) = tokio::sync::oneshot::channel();
    let mut awaiting_resume = debug.wait_for_debugger;
    if awaiting_resume {
        tokio::spawn(monitor::watch_resume(qmp_sock.clone(), resumed_tx));
    }

    let units = scenario
        .metric_catalog()
        .into_iter()
        .map(|(k, v)| (k, v.unit))
        .collect();
    let watch = Watch::new(SignatureSet::new(&scenario.signatures)?, units);
    let endings = Endings {
        until: env.until.clone(),
        dump: env.dump.is_some(),
        keep: env.keep,
        wait_for_debugger: env.gdb.as_ref().is_some_and(|g| g.wait),
        full_duration: env.full_duration,
    };
    let mut state = CellState::new(
        scenario, &cell.id, cell.seed, timeouts, watch, endings, spawned_at,
    );
    let (chan_tx, mut chan_rx) = mpsc::unbounded_channel();
    let mut sender: Option<channel::Sender> = None;
    let accept = channel::accept(&listener, timeouts.connect, chan_tx);
    tokio::pin!(accept);
    let mut cancel = env.cancel.clone();
    // The caller checks for an earlier interruption before starting a cell; this one
    // reacts to interruptions while it runs, for as long as someone can interrupt.
    let mut cancel_armed = true;
    let mut evidence = Evidence::default();

    loop {
        if state.is_done(Instant::now()) {
            break;
        }
        let deadline = state.deadline();
        let event = tokio::select! {
            accepted = &mut accept, if sender.is_none() && state.wants_connection() => match accepted {
                Ok(s) => {
                    tracing::debug!(cell = %cell.id, after_ms = super::millis(spawned_at.elapsed()), "QEMU connected the control channel");
                    sender = Some(s);
                    Event::Connected
                }
                Err(e) => Event::ConnectFailed(error_chain(&e)),
            },
            ev = console_rx.recv(), if state.console_open() => match ev {
                Some(ConsoleEvent::Line(line)) => Event::Console(line),
                Some(ConsoleEvent::Closed) | None => Event::ConsoleClosed,
            },
            ev = chan_rx.recv(), if state.channel_live() => match ev {
                Some(ChannelEvent::Message(msg)) => {
                    if let GuestMessage::Kmsg(record) = msg.as_ref() {
                        // Logging is best effort: a full disk must not stop classification.
                        let _ = writeln!(kmsg_log, "{}", kmsg_line(record));
                    }
                    Event::Guest(*msg)
                }
                Some(ChannelEvent::Corrupt { bytes, what }) => Event::Corrupt { bytes, what },
                Some(ChannelEvent::Closed) | None => Event::ChannelClosed,
            },
            status = child.wait(), if !state.exited() => {
                group.disarm();
                Event::QemuExited { status: match status {
                    Ok(st) => st.to_string(),
                    Err(e) => e.to_string(),
                }}
            },
            changed = cancel.changed(), if cancel_armed && state.interruptible() => match changed {
                Ok(()) if *cancel.borrow() => Event::Interrupted,
                Ok(()) => continue,
                // The sender is gone: nobody can interrupt this cell any more.
                Err(_) => {
                    cancel_armed = false;
                    continue;
                }
            },
            resumed = &mut resumed_rx, if awaiting_resume => {
                awaiting_resume = false;
                match resumed {
                    Ok(()) => Event::Resumed,
                    Err(_) => continue,
                }
            },
            () = sleep_until(deadline), if deadline.is_some() => Event::Timer,
            else => break,
        };
        let mut pending: VecDeque<Action> = state.handle(event, Instant::now()).into();
        while let Some(action) = pending.pop_front() {
            let reply = match action {
                Action::Send(msg) => send(&mut sender, &msg).await,
                Action::Kill => {
                    group.kill();
                    None
                }
                Action::Keep => env.keeper.admit().err().map(Event::KeepRefused),
                Action::Update(u) => {
                    update(u);
                    None
                }
                Action::CheckLiveness => Some(
                    match monitor::liveness(&qmp_sock, pid, LIVENESS_TIMEOUT).await {
                        Ok(status) if monitor::STOPPED.contains(&status.as_str()) => {
                            Event::Stopped(status)
                        }
                        Ok(_) => Event::Liveness(Ok(())),
                        Err(why) => Event::Liveness(Err(why)),
                    },
                ),
                Action::SendSysrq(keys) => {
                    let mut notes = Vec::new();
                    evidence::send_sysrq(&qmp_sock, &keys, &mut notes).await;
                    notes.into_iter().for_each(|n| state.note(n));
                    Some(Event::SysrqSent)
                }
                Action::InjectNmi => {
                    Some(Event::NmiInjected(evidence::inject_nmi(&qmp_sock).await))
                }
                Action::WriteSysrq(lines) => {
                    evidence.sysrq = evidence::write_sysrq(&cell.dir, &lines);
                    None
                }
                Action::DumpMemory => {
                    let mut notes = Vec::new();
                    evidence.vmcore = dump(env, &qmp_sock, cell, &mut notes).await;
                    notes.into_iter().for_each(|n| state.note(n));
                    None
                }
            };
            if let Some(event) = reply {
                pending.extend(state.handle(event, Instant::now()));
            }
        }
    }

    // A kept VM goes on writing its stderr: nothing to read from it yet.
    let stderr_text = if state.kept() {
        let access = Access {
            console_log: cell.dir.join("console.log"),
            monitor: debug.monitor.clone(),
            qmp: qmp_sock.clone(),
            shell: match keep::shell_missing(
                scenario.vm.image,
                &scenario.vm.tools,
                state.panicked(),
            ) {
                Some(why) => Err(why),
                None => debug
                    .shell
                    .clone()
                    .ok_or_else(|| "no second console".to_owned()),
            },
            gdb: env
                .gdb
                .as_ref()
                .zip(debug.gdb.as_ref())
                .map(|(g, sock)| g.command(sock)),
        };
        update(CellUpdate::Info(access.describe()));
        let kept = KeptVm {
            child,
            group,
            sockets,
            console: console_rx,
            channel: chan_rx,
            sender,
            kmsg_log,
            stderr,
            cancel: env.cancel.clone(),
        };
        env.keeper.hold(kept.hold());
        String::new()
    } else {
        match stderr {
            Some(handle) => handle.await.unwrap_or_default(),
            None => String::new(),
        }
    };
    let mut outcome = state.finish(&stderr_text);
    outcome.sysrq = evidence.sysrq;
    outcome.vmcore = evidence.vmcore;
    Ok(outcome)
}

/// A kept VM: everything that must live as long as its QEMU does (the sockets the
/// engineer connects to, the streams that must be drained or QEMU blocks writing them).
struct KeptVm {
    child: tokio::process::Child,
    group: GroupGuard,
    sockets: SocketDir,
    console: mpsc::UnboundedReceiver<ConsoleEvent>,
    channel: mpsc::UnboundedReceiver<ChannelEvent>,
    /// The host's end of the control channel, held open: the runner waits on it.
    sender: Option<channel::Sender>,
    kmsg_log: File,
    stderr: Option<JoinHandle<String>>,
    cancel: watch::Receiver<bool>,
}

impl KeptVm {
    /// Keeps the VM until the user interrupts (Ctrl-C) or QEMU exits (`quit` in its
    /// monitor, a guest powered off from its shell); then kills it. Meanwhile the
    /// console still goes to `console.log` and the kernel log to `kmsg.log`.
    async fn hold(mut self) {
        let (mut console_open, mut channel_open) = (true, true);
        let mut release = *self.cancel.borrow();
        while !release {
            tokio::select! {
                _ = self.child.wait() => {
                    self.group.disarm();
                    break;
                }
                ev = self.console.recv(), if console_open => {
                    console_open = matches!(ev, Some(ConsoleEvent::Line(_)));
                }
                ev = self.channel.recv(), if channel_open => match ev {
                    Some(ChannelEvent::Message(msg)) => {
                        if let GuestMessage::Kmsg(record) = msg.as_ref() {
                            let _ = writeln!(self.kmsg_log, "{}", kmsg_line(record));
                        }
                    }
                    Some(ChannelEvent::Corrupt { .. }) => {}
                    Some(ChannelEvent::Closed) | None => channel_open = false,
                },
                // A dropped sender: nobody can release the VM any more, so end it now.
                changed = self.cancel.changed() => {
                    release = changed.is_err() || *self.cancel.borrow();
                }
            }
        }
        self.group.kill();
        let _ = self.child.wait().await;
        if let Some(stderr) = self.stderr.take() {
            let _ = stderr.await;
        }
        drop(self.sender.take());
        tracing::info!("released the kept VM ({})", self.sockets.path().display());
    }
}

/// Evidence files written while the cell ended.
#[derive(Debug, Default)]
struct Evidence {
    sysrq: Option<PathBuf>,
    vmcore: Option<PathBuf>,
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Sends a message; a failure comes back as an event for the state to judge.
async fn send(sender: &mut Option<channel::Sender>, msg: &HostMessage) -> Option<Event> {
    let name = match msg {
        HostMessage::Run(_) => "Run",
        HostMessage::Ack => "Ack",
        HostMessage::Abort { .. } => "Abort",
    };
    let Some(s) = sender.as_mut() else {
        return Some(Event::SendFailed {
            message: name,
            error: "the control channel is not connected".to_owned(),
        });
    };
    match s.send(msg).await {
        Ok(()) => None,
        Err(e) => Some(Event::SendFailed {
            message: name,
            error: error_chain(&e),
        }),
    }
}

async fn dump(
    env: &CellEnv,
    qmp_sock: &Path,
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
