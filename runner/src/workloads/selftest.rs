//! `selftest`: deliberately break the guest so the harness's detection can be proven
//! end to end. Scenarios using it live in `scenarios/selftest/`.

use std::time::{Duration, Instant};

use kchaos_model::protocol::WorkloadReport;
use kchaos_model::scenario::workload::{Selftest, SelftestAction};
use kchaos_model::scenario::Workload;

use super::Env;
use crate::kfile::{self, KernelFileError};

#[derive(Debug, thiserror::Error)]
pub enum SelftestError {
    #[error(transparent)]
    Write(#[from] KernelFileError),
    #[error("Cannot start a wedge thread")]
    Thread(#[source] std::io::Error),
    #[error(transparent)]
    Systemd(#[from] crate::systemd::SystemdError),
}

pub fn run(workload: &Workload, spec: &Selftest, env: &Env) -> WorkloadReport {
    let mut report = WorkloadReport {
        name: workload.name.clone(),
        ..WorkloadReport::default()
    };
    let at = Instant::now() + spec.delay;
    while Instant::now() < at {
        if env.stop.load(std::sync::atomic::Ordering::Relaxed) || Instant::now() >= env.deadline {
            return report;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    tracing::warn!("{}", spec.describe());
    let result = match &spec.action {
        SelftestAction::Panic => {
            nix::unistd::sync();
            kfile::write(std::path::Path::new("/proc/sysrq-trigger"), "c").map_err(Into::into)
        }
        SelftestAction::Kmsg { line } => {
            // Level 4 (warning): below the console's loglevel, so the console sees it too.
            kfile::write(std::path::Path::new("/dev/kmsg"), &format!("<4>{line}\n"))
                .map_err(Into::into)
        }
        SelftestAction::Wedge => wedge(),
        SelftestAction::Silence => {
            env.reporter.silence();
            Ok(())
        }
        SelftestAction::FreezeSystemd => {
            crate::systemd::freeze_init().map_err(SelftestError::Systemd)
        }
    };
    report.iterations = 1;
    if let Err(e) = result {
        report.errors = 1;
        report.error_samples.push(kchaos_model::error_chain(&e));
        return report;
    }
    if matches!(
        spec.action,
        SelftestAction::Wedge | SelftestAction::Silence | SelftestAction::FreezeSystemd
    ) {
        // The run must not finish around the broken guest: stay in the workload phase
        // until the harness gives up on us (or, with systemd frozen, until the probes
        // have seen it for the rest of the workload's time).
        while !env.stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < env.deadline
        {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    report
}

/// SCHED_FIFO busy loops pinned to every CPU, with RT throttling off: nothing of normal
/// priority runs again (the heartbeat included), interrupts still do.
fn wedge() -> Result<(), SelftestError> {
    kfile::write(
        std::path::Path::new("/proc/sys/kernel/sched_rt_runtime_us"),
        "-1",
    )?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    for cpu in 0..cpus {
        std::thread::Builder::new()
            .name(format!("kchaos-wedge-{cpu}"))
            .spawn(move || {
                let mut set = nix::sched::CpuSet::new();
                let _ = set.set(cpu);
                let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
                let param = libc::sched_param { sched_priority: 99 };
                // SAFETY: sched_setscheduler reads `param`, a valid initialised struct;
                // pid 0 is the calling thread.
                let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
                loop {
                    std::hint::spin_loop();
                }
            })
            .map_err(SelftestError::Thread)?;
    }
    Ok(())
}
