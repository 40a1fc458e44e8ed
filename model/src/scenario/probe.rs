//! `[[probe]]` entries: what the runner measures while the workloads run and during the
//! settle time.

mod net;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::de::DeValue;
use toml::Spanned;

pub use self::net::{NetLatency, NetMode};
use super::ctx::{check_name, Ctx};
use super::VmSpec;
use crate::metrics::{MetricInfo, MetricKind};
use crate::units::{duration_ms, Unit};

/// The shortest sampling interval: a zero interval would make a probe spin (and once
/// panicked the runner's timer).
pub(super) const MIN_INTERVAL: Duration = Duration::from_millis(1);

pub const KINDS: &[&str] = &[
    "read-latency",
    "counter",
    "wakeup-latency",
    "net-latency",
    "d-state",
    "systemd-call",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    pub name: String,
    #[serde(with = "duration_ms")]
    pub interval: Duration,
    pub spec: ProbeSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ProbeSpec {
    /// Time a whole read of a file (open, read to the end, close), the way a monitoring
    /// agent reads `memory.stat`. Recorded as a latency histogram. With `cpu`, the reads
    /// are made by a thread pinned to that CPU.
    ReadLatency {
        path: String,
        #[serde(default)]
        cpu: Option<u32>,
    },
    /// Sample a number from a file into a time series.
    Counter {
        path: String,
        select: CounterSelect,
        unit: Unit,
    },
    /// Cyclictest-style: sleep `interval`, record how late the wake-up was. Runs inside
    /// `cgroup` (a process of its own joined to it) or, without one, in the runner.
    /// Also reports the probe's own CPU use as `<name>.cpu_share`. With `per_cpu`, one
    /// thread pinned on each CPU, and `<name>.cpu_skew` / `<name>.worst_cpu_p50`: the
    /// CPU that wakes latest against the others.
    WakeupLatency {
        cgroup: Option<String>,
        controllers: Vec<String>,
        /// The CPU the probe is pinned to (its timer interrupts are that CPU's).
        #[serde(default)]
        cpu: Option<u32>,
        /// A thread pinned on each CPU instead of one thread (never with `cpu`).
        #[serde(default)]
        per_cpu: bool,
    },
    /// Network round trips over loopback, timed by the client: TCP handshakes or UDP
    /// request/response. With `cpu`, the receiving side (the kernel's receive processing,
    /// steered there with RPS as a NIC's interrupts would be, and the server) runs on that
    /// CPU, so a CPU that cannot take interrupts shows up as packets that wait.
    NetLatency(NetLatency),
    /// Tasks in uninterruptible sleep (state `D`), counted over every thread: stuck
    /// kernel paths show up here before `hung_task` reports them.
    DState,
    /// The latency of a trivial call to systemd (reading the manager's `Version`); a
    /// call unanswered within `timeout` is an error: systemd is unresponsive.
    SystemdCall {
        #[serde(with = "duration_ms")]
        timeout: Duration,
    },
}

/// Which number in the file a counter reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "form", rename_all = "lowercase")]
pub enum CounterSelect {
    /// The file holds one number (`memory.current`).
    Whole,
    /// `key value` lines (`cgroup.stat`, `memory.stat`) or `Key: value kB` lines
    /// (`/proc/meminfo`, converted to bytes).
    Key { key: String },
    /// A table with a header line (`/proc/cgroups`: row `memory`, column `num_cgroups`).
    Cell { row: String, column: String },
    /// The number of lines after `skip` header lines (`/proc/net/dev`: devices).
    Lines { skip: u32 },
}

impl Probe {
    /// The metrics this probe reports, by name.
    pub fn metrics(&self) -> Vec<(String, MetricInfo)> {
        let hist = MetricInfo {
            kind: MetricKind::Histogram,
            unit: Unit::Ns,
        };
        match &self.spec {
            ProbeSpec::ReadLatency { .. } => vec![(self.name.clone(), hist)],
            ProbeSpec::Counter { unit, .. } => {
                vec![(
                    self.name.clone(),
                    MetricInfo {
                        kind: MetricKind::Series,
                        unit: *unit,
                    },
                )]
            }
            ProbeSpec::SystemdCall { .. } | ProbeSpec::NetLatency(_) => {
                vec![(self.name.clone(), hist)]
            }
            ProbeSpec::DState => vec![(
                self.name.clone(),
                MetricInfo {
                    kind: MetricKind::Series,
                    unit: Unit::Count,
                },
            )],
            ProbeSpec::WakeupLatency { per_cpu, .. } => {
                let value = |unit| MetricInfo {
                    kind: MetricKind::Value,
                    unit,
                };
                let mut out = vec![
                    (self.name.clone(), hist),
                    (format!("{}.cpu_share", self.name), value(Unit::Ratio)),
                ];
                if *per_cpu {
                    out.push((format!("{}.cpu_skew", self.name), value(Unit::Ratio)));
                    out.push((format!("{}.worst_cpu_p50", self.name), value(Unit::Ns)));
                }
                out
            }
        }
    }

    /// Validates one `[[probe]]` table: each kind has a parser of its own.
    pub(crate) fn parse(
        ctx: &mut Ctx<'_>,
        kind: &Spanned<String>,
        value: &Spanned<DeValue<'_>>,
        vm: &VmSpec,
    ) -> Option<Probe> {
        match kind.get_ref().as_str() {
            "read-latency" => read_latency(ctx, value, vm),
            "counter" => counter(ctx, value),
            "systemd-call" => systemd_call(ctx, value, kind, vm),
            "d-state" => d_state(ctx, value),
            "wakeup-latency" => wakeup_latency(ctx, value, vm),
            "net-latency" => net_latency(ctx, value, vm),
            _ => ctx.unknown_kind("probe", kind, KINDS),
        }
    }
}

/// A probe's interval or timeout as written (at least [`MIN_INTERVAL`]), or the kind's
/// own default, also where the written one was refused: its error is recorded and
/// parsing goes on.
fn duration_or(ctx: &mut Ctx<'_>, raw: &Option<Spanned<String>>, default: Duration) -> Duration {
    ctx.duration_in(raw, MIN_INTERVAL).unwrap_or(default)
}

fn read_latency(ctx: &mut Ctx<'_>, value: &Spanned<DeValue<'_>>, vm: &VmSpec) -> Option<Probe> {
    let raw: RawReadLatency = ctx.deserialize(value)?;
    let name = probe_name(ctx, &raw.name)?;
    let path = guest_path(ctx, &raw.path)?;
    let interval = duration_or(ctx, &raw.interval, Duration::from_millis(100));
    let cpu = cpu(ctx, raw.cpu.as_ref(), vm);
    Some(Probe {
        name,
        interval,
        spec: ProbeSpec::ReadLatency { path, cpu },
    })
}

/// A mix of selectors or an unknown unit is an error of the whole `[[probe]]` table
/// (`value`), not of one key.
fn counter(ctx: &mut Ctx<'_>, value: &Spanned<DeValue<'_>>) -> Option<Probe> {
    let raw: RawCounter = ctx.deserialize(value)?;
    let name = probe_name(ctx, &raw.name)?;
    let path = guest_path(ctx, &raw.path)?;
    let interval = duration_or(ctx, &raw.interval, Duration::from_secs(1));
    let unit = raw.unit.clone();
    let select = counter_select(ctx, raw, value)?;
    let unit = counter_unit(ctx, unit.as_deref(), &path, value)?;
    Some(Probe {
        name,
        interval,
        spec: ProbeSpec::Counter { path, select, unit },
    })
}

/// Which number of the file a counter reads: at most one way of choosing it.
fn counter_select(
    ctx: &mut Ctx<'_>,
    raw: RawCounter,
    value: &Spanned<DeValue<'_>>,
) -> Option<CounterSelect> {
    match (raw.key, raw.row, raw.column, raw.count_lines_after) {
        (None, None, None, None) => Some(CounterSelect::Whole),
        (Some(key), None, None, None) => Some(CounterSelect::Key { key }),
        (None, Some(row), Some(column), None) => Some(CounterSelect::Cell { row, column }),
        (None, None, None, Some(skip)) => Some(CounterSelect::Lines { skip }),
        _ => {
            ctx.error(value.span(), "a counter reads either the whole file, a `key`, a `row` and `column` of a table, or counts lines (`count_lines_after`); not a mix");
            None
        }
    }
}

/// A counter's unit; `/proc/meminfo` is read in bytes unless told otherwise.
fn counter_unit(
    ctx: &mut Ctx<'_>,
    unit: Option<&str>,
    path: &str,
    value: &Spanned<DeValue<'_>>,
) -> Option<Unit> {
    match unit {
        None if path == "/proc/meminfo" => Some(Unit::Bytes),
        None | Some("count") => Some(Unit::Count),
        Some("bytes") => Some(Unit::Bytes),
        Some(other) => {
            ctx.error(
                value.span(),
                format!("unknown counter unit `{other}`; allowed: count, bytes"),
            );
            None
        }
    }
}

fn systemd_call(
    ctx: &mut Ctx<'_>,
    value: &Spanned<DeValue<'_>>,
    kind: &Spanned<String>,
    vm: &VmSpec,
) -> Option<Probe> {
    let raw: RawSystemdCall = ctx.deserialize(value)?;
    let name = probe_name(ctx, &raw.name)?;
    if !vm.image.runs_systemd() {
        ctx.error(
            kind.span(),
            "a `systemd-call` probe needs systemd: set `[vm] image = \"systemd\"`",
        );
    }
    let interval = duration_or(ctx, &raw.interval, Duration::from_millis(200));
    let timeout = duration_or(ctx, &raw.timeout, Duration::from_secs(5));
    Some(Probe {
        name,
        interval,
        spec: ProbeSpec::SystemdCall { timeout },
    })
}

fn d_state(ctx: &mut Ctx<'_>, value: &Spanned<DeValue<'_>>) -> Option<Probe> {
    let raw: RawDState = ctx.deserialize(value)?;
    let name = probe_name(ctx, &raw.name)?;
    let interval = duration_or(ctx, &raw.interval, Duration::from_secs(1));
    Some(Probe {
        name,
        interval,
        spec: ProbeSpec::DState,
    })
}

fn wakeup_latency(ctx: &mut Ctx<'_>, value: &Spanned<DeValue<'_>>, vm: &VmSpec) -> Option<Probe> {
    let raw: RawWakeup = ctx.deserialize(value)?;
    let name = probe_name(ctx, &raw.name)?;
    let interval = duration_or(ctx, &raw.interval, Duration::from_millis(1));
    let cgroup = raw
        .cgroup
        .as_ref()
        .map(|c| super::workload::cgroup_path(ctx, &Some(c.clone()), ""));
    let controllers = match &raw.controllers {
        Some(list) => ctx.controllers(list),
        None => vec!["cpu".to_owned()],
    };
    let cpu = cpu(ctx, raw.cpu.as_ref(), vm);
    let per_cpu = per_cpu(ctx, &raw);
    Some(Probe {
        name,
        interval,
        spec: ProbeSpec::WakeupLatency {
            cgroup,
            controllers,
            cpu,
            per_cpu,
        },
    })
}

/// `per_cpu`, refused beside `cpu`: one thread per CPU cannot also be pinned to one.
fn per_cpu(ctx: &mut Ctx<'_>, raw: &RawWakeup) -> bool {
    match (&raw.per_cpu, &raw.cpu) {
        (Some(p), Some(_)) if *p.get_ref() => {
            ctx.error(
                p.span(),
                "`per_cpu` measures on every CPU and `cpu` pins the probe to one: give one of them",
            );
            false
        }
        (Some(p), _) => *p.get_ref(),
        (None, _) => false,
    }
}

fn net_latency(ctx: &mut Ctx<'_>, value: &Spanned<DeValue<'_>>, vm: &VmSpec) -> Option<Probe> {
    let raw: net::RawNetLatency = ctx.deserialize(value)?;
    let name = probe_name(ctx, &raw.name)?;
    let interval = duration_or(ctx, &raw.interval, Duration::from_millis(20));
    let spec = net::parse(ctx, &raw, vm)?;
    Some(Probe {
        name,
        interval,
        spec: ProbeSpec::NetLatency(spec),
    })
}

/// A CPU of the VM: below `[vm] cpus`.
fn cpu(ctx: &mut Ctx<'_>, cpu: Option<&Spanned<u32>>, vm: &VmSpec) -> Option<u32> {
    let cpu = cpu?;
    let n = *cpu.get_ref();
    if n >= vm.cpus {
        ctx.error(
            cpu.span(),
            format!(
                "CPU {n} does not exist: the VM has {} (`[vm] cpus`), numbered from 0",
                vm.cpus
            ),
        );
        return None;
    }
    Some(n)
}

fn probe_name(ctx: &mut Ctx<'_>, name: &Spanned<String>) -> Option<String> {
    match check_name(name.get_ref()) {
        Ok(()) => Some(name.get_ref().clone()),
        Err(msg) => {
            ctx.error(name.span(), msg);
            None
        }
    }
}

fn guest_path(ctx: &mut Ctx<'_>, path: &Spanned<String>) -> Option<String> {
    if path.get_ref().starts_with('/') {
        Some(path.get_ref().clone())
    } else {
        ctx.error(
            path.span(),
            "`path` must be absolute in the guest, like `/sys/fs/cgroup/memory.stat`",
        );
        None
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReadLatency {
    #[allow(dead_code)]
    kind: String,
    name: Spanned<String>,
    path: Spanned<String>,
    interval: Option<Spanned<String>>,
    cpu: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCounter {
    #[allow(dead_code)]
    kind: String,
    name: Spanned<String>,
    path: Spanned<String>,
    interval: Option<Spanned<String>>,
    key: Option<String>,
    row: Option<String>,
    column: Option<String>,
    count_lines_after: Option<u32>,
    unit: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWakeup {
    #[allow(dead_code)]
    kind: String,
    name: Spanned<String>,
    interval: Option<Spanned<String>>,
    cgroup: Option<Spanned<String>>,
    controllers: Option<Vec<Spanned<String>>>,
    cpu: Option<Spanned<u32>>,
    per_cpu: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDState {
    #[allow(dead_code)]
    kind: String,
    name: Spanned<String>,
    interval: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSystemdCall {
    #[allow(dead_code)]
    kind: String,
    name: Spanned<String>,
    interval: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
}

#[cfg(test)]
mod tests {
    use crate::scenario::parse;

    #[test]
    fn a_per_cpu_wakeup_probe_declares_its_skew() {
        let probe =
            "[scenario]\nname = \"w\"\n[[probe]]\nkind = \"wakeup-latency\"\nname = \"w\"\n";
        let check = "[[check]]\nassert = \"w.cpu_skew.value <= 2\"\n";
        let s = parse("t.toml", &format!("{probe}per_cpu = true\n{check}")).unwrap();
        let names: Vec<String> = s.probes[0].metrics().into_iter().map(|m| m.0).collect();
        assert_eq!(names, ["w", "w.cpu_share", "w.cpu_skew", "w.worst_cpu_p50"]);
        assert!(parse("t.toml", &format!("{probe}{check}")).is_err());
    }
}
