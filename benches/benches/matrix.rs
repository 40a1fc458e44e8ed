//! Matrix throughput: the same matrix (one short cgroup-churn scenario × repeats) with
//! `--jobs 1` and `--jobs 2`, side by side in one run, in ABBA order so drift hits both
//! equally. Prints the wall times, the scaling ratio (jobs 1 / jobs 2), and memory: the
//! harness's own peak resident memory (VmHWM, QEMU not included) after the first
//! `--jobs 1` matrix and after the first `--jobs 2` one, whose difference is what one
//! more VM slot costs the harness, next to what each QEMU process holds (sampled every
//! 50 ms). The peak only grows, so the order 1, 2 is what makes the difference mean
//! something; the later runs only add wall-time samples.
//!
//! `cargo bench -p kchaos-benches --bench matrix` (KCHAOS_BENCH_CELLS, default 4 cells
//! per matrix; KCHAOS_BENCH_KERNEL, default debian:6.1-cloud).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kchaos_benches::{bench_main, env_count, median, BenchResult};
use kchaos_harness::run::matrix::{self, MatrixOptions};
use kchaos_harness::run::session::{Session, SessionOptions};
use kchaos_harness::vm::process::rss_kib;
use kchaos_images::Cache;
use kchaos_model::verdict::Verdict;

const SCENARIO: &str = r#"
[scenario]
name = "matrix-bench"
description = "a short memcg churn: the kind of cell a matrix is made of"
duration = "6s"
seed = 1

[[workload]]
kind = "cgroup-churn"
name = "churn"
iterations = 200
batch = 50
controllers = ["memory"]
parent = "kchaos"
files_per_cgroup = 1
file_size = "4KiB"
file_dir = "/tmp"

[[probe]]
kind = "read-latency"
name = "stat_read"
path = "/sys/fs/cgroup/kchaos/memory.stat"
interval = "50ms"
"#;

/// One matrix run: wall time and memory.
struct Sample {
    wall: f64,
    /// The harness's peak RSS (VmHWM) after the run, KiB.
    harness_peak_kib: u64,
    /// Median RSS of the QEMU processes seen, KiB.
    qemu_kib: u64,
}

fn main() -> BenchResult<()> {
    let cells = u32::try_from(env_count("KCHAOS_BENCH_CELLS", 4)).unwrap_or(4);
    bench_main(|spec| async move { bench(cells, &spec).await })
}

async fn bench(cells: u32, spec: &str) -> BenchResult<()> {
    let work = tempfile::tempdir()?;
    let scenario = work.path().join("matrix-bench.toml");
    std::fs::write(&scenario, SCENARIO)?;
    let cache = Cache::new(Cache::default_root());
    // Warm-up: kernel, runner and image are built once, outside the measurement.
    let opts = |jobs: usize, out: &str| {
        (
            SessionOptions::new(cache.clone(), jobs),
            MatrixOptions {
                repeat: cells,
                ..MatrixOptions::new(
                    vec![scenario.clone()],
                    vec![spec.to_owned()],
                    work.path().join(out),
                )
            },
        )
    };
    let (warm_session, mut warm) = opts(1, "warm");
    warm.repeat = 1;
    let warmed = matrix::run(&Arc::new(Session::open(warm_session).await), &warm).await?;
    let host = &warmed.results.host;
    println!(
        "{cells} cells per matrix ({} s workload each), kernel {spec}, QEMU {} with {}, {} host cores",
        6,
        host.qemu.as_deref().unwrap_or("?"),
        host.accel.as_deref().unwrap_or("?"),
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    );
    let (mut one, mut two) = (Vec::new(), Vec::new());
    for (i, jobs) in [1usize, 2, 2, 1].into_iter().enumerate() {
        let s = measure(opts(jobs, &format!("m{i}-j{jobs}"))).await?;
        println!(
            "  jobs {jobs}: {:.1}s, harness peak {:.1} MiB so far, QEMU {:.0} MiB each",
            s.wall,
            s.harness_peak_kib as f64 / 1024.0,
            s.qemu_kib as f64 / 1024.0
        );
        if jobs == 1 {
            one.push(s);
        } else {
            two.push(s);
        }
    }
    let wall = |v: &[Sample]| median(&mut v.iter().map(|s| s.wall).collect::<Vec<_>>());
    let (w1, w2) = (wall(&one), wall(&two));
    let qemu = median(
        &mut one
            .iter()
            .chain(&two)
            .map(|s| s.qemu_kib as f64)
            .collect::<Vec<_>>(),
    );
    println!(
        "matrix wall time: jobs 1 {w1:.1}s, jobs 2 {w2:.1}s; scaling ratio (jobs 1 / jobs 2) {:.2}",
        w1 / w2
    );
    // Runs 0 (jobs 1) and 1 (jobs 2): the peak with one slot, then with two.
    let (p1, p2) = (one[0].harness_peak_kib, two[0].harness_peak_kib);
    println!(
        "harness peak memory: {:.1} MiB with 1 VM slot, {:.1} MiB with 2 -> {:.1} MiB per extra slot beyond QEMU's own (QEMU itself: {:.0} MiB per VM)",
        p1 as f64 / 1024.0,
        p2 as f64 / 1024.0,
        p2.saturating_sub(p1) as f64 / 1024.0,
        qemu / 1024.0
    );
    Ok(())
}

/// Runs the matrix while sampling this process's RSS and its QEMU children's.
async fn measure((session, opts): (SessionOptions, MatrixOptions)) -> BenchResult<Sample> {
    // Each measurement gets its own session: its slots, a fresh kernel and runner
    // lookup (both cached on disk by the warm-up).
    let session = Arc::new(Session::open(session).await);
    let stop = Arc::new(AtomicBool::new(false));
    let peaks = Arc::new(Mutex::new(Vec::<u64>::new()));
    let sampler = {
        let (stop, peaks) = (Arc::clone(&stop), Arc::clone(&peaks));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let qemus = qemu_children();
                if let Ok(mut p) = peaks.lock() {
                    p.extend(qemus.iter().filter_map(|pid| rss_kib(pid)));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let start = Instant::now();
    let outcome = matrix::run(&session, &opts).await;
    let wall = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let outcome = outcome?;
    if let Some(bad) = outcome
        .results
        .cells
        .iter()
        .find(|c| c.verdict != Verdict::Pass)
    {
        return Err(format!("{} was {}: {:?}", bad.id, bad.verdict, bad.reasons).into());
    }
    let qemu = peaks
        .lock()
        .map(|p| p.clone())
        .map_err(|_| "sampler poisoned")?;
    let mut qemu_f: Vec<f64> = qemu.into_iter().map(|k| k as f64).collect();
    Ok(Sample {
        wall,
        harness_peak_kib: kchaos_harness::vm::process::peak_rss_kib().unwrap_or(0),
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        qemu_kib: if qemu_f.is_empty() {
            0
        } else {
            median(&mut qemu_f) as u64
        },
    })
}

/// Pids of QEMU processes whose parent is this process.
fn qemu_children() -> Vec<String> {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // comm is in parentheses; the parent pid is the second field after it.
            stat.rsplit_once(") ").is_some_and(|(head, tail)| {
                head.contains("qemu-system") && tail.split(' ').nth(1) == Some(me.as_str())
            })
        })
        .collect()
}
