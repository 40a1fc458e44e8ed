//! Boot-to-runner-ready against a raw QEMU boot of the same kernel with a trivial init,
//! side by side in one run. Runs alternate (and alternate which goes first) so both see
//! the same host load; each QEMU has fully exited before the next starts. Prints medians
//! of the host-measured time (QEMU start → ready) and of the guest's own uptime at ready,
//! and the ratio.
//!
//! `cargo bench -p kchaos-benches --bench boot` (KCHAOS_BENCH_RUNS, default 9;
//! KCHAOS_BENCH_KERNEL, default debian:6.1-cloud). Target: ratio <= 0.85 (kchaos boots faster
//! than a plain boot of the same kernel: the PVH entry instead of the bzImage's
//! decompressor, qboot, no crypto self-tests). The plain boot is the bzImage with
//! QEMU's default firmware; `KCHAOS_BOOT=bzimage` shows what PVH alone is worth.

use std::process::Stdio;
use std::time::{Duration, Instant};

use kchaos_benches::{
    bench_main, env_count, median, parse_uptime_line, trivial_init, BenchResult, BenchVm,
};
use kchaos_harness::vm::{self as qemu, BootMedia, Qemu, QemuCommand};
use kchaos_images::initramfs;
use kchaos_images::payload::Payload;
use tokio::io::{AsyncBufReadExt, BufReader};

/// One boot: host time from QEMU start to ready, and the guest's uptime at ready.
struct Boot {
    host: f64,
    guest: f64,
}

fn main() -> BenchResult<()> {
    let runs = usize::try_from(env_count("KCHAOS_BENCH_RUNS", 9)).unwrap_or(9);
    bench_main(|spec| async move { bench(runs, &spec).await })
}

async fn bench(runs: usize, spec: &str) -> BenchResult<()> {
    let vm = BenchVm::new(spec).await?;
    let init = trivial_init();
    let raw_bytes = initramfs::archive(&Payload {
        runner: &init,
        release: &vm.kernel.release,
        modules: &[],
        tools: &[],
    })?;
    let raw_image = vm.work.path().join("trivial.cpio");
    std::fs::write(&raw_image, raw_bytes)?;
    let scenario = kchaos_benches::BOOT_SCENARIO;

    println!("{}, {runs} runs each, alternating", vm.describe());
    println!(
        "kchaos boots {} ({}); the raw boot, the bzImage",
        vm.initramfs.kernel.path.display(),
        vm.initramfs
            .kernel
            .fallback
            .as_deref()
            .map_or("the PVH entry".to_owned(), |why| format!(
                "the bzImage: {why}"
            ))
    );
    println!(
        "kchaos initramfs {:.1} MiB (runner + channel modules), trivial initramfs {:.1} KiB",
        vm.initramfs.size as f64 / 1_048_576.0,
        std::fs::metadata(&raw_image)?.len() as f64 / 1024.0
    );
    let (mut raw, mut kchaos) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let kchaos_boot = || async {
            let result = vm.run(&format!("boot-{i}"), scenario).await?;
            match (result.boot_ms, result.guest_ready_ms) {
                (Some(h), Some(g)) => Ok::<Boot, Box<dyn std::error::Error>>(Boot {
                    host: h as f64 / 1000.0,
                    guest: g as f64 / 1000.0,
                }),
                _ => Err(format!("kchaos boot failed: {:?}", result.reasons).into()),
            }
        };
        let (r, k) = if i % 2 == 0 {
            let r = raw_boot(&vm.qemu, vm.accel, &vm.kernel.bzimage, &raw_image).await?;
            (r, kchaos_boot().await?)
        } else {
            let k = kchaos_boot().await?;
            (
                raw_boot(&vm.qemu, vm.accel, &vm.kernel.bzimage, &raw_image).await?,
                k,
            )
        };
        println!(
            "  run {i}: raw {:.3}s (guest {:.3}s)  kchaos {:.3}s (guest {:.3}s)",
            r.host, r.guest, k.host, k.guest
        );
        raw.push(r);
        kchaos.push(k);
    }
    let med =
        |boots: &[Boot], f: fn(&Boot) -> f64| median(&mut boots.iter().map(f).collect::<Vec<_>>());
    let (raw_host, raw_guest) = (med(&raw, |b| b.host), med(&raw, |b| b.guest));
    let (k_host, k_guest) = (med(&kchaos, |b| b.host), med(&kchaos, |b| b.guest));
    println!("raw boot, trivial init prints its uptime:  median {raw_host:.3}s host, {raw_guest:.3}s guest");
    println!(
        "kchaos boot, runner Hello on the channel:  median {k_host:.3}s host, {k_guest:.3}s guest"
    );
    println!(
        "ratio kchaos/raw = {:.3} host-measured (target <= 0.85), {:.3} guest-side",
        k_host / raw_host,
        k_guest / raw_guest
    );
    Ok(())
}

/// QEMU start → the trivial init's uptime line; same QEMU flags as a cell minus the
/// control channel. Waits for QEMU to exit before returning.
async fn raw_boot(
    q: &Qemu,
    accel: qemu::Accel,
    kernel: &std::path::Path,
    initrd: &std::path::Path,
) -> BenchResult<Boot> {
    let command = QemuCommand {
        accel,
        memory_mib: 1024,
        topology: kchaos_model::topology::Topology::flat(1),
        kernel: kernel.to_path_buf(),
        boot: BootMedia::Initrd(initrd.to_path_buf()),
        // A plain boot: QEMU's default firmware and only what makes the console
        // comparable, none of kchaos's boot-time choices.
        cmdline: vec![
            "console=ttyS0".to_owned(),
            "loglevel=5".to_owned(),
            "panic=-1".to_owned(),
        ],
        control_socket: None,
        qmp_socket: None,
        debug: Default::default(),
        firmware: None,
    };
    let start = Instant::now();
    let mut child = tokio::process::Command::new(&q.path)
        .args(command.args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let found = tokio::time::timeout(Duration::from_secs(120), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(uptime) = parse_uptime_line(&line) {
                return Some(Boot {
                    host: start.elapsed().as_secs_f64(),
                    guest: uptime as f64 / 1000.0,
                });
            }
        }
        None
    })
    .await;
    // The init powers off right after printing; let QEMU finish so the next boot does
    // not share the host with its teardown.
    if tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
    match found {
        Ok(Some(boot)) => Ok(boot),
        _ => Err("the trivial init never printed its uptime".into()),
    }
}
