//! `cfs-quota`: CFS bandwidth control under stress (incident 4). Nested cpu cgroups with
//! small quotas and periods; in each leaf a process with threads that burn CPU and
//! threads that sleep and wake in bursts (the incident's multi-threaded job); quotas and
//! periods retuned while running; extra cgroups created and removed while throttled.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::{Entry, WorkloadSpec};
use crate::metrics::MetricKind;
use crate::scenario::ctx::Ctx;
use crate::scenario::CgroupMode;
use crate::units::{duration_ms, opt_duration_ms, Unit};

pub(crate) const METRICS: &[(&str, MetricKind, Unit)] = &[
    ("share_min", MetricKind::Value, Unit::Ratio),
    ("share_max", MetricKind::Value, Unit::Ratio),
    ("throttled_ratio", MetricKind::Value, Unit::Ratio),
    ("retunes", MetricKind::Value, Unit::Count),
    ("churned", MetricKind::Value, Unit::Count),
    ("churn_rmdir", MetricKind::Histogram, Unit::Ns),
];

/// With `per_cpu`: per leaf, what its threads on each CPU received against the median
/// of its other CPUs; the lowest and highest over every leaf and CPU.
pub(crate) const PER_CPU_METRICS: &[(&str, MetricKind, Unit)] = &[
    ("percpu_share_min", MetricKind::Value, Unit::Ratio),
    ("percpu_share_max", MetricKind::Value, Unit::Ratio),
];

/// The metric suffixes a `cfs-quota` workload reports.
pub(crate) fn metrics(spec: &CfsQuota) -> Vec<(&'static str, MetricKind, Unit)> {
    let mut out = METRICS.to_vec();
    if spec.per_cpu {
        out.extend_from_slice(PER_CPU_METRICS);
    }
    out
}

/// One iteration = one retune round over every cgroup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CfsQuota {
    /// Parent cgroup (relative to the hierarchy root) holding the tree.
    pub parent: String,
    /// Levels of nesting below the parent (1 = leaves directly under it).
    pub depth: u32,
    /// Children per level: `width ^ depth` leaves.
    pub width: u32,
    /// Quota per period of each leaf, picked (seeded) in this range at every retune.
    #[serde(with = "range_us")]
    pub quota: (Duration, Duration),
    #[serde(with = "range_us")]
    pub period: (Duration, Duration),
    /// Quota of every inner cgroup (as a ratio of one CPU); `None` leaves them unlimited.
    pub inner_share: Option<f64>,
    /// Threads per leaf that burn CPU without pause.
    pub burners: u32,
    /// Threads per leaf that run for `burst_run`, then sleep for `burst_sleep`.
    pub sleepers: u32,
    #[serde(with = "duration_ms")]
    pub burst_run: Duration,
    #[serde(with = "duration_ms")]
    pub burst_sleep: Duration,
    /// Retune every quota and period this often (`None`: set once).
    #[serde(with = "opt_duration_ms")]
    pub retune_every: Option<Duration>,
    /// Create, populate and remove an extra throttled cgroup this often.
    #[serde(with = "opt_duration_ms")]
    pub churn_every: Option<Duration>,
    /// Hierarchies the tree lives in: `["cpu"]` on v2, `["cpu", "cpuacct"]` on v1 (usage
    /// comes from cpuacct there).
    pub controllers: Vec<String>,
    /// Every leaf runs its `burners` and `sleepers` on each CPU of the VM, each thread
    /// pinned to its CPU, and the workload compares what the leaf's threads received on
    /// each CPU: a CPU whose run queue starves a group is invisible in the group's
    /// totals (the other CPUs take its share).
    #[serde(default)]
    pub per_cpu: bool,
}

raw_workload! {
    parent: Option<Spanned<String>>,
    depth: Option<Spanned<u64>>,
    width: Option<Spanned<u64>>,
    quota: Option<Spanned<toml::Value>>,
    period: Option<Spanned<toml::Value>>,
    inner_share: Option<Spanned<f64>>,
    burners: Option<Spanned<u64>>,
    sleepers: Option<Spanned<u64>>,
    burst_run: Option<Spanned<String>>,
    burst_sleep: Option<Spanned<String>>,
    retune_every: Option<Spanned<String>>,
    churn_every: Option<Spanned<String>>,
    per_cpu: Option<bool>,
}

/// The kernel refuses periods outside 1ms..1s and quotas below 1ms.
const MIN_QUOTA: Duration = Duration::from_millis(1);
const PERIOD_LIMITS: (Duration, Duration) = (Duration::from_millis(1), Duration::from_secs(1));

pub(super) fn parse(ctx: &mut Ctx<'_>, entry: &Entry<'_, '_>) -> Option<super::Workload> {
    let (raw, common) = entry.read::<Raw>(ctx)?;
    let parent = super::cgroup_path(ctx, &raw.parent, "kchaos-cfs");
    let quota = ctx
        .duration_range(&raw.quota)
        .unwrap_or((Duration::from_millis(2), Duration::from_millis(8)));
    let period = ctx
        .duration_range(&raw.period)
        .unwrap_or((Duration::from_millis(10), Duration::from_millis(20)));
    ctx.refuse_if(
        quota.0 < MIN_QUOTA,
        &raw.quota,
        "the kernel refuses quotas below 1ms",
    );
    ctx.refuse_if(
        period.0 < PERIOD_LIMITS.0 || period.1 > PERIOD_LIMITS.1,
        &raw.period,
        "the kernel accepts periods from 1ms to 1s",
    );
    let inner_share = ctx.positive(
        &raw.inner_share,
        64.0,
        "`inner_share` is a share of one CPU, above 0 (e.g. 0.5)",
    );
    let controllers = match entry.vm.cgroup {
        CgroupMode::V2 => vec!["cpu".to_owned()],
        CgroupMode::V1 | CgroupMode::Hybrid => vec!["cpu".to_owned(), "cpuacct".to_owned()],
    };
    let spec = CfsQuota {
        parent,
        depth: ctx.count_u32(&raw.depth, 1, 4, 2),
        width: ctx.count_u32(&raw.width, 1, 8, 2),
        quota,
        period,
        inner_share,
        burners: ctx.count_u32(&raw.burners, 0, 64, 2),
        sleepers: ctx.count_u32(&raw.sleepers, 0, 256, 4),
        burst_run: ctx
            .duration(&raw.burst_run)
            .unwrap_or(Duration::from_millis(1)),
        burst_sleep: ctx
            .duration(&raw.burst_sleep)
            .unwrap_or(Duration::from_millis(5)),
        retune_every: ctx.duration_in(&raw.retune_every, Duration::from_millis(1)),
        churn_every: ctx.duration_in(&raw.churn_every, Duration::from_millis(1)),
        controllers,
        per_cpu: raw.per_cpu.unwrap_or(false),
    };
    if spec.width.pow(spec.depth) > 64 {
        ctx.error(
            entry.value.span(),
            format!(
                "{}^{} = {} leaves is too many for one VM; at most 64",
                spec.width,
                spec.depth,
                spec.width.pow(spec.depth)
            ),
        );
    }
    Some(common.with(WorkloadSpec::CfsQuota(spec)))
}

/// `[min_us, max_us]` on the wire.
mod range_us {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(r: &(Duration, Duration), s: S) -> Result<S::Ok, S::Error> {
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        s.collect_seq([us(r.0), us(r.1)])
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<(Duration, Duration), D::Error> {
        let [lo, hi] = <[u64; 2]>::deserialize(d)?;
        Ok((Duration::from_micros(lo), Duration::from_micros(hi)))
    }
}

#[cfg(test)]
mod tests {
    use crate::scenario::{parse, WorkloadSpec};

    const BASE: &str =
        "[scenario]\nname = \"c\"\n[[workload]]\nkind = \"cfs-quota\"\nname = \"cfs\"\n";

    #[test]
    fn per_cpu_shares_can_be_checked_only_when_measured() {
        let src = format!(
            "{BASE}per_cpu = true\n[[check]]\nassert = \"cfs.percpu_share_min.value >= 0.6\"\n"
        );
        let s = parse("t.toml", &src).unwrap();
        let WorkloadSpec::CfsQuota(c) = &s.workloads[0].spec else {
            panic!("expected cfs-quota")
        };
        assert!(c.per_cpu);
        // Without per_cpu there is nothing per CPU to check: refused before any run.
        let src = format!("{BASE}[[check]]\nassert = \"cfs.percpu_share_min.value >= 0.6\"\n");
        let errors = parse("t.toml", &src).unwrap_err().to_string();
        assert!(errors.contains("percpu_share_min"), "{errors}");
    }
}
