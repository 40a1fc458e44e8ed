//! The native cgroup churn against incident 1b's proof of concept as the write-up gives
//! it: a bash loop that `mkdir`s a memory cgroup, runs `bash -c` to join it and write a
//! small file under a fresh /tmp directory, then a `rmdir` loop. Side by side in the
//! same guest (one cell per cgroup version, the workloads one after another), printed as
//! cgroups per second and the ratio. Target: native >= 10x the proof of concept.
//!
//! Between the native variants a `memcg-reclaim` frees what the previous one left, so
//! every variant starts from a guest without dying cgroups; the shell loop runs last.
//!
//! `cargo bench -p kchaos-benches --bench cgroup_churn` (KCHAOS_BENCH_CGROUPS, default
//! 500; KCHAOS_BENCH_KERNEL, default debian:6.1-cloud, which has v1 memory; on a kernel
//! without it the v1 cell is skipped). Needs bash, mkdir, rmdir and seq on the host:
//! they go into the guest image with their libraries (`[vm] tools`).

use kchaos_benches::{bench_main, env_count, metric, toml_escape, BenchResult, BenchVm};

fn main() -> BenchResult<()> {
    let cgroups = env_count("KCHAOS_BENCH_CGROUPS", 500);
    bench_main(|spec| async move { bench(&spec, cgroups).await })
}

/// The proof of concept: `tasks` on v1 (as written), `cgroup.procs` on v2 (the same
/// loop where v1 memory is gone), under `prefix`.
fn proof_of_concept(cgroups: u64, prefix: &str, procs: &str) -> String {
    format!(
        "for i in $(seq 1 {cgroups}); do \
           mkdir {prefix}-$i; \
           bash -c \"echo \\$\\$ > {prefix}-$i/{procs}; mkdir /tmp/$i; echo hello > /tmp/$i/hello\"; \
         done; \
         for i in $(seq 1 {cgroups}); do rmdir {prefix}-$i; done"
    )
}

/// One cell: native at concurrency 1 and 4, each followed by a reclaim, then the shell.
fn scenario(cgroups: u64, cgroup: &str, prefix: &str, procs: &str) -> String {
    let script = toml_escape(&proof_of_concept(cgroups, prefix, procs));
    let native = |name: &str, concurrency: u32, after: Option<&str>| {
        let after = after
            .map(|a| format!("after = \"{a}\"\n"))
            .unwrap_or_default();
        format!(
            r#"
[[workload]]
kind = "cgroup-churn"
name = "{name}"
iterations = {cgroups}
batch = {batch}
concurrency = {concurrency}
files_per_cgroup = 1
file_size = "4KiB"
{after}
[[workload]]
kind = "memcg-reclaim"
name = "{name}_reclaim"
churn = "{name}"
"#,
            batch = cgroups.div_ceil(u64::from(concurrency)),
        )
    };
    format!(
        r#"
[scenario]
name = "cgroup-churn-bench-{cgroup}"
duration = "1800s"
[vm]
cgroup = "{cgroup}"
tools = ["bash", "mkdir", "rmdir", "seq"]
[requires]
cgroup_controllers = ["memory"]
{n1}
{n4}
[[workload]]
kind = "exec"
name = "shell"
argv = ["/bin/bash", "-c", "{script}"]
after = "native4_reclaim"
"#,
        n1 = native("native1", 1, None),
        n4 = native("native4", 4, Some("native1_reclaim")),
    )
}

async fn bench(spec: &str, cgroups: u64) -> BenchResult<()> {
    let vm = BenchVm::new(spec).await?;
    println!(
        "{}, {cgroups} memory cgroups per variant, same guest, 1 vCPU",
        vm.describe()
    );
    let cells = [
        ("v1", "/sys/fs/cgroup/memory/kube-test", "tasks"),
        ("v2", "/sys/fs/cgroup/kchaos/kube-test", "cgroup.procs"),
    ];
    for (mode, prefix, procs) in cells {
        let toml = scenario(cgroups, mode, prefix, procs);
        let cell = vm.run(&format!("cgroup-churn-{mode}"), &toml).await?;
        match cell.verdict.as_str() {
            "pass" => {}
            "skip" => {
                println!("  {mode}: skipped ({:?})", cell.reasons);
                continue;
            }
            other => {
                return Err(format!("the {mode} cell ended {other}: {:?}", cell.reasons).into())
            }
        }
        let rate =
            |name: &str| cgroups as f64 / (metric(&cell, &format!("{name}.wall"), "value") / 1e9);
        let (n1, n4, sh) = (rate("native1"), rate("native4"), rate("shell"));
        println!("  {mode} proof of concept (bash, mkdir, bash -c per cgroup, rmdir)  {sh:>8.1} cgroups/s");
        println!(
            "  {mode} native, concurrency 1                                      {n1:>8.1} cgroups/s  {:.1}x",
            n1 / sh
        );
        println!(
            "  {mode} native, concurrency 4                                      {n4:>8.1} cgroups/s  {:.1}x",
            n4 / sh
        );
        println!(
            "  {mode} native populate p50 {:.2}ms, mkdir p50 {:.2}ms, rmdir p50 {:.2}ms (concurrency 1)",
            metric(&cell, "native1.populate", "p50") / 1e6,
            metric(&cell, "native1.mkdir", "p50") / 1e6,
            metric(&cell, "native1.rmdir", "p50") / 1e6,
        );
    }
    Ok(())
}
