//! The job of the process in each leaf of the `cfs-quota` tree: threads that burn CPU
//! without pause and threads that run and sleep in bursts, like the incident's
//! multi-threaded job. Runs until its stop pipe closes.

use std::fs::File;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What the worker's threads do.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub burners: u32,
    pub sleepers: u32,
    pub run_us: u64,
    pub sleep_us: u64,
    /// `burners` and `sleepers` on each CPU, each thread pinned to its CPU (else that
    /// many in all, wherever the scheduler puts them).
    pub per_cpu: bool,
}

/// `burners` busy threads and `sleepers` that run `run_us` then sleep `sleep_us` (per
/// CPU with `per_cpu`), until `stop` reaches end of file. A thread that cannot be
/// pinned does not run; the first such failure is the worker's error.
pub fn run(shape: Shape, stop: File) -> Result<(), String> {
    let run_for = Duration::from_micros(shape.run_us);
    let sleep_for = Duration::from_micros(shape.sleep_us);
    let cpus: Vec<Option<usize>> = if shape.per_cpu {
        crate::cpus::allowed().into_iter().map(Some).collect()
    } else {
        vec![None]
    };
    let done = AtomicBool::new(false);
    let failed: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
    let pinned = |cpu: Option<usize>| match cpu.map(crate::cpus::pin) {
        Some(Err(e)) => {
            let mut first = failed.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert(e);
            false
        }
        _ => true,
    };
    let (done, pinned) = (&done, &pinned);
    std::thread::scope(|s| {
        for &cpu in &cpus {
            for _ in 0..shape.burners {
                s.spawn(move || {
                    if pinned(cpu) {
                        while !done.load(Ordering::Relaxed) {
                            spin(Duration::from_millis(10));
                        }
                    }
                });
            }
            for _ in 0..shape.sleepers {
                s.spawn(move || {
                    if pinned(cpu) {
                        while !done.load(Ordering::Relaxed) {
                            spin(run_for);
                            std::thread::sleep(sleep_for);
                        }
                    }
                });
            }
        }
        wait_for_eof(stop);
        done.store(true, Ordering::Relaxed);
    });
    match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
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
