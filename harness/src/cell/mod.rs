//! One cell, from spec to verdict: boot a disposable VM, hand the scenario to the
//! runner, watch the console and the channel, collect evidence if the guest crashes or
//! hangs, decide. [`state`] decides (the verdict included), `drive` does the I/O
//! around it, `vm::launch` builds the VM it drives. Every way out of here yields
//! exactly one result, written to `cell.json`.

mod drive;
mod evidence;
pub mod keep;
mod monitor;
mod observe;
pub mod preboot;
pub mod requirements;
pub mod state;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kchaos_images::Kernel;
use kchaos_model::timeline::phase_stats;
use kchaos_model::verdict::Verdict;
use tokio::sync::watch;

pub use self::evidence::DumpPolicy;
pub use self::keep::{Gdb, Keeper};
pub use self::state::{millis, CellUpdate, KeepPolicy, Timeouts};
use crate::results::{write_json, Artifacts, CellResult, KernelInfo};
use crate::scenario::LoadedScenario;
use crate::vm::{Accel, Qemu};
use kchaos_model::error_chain;

/// Everything needed to run one cell.
#[derive(Debug, Clone)]
pub struct CellSpec {
    pub id: String,
    pub scenario: Arc<LoadedScenario>,
    pub kernel: Arc<Kernel>,
    pub image: crate::vm::image::GuestImage,
    pub seed: u64,
    /// The topology axis's column (the scenario's VM already has it), for the results.
    pub topology: Option<kchaos_model::topology::Topology>,
    pub repeat: u32,
    /// Results directory and this cell's directory inside it.
    pub results_dir: PathBuf,
    pub dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct CellEnv {
    pub qemu: Qemu,
    pub accel: Accel,
    /// Flips to `true` when the user interrupts the run.
    pub cancel: watch::Receiver<bool>,
    /// The runner's log level (`kchaos.log=` on the guest command line), if set.
    pub guest_log: Option<String>,
    /// Overrides the accelerator-scaled boot timeout (slow or nested hosts).
    pub boot_timeout: Option<Duration>,
    /// Dump guest memory when the guest crashes or hangs (`--dump-memory`).
    pub dump: Option<DumpPolicy>,
    /// The outcome the run stops at: a signature that decides it ends the cell at once.
    pub until: Option<crate::analysis::reproduction::Target>,
    /// Which decided cells keep their VM up for the engineer (`--keep-on-failure`).
    pub keep: KeepPolicy,
    /// Run to the end past a signature that decides the cell (`--full-duration`).
    pub full_duration: bool,
    /// Holds the kept VMs until the user releases them (one per session).
    pub keeper: Arc<Keeper>,
    /// QEMU's gdb stub and the kernel's symbols (`--gdb`).
    pub gdb: Option<Gdb>,
}

/// Runs the cell and writes `cell.json`. Never fails: problems become the verdict.
pub async fn run(
    cell: &CellSpec,
    env: &CellEnv,
    update: &(dyn Fn(CellUpdate) + Sync),
) -> CellResult {
    let start = Instant::now();
    let mut result = CellResult {
        accel: Some(env.accel.as_str().to_owned()),
        image: Some(cell.image.info.clone()),
        topology: cell.topology.map(|t| t.label()),
        ..CellResult::new(
            cell.id.clone(),
            &cell.scenario,
            KernelInfo::of(&cell.kernel.spec, Some(&cell.kernel)),
            cell.seed,
            cell.repeat,
            Verdict::Error,
        )
    };
    match drive::drive(cell, env, update).await {
        Ok(o) => {
            // The state machine decided the verdict; this only records it.
            result.verdict = o.decision.verdict;
            result.reasons = o.decision.reasons;
            result.checks = o.decision.checks;
            result.fingerprint = o.fingerprint;
            result.boot_ms = o.boot_ms;
            result.first_signature_ms = o.first_signature_ms;
            result.guest_ready_ms = o.guest_ready_ms;
            result.phases = o.obs.report.as_ref().map(phase_stats).unwrap_or_default();
            result.metrics = o.obs.metrics;
            result.signatures = o.obs.hits;
            result.notes = o.notes;
            if let Some(release) = o.release {
                result.kernel.release = Some(release);
            }
            let rel = |path: &std::path::Path| {
                path.strip_prefix(&cell.results_dir)
                    .ok()
                    .map(|p| p.display().to_string())
            };
            result.artifacts = Artifacts {
                dir: rel(&cell.dir),
                console: rel(&cell.dir.join("console.log")),
                kmsg: rel(&cell.dir.join("kmsg.log")),
                qemu_log: rel(&cell.dir.join("qemu.log")),
                sysrq: o.sysrq.as_deref().and_then(rel),
                vmcore: o.vmcore.as_deref().and_then(rel),
                bundle: None,
            };
        }
        Err(e) => result.reasons.push(error_chain(&e)),
    }
    result.duration_ms = millis(start.elapsed());
    if let Err(e) = write_json(&cell.dir.join("cell.json"), &result) {
        tracing::error!("{}", error_chain(&e));
    }
    result
}
