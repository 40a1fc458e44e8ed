//! The process in each leaf of the `cfs-quota` tree: threads that burn CPU without
//! pause and threads that run and sleep in bursts, like the incident's multi-threaded
//! job. Runs until its stdin closes.

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::child;

pub const SUBCOMMAND: &str = "__cfs-worker";

/// `__cfs-worker BURNERS SLEEPERS RUN_US SLEEP_US -- PROCS...`
pub fn child_main(args: &[OsString]) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[OsString]) -> Result<(), String> {
    let (own, procs) = child::split_args(args);
    let burners: u32 = child::arg(&own, 0, "burners")?;
    let sleepers: u32 = child::arg(&own, 1, "sleepers")?;
    let run_for = Duration::from_micros(child::arg(&own, 2, "run_us")?);
    let sleep_for = Duration::from_micros(child::arg(&own, 3, "sleep_us")?);
    child::join_cgroups(&procs)?;
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..burners {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    spin(Duration::from_millis(10));
                }
            });
        }
        for _ in 0..sleepers {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    spin(run_for);
                    std::thread::sleep(sleep_for);
                }
            });
        }
        child::wait_for_stdin_eof();
        stop.store(true, Ordering::Relaxed);
    });
    Ok(())
}

/// Burns CPU for `d` of wall time (longer if throttled: that is the point).
fn spin(d: Duration) {
    let start = Instant::now();
    let mut x = 0u64;
    while start.elapsed() < d {
        x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
    }
}
