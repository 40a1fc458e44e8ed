//! Resource limits through cgroups-rs, which maps them onto the v1 or v2 files
//! (`memory.max` / `memory.limit_in_bytes`, `cpu.max` / `cpu.cfs_quota_us` +
//! `cpu.cfs_period_us`). Blocking: call from the blocking pool or a plain thread.

use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::hierarchies::{V1, V2};
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::{Cgroup, Hierarchy};
use kchaos_model::scenario::CgroupMode;

#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("No {controller} controller in the hierarchy of cgroup {cgroup}")]
    NoController {
        controller: &'static str,
        cgroup: String,
    },
    #[error("{what} {value} of cgroup {cgroup} is larger than the kernel accepts")]
    TooLarge {
        what: &'static str,
        value: u64,
        cgroup: String,
    },
    /// cgroups-rs names the file in its source (boxed: its error is large).
    #[error("Cannot set {what} {value} of cgroup {cgroup}")]
    Write {
        what: &'static str,
        value: String,
        cgroup: String,
        #[source]
        source: Box<cgroups_rs::fs::error::Error>,
    },
}

fn load(mode: CgroupMode, rel: &str) -> Cgroup {
    let hier: Box<dyn Hierarchy> = match mode {
        CgroupMode::V2 => Box::new(V2::new()),
        CgroupMode::V1 | CgroupMode::Hybrid => Box::new(V1::new()),
    };
    Cgroup::load(hier, rel)
}

/// The controller `C` of `cg`, which the mode's hierarchy must have.
fn controller<'a, C>(cg: &'a Cgroup, name: &'static str, rel: &str) -> Result<&'a C, LimitError>
where
    &'a C: From<&'a cgroups_rs::fs::Subsystem>,
    C: cgroups_rs::fs::Controller + cgroups_rs::fs::ControllIdentifier,
{
    cg.controller_of().ok_or_else(|| LimitError::NoController {
        controller: name,
        cgroup: rel.to_owned(),
    })
}

/// `value` as the signed number cgroups-rs takes.
fn signed(what: &'static str, value: u64, rel: &str) -> Result<i64, LimitError> {
    i64::try_from(value).map_err(|_| LimitError::TooLarge {
        what,
        value,
        cgroup: rel.to_owned(),
    })
}

/// The error of a write cgroups-rs refused.
fn refused(
    what: &'static str,
    value: String,
    rel: &str,
) -> impl FnOnce(cgroups_rs::fs::error::Error) -> LimitError {
    let cgroup = rel.to_owned();
    move |source| LimitError::Write {
        what,
        value,
        cgroup,
        source: Box::new(source),
    }
}

pub fn set_memory_limit(mode: CgroupMode, rel: &str, bytes: u64) -> Result<(), LimitError> {
    let cg = load(mode, rel);
    let mem: &MemController = controller(&cg, "memory", rel)?;
    let limit = signed("memory limit", bytes, rel)?;
    mem.set_limit(limit)
        .map_err(refused("memory limit", bytes.to_string(), rel))
}

/// CFS bandwidth: `quota_us` of CPU time per `period_us`.
pub fn set_cpu_bandwidth(
    mode: CgroupMode,
    rel: &str,
    quota_us: u64,
    period_us: u64,
) -> Result<(), LimitError> {
    let cg = load(mode, rel);
    let cpu: &CpuController = controller(&cg, "cpu", rel)?;
    let quota = signed("cpu quota", quota_us, rel)?;
    cpu.set_cfs_quota_and_period(Some(quota), Some(period_us))
        .map_err(refused(
            "cpu bandwidth",
            format!("{quota_us}us/{period_us}us"),
            rel,
        ))
}
