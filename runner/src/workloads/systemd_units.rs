//! `systemd-units`: transient units started and stopped over D-Bus as container runtimes
//! do (incident 3). Each unit: `StartTransientUnit`, wait for its job's `JobRemoved`,
//! stay up `lifetime`, `StopUnit`, wait again. Latencies are call + job completion, what
//! a runtime waits for. A unit still loaded after its stop is a leak.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kchaos_model::metrics::{Gauge, Metric};
use kchaos_model::protocol::WorkloadReport;
use kchaos_model::scenario::workload::{SystemdUnits, UnitKind};
use kchaos_model::scenario::Workload;
use kchaos_model::units::Unit;
use zbus::zvariant::{OwnedValue, Value};
use zbus_systemd::systemd1::ManagerProxy;

use super::{Env, Errors, Iterations};
use crate::histogram::Latency;

/// Name prefixes of the units this workload makes: what it waits for and counts.
const PREFIXES: [&str; 2] = ["kchaos_", "libcontainer_"];
/// How long stopped units may take to be unloaded before they count as leaked.
const LEAK_GRACE: Duration = Duration::from_secs(5);

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

pub fn run(
    workload: &Workload,
    spec: &SystemdUnits,
    env: &Env,
) -> (WorkloadReport, Vec<(String, Metric)>) {
    let (stats, leaked) = match tokio::runtime::Handle::try_current() {
        Ok(rt) => rt.block_on(flood(workload, spec, env)),
        Err(e) => {
            let mut s = Stats::default();
            s.errors.push(format!("no async runtime: {e}"));
            (s, Vec::new())
        }
    };
    let name = &workload.name;
    let count = |v: f64| {
        Metric::Value(Gauge {
            unit: Unit::Count,
            value: v,
        })
    };
    if !leaked.is_empty() {
        let shown: Vec<&str> = leaked.iter().take(10).map(String::as_str).collect();
        env.reporter.note(format!(
            "{} units still loaded {LEAK_GRACE:?} after their stop: {}{}",
            leaked.len(),
            shown.join(", "),
            if leaked.len() > shown.len() {
                ", …"
            } else {
                ""
            }
        ));
    }
    let metrics = vec![
        (
            format!("{name}.start"),
            Metric::Histogram(stats.start.summary()),
        ),
        (
            format!("{name}.stop"),
            Metric::Histogram(stats.stop.summary()),
        ),
        (format!("{name}.units"), count(stats.units as f64)),
        (format!("{name}.leaked"), count(leaked.len() as f64)),
    ];
    (
        WorkloadReport {
            name: name.clone(),
            iterations: stats.units,
            errors: stats.errors.count,
            error_samples: stats.errors.samples,
        },
        metrics,
    )
}

/// Job completions of one connection, matched to the calls that created the jobs. A
/// job can finish before its `StartTransientUnit` reply is processed: its result waits
/// here until claimed.
#[derive(Debug, Default)]
struct Jobs {
    slots: Mutex<HashMap<String, Slot>>,
}

#[derive(Debug)]
enum Slot {
    Waiting(tokio::sync::oneshot::Sender<String>),
    Done(String),
}

impl Jobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn removed(&self, job: String, result: String) {
        let mut slots = self.lock();
        match slots.remove(&job) {
            Some(Slot::Waiting(tx)) => {
                let _ = tx.send(result);
            }
            _ => {
                slots.insert(job, Slot::Done(result));
            }
        }
    }

    /// The job's result (`done`, `failed`, `timeout`, …), or `None` after `timeout`.
    async fn wait(&self, job: &str, timeout: Duration) -> Option<String> {
        let rx = {
            let mut slots = self.lock();
            if let Some(Slot::Done(result)) = slots.remove(job) {
                return Some(result);
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            slots.insert(job.to_owned(), Slot::Waiting(tx));
            rx
        };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => Some(result),
            _ => {
                self.lock().remove(job);
                None
            }
        }
    }
}

/// One D-Bus connection with its manager proxy and job listener.
struct Bus {
    manager: ManagerProxy<'static>,
    jobs: Arc<Jobs>,
    listener: tokio::task::JoinHandle<()>,
}

async fn connect() -> Result<Bus, String> {
    let (_conn, manager) = crate::systemd::manager().await?;
    // systemd sends job signals only to subscribed clients.
    manager
        .subscribe()
        .await
        .map_err(|e| format!("Subscribe: {e}"))?;
    let mut removed = manager
        .receive_job_removed()
        .await
        .map_err(|e| format!("JobRemoved subscription: {e}"))?;
    let jobs = Arc::new(Jobs::default());
    let sink = Arc::clone(&jobs);
    let listener = tokio::spawn(async move {
        while let Some(signal) = removed.next().await {
            let Ok(args) = signal.args() else { continue };
            if PREFIXES.iter().any(|p| args.unit.starts_with(p)) {
                sink.removed(args.job.to_string(), args.result);
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
}

async fn flood(workload: &Workload, spec: &SystemdUnits, env: &Env) -> (Stats, Vec<String>) {
    let mut total = Stats::default();
    let mut buses = Vec::new();
    for _ in 0..spec.connections.max(1) {
        match connect().await {
            Ok(bus) => buses.push(bus),
            Err(e) => {
                total.errors.push(e);
                return (total, Vec::new());
            }
        }
    }
    let shared = Shared {
        spec,
        buses,
        iterations: Iterations::new(workload, env, spec.rate),
    };
    let slots = (0..spec.concurrency).map(|slot| slot_loop(&shared, slot));
    for s in futures::future::join_all(slots).await {
        total.merge(s);
    }
    let leaked = match shared.buses.first().map(|b| leftovers(&b.manager)) {
        Some(check) => check.await.unwrap_or_else(|e| {
            total.errors.push(e);
            Vec::new()
        }),
        None => Vec::new(),
    };
    for bus in &shared.buses {
        bus.listener.abort();
    }
    (total, leaked)
}

async fn slot_loop(sh: &Shared<'_>, slot: u32) -> Stats {
    let mut stats = Stats::default();
    let Some(bus) = sh.buses.get(slot as usize % sh.buses.len().max(1)) else {
        return stats;
    };
    while let Some(n) = sh.iterations.claim().await {
        let kinds = &sh.spec.kinds;
        let Some(&kind) = usize::try_from(n)
            .ok()
            .and_then(|n| kinds.get(n % kinds.len().max(1)))
        else {
            stats.errors.push("no unit kinds to start".to_owned());
            return stats;
        };
        if let Err(e) = unit(sh, bus, kind, n, &mut stats).await {
            stats.errors.push(e);
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

fn value<'a>(v: impl Into<Value<'a>>) -> Result<OwnedValue, String> {
    v.into()
        .try_to_owned()
        .map_err(|e| format!("encode property: {e}"))
}

/// `StartTransientUnit` properties of a unit of `kind`.
fn properties(kind: UnitKind, pid: Option<u32>) -> Result<Vec<(String, OwnedValue)>, String> {
    let mut props = vec![(
        "Description".to_owned(),
        value(format!("kchaos systemd-units ({kind:?})"))?,
    )];
    match kind {
        UnitKind::Slice | UnitKind::RuncCheck => {}
        UnitKind::Scope => {
            props.push(("PIDs".to_owned(), value(vec![pid.unwrap_or_default()])?));
            // As runc asks for its containers.
            props.push(("Delegate".to_owned(), value(true)?));
        }
        UnitKind::Service => {
            let exec: Vec<(String, Vec<String>, bool)> = vec![(
                "/usr/bin/sleep".to_owned(),
                vec!["sleep".to_owned(), "3600".to_owned()],
                false,
            )];
            props.push(("ExecStart".to_owned(), value(exec)?));
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
) -> Result<(), String> {
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
                .map_err(|e| format!("start a process for {name}: {e}"))?,
        ),
        _ => None,
    };
    let props = properties(kind, held.as_ref().and_then(|c| c.id()))?;
    let timeout = sh.spec.job_timeout;

    let t = Instant::now();
    let job = bus
        .manager
        .start_transient_unit(name.clone(), "replace".to_owned(), props, Vec::new())
        .await
        .map_err(|e| format!("StartTransientUnit {name}: {e}"))?;
    let result = bus.jobs.wait(job.as_str(), timeout).await;
    stats.start.record(t.elapsed());
    match result.as_deref() {
        Some("done") => stats.units += 1,
        Some(other) => return Err(format!("start job of {name}: result `{other}`")),
        None => {
            return Err(format!(
                "start job of {name}: no JobRemoved within {timeout:?}"
            ))
        }
    }

    tokio::time::sleep(sh.spec.lifetime).await;

    let t = Instant::now();
    let job = bus
        .manager
        .stop_unit(name.clone(), "replace".to_owned())
        .await
        .map_err(|e| format!("StopUnit {name}: {e}"))?;
    let result = bus.jobs.wait(job.as_str(), timeout).await;
    stats.stop.record(t.elapsed());
    if let Some(child) = held.as_mut() {
        drop(child.stdin.take());
        let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    }
    match result.as_deref() {
        Some("done") => Ok(()),
        Some(other) => Err(format!("stop job of {name}: result `{other}`")),
        None => Err(format!(
            "stop job of {name}: no JobRemoved within {timeout:?}"
        )),
    }
}

/// The workload's units still loaded, after giving systemd [`LEAK_GRACE`] to unload
/// the stopped ones.
async fn leftovers(manager: &ManagerProxy<'static>) -> Result<Vec<String>, String> {
    let patterns: Vec<String> = PREFIXES.iter().map(|p| format!("{p}*")).collect();
    let deadline = Instant::now() + LEAK_GRACE;
    loop {
        let units: Vec<String> = manager
            .list_units_by_patterns(Vec::new(), patterns.clone())
            .await
            .map_err(|e| format!("ListUnitsByPatterns: {e}"))?
            .into_iter()
            .map(|u| u.0)
            .collect();
        if units.is_empty() || Instant::now() >= deadline {
            return Ok(units);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
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

    #[tokio::test]
    async fn a_job_that_finishes_before_it_is_awaited_is_not_lost() {
        let jobs = Jobs::default();
        jobs.removed("/job/1".into(), "done".into());
        assert_eq!(
            jobs.wait("/job/1", Duration::from_millis(10))
                .await
                .as_deref(),
            Some("done")
        );
        assert_eq!(jobs.wait("/job/2", Duration::from_millis(10)).await, None);
        assert!(
            jobs.lock().is_empty(),
            "a timed-out wait leaves nothing behind"
        );
    }
}
