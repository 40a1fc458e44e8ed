//! `memcg-reclaim`: after a `cgroup-churn`, take away everything that legitimately keeps
//! its removed memory cgroups alive — delete the files their processes wrote, drop the
//! page cache and slab caches, optionally apply memory pressure — and wait for the
//! kernel to free them. On a healthy kernel the dying count falls to (near) zero; a
//! cgroup still dying afterwards is pinned by something else: a leaked reference
//! (incident 1b's class of defect), which a check on `<name>.dying` names.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::{Entry, Workload, WorkloadSpec};
use crate::metrics::MetricKind;
use crate::scenario::ctx::{list_or, Ctx};
use crate::units::{duration_ms, Unit};

pub(crate) const METRICS: &[(&str, MetricKind, Unit)] = &[
    ("dying_before", MetricKind::Value, Unit::Count),
    ("dying", MetricKind::Value, Unit::Count),
    ("deleted", MetricKind::Value, Unit::Count),
    ("wait", MetricKind::Value, Unit::Ns),
];

/// Longest `timeout` accepted: the wait must fit in a run.
const MAX_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemcgReclaim {
    /// The `cgroup-churn` workload whose cgroups and files this reclaims.
    pub churn: String,
    /// Where that workload wrote (`file_dir`) and the prefix of its per-cgroup
    /// directories (`kchaos-<churn>-`), resolved from it when the scenario is parsed.
    pub file_dir: String,
    pub file_prefix: String,
    /// Delete those directories (the files keep the cgroups dying on any kernel).
    pub delete_files: bool,
    /// `echo 3 > /proc/sys/vm/drop_caches`: page cache, dentries and inodes.
    pub drop_caches: bool,
    /// Anonymous memory touched and freed again, so reclaim runs (at most half of
    /// `MemAvailable` is used, whatever is asked: the runner is PID 1 and cannot be
    /// OOM-killed, so an OOM would panic the guest).
    pub pressure: Option<u64>,
    /// The wait ends once the dying count is at or below this.
    pub target: u64,
    /// Longest wait for the count to fall (also bounded by the scenario's duration).
    #[serde(with = "duration_ms")]
    pub timeout: Duration,
}

raw_workload! {
    churn: Spanned<String>,
    delete_files: Option<bool>,
    drop_caches: Option<bool>,
    pressure: Option<Spanned<String>>,
    target: Option<Spanned<u64>>,
    timeout: Option<Spanned<String>>,
}

pub(super) fn parse(ctx: &mut Ctx<'_>, entry: &Entry<'_, '_>) -> Option<Workload> {
    let (raw, mut common) = entry.read::<Raw>(ctx)?;
    let churn = raw.churn.get_ref().clone();
    // It reclaims what the churn left: it runs after it unless told otherwise.
    if common.after.is_none() {
        common.after = Some(churn.clone());
    }
    let timeout = ctx
        .duration(&raw.timeout)
        .unwrap_or(Duration::from_secs(30));
    ctx.refuse_if(
        timeout > MAX_TIMEOUT,
        &raw.timeout,
        format!("`timeout` is at most {MAX_TIMEOUT:?}"),
    );
    let spec = MemcgReclaim {
        churn,
        // Filled in from the churn workload by `resolve` once all workloads are parsed.
        file_dir: String::new(),
        file_prefix: String::new(),
        delete_files: raw.delete_files.unwrap_or(true),
        drop_caches: raw.drop_caches.unwrap_or(true),
        pressure: ctx.size(&raw.pressure),
        target: ctx.count(&raw.target, 0, 1_000_000).unwrap_or(0),
        timeout,
    };
    Some(common.with(WorkloadSpec::MemcgReclaim(spec)))
}

/// Points each `memcg-reclaim` at its churn's files; an error names what `churn`
/// may be. `span_of(i)` is where workload `i`'s `churn` key is written.
pub(crate) fn resolve(
    ctx: &mut Ctx<'_>,
    workloads: &mut [Workload],
    span_of: impl Fn(usize) -> std::ops::Range<usize>,
) {
    let churns: Vec<(String, String)> = workloads
        .iter()
        .filter_map(|w| match &w.spec {
            WorkloadSpec::CgroupChurn(c) => Some((w.name.clone(), c.file_dir.clone())),
            _ => None,
        })
        .collect();
    for (i, w) in workloads.iter_mut().enumerate() {
        let WorkloadSpec::MemcgReclaim(spec) = &mut w.spec else {
            continue;
        };
        match churns.iter().find(|(name, _)| name == &spec.churn) {
            Some((name, dir)) => {
                spec.file_dir = dir.clone();
                spec.file_prefix = format!("kchaos-{name}-");
            }
            None => {
                let names: Vec<&str> = churns.iter().map(|(n, _)| n.as_str()).collect();
                ctx.error(
                    span_of(i),
                    format!(
                        "`churn` must name a `cgroup-churn` workload; this scenario has: {}",
                        list_or(&names, "none")
                    ),
                );
            }
        }
    }
}
