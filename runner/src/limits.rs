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

pub fn set_memory_limit(mode: CgroupMode, rel: &str, bytes: u64) -> Result<(), LimitError> {
    let cg = load(mode, rel);
    let mem: &MemController = cg.controller_of().ok_or_else(|| LimitError::NoController {
        controller: "memory",
        cgroup: rel.to_owned(),
    })?;
    let limit = i64::try_from(bytes).map_err(|_| LimitError::TooLarge {
        what: "memory limit",
        value: bytes,
        cgroup: rel.to_owned(),
    })?;
    mem.set_limit(limit).map_err(|source| LimitError::Write {
        what: "memory limit",
        value: bytes.to_string(),
        cgroup: rel.to_owned(),
        source: Box::new(source),
    })
}

/// CFS bandwidth: `quota_us` of CPU time per `period_us`.
pub fn set_cpu_bandwidth(
    mode: CgroupMode,
    rel: &str,
    quota_us: u64,
    period_us: u64,
) -> Result<(), LimitError> {
    let cg = load(mode, rel);
    let cpu: &CpuController = cg.controller_of().ok_or_else(|| LimitError::NoController {
        controller: "cpu",
        cgroup: rel.to_owned(),
    })?;
    let quota = i64::try_from(quota_us).map_err(|_| LimitError::TooLarge {
        what: "cpu quota",
        value: quota_us,
        cgroup: rel.to_owned(),
    })?;
    cpu.set_cfs_quota_and_period(Some(quota), Some(period_us))
        .map_err(|source| LimitError::Write {
            what: "cpu bandwidth",
            value: format!("{quota_us}us/{period_us}us"),
            cgroup: rel.to_owned(),
            source: Box::new(source),
        })
}
