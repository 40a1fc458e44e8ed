//! `veth-storm`: pod-network churn (incident 2). Each iteration is one pod: a fresh
//! network namespace, a veth pair with one end born inside it, both ends up with
//! addresses and a default route, optionally UDP traffic both ways (so route, neighbour
//! and dst caches hold device references, where the incident's leak was), then
//! destruction in a container runtime's order and a wait until the kernel has really
//! let go of the device.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::{Entry, WorkloadSpec};
use crate::metrics::MetricKind;
use crate::scenario::ctx::Ctx;
use crate::units::{duration_ms, Unit};

pub(crate) const METRICS: &[(&str, MetricKind, Unit)] = &[
    ("create", MetricKind::Histogram, Unit::Ns),
    ("configure", MetricKind::Histogram, Unit::Ns),
    ("traffic", MetricKind::Histogram, Unit::Ns),
    ("delete", MetricKind::Histogram, Unit::Ns),
    ("teardown", MetricKind::Histogram, Unit::Ns),
    ("pairs", MetricKind::Value, Unit::Count),
    ("leaked", MetricKind::Value, Unit::Count),
    ("send_retries", MetricKind::Value, Unit::Count),
    ("inflight", MetricKind::Series, Unit::Count),
];

/// How a pod is destroyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DestroyOrder {
    /// Drop the pod's network namespace; the kernel removes both ends (what happens
    /// when a pod's last process exits).
    Netns,
    /// Delete the host end first (a CNI plugin's DEL), then drop the namespace.
    Link,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VethStorm {
    /// Pods alive at once.
    pub concurrency: u32,
    /// At most this many new pods per second (`None`: as fast as possible).
    pub rate: Option<f64>,
    /// How long a pod lives (after its traffic) before it is destroyed.
    #[serde(with = "duration_ms")]
    pub lifetime: Duration,
    /// Exchange UDP datagrams both ways before destruction.
    pub traffic: bool,
    /// Datagrams each way.
    pub packets: u32,
    /// Also configure IPv6 addresses and a default route (and traffic over both).
    pub ipv6: bool,
    pub destroy: DestroyOrder,
    /// How long a device may take to disappear after the delete before it counts as
    /// leaked (the incident's device was never freed).
    #[serde(with = "duration_ms")]
    pub teardown_timeout: Duration,
}

raw_workload! {
    concurrency: Option<Spanned<u64>>,
    rate: Option<Spanned<f64>>,
    lifetime: Option<Spanned<String>>,
    traffic: Option<bool>,
    packets: Option<Spanned<u64>>,
    ipv6: Option<bool>,
    destroy: Option<DestroyOrder>,
    teardown_timeout: Option<Spanned<String>>,
}

pub(super) fn parse(ctx: &mut Ctx<'_>, entry: &Entry<'_, '_>) -> Option<super::Workload> {
    let (raw, common) = entry.read::<Raw>(ctx)?;
    let rate = ctx.positive(&raw.rate, 100_000.0, "`rate` is pods per second, above 0");
    let spec = VethStorm {
        // Slots index the address plan: 10.200.0.0/16 in /30s.
        concurrency: ctx.count_u32(&raw.concurrency, 1, 16_384, 4),
        rate,
        lifetime: ctx.duration(&raw.lifetime).unwrap_or(Duration::ZERO),
        traffic: raw.traffic.unwrap_or(true),
        packets: ctx.count_u32(&raw.packets, 1, 10_000, 8),
        ipv6: raw.ipv6.unwrap_or(false),
        destroy: raw.destroy.unwrap_or(DestroyOrder::Netns),
        teardown_timeout: ctx
            .duration(&raw.teardown_timeout)
            .unwrap_or(Duration::from_secs(10)),
    };
    Some(common.with(WorkloadSpec::VethStorm(spec)))
}
