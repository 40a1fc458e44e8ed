//! The I/O around one cell: launch the VM that `vm::launch` builds, turn its console,
//! the control channel, its exit, the user's interrupt and the clock into events for
//! [`CellState`], carry out the actions it decides ([`perform`]), and hand a kept VM
//! to the session's keeper. Nothing here decides a verdict.

use std::fs::File;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, Instant};

use kchaos_model::protocol::{GuestMessage, HostMessage};
use kchaos_model::signature::SignatureSet;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::keep::{self, Access};
use super::observe::Observer;
use super::state::{kmsg_line, Action, CellState, Endings, Event, Outcome};
use super::{evidence, monitor};
use super::{CellEnv, CellSpec, CellUpdate, KeepPolicy, Timeouts};
use crate::vm::channel::{self, ChannelError, ChannelEvent};
use crate::vm::console::{self, ConsoleEvent};
use crate::vm::launch::{self, CellVm};
use crate::vm::process::GroupGuard;
use crate::vm::sockets::SocketDir;
use crate::vm::DebugAccess;
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
    Channel(#[from] ChannelError),
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

/// Runs the cell's VM to its end: launched, driven through its events until the state
/// machine is done, then handed to the keeper if it is kept.
pub(super) async fn drive(
    cell: &CellSpec,
    env: &CellEnv,
    update: &(dyn Fn(CellUpdate) + Sync),
) -> Result<Outcome, LaunchError> {
    let scenario = &cell.scenario.model;
    let mut timeouts = Timeouts::new(env.accel.slowdown(), scenario);
    if let Some(boot) = env.boot_timeout {
        timeouts.boot = boot;
    }
    let logs = Logs::create(cell)?;
    // Unix socket paths are limited to 108 bytes: keep the sockets in a short temp dir,
    // named after this process so a later run can sweep it if this one is killed.
    let sockets = SocketDir::create().map_err(|e| dir_error(cell, e))?;
    let listener = channel::listen(&launch::control_socket(sockets.path()))?;
    let (chan_tx, chan_rx) = mpsc::unbounded_channel();
    let mut vm = launch_vm(cell, env, logs, sockets, chan_rx, update)?;
    let units = scenario
        .metric_catalog()
        .into_iter()
        .map(|(k, v)| (k, v.unit))
        .collect();
    let observer = Observer::new(SignatureSet::new(&scenario.signatures)?, units);
    let endings = Endings {
        until: env.until.clone(),
        dump: env.dump.is_some(),
        keep: env.keep,
        wait_for_debugger: env.gdb.as_ref().is_some_and(|g| g.wait),
        full_duration: env.full_duration,
    };
    let mut state = CellState::new(
        scenario,
        &cell.id,
        cell.seed,
        timeouts,
        observer,
        endings,
        vm.spawned_at,
    );
    let accept = channel::accept(&listener, timeouts.connect, chan_tx);
    tokio::pin!(accept);
    let mut evidence = Evidence::default();
    while let Some(event) = next_event(&mut vm, &state, accept.as_mut(), &cell.id).await {
        let mut pending: std::collections::VecDeque<Action> =
            state.handle(event, Instant::now()).into();
        while let Some(action) = pending.pop_front() {
            let ctx = Ctx { cell, env, update };
            if let Some(reply) = perform(action, &mut vm, &mut state, &mut evidence, ctx).await {
                pending.extend(state.handle(reply, Instant::now()));
            }
        }
    }
    // A kept VM goes on writing its stderr: nothing to read from it yet.
    let stderr_text = if state.kept() {
        hand_over(vm, &state, cell, env, update);
        String::new()
    } else {
        match vm.stderr.take() {
            Some(handle) => handle.await.unwrap_or_default(),
            None => String::new(),
        }
    };
    let mut outcome = state.finish(&stderr_text);
    outcome.sysrq = evidence.sysrq;
    outcome.vmcore = evidence.vmcore;
    Ok(outcome)
}

fn dir_error(cell: &CellSpec, source: std::io::Error) -> LaunchError {
    LaunchError::Dir {
        path: cell.dir.display().to_string(),
        source,
    }
}

/// The cell's directory with its scenario, and the logs the VM's streams go to.
struct Logs {
    console: File,
    qemu: File,
    kmsg: File,
}

impl Logs {
    fn create(cell: &CellSpec) -> Result<Logs, LaunchError> {
        let dir_err = |e| dir_error(cell, e);
        std::fs::create_dir_all(&cell.dir).map_err(dir_err)?;
        std::fs::write(cell.dir.join("scenario.toml"), &cell.scenario.source).map_err(dir_err)?;
        Ok(Logs {
            console: File::create(cell.dir.join("console.log")).map_err(dir_err)?,
            qemu: File::create(cell.dir.join("qemu.log")).map_err(dir_err)?,
            kmsg: File::create(cell.dir.join("kmsg.log")).map_err(dir_err)?,
        })
    }
}

/// Starts the cell's QEMU (the command `vm::launch` builds, recorded as
/// `qemu.cmdline`) and the readers of its streams.
fn launch_vm(
    cell: &CellSpec,
    env: &CellEnv,
    logs: Logs,
    sockets: SocketDir,
    channel: mpsc::UnboundedReceiver<ChannelEvent>,
    update: &(dyn Fn(CellUpdate) + Sync),
) -> Result<Vm, LaunchError> {
    let scenario = &cell.scenario.model;
    let keeping = env.keep != KeepPolicy::Never;
    let options = CellVm {
        cell: &cell.id,
        dump: env.dump.is_some(),
        keep: keeping,
        gdb: env.gdb.as_ref().map(|g| g.wait),
        guest_log: env.guest_log.as_deref(),
    };
    let command = options.command(
        &env.qemu,
        env.accel,
        &cell.image,
        &scenario.vm,
        sockets.path(),
    );
    let args = command.args();
    std::fs::write(
        cell.dir.join("qemu.cmdline"),
        launch::printable(&env.qemu, &args) + "\n",
    )
    .map_err(|e| dir_error(cell, e))?;
    update(CellUpdate::Booting);
    let spawned_at = Instant::now();
    let mut child = launch::spawn(&env.qemu, &args).map_err(|source| LaunchError::Spawn {
        path: env.qemu.path.display().to_string(),
        source,
    })?;
    let pid = child.id();
    let (console_tx, console_rx) = mpsc::unbounded_channel();
    if let Some(stdout) = child.stdout.take() {
        console::spawn(stdout, logs.console, console_tx);
    }
    let stderr = child.stderr.take().map(|s| console::collect(s, logs.qemu));
    let debug = command.debug;
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
    let qmp = launch::qmp_socket(sockets.path());
    let (resumed_tx, resumed) = oneshot::channel();
    if debug.wait_for_debugger {
        tokio::spawn(monitor::watch_resume(qmp.clone(), resumed_tx));
    }
    Ok(Vm {
        group: GroupGuard::new(pid),
        child,
        pid,
        spawned_at,
        awaiting_resume: debug.wait_for_debugger,
        debug,
        sockets,
        qmp,
        console: console_rx,
        channel,
        sender: None,
        kmsg_log: logs.kmsg,
        stderr,
        cancel: env.cancel.clone(),
        // The caller checks for an earlier interruption before starting a cell; this
        // one reacts to interruptions while it runs, for as long as someone can.
        cancel_armed: true,
        resumed,
    })
}

/// A running VM: its process, the streams the loop reads, the sockets an engineer
/// connects to. A kept VM is handed over whole (the streams must still be drained or
/// QEMU blocks writing them).
struct Vm {
    child: tokio::process::Child,
    pid: Option<u32>,
    group: GroupGuard,
    spawned_at: Instant,
    sockets: SocketDir,
    qmp: PathBuf,
    debug: DebugAccess,
    console: mpsc::UnboundedReceiver<ConsoleEvent>,
    channel: mpsc::UnboundedReceiver<ChannelEvent>,
    /// The host's end of the control channel, once QEMU connected it (held open for a
    /// kept VM: its runner waits on it).
    sender: Option<channel::Sender>,
    kmsg_log: File,
    stderr: Option<JoinHandle<String>>,
    cancel: watch::Receiver<bool>,
    cancel_armed: bool,
    resumed: oneshot::Receiver<()>,
    awaiting_resume: bool,
}

/// The next event for the state machine, or `None` when the cell is over (or nothing
/// can happen any more).
async fn next_event<F>(
    vm: &mut Vm,
    state: &CellState,
    mut accept: Pin<&mut F>,
    cell: &str,
) -> Option<Event>
where
    F: Future<Output = Result<channel::Sender, ChannelError>>,
{
    loop {
        if state.is_done(Instant::now()) {
            return None;
        }
        let deadline = state.deadline();
        let event = tokio::select! {
            accepted = &mut accept, if vm.sender.is_none() && state.wants_connection() => match accepted {
                Ok(s) => {
                    tracing::debug!(cell = %cell, after_ms = super::millis(vm.spawned_at.elapsed()), "QEMU connected the control channel");
                    vm.sender = Some(s);
                    Event::Connected
                }
                Err(e) => Event::ConnectFailed(error_chain(&e)),
            },
            ev = vm.console.recv(), if state.console_open() => match ev {
                Some(ConsoleEvent::Line(line)) => Event::Console(line),
                Some(ConsoleEvent::Closed) | None => Event::ConsoleClosed,
            },
            ev = vm.channel.recv(), if state.channel_live() => match ev {
                Some(ChannelEvent::Message(msg)) => {
                    if let GuestMessage::Kmsg(record) = msg.as_ref() {
                        // Logging is best effort: a full disk must not stop classification.
                        let _ = writeln!(vm.kmsg_log, "{}", kmsg_line(record));
                    }
                    Event::Guest(*msg)
                }
                Some(ChannelEvent::Corrupt { bytes, what }) => Event::Corrupt { bytes, what },
                Some(ChannelEvent::Closed) | None => Event::ChannelClosed,
            },
            status = vm.child.wait(), if !state.exited() => {
                vm.group.disarm();
                Event::QemuExited { status: match status {
                    Ok(st) => st.to_string(),
                    Err(e) => e.to_string(),
                }}
            },
            changed = vm.cancel.changed(), if vm.cancel_armed && state.interruptible() => match changed {
                Ok(()) if *vm.cancel.borrow() => Event::Interrupted,
                Ok(()) => continue,
                // The sender is gone: nobody can interrupt this cell any more.
                Err(_) => {
                    vm.cancel_armed = false;
                    continue;
                }
            },
            resumed = &mut vm.resumed, if vm.awaiting_resume => {
                vm.awaiting_resume = false;
                match resumed {
                    Ok(()) => Event::Resumed,
                    Err(_) => continue,
                }
            },
            () = sleep_until(deadline), if deadline.is_some() => Event::Timer,
            else => return None,
        };
        return Some(event);
    }
}

/// What [`perform`] needs of the cell besides its VM and state.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    cell: &'a CellSpec,
    env: &'a CellEnv,
    update: &'a (dyn Fn(CellUpdate) + Sync),
}

/// Carries out one action of the state machine; returns the event that answers it, if
/// any (an action that fails is reported as an event for the state to judge).
async fn perform(
    action: Action,
    vm: &mut Vm,
    state: &mut CellState,
    evidence: &mut Evidence,
    ctx: Ctx<'_>,
) -> Option<Event> {
    match action {
        Action::Send(msg) => send(&mut vm.sender, &msg).await,
        Action::Kill => {
            vm.group.kill();
            None
        }
        Action::Keep => ctx.env.keeper.admit().err().map(Event::KeepRefused),
        Action::Update(u) => {
            (ctx.update)(u);
            None
        }
        Action::CheckLiveness => Some(
            match monitor::liveness(&vm.qmp, vm.pid, LIVENESS_TIMEOUT).await {
                Ok(status) if monitor::STOPPED.contains(&status.as_str()) => Event::Stopped(status),
                Ok(_) => Event::Liveness(Ok(())),
                Err(why) => Event::Liveness(Err(why)),
            },
        ),
        Action::SendSysrq(keys) => {
            let mut notes = Vec::new();
            evidence::send_sysrq(&vm.qmp, &keys, &mut notes).await;
            notes.into_iter().for_each(|n| state.note(n));
            Some(Event::SysrqSent)
        }
        Action::InjectNmi => Some(Event::NmiInjected(evidence::inject_nmi(&vm.qmp).await)),
        Action::WriteSysrq(lines) => {
            evidence.sysrq = evidence::write_sysrq(&ctx.cell.dir, &lines);
            None
        }
        Action::DumpMemory => {
            let mut notes = Vec::new();
            evidence.vmcore = dump(ctx.env, &vm.qmp, ctx.cell, &mut notes).await;
            notes.into_iter().for_each(|n| state.note(n));
            None
        }
    }
}

/// Hands a kept VM to the session's keeper, after telling the engineer how to reach it.
fn hand_over(
    vm: Vm,
    state: &CellState,
    cell: &CellSpec,
    env: &CellEnv,
    update: &(dyn Fn(CellUpdate) + Sync),
) {
    let scenario = &cell.scenario.model;
    let access = Access {
        console_log: cell.dir.join("console.log"),
        monitor: vm.debug.monitor.clone(),
        qmp: vm.qmp.clone(),
        shell: match keep::shell_missing(scenario.vm.image, &scenario.vm.tools, state.panicked()) {
            Some(why) => Err(why),
            None => vm
                .debug
                .shell
                .clone()
                .ok_or_else(|| "no second console".to_owned()),
        },
        gdb: env
            .gdb
            .as_ref()
            .zip(vm.debug.gdb.as_ref())
            .map(|(g, sock)| g.command(sock)),
    };
    update(CellUpdate::Info(access.describe()));
    env.keeper.hold(vm.hold());
}

impl Vm {
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
