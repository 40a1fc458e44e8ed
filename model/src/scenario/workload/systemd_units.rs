//! `systemd-units`: a flood of transient units through systemd's D-Bus API, as container
//! runtimes do (incident 3): `StartTransientUnit`, wait for `JobRemoved`, `StopUnit`,
//! wait again; slices, scopes with a real process, services, and runc's check that
//! creates and removes `libcontainer_<pid>_systemd_test_default.slice`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::de::DeValue;
use toml::Spanned;

use super::{Common, WorkloadSpec};
use crate::metrics::MetricKind;
use crate::scenario::ctx::Ctx;
use crate::scenario::{ImageKind, VmSpec};
use crate::units::{duration_ms, Unit};

pub(crate) const METRICS: &[(&str, MetricKind, Unit)] = &[
    ("start", MetricKind::Histogram, Unit::Ns),
    ("stop", MetricKind::Histogram, Unit::Ns),
    ("units", MetricKind::Value, Unit::Count),
    ("leaked", MetricKind::Value, Unit::Count),
    // The longest time systemd sent nothing while the flood waited on it.
    ("silence", MetricKind::Value, Unit::Ns),
    // systemd's D-Bus cookie (sd-bus message serial) on its system-bus connection: the
    // newest seen, how far it advanced during the flood, and per second.
    ("cookie", MetricKind::Value, Unit::Count),
    ("messages", MetricKind::Value, Unit::Count),
    ("message_rate", MetricKind::Value, Unit::Count),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnitKind {
    Slice,
    /// A scope with a process of the runner's moved into it (`PIDs`).
    Scope,
    /// A service running `sleep`, stopped again.
    Service,
    /// runc's `UseSystemd()` check: `libcontainer_<pid>_systemd_test_default.slice`
    /// created and removed.
    RuncCheck,
}

impl UnitKind {
    const ALL: [UnitKind; 4] = [
        UnitKind::Slice,
        UnitKind::Scope,
        UnitKind::Service,
        UnitKind::RuncCheck,
    ];
}

/// One iteration = one unit started and stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemdUnits {
    /// Units in flight at once.
    pub concurrency: u32,
    /// D-Bus connections the workers share (runtimes mostly use one).
    pub connections: u32,
    /// Kinds, used in turn.
    pub kinds: Vec<UnitKind>,
    /// At most this many new units per second.
    pub rate: Option<f64>,
    /// How long a unit stays active before it is stopped.
    #[serde(with = "duration_ms")]
    pub lifetime: Duration,
    /// How long a job may take to finish (its `JobRemoved`) before it counts as failed.
    #[serde(with = "duration_ms")]
    pub job_timeout: Duration,
}

raw_workload! {
    concurrency: Option<Spanned<u64>>,
    connections: Option<Spanned<u64>>,
    kinds: Option<Vec<UnitKind>>,
    rate: Option<Spanned<f64>>,
    lifetime: Option<Spanned<String>>,
    job_timeout: Option<Spanned<String>>,
}

pub(super) fn parse(
    ctx: &mut Ctx<'_>,
    index: usize,
    kind: &Spanned<String>,
    value: &Spanned<DeValue<'_>>,
    vm: &VmSpec,
) -> Option<super::Workload> {
    let raw: Raw = ctx.deserialize(value)?;
    if vm.image != ImageKind::Systemd {
        ctx.error(
            kind.span(),
            "`systemd-units` needs systemd: set `[vm] image = \"systemd\"`",
        );
    }
    let common = Common::parse(ctx, index, "systemd-units", raw.common());
    let kinds = raw.kinds.unwrap_or_else(|| UnitKind::ALL.to_vec());
    if kinds.is_empty() {
        ctx.error(
            value.span(),
            "`kinds` needs at least one of: slice, scope, service, runc-check",
        );
    }
    let rate = raw.rate.as_ref().and_then(|r| {
        let v = *r.get_ref();
        (v > 0.0).then_some(v).or_else(|| {
            ctx.error(r.span(), "`rate` is units per second, above 0");
            None
        })
    });
    let count32 = |ctx: &mut Ctx<'_>, v: &Option<Spanned<u64>>, max, default: u32| {
        ctx.count(v, 1, max)
            .and_then(|c| u32::try_from(c).ok())
            .unwrap_or(default)
    };
    let spec = SystemdUnits {
        concurrency: count32(ctx, &raw.concurrency, 1024, 4),
        connections: count32(ctx, &raw.connections, 64, 1),
        kinds,
        rate,
        lifetime: ctx.duration(&raw.lifetime).unwrap_or(Duration::ZERO),
        job_timeout: ctx
            .duration(&raw.job_timeout)
            .unwrap_or(Duration::from_secs(30)),
    };
    Some(common.with(WorkloadSpec::SystemdUnits(spec)))
}
