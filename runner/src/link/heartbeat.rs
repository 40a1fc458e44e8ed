//! Heartbeats from a dedicated OS thread: if the guest is too wedged to schedule even
//! this, the host declares a hang.

use std::time::Duration;

use kchaos_model::protocol::GuestMessage;

use crate::link::channel::Reporter;

pub const INTERVAL: Duration = Duration::from_secs(1);

pub fn spawn(reporter: Reporter) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("kchaos-heartbeat".into())
        .spawn(move || {
            let mut seq = 0;
            loop {
                reporter.send(GuestMessage::Heartbeat {
                    seq,
                    uptime_ms: uptime_ms(),
                });
                seq += 1;
                std::thread::sleep(INTERVAL);
            }
        })?;
    Ok(())
}

/// CLOCK_BOOTTIME in milliseconds: time since the guest kernel started.
pub fn uptime_ms() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| {
            u64::try_from(t.tv_sec()).unwrap_or(0) * 1000
                + u64::try_from(t.tv_nsec()).unwrap_or(0) / 1_000_000
        })
        .unwrap_or(0)
}
