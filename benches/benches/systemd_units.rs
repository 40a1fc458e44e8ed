//! The native transient-unit flood against the way engineers reproduce incident 3 by
//! hand: a shell loop calling `busctl` for runc's check slice (StartTransientUnit, then
//! StopUnit), side by side in the same systemd guest (one cell, the workloads one after
//! another). Prints units per second and the ratios, and the image's boot time.
//!
//! The shell loop does less work per unit than the native one: `busctl` returns when
//! systemd has queued the job, the native workload waits for the job's `JobRemoved`.
//!
//! `cargo bench -p kchaos-benches --bench systemd_units` (KCHAOS_BENCH_UNITS, default
//! 100; KCHAOS_BENCH_KERNEL, default debian:6.1-cloud). Needs root (the systemd image).

use kchaos_benches::{bench_main, env_count, metric, toml_escape, BenchResult, BenchVm};

fn main() -> BenchResult<()> {
    let units = env_count("KCHAOS_BENCH_UNITS", 100);
    bench_main(|spec| async move { bench(&spec, units).await })
}

/// runc's `UseSystemd()` check, once per iteration, as a shell reproducer does it.
fn shell_loop(units: u64) -> String {
    let call = "busctl call org.freedesktop.systemd1 /org/freedesktop/systemd1 org.freedesktop.systemd1.Manager";
    format!(
        "i=0; while [ $i -lt {units} ]; do \
           u=libcontainer_$((200000+i))_systemd_test_default.slice; \
           {call} StartTransientUnit 'ssa(sv)a(sa(sv))' $u replace 1 Description s test 0 >/dev/null && \
           {call} StopUnit ss $u replace >/dev/null || exit 1; \
           i=$((i+1)); \
         done"
    )
}

async fn bench(spec: &str, units: u64) -> BenchResult<()> {
    let vm = BenchVm::new(spec).await?;
    println!(
        "{}, {units} units per variant, same systemd guest",
        vm.describe()
    );
    let script = toml_escape(&shell_loop(units));
    let scenario = format!(
        r#"
[scenario]
name = "systemd-bench"
duration = "1800s"
[vm]
image = "systemd"
[[workload]]
kind = "systemd-units"
name = "native1"
iterations = {units}
concurrency = 1
kinds = ["runc-check"]
[[workload]]
kind = "systemd-units"
name = "native8"
iterations = {units}
concurrency = 8
kinds = ["runc-check"]
after = "native1"
[[workload]]
kind = "exec"
name = "shell"
argv = ["/bin/sh", "-c", "{script}"]
after = "native8"
"#
    );
    let cell = vm.run_passing("systemd-bench", &scenario).await?;
    let rate = |name: &str| units as f64 / (metric(&cell, &format!("{name}.wall"), "value") / 1e9);
    let (n1, n8, sh) = (rate("native1"), rate("native8"), rate("shell"));
    println!(
        "  systemd image: runner ready at {:.2}s guest uptime, {:.2}s after QEMU start",
        cell.guest_ready_ms.unwrap_or_default() as f64 / 1e3,
        cell.boot_ms.unwrap_or_default() as f64 / 1e3
    );
    println!("  shell loop (busctl start + stop, no job wait)       {sh:>8.1} units/s");
    println!(
        "  native, one unit at a time (waits for JobRemoved)  {n1:>8.1} units/s  {:.1}x",
        n1 / sh
    );
    println!(
        "  native, 8 units in flight                          {n8:>8.1} units/s  {:.1}x",
        n8 / sh
    );
    println!(
        "  native start p50 {:.1}ms / p99 {:.1}ms, stop p50 {:.1}ms (one at a time)",
        metric(&cell, "native1.start", "p50") / 1e6,
        metric(&cell, "native1.start", "p99") / 1e6,
        metric(&cell, "native1.stop", "p50") / 1e6
    );
    Ok(())
}
