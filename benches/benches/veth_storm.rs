//! The native veth storm against the way engineers reproduce incident 2 by hand: an
//! `ip netns` / `ip link` shell loop doing the same per-pod work, side by side in the
//! same guest (one cell, the workloads one after another). Prints pods per second and
//! the ratio. Target: native >= 5x the shell loop.
//!
//! `cargo bench -p kchaos-benches --bench veth_storm` (KCHAOS_BENCH_PODS, default 100;
//! KCHAOS_BENCH_KERNEL, default debian:6.1-cloud). Needs `sh` and `ip` on the host: they
//! go into the guest image with their libraries (`[vm] tools`).

use kchaos_benches::{bench_main, env_count, metric, toml_escape, BenchResult, BenchVm};

fn main() -> BenchResult<()> {
    let pods = env_count("KCHAOS_BENCH_PODS", 100);
    bench_main(|spec| async move { bench(&spec, pods).await })
}

/// Per pod, what the native workload does without traffic: namespace, veth with the
/// inside end in it, addresses on both ends, both up, default route, namespace dropped.
fn shell_loop(pods: u64) -> String {
    format!(
        "i=0; while [ $i -lt {pods} ]; do \
           ip netns add kcs$i && \
           ip link add kcs$i type veth peer name eth0 netns kcs$i && \
           ip addr add 10.201.0.1/30 dev kcs$i && \
           ip link set kcs$i up && \
           ip -n kcs$i addr add 10.201.0.2/30 dev eth0 && \
           ip -n kcs$i link set eth0 up && \
           ip -n kcs$i route add default via 10.201.0.1 && \
           ip netns del kcs$i || exit 1; \
           i=$((i+1)); \
         done"
    )
}

async fn bench(spec: &str, pods: u64) -> BenchResult<()> {
    let vm = BenchVm::new(spec).await?;
    println!("{}, {pods} pods per variant, same guest", vm.describe());
    let script = toml_escape(&shell_loop(pods));
    let scenario = format!(
        r#"
[scenario]
name = "veth-bench"
duration = "900s"
[vm]
tools = ["sh", "ip"]
[[workload]]
kind = "veth-storm"
name = "native1"
iterations = {pods}
concurrency = 1
traffic = false
[[workload]]
kind = "veth-storm"
name = "native8"
iterations = {pods}
concurrency = 8
traffic = false
after = "native1"
[[workload]]
kind = "exec"
name = "shell"
argv = ["/bin/sh", "-c", "{script}"]
after = "native8"
"#
    );
    let cell = vm.run_passing("veth-bench", &scenario).await?;
    let rate = |name: &str| pods as f64 / (metric(&cell, &format!("{name}.wall"), "value") / 1e9);
    let (n1, n8, sh) = (rate("native1"), rate("native8"), rate("shell"));
    println!("  shell loop (ip netns / ip link, one pod at a time)  {sh:>8.1} pods/s");
    println!(
        "  native, one pod at a time (waits for teardown)      {n1:>8.1} pods/s  {:.1}x",
        n1 / sh
    );
    println!(
        "  native, 8 pods in flight                            {n8:>8.1} pods/s  {:.1}x",
        n8 / sh
    );
    println!(
        "  native teardown p50 {:.1}ms, create p50 {:.1}ms (8 in flight)",
        metric(&cell, "native8.teardown", "p50") / 1e6,
        metric(&cell, "native8.create", "p50") / 1e6
    );
    Ok(())
}
