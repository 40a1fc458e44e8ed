//! The native transient-unit flood against the shell loops engineers reproduce incident
//! 3 with, side by side in the same systemd guest (one cell, the workloads one after
//! another). Two pairs doing the same per unit:
//!
//! - services: `systemd-run --unit=U sleep 3600` then `systemctl stop U` (both wait for
//!   their job) against the native `service` kind (StartTransientUnit with ExecStart,
//!   JobRemoved, StopUnit, JobRemoved);
//! - runc's check slice: two `busctl call`s (StartTransientUnit, StopUnit; busctl does
//!   not wait for the job, so the loop does less than the native side) against the
//!   native `runc-check` kind.
//!
//! Prints units per second and the ratios, and the image's boot time.
//!
//! `cargo bench -p kchaos-benches --bench systemd_units` (KCHAOS_BENCH_UNITS, default
//! 60; KCHAOS_BENCH_CPUS, default 2; KCHAOS_BENCH_KERNEL, default debian:6.1-cloud).
//! Needs root (the systemd image).

use kchaos_benches::{bench_main, env_count, metric, toml_escape, BenchResult, BenchVm};

fn main() -> BenchResult<()> {
    let units = env_count("KCHAOS_BENCH_UNITS", 60);
    let cpus = env_count("KCHAOS_BENCH_CPUS", 2);
    bench_main(|spec| async move { bench(&spec, units, cpus).await })
}

/// `systemd-run` and `systemctl`, once each per unit, both waiting for their job.
fn service_loop(units: u64) -> String {
    format!(
        "i=0; while [ $i -lt {units} ]; do \
           systemd-run --quiet --unit=kchaos_sh$i /usr/bin/sleep 3600 && \
           systemctl stop kchaos_sh$i || exit 1; \
           i=$((i+1)); \
         done"
    )
}

/// runc's `UseSystemd()` check, once per iteration, as a shell reproducer does it.
fn runc_check_loop(units: u64) -> String {
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

async fn bench(spec: &str, units: u64, cpus: u64) -> BenchResult<()> {
    let vm = BenchVm::new(spec).await?;
    println!(
        "{}, {units} units per variant, one systemd guest with {cpus} vCPUs",
        vm.describe()
    );
    let native = |name: &str, kind: &str, concurrency: u32, after: &str| {
        format!(
            "[[workload]]\nkind = \"systemd-units\"\nname = \"{name}\"\niterations = {units}\nconcurrency = {concurrency}\nkinds = [\"{kind}\"]\nafter = \"{after}\"\n"
        )
    };
    // The first workload starts at once; each other one after the one before it.
    let shell = |name: &str, script: &str, after: Option<&str>| {
        format!(
            "[[workload]]\nkind = \"exec\"\nname = \"{name}\"\nargv = [\"/bin/sh\", \"-c\", \"{}\"]\n{}",
            toml_escape(script),
            after.map(|a| format!("after = \"{a}\"\n")).unwrap_or_default()
        )
    };
    let scenario = [
        format!("[scenario]\nname = \"systemd-bench\"\nduration = \"1800s\"\n[vm]\nimage = \"systemd\"\ncpus = {cpus}\n"),
        shell("sh_service", &service_loop(units), None),
        native("service1", "service", 1, "sh_service"),
        native("service8", "service", 8, "service1"),
        shell("sh_runc", &runc_check_loop(units), Some("service8")),
        native("runc1", "runc-check", 1, "sh_runc"),
        native("runc8", "runc-check", 8, "runc1"),
    ]
    .concat();
    let cell = vm.run_passing("systemd-bench", &scenario).await?;
    let rate = |name: &str| units as f64 / (metric(&cell, &format!("{name}.wall"), "value") / 1e9);
    println!(
        "  systemd image: runner ready at {:.2}s guest uptime, {:.2}s after QEMU start",
        cell.guest_ready_ms.unwrap_or_default() as f64 / 1e3,
        cell.boot_ms.unwrap_or_default() as f64 / 1e3
    );
    for (what, sh, one, eight) in [
        (
            "services: systemd-run + systemctl stop",
            "sh_service",
            "service1",
            "service8",
        ),
        (
            "runc check slice: busctl start + stop",
            "sh_runc",
            "runc1",
            "runc8",
        ),
    ] {
        let (sh, n1, n8) = (rate(sh), rate(one), rate(eight));
        println!("  {what}");
        println!("    shell loop                      {sh:>7.1} units/s");
        println!(
            "    native, one unit at a time      {n1:>7.1} units/s  {:.1}x",
            n1 / sh
        );
        println!(
            "    native, 8 units in flight       {n8:>7.1} units/s  {:.1}x",
            n8 / sh
        );
        println!(
            "    native start p50 {:.1}ms, stop p50 {:.1}ms (one at a time)",
            metric(&cell, &format!("{one}.start"), "p50") / 1e6,
            metric(&cell, &format!("{one}.stop"), "p50") / 1e6
        );
    }
    Ok(())
}
