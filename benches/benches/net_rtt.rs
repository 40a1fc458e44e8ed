//! The `net-latency` probe against Debian's `ping` (iputils), in the same guest at the
//! same time: the probe's client and `ping` both on CPU 0, loopback's receive
//! processing steered to CPU 1 (the probe's `cpu`, RPS, which `ping` shares), 20 ms
//! apart each. `ping` prints every reply's time; a shell copies the lines into the
//! kernel log, which the harness keeps. Printed side by side: percentiles of ping's
//! ICMP echoes, the probe's TCP handshakes (`connect`) and UDP echoes (`echo`) taken
//! while ping ran (the probe's samples in the `ping` workload's phase).
//!
//! Two cells: an idle guest, and one holding a thousand removed memory cgroups dying
//! (incident 1b's state) while ping runs; with `KCHAOS_BENCH_CMDLINE` (e.g.
//! `kchaos_defect.memcg_stat_us=50` on the defect kernel) and a memory.stat reader on
//! CPU 1, the stalls the incident caused.
//!
//! `cargo bench -p kchaos-benches --bench net_rtt` (KCHAOS_BENCH_PINGS, default 500;
//! KCHAOS_BENCH_KERNEL, default debian:6.1-cloud). Needs `sh`, `taskset` and `ping`
//! (iputils-ping) on the host: `[vm] tools` copies them in.

use kchaos_benches::{bench_main, env_count, BenchResult, BenchVm};
use kchaos_harness::results::CellResult;
use kchaos_model::metrics::Summary;

/// What marks ping's lines in the kernel log.
const MARK: &str = "kchaos-ping: ";

fn main() -> BenchResult<()> {
    let pings = env_count("KCHAOS_BENCH_PINGS", 500);
    let cmdline = std::env::var("KCHAOS_BENCH_CMDLINE").unwrap_or_default();
    bench_main(|spec| async move { bench(&spec, pings, &cmdline).await })
}

fn scenario(name: &str, pings: u64, dying: bool, cmdline: &str) -> String {
    let script = format!(
        "taskset -c 0 ping -n -i 0.02 -c {pings} 127.0.0.1 | while IFS= read -r l; do echo \\\"{MARK}$l\\\" > /dev/kmsg; done"
    );
    // Every line ping prints reaches the log: /dev/kmsg is rate-limited otherwise.
    let cmdline: Vec<String> = std::iter::once("printk.devkmsg=on")
        .chain(cmdline.split_whitespace())
        .map(|p| format!("\"{p}\""))
        .collect();
    // The churn's cgroups and, on CPU 1, the reads of memory.stat that walk them.
    let churn = if dying {
        r#"
[[workload]]
kind = "cgroup-churn"
name = "churn"
iterations = 1000
batch = 1000

[[probe]]
kind = "read-latency"
name = "memory_stat_read"
path = "/sys/fs/cgroup/kchaos/memory.stat"
interval = "100ms"
cpu = 1
"#
    } else {
        ""
    };
    let after = if dying { "after = \"churn\"\n" } else { "" };
    format!(
        r#"
[scenario]
name = "{name}"
duration = "300s"
[vm]
cpus = 2
cmdline = [{cmdline}]
tools = ["sh", "taskset", "ping"]
{churn}
[[workload]]
kind = "exec"
name = "ping"
argv = ["/bin/sh", "-c", "{script}"]
{after}
[[probe]]
kind = "net-latency"
name = "connect"
mode = "connect"
cpu = 1
client_cpu = 0
interval = "20ms"

[[probe]]
kind = "net-latency"
name = "echo"
mode = "echo"
cpu = 1
client_cpu = 0
interval = "20ms"
"#,
        cmdline = cmdline.join(", "),
    )
}

/// ping's reply times (ns) from the kernel log the harness kept.
fn ping_times(cell: &CellResult, results: &std::path::Path) -> Vec<f64> {
    let Some(kmsg) = cell.artifacts.kmsg.as_ref() else {
        return Vec::new();
    };
    let text = std::fs::read_to_string(results.join(kmsg)).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_once(MARK).map(|(_, rest)| rest))
        .filter_map(|l| l.split_once(" time=").map(|(_, t)| t))
        .filter_map(|t| t.trim_end_matches(" ms").trim().parse::<f64>().ok())
        .map(|ms| ms * 1e6)
        .collect()
}

fn row(name: &str, s: &Summary) -> String {
    let ms = |v: u64| v as f64 / 1e6;
    format!(
        "  {name:<28} n={:>5}  p50 {:>7.3} ms  p90 {:>7.3} ms  p99 {:>7.3} ms  max {:>7.3} ms",
        s.count,
        ms(s.p50),
        ms(s.p90),
        ms(s.p99),
        ms(s.max)
    )
}

async fn bench(spec: &str, pings: u64, cmdline: &str) -> BenchResult<()> {
    let vm = BenchVm::new(spec).await?;
    println!(
        "{}, 2 vCPUs, {pings} pings 20 ms apart; clients on CPU 0, lo's receive processing on CPU 1{}",
        vm.describe(),
        if cmdline.is_empty() {
            String::new()
        } else {
            format!(", kernel command line + {cmdline}")
        }
    );
    for (name, dying) in [("idle", false), ("dying", true)] {
        let cell = vm
            .run_passing(
                &format!("net-rtt-{name}"),
                &scenario(name, pings, dying, cmdline),
            )
            .await?;
        let ping = kchaos_model::timeline::summarize(
            kchaos_model::units::Unit::Ns,
            &ping_times(&cell, vm.work.path()),
        );
        let during = cell
            .phases
            .iter()
            .find(|p| p.name == "ping")
            .ok_or("the cell recorded no `ping` phase")?;
        let probe = |n: &str| during.latency.get(n).cloned().unwrap_or_default();
        println!(
            "{name}: {}",
            if dying {
                "1000 removed memory cgroups held dying while ping runs"
            } else {
                "nothing else running"
            }
        );
        println!("{}", row("ping (ICMP echo, iputils)", &ping));
        for (label, metric) in [
            ("net-latency connect (TCP)", "connect"),
            ("net-latency echo (UDP)", "echo"),
            ("memory.stat read, CPU 1", "memory_stat_read"),
        ] {
            if during.latency.contains_key(metric) {
                println!("{}", row(label, &probe(metric)));
            }
        }
        let c = probe("connect");
        if ping.count > 0 && c.count > 0 {
            println!(
                "  connect / ping: p50 {:.2}x, p90 {:.2}x, p99 {:.2}x",
                c.p50 as f64 / ping.p50.max(1) as f64,
                c.p90 as f64 / ping.p90.max(1) as f64,
                c.p99 as f64 / ping.p99.max(1) as f64
            );
        }
    }
    Ok(())
}
