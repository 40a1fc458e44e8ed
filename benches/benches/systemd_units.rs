//! systemd's transient-unit flood (incident 3), measured two ways in systemd guests:
//!
//! 1. **Saturation** (one guest shaped as `scenarios/systemd-transient-flood.toml`'s
//!    `[vm]`, its unit mix): the native client at rising concurrency and connection
//!    counts, and N parallel `busctl` shell loops as the peer, one after another; the
//!    highest rate any of them reaches is systemd's saturation throughput. This shared
//!    host's speed drifts by more than the differences measured (the same settings
//!    differed by 16% between the start and the end of one curve), so the shipped
//!    settings run before and after every row, and each row is judged against the mean
//!    of its two neighbours: the fraction is 1 / the best row's ratio to them (1.0 when
//!    no row beats the shipped settings). The uncorrected figure (mean of all shipped
//!    runs over the fastest row) is printed too. Target >= 0.9. Each native row also
//!    prints systemd's D-Bus messages per unit and per second, read off its cookie.
//! 2. **Shell loops** (a second guest): the native kinds against the loops engineers
//!    reproduce incident 3 with, per unit the same work:
//!    - services: `systemd-run --unit=U sleep 3600` then `systemctl stop U` (both wait
//!      for their job) against the native `service` kind;
//!    - runc's check slice: two `busctl call`s (StartTransientUnit, StopUnit; busctl
//!      does not wait for the job, so the loop does less than the native side) against
//!      the native `runc-check` kind.
//!
//! The peer's loops wait for every start job without a job signal: they stop with mode
//! `fail`, which systemd refuses while the unit's start job is still queued, and retry;
//! a `replace` stop would cancel a pending start and make systemd's work smaller.
//!
//! `cargo bench -p kchaos-benches --bench systemd_units` (KCHAOS_BENCH_UNITS, units per
//! row, default 64; KCHAOS_BENCH_PART, `saturation` or `shell`, default both;
//! KCHAOS_BENCH_KERNEL, default debian:6.1-cloud). Needs root (the systemd image).

use kchaos_benches::{
    bench_main, env_count, metric, paired_fraction, toml_escape, BenchResult, BenchVm,
};
use kchaos_harness::results::CellResult;
use kchaos_model::scenario::workload::{SystemdUnits, UnitKind};
use kchaos_model::scenario::{Scenario, WorkloadSpec};

/// The scenario whose settings are judged against saturation.
const SHIPPED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../scenarios/systemd-transient-flood.toml"
);

fn main() -> BenchResult<()> {
    let units = env_count("KCHAOS_BENCH_UNITS", 64);
    // Checked on every invocation, `cargo test --benches` included: the generated
    // scenario must parse and the curve must be judged against the shipped settings.
    let (scenario, spec) = shipped()?;
    saturation_scenario(&scenario, &spec, units)?;
    let part = std::env::var("KCHAOS_BENCH_PART").unwrap_or_default();
    bench_main(|spec| async move {
        let vm = BenchVm::new(&spec).await?;
        println!("{}", vm.describe());
        if part.is_empty() || part == "saturation" {
            saturation(&vm, units).await?;
        }
        if part.is_empty() || part == "shell" {
            shell_loops(&vm, units).await?;
        }
        Ok(())
    })
}

/// One row of the saturation curve.
#[derive(Debug, Clone, PartialEq)]
enum Row {
    /// The native client: units in flight, connections.
    Native {
        name: String,
        concurrency: u32,
        connections: u32,
    },
    /// `loops` parallel `busctl` shell loops.
    Busctl { name: String, loops: u64 },
}

impl Row {
    fn name(&self) -> &str {
        match self {
            Row::Native { name, .. } | Row::Busctl { name, .. } => name,
        }
    }
}

/// The curve: the native client from one unit in flight to many over one and several
/// connections, the peer from one loop to eight; the shipped settings before and after
/// each of them (`shipped_0`, `shipped_1`, …: even positions).
fn rows(shipped: &SystemdUnits) -> Vec<Row> {
    let native = |name: &str, concurrency, connections| Row::Native {
        name: name.to_owned(),
        concurrency,
        connections,
    };
    let mut curve = Vec::new();
    for (c, k) in [
        (1, 1),
        (2, 1),
        (4, 1),
        (8, 1),
        (16, 1),
        (32, 1),
        (64, 1),
        (16, 4),
        (32, 8),
    ] {
        curve.push(native(&format!("native_c{c}_k{k}"), c, k));
    }
    for loops in [1, 2, 4, 8] {
        curve.push(Row::Busctl {
            name: format!("busctl_{loops}"),
            loops,
        });
    }
    let shipped_row = |i: usize| {
        native(
            &format!("shipped_{i}"),
            shipped.concurrency,
            shipped.connections,
        )
    };
    let mut rows = vec![shipped_row(0)];
    for (i, row) in curve.into_iter().enumerate() {
        rows.push(row);
        rows.push(shipped_row(i + 1));
    }
    rows
}

/// The shipped scenario and its flood's settings.
fn shipped() -> BenchResult<(Scenario, SystemdUnits)> {
    let text = std::fs::read_to_string(SHIPPED)?;
    let scenario = kchaos_model::scenario::parse(SHIPPED, &text).map_err(|e| e.to_string())?;
    let spec = scenario
        .workloads
        .iter()
        .find_map(|w| match &w.spec {
            WorkloadSpec::SystemdUnits(s) => Some(s.clone()),
            _ => None,
        })
        .ok_or("the shipped scenario has no systemd-units workload")?;
    Ok((scenario, spec))
}

fn kind_name(kind: UnitKind) -> BenchResult<String> {
    Ok(serde_json::to_value(kind)?
        .as_str()
        .ok_or("unit kind is not a string")?
        .to_owned())
}

/// The `busctl` arguments after the unit name that start a unit of `kind`, as the
/// native client does (Description; a scope adopts `$p`, a service runs `sleep`).
fn busctl_start(kind: UnitKind) -> &'static str {
    match kind {
        UnitKind::Slice | UnitKind::RuncCheck => "replace 1 Description s kchaos 0",
        UnitKind::Scope => "replace 3 Description s kchaos PIDs au 1 $p Delegate b true 0",
        UnitKind::Service => {
            "replace 2 Description s kchaos ExecStart 'a(sasb)' 1 /usr/bin/sleep 2 sleep 3600 false 0"
        }
    }
}

fn busctl_unit(kind: UnitKind) -> &'static str {
    match kind {
        UnitKind::RuncCheck => "libcontainer_$((300000+$1*10000+i))_systemd_test_default.slice",
        UnitKind::Slice => "kchaos_b$1_$i.slice",
        UnitKind::Scope => "kchaos_b$1_$i.scope",
        UnitKind::Service => "kchaos_b$1_$i.service",
    }
}

/// `loops` shell loops in parallel, `per_loop` units each, the kinds in turn.
fn busctl_loops(kinds: &[UnitKind], loops: u64, per_loop: u64) -> String {
    let call = "busctl call org.freedesktop.systemd1 /org/freedesktop/systemd1 org.freedesktop.systemd1.Manager";
    let cases: String = kinds
        .iter()
        .enumerate()
        .map(|(i, &k)| {
            let spawn = if k == UnitKind::Scope {
                "sleep 3600 & p=$!; "
            } else {
                ""
            };
            format!(
                "{i}) u={}; {spawn}{call} StartTransientUnit 'ssa(sv)a(sa(sv))' $u {} >/dev/null || exit 1;; ",
                busctl_unit(k),
                busctl_start(k)
            )
        })
        .collect();
    format!(
        "one() {{ i=0; while [ $i -lt {per_loop} ]; do \
           case $((i % {n})) in {cases} esac; \
           r=0; until {call} StopUnit ss $u fail >/dev/null 2>&1; do \
             r=$((r+1)); [ $r -lt 200 ] || exit 1; done; \
           i=$((i+1)); done; }}; \
         pids=''; for j in $(seq 1 {loops}); do one $j & pids=\"$pids $!\"; done; \
         s=0; for p in $pids; do wait $p || s=1; done; exit $s",
        n = kinds.len()
    )
}

fn workload(row: &Row, kinds: &[UnitKind], units: u64, after: Option<&str>) -> BenchResult<String> {
    let after = after
        .map(|a| format!("after = \"{a}\"\n"))
        .unwrap_or_default();
    Ok(match row {
        Row::Native {
            name,
            concurrency,
            connections,
        } => {
            let kinds: Vec<String> = kinds
                .iter()
                .map(|&k| kind_name(k).map(|k| format!("\"{k}\"")))
                .collect::<BenchResult<_>>()?;
            format!(
                "[[workload]]\nkind = \"systemd-units\"\nname = \"{name}\"\niterations = {units}\n\
                 concurrency = {concurrency}\nconnections = {connections}\nkinds = [{}]\n{after}",
                kinds.join(", ")
            )
        }
        Row::Busctl { name, loops } => format!(
            "[[workload]]\nkind = \"exec\"\nname = \"{name}\"\nargv = [\"/bin/sh\", \"-c\", \"{}\"]\n{after}",
            toml_escape(&busctl_loops(kinds, *loops, units / loops))
        ),
    })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

/// Whole rounds of the mix, and the same count for every loop of the peer.
fn round_units(units: u64) -> u64 {
    units.max(8) / 8 * 8
}

/// The saturation cell's scenario: the shipped `[vm]`, every row one after another.
fn saturation_scenario(
    scenario: &Scenario,
    spec: &SystemdUnits,
    units: u64,
) -> BenchResult<(String, Vec<Row>)> {
    let rows = rows(spec);
    let is_shipped = |r: &Row| {
        matches!(r, Row::Native { concurrency, connections, .. }
            if *concurrency == spec.concurrency && *connections == spec.connections)
    };
    if rows.len().is_multiple_of(2) || !rows.iter().step_by(2).all(is_shipped) {
        return Err("the shipped settings must run first, last and between every two rows".into());
    }
    let mut toml = format!(
        "[scenario]\nname = \"systemd-saturation\"\nduration = \"3600s\"\n\
         [vm]\nimage = \"systemd\"\ncpus = {}\nmemory = \"{}MiB\"\n",
        scenario.vm.cpus, scenario.vm.memory_mib
    );
    let mut previous: Option<&str> = None;
    for row in &rows {
        toml.push_str(&workload(row, &spec.kinds, round_units(units), previous)?);
        previous = Some(row.name());
    }
    let parsed =
        kchaos_model::scenario::parse("systemd-saturation", &toml).map_err(|e| e.to_string())?;
    if parsed.workloads.len() != rows.len() {
        return Err("row names must be distinct: they prefix the metrics".into());
    }
    Ok((toml, rows))
}

async fn saturation(vm: &BenchVm, units: u64) -> BenchResult<()> {
    let (scenario, spec) = shipped()?;
    let (toml, rows) = saturation_scenario(&scenario, &spec, units)?;
    let units = round_units(units);
    println!(
        "\nsaturation: {units} units per row of the shipped mix {:?}, one guest with {} vCPU(s); host load {}",
        spec.kinds,
        scenario.vm.cpus,
        loadavg()
    );
    let cell = vm.run_passing("systemd-saturation", &toml).await?;
    println!("  host load after: {}", loadavg());
    print_curve(&cell, &rows, units);
    Ok(())
}

fn print_curve(cell: &CellResult, rows: &[Row], units: u64) {
    let rate = |name: &str| units as f64 / (metric(cell, &format!("{name}.wall"), "value") / 1e9);
    println!(
        "  {:<14} {:>5} {:>5} {:>8} {:>10} {:>9} {:>9} {:>10}",
        "row", "units", "conns", "units/s", "start p50", "msgs/unit", "msgs/s", "silence"
    );
    for row in rows {
        let name = row.name();
        match row {
            Row::Native {
                concurrency,
                connections,
                ..
            } => println!(
                "  {name:<14} {concurrency:>5} {connections:>5} {:>8.2} {:>8.0}ms {:>9.1} {:>9.0} {:>8.0}ms",
                rate(name),
                metric(cell, &format!("{name}.start"), "p50") / 1e6,
                metric(cell, &format!("{name}.messages"), "value")
                    / metric(cell, &format!("{name}.units"), "value"),
                metric(cell, &format!("{name}.message_rate"), "value"),
                metric(cell, &format!("{name}.silence"), "value") / 1e6,
            ),
            Row::Busctl { loops, .. } => println!(
                "  {name:<14} {loops:>5} {loops:>5} {:>8.2}  (busctl loops)",
                rate(name)
            ),
        }
    }
    let rates: Vec<f64> = rows.iter().map(|r| rate(r.name())).collect();
    let shipped: Vec<f64> = rates.iter().step_by(2).copied().collect();
    let mean = shipped.iter().sum::<f64>() / shipped.len().max(1) as f64;
    let (lo, hi) = shipped.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), r| {
        (lo.min(*r), hi.max(*r))
    });
    println!(
        "  shipped settings ({} runs, one before and after every row): mean {mean:.2} units/s, {lo:.2}..{hi:.2}",
        shipped.len()
    );
    let fastest = rates
        .iter()
        .zip(rows)
        .filter(|(r, _)| r.is_finite())
        .max_by(|a, b| a.0.total_cmp(b.0));
    if let Some((sat, row)) = fastest {
        println!(
            "  uncorrected: fastest row {sat:.2} units/s ({}); shipped mean = {:.2} of it",
            row.name(),
            mean / sat
        );
    }
    if let Some((i, fraction)) = paired_fraction(&rates) {
        println!(
            "  drift-corrected: the best row against its neighbouring shipped runs is {} ({:.2}x); \
             shipped settings = {fraction:.2} of saturation (target >= 0.9)",
            rows.get(i).map_or("?", Row::name),
            1.0 / fraction
        );
    }
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

async fn shell_loops(vm: &BenchVm, units: u64) -> BenchResult<()> {
    let cpus = env_count("KCHAOS_BENCH_CPUS", 2);
    println!(
        "\nshell loops: {units} units per variant, one systemd guest with {cpus} vCPUs; host load {}",
        loadavg()
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
