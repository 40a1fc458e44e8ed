//! The wake-up probe's own overhead and what it shows, in one run on one kernel:
//!
//! 1. idle guest, probe alone: wake-up latency baseline and the probe's CPU cost;
//! 2. the throttled `cfs-quota` workload with the probe outside and inside a throttled
//!    group: the latency the workload causes;
//! 3. the same workload without probes: does probing change what it measures?
//!
//! `cargo bench -p kchaos-benches --bench probe_overhead` (KCHAOS_BENCH_KERNEL, default
//! debian:6.1-cloud; KCHAOS_BENCH_SECONDS, default 15).

use kchaos_benches::{bench_main, env_count, metric, BenchResult, BenchVm};
use kchaos_harness::results::CellResult;

const WORKLOAD: &str = r#"
[[workload]]
kind = "cfs-quota"
name = "cfs"
depth = 2
width = 2
quota = ["2ms", "6ms"]
period = ["10ms", "20ms"]
burners = 2
sleepers = 8
burst_run = "500us"
burst_sleep = "3ms"
retune_every = "500ms"
"#;

const PROBES: &str = r#"
[[probe]]
kind = "wakeup-latency"
name = "outside"
interval = "1ms"

[[probe]]
kind = "wakeup-latency"
name = "throttled"
interval = "1ms"
cgroup = "kchaos-cfs/g0/g0"
"#;

fn main() -> BenchResult<()> {
    let secs = env_count("KCHAOS_BENCH_SECONDS", 15);
    bench_main(|spec| async move { bench(&spec, secs).await })
}

fn header(name: &str, secs: u64) -> String {
    format!("[scenario]\nname = \"{name}\"\nduration = \"{secs}s\"\n[vm]\ncpus = 2\n")
}

async fn bench(spec: &str, secs: u64) -> BenchResult<()> {
    let vm = BenchVm::new(spec).await?;
    println!("{}, {secs}s per cell", vm.describe());
    // The idle cell still needs a workload to last `secs`: a self-test kmsg line late.
    let idle = format!(
        "{}[[workload]]\nkind = \"selftest\"\naction = \"kmsg\"\nline = \"kchaos: idle baseline\"\ndelay = \"{}s\"\n[[probe]]\nkind = \"wakeup-latency\"\nname = \"outside\"\ninterval = \"1ms\"\n",
        header("idle", secs),
        secs.saturating_sub(1)
    );
    let loaded = format!("{}{WORKLOAD}{PROBES}", header("loaded", secs));
    let unprobed = format!("{}{WORKLOAD}", header("unprobed", secs));
    let idle = vm.run("idle", &idle).await?;
    let loaded = vm.run("loaded", &loaded).await?;
    let unprobed = vm.run("unprobed", &unprobed).await?;
    for c in [&idle, &loaded, &unprobed] {
        if c.verdict.as_str() != "pass" {
            return Err(format!("{} ended {}: {:?}", c.id, c.verdict, c.reasons).into());
        }
    }
    let ms = |c: &CellResult, m: &str, s: &str| metric(c, m, s) / 1e6;
    println!("wake-up latency (1ms sleeps)            p50        p99        max   probe CPU");
    for (label, c, m) in [
        ("idle guest, probe alone", &idle, "outside"),
        ("cfs workload, probe outside", &loaded, "outside"),
        ("cfs workload, probe throttled", &loaded, "throttled"),
    ] {
        println!(
            "  {label:<36} {:>7.3}ms {:>8.3}ms {:>8.3}ms {:>8.2}%",
            ms(c, m, "p50"),
            ms(c, m, "p99"),
            ms(c, m, "max"),
            metric(c, &format!("{m}.cpu_share"), "value") * 100.0
        );
    }
    println!(
        "latency ratio loaded/idle: p99 outside {:.1}x, p99 throttled {:.1}x",
        metric(&loaded, "outside", "p99") / metric(&idle, "outside", "p99"),
        metric(&loaded, "throttled", "p99") / metric(&idle, "outside", "p99")
    );
    println!("workload with probes vs without      share_min  share_max  throttled_ratio");
    for (label, c) in [
        ("  with both probes", &loaded),
        ("  without probes", &unprobed),
    ] {
        println!(
            "{label:<37} {:>9.3} {:>10.3} {:>16.3}",
            metric(c, "cfs.share_min", "value"),
            metric(c, "cfs.share_max", "value"),
            metric(c, "cfs.throttled_ratio", "value")
        );
    }
    Ok(())
}
