//! The job of the process in each leaf of the `cfs-quota` tree: threads that burn CPU
//! without pause and threads that run and sleep in bursts, like the incident's
//! multi-threaded job. Runs until its stop pipe closes.

use std::fs::File;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// `burners` busy threads and `sleepers` that run `run_us` then sleep `sleep_us`, until
/// `stop` reaches end of file.
pub fn run(burners: u32, sleepers: u32, run_us: u64, sleep_us: u64, stop: File) {
    let run_for = Duration::from_micros(run_us);
    let sleep_for = Duration::from_micros(sleep_us);
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..burners {
            s.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    spin(Duration::from_millis(10));
                }
            });
        }
        for _ in 0..sleepers {
            s.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    spin(run_for);
                    std::thread::sleep(sleep_for);
                }
            });
        }
        wait_for_eof(stop);
        done.store(true, Ordering::Relaxed);
    });
}

/// Blocks until the other end of `f` is closed (or the read fails).
pub fn wait_for_eof(mut f: impl Read) {
    let mut sink = [0u8; 64];
    while matches!(f.read(&mut sink), Ok(n) if n > 0) {}
}

/// Burns CPU for `d` of wall time (longer if throttled: that is the point).
fn spin(d: Duration) {
    let start = Instant::now();
    let mut x = 0u64;
    while start.elapsed() < d {
        x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
    }
}
