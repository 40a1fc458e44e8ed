//! Resource limits through cgroups-rs, which maps them onto the v1 or v2 files
//! (`memory.max` / `memory.limit_in_bytes`, `cpu.max` / `cpu.cfs_quota_us` +
//! `cpu.cfs_period_us`). Blocking: call from the blocking pool or a plain thread.

use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::hierarchies::{V1, V2};
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::{Cgroup, Hierarchy};
use kchaos_model::scenario::CgroupMode;

fn load(mode: CgroupMode, rel: &str) -> Cgroup {
    let hier: Box<dyn Hierarchy> = match mode {
        CgroupMode::V2 => Box::new(V2::new()),
        CgroupMode::V1 | CgroupMode::Hybrid => Box::new(V1::new()),
    };
    Cgroup::load(hier, rel)
}

pub fn set_memory_limit(mode: CgroupMode, rel: &str, bytes: u64) -> Result<(), String> {
    let cg = load(mode, rel);
    let mem: &MemController = cg
        .controller_of()
        .ok_or("no memory controller in this hierarchy")?;
    let limit = i64::try_from(bytes).map_err(|_| "limit too large".to_owned())?;
    mem.set_limit(limit)
        .map_err(|e| format!("set memory limit of {rel}: {e}"))
}

/// CFS bandwidth: `quota_us` of CPU time per `period_us`.
pub fn set_cpu_bandwidth(
    mode: CgroupMode,
    rel: &str,
    quota_us: u64,
    period_us: u64,
) -> Result<(), String> {
    let cg = load(mode, rel);
    let cpu: &CpuController = cg
        .controller_of()
        .ok_or("no cpu controller in this hierarchy")?;
    let quota = i64::try_from(quota_us).map_err(|_| "quota too large".to_owned())?;
    cpu.set_cfs_quota_and_period(Some(quota), Some(period_us))
        .map_err(|e| format!("set cpu bandwidth of {rel} to {quota_us}us/{period_us}us: {e}"))
}
