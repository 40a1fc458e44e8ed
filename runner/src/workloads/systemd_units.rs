//! `systemd-units`: transient units started and stopped over D-Bus as container runtimes
//! do (incident 3). Each unit: `StartTransientUnit`, wait for its job's `JobRemoved`,
//! stay up `lifetime`, `StopUnit`, wait again. Latencies are call + job completion, what
//! a runtime waits for. A unit still loaded after its stop is a leak.
//!
//! Besides latencies the flood reads systemd's D-Bus cookie off every signal it gets
//! (the counter whose overflow was the incident) and the longest time systemd said
//! nothing while the flood waited on it: both judge systemd, not the host's speed.

mod clock;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kchaos_model::metrics::Metric;
use kchaos_model::protocol::WorkloadReport;
use kchaos_model::scenario::workload::{SystemdUnits, UnitKind};
use kchaos_model::scenario::Workload;
use kchaos_model::units::Unit;
use tokio::sync::{mpsc, watch};
use zbus::zvariant::{self, OwnedObjectPath, OwnedValue, Value};
use zbus_systemd::systemd1::ManagerProxy;

use self::clock::{CookieClock, Overflow, Silence, UnloadPoll, Unloading};
use super::{Env, Errors, Iterations};
use crate::histogram::Latency;
use crate::metrics::Named;
use crate::systemd::cookie::{self, CookieError, FastForward};
use crate::systemd::SystemdError;

/// Name prefixes of the units this workload makes: what it waits for and counts.
const PREFIXES: [&str; 2] = ["kchaos_", "libcontainer_"];
/// How long the count of stopped-but-loaded units may stand still before the rest
/// count as leaked …
const LEAK_GRACE: Duration = Duration::from_secs(5);
/// … and the longest wait for them in all.
const LEAK_CAP: Duration = Duration::from_secs(30);
/// systemd silent this long with its cookie at the top of the space is its overflow:
/// the flood stops waiting (the scenario's own silence bound, 5s, judges it too).
const OVERFLOW_SILENCE: Duration = Duration::from_secs(5);
/// How often the flood looks for that stall.
const STALL_POLL: Duration = Duration::from_millis(250);

/// Why the flood could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum FloodError {
    #[error("No tokio runtime to run the flood on")]
    NoRuntime(#[source] tokio::runtime::TryCurrentError),
    #[error(transparent)]
    Connect(#[from] SystemdError),
    #[error("Subscribe failed (systemd sends job signals only to subscribers)")]
    Subscribe(#[source] zbus::Error),
    #[error("Cannot receive JobRemoved signals")]
    Listen(#[source] zbus::Error),
    #[error("ListUnitsByPatterns failed")]
    List(#[source] zbus::Error),
    #[error("Cookie fast-forward to {start:#x} failed, so the flood would not reach the overflow")]
    FastForward {
        start: u32,
        #[source]
        source: CookieError,
    },
}

/// A unit's start or stop, as its errors name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Start,
    Stop,
}

impl Op {
    fn call(self) -> &'static str {
        match self {
            Op::Start => "StartTransientUnit",
            Op::Stop => "StopUnit",
        }
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Op::Start => "start",
            Op::Stop => "stop",
        })
    }
}

/// One unit that did not go through. The first few are quoted in the cell's reasons:
/// a job that ended other than `done` names the unit and its result.
#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    #[error("Cannot start the process {unit} is to adopt")]
    Hold {
        unit: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot encode the unit property {property}")]
    Encode {
        property: &'static str,
        #[source]
        source: zvariant::Error,
    },
    #[error("{} {unit} failed", .op.call())]
    Call {
        op: Op,
        unit: String,
        /// Boxed: zbus's error is large and this type travels in every result.
        #[source]
        source: Box<zbus::Error>,
    },
    #[error("{op} job of {unit} ended `{result}`")]
    Job {
        op: Op,
        unit: String,
        result: String,
    },
    #[error("{op} job of {unit}: no JobRemoved within {timeout:?}")]
    NoJobRemoved {
        op: Op,
        unit: String,
        timeout: Duration,
    },
}

#[derive(Debug, Default)]
struct Stats {
    start: Latency,
    stop: Latency,
    units: u64,
    errors: Errors,
}

impl Stats {
    fn merge(&mut self, other: Stats) {
        self.start.merge(&other.start);
        self.stop.merge(&other.stop);
        self.units += other.units;
        self.errors.merge(other.errors);
    }
}

/// Everything the flood observed.
#[derive(Debug, Default)]
struct Outcome {
    stats: Stats,
    leaked: Vec<String>,
    heard: Heard,
    /// The cookie fast-forward, when `cookie_start` asked for one.
    forward: Option<FastForward>,
    /// systemd's cookie overflowed without the fix and the flood stopped.
    overflowed: Option<Overflow>,
}

pub fn run(
    workload: &Workload,
    spec: &SystemdUnits,
    env: &Env,
) -> (WorkloadReport, Vec<(String, Metric)>) {
    let outcome = match tokio::runtime::Handle::try_current() {
        Ok(rt) => rt.block_on(flood(workload, spec, env)),
        Err(e) => {
            let mut outcome = Outcome::default();
            outcome
                .stats
                .errors
                .push(kchaos_model::error_chain(&FloodError::NoRuntime(e)));
            outcome
        }
    };
    if !outcome.leaked.is_empty() {
        let shown: Vec<&str> = outcome.leaked.iter().take(10).map(String::as_str).collect();
        env.reporter.note(format!(
            "{} units still loaded after their stop (their count stood still for {LEAK_GRACE:?}): {}{}",
            outcome.leaked.len(),
            shown.join(", "),
            if outcome.leaked.len() > shown.len() {
                ", …"
            } else {
                ""
            }
        ));
    }
    if let Some(limit) = workload.iterations.filter(|&l| outcome.stats.units < l) {
        if Instant::now() >= env.deadline {
            // Not a failure: a slow host makes fewer units, systemd is judged on those.
            env.reporter.note(format!(
                "{}: the flood reached its time limit after {} of {limit} units",
                workload.name, outcome.stats.units
            ));
        }
    }
    if let Some(f) = &outcome.forward {
        env.reporter.note(format!(
            "systemd's D-Bus cookie moved from {:#x} to {:#x} before the flood (found at {:#x} in {} rounds; the next reply had serial {:#x})",
            f.before, f.start, f.address, f.rounds, f.verified_serial
        ));
    }
    if outcome.heard.cookie.cycled() {
        env.reporter.note(format!(
            "systemd's D-Bus cookie passed 0xffffffff during the flood and cycled; {} messages after it, the newest {:#x}",
            outcome.heard.cookie.after_cycle(),
            outcome.heard.cookie.newest().unwrap_or_default()
        ));
    }
    let metrics = metrics(&workload.name, &outcome);
    let findings = outcome
        .overflowed
        .map(overflow_message)
        .into_iter()
        .collect();
    let stats = outcome.stats;
    (
        WorkloadReport {
            name: workload.name.clone(),
            iterations: stats.units,
            errors: stats.errors.count,
            error_samples: stats.errors.samples,
            findings,
        },
        metrics,
    )
}

fn metrics(name: &str, outcome: &Outcome) -> Vec<(String, Metric)> {
    let stats = &outcome.stats;
    let heard = &outcome.heard;
    let mut metrics = Named::new(name);
    metrics
        .latency("start", &stats.start)
        .latency("stop", &stats.stop)
        .count("units", stats.units)
        .count("leaked", outcome.leaked.len() as u64)
        .value(
            "silence",
            Unit::Ns,
            heard.silence.longest().as_nanos() as f64,
        );
    // Without a signal there is no cookie to report; a check on them then fails as
    // "no data" instead of passing on a zero.
    if let Some(cookie) = heard.cookie.newest() {
        metrics
            .count("cookie", u64::from(cookie))
            .count("messages", heard.cookie.messages());
    }
    if let Some(rate) = heard.cookie.rate() {
        metrics.value("message_rate", Unit::Count, rate);
    }
    // Only a flood that moved the cookie reports where it started and whether it
    // cycled: elsewhere a check on them fails as "no data", never passes on a zero.
    if let Some(f) = &outcome.forward {
        metrics
            .count("cookie_before", f.before)
            .count("cookie_start", u64::from(f.start))
            .count("cookie_cycles", u64::from(heard.cookie.cycles()))
            .count("messages_after_cycle", heard.cookie.after_cycle());
    }
    metrics.into_list()
}

/// What systemd's messages told the flood, shared by every connection's listener and
/// every unit.
#[derive(Debug, Default)]
struct Heard {
    cookie: CookieClock,
    silence: Silence,
}

#[derive(Debug, Default)]
struct Watch(Mutex<Heard>);

impl Watch {
    fn lock(&self) -> MutexGuard<'_, Heard> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A message from systemd; `cookie` is its serial where the flood has the message.
    fn heard(&self, cookie: Option<u32>) {
        let now = Instant::now();
        let mut h = self.lock();
        h.silence.heard(now);
        if let Some(c) = cookie {
            h.cookie.observe(c, now);
        }
    }

    /// The flood waits on systemd until the guard is dropped.
    fn waiting(&self) -> Waiting<'_> {
        self.lock().silence.begin(Instant::now());
        Waiting(self)
    }

    fn take(&self) -> Heard {
        std::mem::take(&mut *self.lock())
    }

    /// Whether systemd's cookie overflowed without the fix: its connection restarted
    /// from the top, or it has been silent there for [`OVERFLOW_SILENCE`] while the
    /// flood waits on it.
    fn overflowed(&self, now: Instant) -> Option<Overflow> {
        let h = self.lock();
        clock::overflow(&h.cookie, h.silence.current(now), OVERFLOW_SILENCE)
    }
}

struct Waiting<'a>(&'a Watch);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.lock().silence.end(Instant::now());
    }
}

/// Units of one connection whose job the flood waits for, by unit name: registered
/// before the call, so a job that finishes before the call's reply is processed is
/// not lost, and signals about anyone else's units are dropped at once.
#[derive(Debug, Default)]
struct Jobs {
    waiting: Mutex<HashMap<String, mpsc::UnboundedSender<Removed>>>,
}

/// A `JobRemoved` signal: the job's path and its result (`done`, `failed`, …).
#[derive(Debug)]
struct Removed {
    job: String,
    result: String,
}

impl Jobs {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<Removed>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn expect(&self, unit: &str) -> Expected<'_> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().insert(unit.to_owned(), tx);
        Expected {
            jobs: self,
            unit: unit.to_owned(),
            rx,
        }
    }

    fn removed(&self, unit: &str, removed: Removed) {
        if let Some(tx) = self.lock().get(unit) {
            let _ = tx.send(removed);
        }
    }
}

/// The job signals of one unit until dropped.
struct Expected<'a> {
    jobs: &'a Jobs,
    unit: String,
    rx: mpsc::UnboundedReceiver<Removed>,
}

impl Expected<'_> {
    /// The result of `job`, or `None` after `timeout`. Other jobs of the unit (systemd
    /// may queue its own) are skipped.
    async fn result(&mut self, job: &str, timeout: Duration) -> Option<String> {
        let wait = async {
            while let Some(r) = self.rx.recv().await {
                if r.job == job {
                    return Some(r.result);
                }
            }
            None
        };
        tokio::time::timeout(timeout, wait).await.ok().flatten()
    }
}

impl Drop for Expected<'_> {
    fn drop(&mut self) {
        self.jobs.lock().remove(&self.unit);
    }
}

/// One D-Bus connection with its manager proxy and job listener.
struct Bus {
    manager: ManagerProxy<'static>,
    jobs: Arc<Jobs>,
    listener: tokio::task::JoinHandle<()>,
}

async fn connect(watch: &Arc<Watch>) -> Result<Bus, FloodError> {
    let (_conn, manager) = crate::systemd::manager().await?;
    // systemd sends job signals only to subscribed clients.
    manager.subscribe().await.map_err(FloodError::Subscribe)?;
    let mut removed = manager
        .receive_job_removed()
        .await
        .map_err(FloodError::Listen)?;
    let jobs = Arc::new(Jobs::default());
    let sink = Arc::clone(&jobs);
    let watch = Arc::clone(watch);
    let listener = tokio::spawn(async move {
        while let Some(signal) = removed.next().await {
            let cookie = signal.message().primary_header().serial_num().get();
            watch.heard(Some(cookie));
            let Ok(args) = signal.args() else { continue };
            if PREFIXES.iter().any(|p| args.unit.starts_with(p)) {
                sink.removed(
                    &args.unit,
                    Removed {
                        job: args.job.to_string(),
                        result: args.result,
                    },
                );
            }
        }
    });
    Ok(Bus {
        manager,
        jobs,
        listener,
    })
}

struct Shared<'a> {
    spec: &'a SystemdUnits,
    buses: Vec<Bus>,
    iterations: Iterations<'a>,
    watch: Arc<Watch>,
}

async fn flood(workload: &Workload, spec: &SystemdUnits, env: &Env) -> Outcome {
    let mut outcome = Outcome::default();
    let watch = Arc::new(Watch::default());
    let mut buses = Vec::new();
    for _ in 0..spec.connections.max(1) {
        match connect(&watch).await {
            Ok(bus) => buses.push(bus),
            Err(e) => {
                outcome.stats.errors.push(kchaos_model::error_chain(&e));
                for bus in &buses {
                    bus.listener.abort();
                }
                return outcome;
            }
        }
    }
    if let (Some(start), Some(bus)) = (spec.cookie_start, buses.first()) {
        match cookie::fast_forward(bus.manager.inner().connection(), start).await {
            Ok(f) => {
                // The flood's first signal can come hundreds of messages later, past
                // the top: the verified reply is where its clock starts.
                let floor = u32::try_from(f.before).unwrap_or(u32::MAX);
                watch
                    .lock()
                    .cookie
                    .seed(f.verified_serial, floor, Instant::now());
                outcome.forward = Some(f);
            }
            Err(source) => {
                let e = FloodError::FastForward { start, source };
                outcome.stats.errors.push(kchaos_model::error_chain(&e));
                for bus in &buses {
                    bus.listener.abort();
                }
                return outcome;
            }
        }
    }
    let shared = Shared {
        spec,
        buses,
        iterations: Iterations::new(workload, env, spec.rate),
        watch,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let slots = futures::future::join_all(
        (0..spec.concurrency).map(|slot| slot_loop(&shared, slot, stop_rx.clone())),
    );
    // An overflowed systemd answers nothing more: stop waiting on it instead of
    // running every unit into its job timeout.
    let stall = async {
        loop {
            tokio::time::sleep(STALL_POLL).await;
            if shared.watch.overflowed(Instant::now()).is_some() {
                let _ = stop_tx.send(true);
                std::future::pending::<()>().await;
            }
        }
    };
    let slot_stats = tokio::select! {
        stats = slots => stats,
        () = stall => Vec::new(),
    };
    // Seen by the watch above, or in the last signals before the flood ended.
    outcome.overflowed = shared.watch.overflowed(Instant::now());
    if let Some(overflow) = outcome.overflowed {
        // The mechanism first: the units it cost follow as their own errors.
        outcome.stats.errors.push(overflow_message(overflow));
    }
    for s in slot_stats {
        outcome.stats.merge(s);
    }
    let silent = matches!(outcome.overflowed, Some(Overflow::Silent { .. }));
    if let (Some(bus), false) = (shared.buses.first(), silent) {
        match leftovers(&bus.manager).await {
            Ok(units) => outcome.leaked = units,
            Err(e) => outcome.stats.errors.push(kchaos_model::error_chain(&e)),
        }
    }
    for bus in &shared.buses {
        bus.listener.abort();
    }
    outcome.heard = shared.watch.take();
    outcome
}

/// What a cell says when systemd's cookie overflowed: the mechanism first, then the
/// evidence.
fn overflow_message(overflow: Overflow) -> String {
    const WHY: &str = "sd-bus cannot seal a message with a cookie above 0xffffffff (EOPNOTSUPP)";
    match overflow {
        Overflow::Silent { at } => format!(
            "systemd's D-Bus cookie overflowed: systemd fell silent at serial {at:#x} ({} short of 0xffffffff) and never cycled to 0x80000000; {WHY}, so org.freedesktop.systemd1 stopped answering (silent {}s+ while the flood waited)",
            u32::MAX - at,
            OVERFLOW_SILENCE.as_secs()
        ),
        Overflow::Reconnected { from, to } => format!(
            "systemd's D-Bus cookie overflowed: its system-bus connection broke after serial {from:#x} (the last the flood saw, {} short of 0xffffffff) instead of cycling to 0x80000000; {WHY}, so sd-bus closed the connection, the jobs in flight lost their JobRemoved, and systemd reconnected with a fresh cookie ({to:#x})",
            u32::MAX - from
        ),
    }
}

async fn slot_loop(sh: &Shared<'_>, slot: u32, mut stop: watch::Receiver<bool>) -> Stats {
    let mut stats = Stats::default();
    let Some(bus) = sh.buses.get(slot as usize % sh.buses.len().max(1)) else {
        return stats;
    };
    let kinds = &sh.spec.kinds;
    while let Some(n) = sh.iterations.claim().await {
        // Validation guarantees at least one kind.
        let Some(&kind) = usize::try_from(n)
            .ok()
            .and_then(|n| kinds.get(n % kinds.len().max(1)))
        else {
            return stats;
        };
        if *stop.borrow() {
            break;
        }
        let result = tokio::select! {
            r = unit(sh, bus, kind, n, &mut stats) => Some(r),
            _ = stop.wait_for(|s| *s) => None,
        };
        match result {
            Some(Err(e)) => stats.errors.push(kchaos_model::error_chain(&e)),
            Some(Ok(())) => {}
            // Abandoned: the overflow is the reason, not this unit.
            None => break,
        }
        sh.iterations.done(n);
    }
    stats
}

/// The unit name of iteration `n`. runc's check named its slice after its own PID; a
/// flood needs distinct names, so a counter stands in for the PID.
fn unit_name(kind: UnitKind, n: u64) -> String {
    match kind {
        UnitKind::Slice => format!("kchaos_{n}.slice"),
        UnitKind::Scope => format!("kchaos_{n}.scope"),
        UnitKind::Service => format!("kchaos_{n}.service"),
        UnitKind::RuncCheck => format!("libcontainer_{}_systemd_test_default.slice", 100_000 + n),
    }
}

fn value<'a>(property: &'static str, v: impl Into<Value<'a>>) -> Result<OwnedValue, UnitError> {
    v.into()
        .try_to_owned()
        .map_err(|source| UnitError::Encode { property, source })
}

/// `StartTransientUnit` properties of a unit of `kind`.
fn properties(kind: UnitKind, pid: Option<u32>) -> Result<Vec<(String, OwnedValue)>, UnitError> {
    let mut props = vec![(
        "Description".to_owned(),
        value("Description", format!("kchaos systemd-units ({kind:?})"))?,
    )];
    match kind {
        UnitKind::Slice | UnitKind::RuncCheck => {}
        UnitKind::Scope => {
            props.push((
                "PIDs".to_owned(),
                value("PIDs", vec![pid.unwrap_or_default()])?,
            ));
            // As runc asks for its containers.
            props.push(("Delegate".to_owned(), value("Delegate", true)?));
        }
        UnitKind::Service => {
            let exec: Vec<(String, Vec<String>, bool)> = vec![(
                "/usr/bin/sleep".to_owned(),
                vec!["sleep".to_owned(), "3600".to_owned()],
                false,
            )];
            props.push(("ExecStart".to_owned(), value("ExecStart", exec)?));
        }
    }
    Ok(props)
}

/// One unit, started and stopped.
async fn unit(
    sh: &Shared<'_>,
    bus: &Bus,
    kind: UnitKind,
    n: u64,
    stats: &mut Stats,
) -> Result<(), UnitError> {
    let name = unit_name(kind, n);
    // A scope adopts a process that already exists: a child of the runner's own binary
    // waiting for its stdin to close (systemd's SIGTERM at stop ends it first).
    let mut held = match kind {
        UnitKind::Scope => Some(
            tokio::process::Command::new("/proc/self/exe")
                .arg(crate::HOLD_SUBCOMMAND)
                .stdin(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|source| UnitError::Hold {
                    unit: name.clone(),
                    source,
                })?,
        ),
        _ => None,
    };
    let props = properties(kind, held.as_ref().and_then(|c| c.id()))?;

    let t = Instant::now();
    let started = job(sh, bus, Op::Start, &name, |m| {
        m.start_transient_unit(name.clone(), "replace".to_owned(), props, Vec::new())
    })
    .await;
    stats.start.record(t.elapsed());
    started?;
    stats.units += 1;

    tokio::time::sleep(sh.spec.lifetime).await;

    let t = Instant::now();
    let stopped = job(sh, bus, Op::Stop, &name, |m| {
        m.stop_unit(name.clone(), "replace".to_owned())
    })
    .await;
    stats.stop.record(t.elapsed());
    if let Some(child) = held.as_mut() {
        drop(child.stdin.take());
        let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    }
    stopped
}

/// A call that creates a job, then the job's `JobRemoved`: `Ok` only if it ended `done`.
async fn job<'m, F, Fut>(
    sh: &Shared<'_>,
    bus: &'m Bus,
    op: Op,
    unit: &str,
    call: F,
) -> Result<(), UnitError>
where
    F: FnOnce(&'m ManagerProxy<'static>) -> Fut,
    Fut: std::future::Future<Output = zbus::Result<OwnedObjectPath>>,
{
    let timeout = sh.spec.job_timeout;
    let _waiting = sh.watch.waiting();
    let mut expected = bus.jobs.expect(unit);
    let path = match call(&bus.manager).await {
        Ok(path) => {
            sh.watch.heard(None);
            path
        }
        Err(source) => {
            if matches!(source, zbus::Error::MethodError(..)) {
                // An error reply is an answer too.
                sh.watch.heard(None);
            }
            return Err(UnitError::Call {
                op,
                unit: unit.to_owned(),
                source: Box::new(source),
            });
        }
    };
    match expected.result(path.as_str(), timeout).await {
        Some(result) if result == "done" => Ok(()),
        Some(result) => Err(UnitError::Job {
            op,
            unit: unit.to_owned(),
            result,
        }),
        None => Err(UnitError::NoJobRemoved {
            op,
            unit: unit.to_owned(),
            timeout,
        }),
    }
}

/// The workload's units still loaded once systemd has unloaded what it will: listed
/// until none are left or their count stood still for [`LEAK_GRACE`].
async fn leftovers(manager: &ManagerProxy<'static>) -> Result<Vec<String>, FloodError> {
    let patterns: Vec<String> = PREFIXES.iter().map(|p| format!("{p}*")).collect();
    let mut unloading = Unloading::new(Instant::now(), LEAK_GRACE, LEAK_CAP);
    loop {
        let units: Vec<String> = manager
            .list_units_by_patterns(Vec::new(), patterns.clone())
            .await
            .map_err(FloodError::List)?
            .into_iter()
            .map(|u| u.0)
            .collect();
        match unloading.observe(units.len(), Instant::now()) {
            UnloadPoll::Clean => return Ok(Vec::new()),
            UnloadPoll::Leaked => return Ok(units),
            UnloadPoll::Wait => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_are_distinct_and_runc_shaped() {
        assert_eq!(
            unit_name(UnitKind::RuncCheck, 7),
            "libcontainer_100007_systemd_test_default.slice"
        );
        assert_eq!(unit_name(UnitKind::Scope, 7), "kchaos_7.scope");
        assert!(PREFIXES
            .iter()
            .any(|p| unit_name(UnitKind::RuncCheck, 1).starts_with(p)));
    }

    #[test]
    fn properties_have_the_dbus_signatures_systemd_expects() {
        let service = properties(UnitKind::Service, None).unwrap();
        let exec = &service.iter().find(|(k, _)| k == "ExecStart").unwrap().1;
        assert_eq!(exec.value_signature().to_string(), "a(sasb)");
        let scope = properties(UnitKind::Scope, Some(42)).unwrap();
        let pids = &scope.iter().find(|(k, _)| k == "PIDs").unwrap().1;
        assert_eq!(pids.value_signature().to_string(), "au");
    }

    #[test]
    fn errors_name_the_unit_and_the_job_result() {
        let e = UnitError::Job {
            op: Op::Start,
            unit: "kchaos_3.service".into(),
            result: "failed".into(),
        };
        assert_eq!(
            e.to_string(),
            "start job of kchaos_3.service ended `failed`"
        );
        let e = UnitError::Call {
            op: Op::Stop,
            unit: "kchaos_3.service".into(),
            source: Box::new(zbus::Error::InvalidReply),
        };
        assert!(kchaos_model::error_chain(&e).starts_with("StopUnit kchaos_3.service failed: "));
    }

    #[tokio::test]
    async fn a_job_that_finishes_before_its_reply_is_not_lost() {
        let jobs = Jobs::default();
        let mut expected = jobs.expect("kchaos_1.slice");
        // Another unit's signal and an earlier job of the same unit are not this job.
        let removed = |job: &str, result: &str| Removed {
            job: job.into(),
            result: result.into(),
        };
        jobs.removed("kchaos_2.slice", removed("/job/2", "failed"));
        jobs.removed("kchaos_1.slice", removed("/job/0", "canceled"));
        jobs.removed("kchaos_1.slice", removed("/job/1", "done"));
        assert_eq!(
            expected.result("/job/1", Duration::from_millis(10)).await,
            Some("done".to_owned())
        );
        assert_eq!(
            expected.result("/job/9", Duration::from_millis(10)).await,
            None
        );
        drop(expected);
        assert!(
            jobs.lock().is_empty(),
            "a finished wait leaves nothing behind"
        );
    }
}
