//! `cgroup-churn`: create and remove cgroups in bulk, with a short-lived process in each
//! that writes files so page cache, dentries and inodes are charged to the cgroup
//! (incident 1: dying memory cgroups, kmem accounting).

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::{Entry, WorkloadSpec};
use crate::metrics::MetricKind;
use crate::scenario::ctx::Ctx;
use crate::scenario::CgroupMode;
use crate::units::Unit;

pub(crate) const METRICS: &[(&str, MetricKind, Unit)] = &[
    ("mkdir", MetricKind::Histogram, Unit::Ns),
    ("rmdir", MetricKind::Histogram, Unit::Ns),
    ("populate", MetricKind::Histogram, Unit::Ns),
    ("cgroups", MetricKind::Value, Unit::Count),
    // Page cache charged to a sampled cgroup just before its removal (memory.stat
    // `file` on v2, `cache` on v1), the smallest seen: > 0 proves the populate process
    // wrote from inside the cgroup. Reported only when cgroups were removed and sampled.
    ("file_charged_min", MetricKind::Value, Unit::Bytes),
];

/// One iteration = one cgroup created (and, with `remove`, removed again).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CgroupChurn {
    /// Controllers the churned cgroups are created under. v2: enabled in the parents'
    /// `cgroup.subtree_control`; v1: one directory per controller hierarchy.
    pub controllers: Vec<String>,
    /// Parent cgroup (relative to each hierarchy root) that holds the churn.
    pub parent: String,
    /// How many cgroups exist at once before they are removed together. `batch =
    /// iterations` is the incident's proof of concept (create 1000, then remove all);
    /// `batch = 1` is container-style rolling churn.
    pub batch: u64,
    /// Parallel workers, each with its own batch.
    pub concurrency: u32,
    /// Files a short-lived process writes inside each cgroup (0 = no process).
    pub files_per_cgroup: u32,
    pub file_size: u64,
    /// Where the per-cgroup directories are created (a fresh directory per cgroup).
    pub file_dir: String,
    /// Keep the written files after the cgroup is removed, so their page cache keeps the
    /// memory cgroup alive as a dying cgroup (what the incident saw).
    pub keep_files: bool,
    /// Remove the cgroups (rmdir). `false` leaks them on purpose.
    pub remove: bool,
    /// `memory.max` (v2) / `memory.limit_in_bytes` (v1) for each cgroup.
    pub memory_limit: Option<u64>,
    /// `memory.kmem.limit_in_bytes` (v1 only). Since 5.16 the kernel accepts and ignores
    /// it (with a log line); where the file is gone or the write is refused, the runner
    /// records a note and carries on, since kmem is accounted either way.
    pub kmem_limit: Option<u64>,
}

raw_workload! {
    controllers: Option<Vec<Spanned<String>>>,
    parent: Option<Spanned<String>>,
    batch: Option<Spanned<u64>>,
    concurrency: Option<Spanned<u64>>,
    files_per_cgroup: Option<Spanned<u64>>,
    file_size: Option<Spanned<String>>,
    file_dir: Option<Spanned<String>>,
    keep_files: Option<bool>,
    remove: Option<bool>,
    memory_limit: Option<Spanned<String>>,
    kmem_limit: Option<Spanned<String>>,
}

pub(super) fn parse(ctx: &mut Ctx<'_>, entry: &Entry<'_, '_>) -> Option<super::Workload> {
    let (raw, common) = entry.read::<Raw>(ctx)?;
    let mut controllers = ctx.controllers(raw.controllers.as_deref().unwrap_or_default());
    if raw.controllers.is_none() {
        controllers.push("memory".to_owned());
    }
    if controllers.is_empty() && entry.vm.cgroup == CgroupMode::V1 {
        ctx.error(
            entry.value.span(),
            "cgroup v1 needs at least one controller hierarchy in `controllers`",
        );
    }
    let parent = super::cgroup_path(ctx, &raw.parent, "kchaos");
    let file_dir = match &raw.file_dir {
        Some(d) if !d.get_ref().starts_with('/') => {
            ctx.error(
                d.span(),
                "`file_dir` must be an absolute path in the guest, like `/tmp`",
            );
            String::new()
        }
        Some(d) => d.get_ref().clone(),
        None => "/tmp".to_owned(),
    };
    let file_size = ctx.size(&raw.file_size).unwrap_or(4096);
    ctx.refuse_if(
        file_size > 64 << 20,
        &raw.file_size,
        "`file_size` is limited to 64MiB per file",
    );
    let kmem_limit = ctx.size(&raw.kmem_limit);
    ctx.refuse_if(
        kmem_limit.is_some() && entry.vm.cgroup == CgroupMode::V2,
        &raw.kmem_limit,
        "`kmem_limit` exists only in cgroup v1 (`memory.kmem.limit_in_bytes`); set `[vm] cgroup = \"v1\"`",
    );
    let churn = CgroupChurn {
        controllers,
        parent,
        batch: ctx.count(&raw.batch, 1, 1_000_000).unwrap_or(1),
        concurrency: ctx.count_u32(&raw.concurrency, 1, 256, 1),
        files_per_cgroup: ctx.count_u32(&raw.files_per_cgroup, 0, 10_000, 1),
        file_size,
        file_dir,
        keep_files: raw.keep_files.unwrap_or(true),
        remove: raw.remove.unwrap_or(true),
        memory_limit: ctx.size(&raw.memory_limit),
        kmem_limit,
    };
    Some(common.with(WorkloadSpec::CgroupChurn(churn)))
}
