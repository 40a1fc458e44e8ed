//! Shared pieces of the kchaos benchmarks.

/// The code of the trivial init, assembled once from this source (GNU as, Intel syntax)
/// so the benchmark needs no toolchain:
///
/// ```text
/// sub rsp, 64
/// mov eax, 228 ; mov edi, 7 ; mov rsi, rsp ; syscall    # clock_gettime(CLOCK_BOOTTIME)
/// mov rax, [rsp] ; imul rcx, rax, 1000                  # ms = sec * 1000
/// mov rax, [rsp+8] ; xor edx, edx ; mov ebx, 1000000 ; div rbx ; add rax, rcx
/// lea rsi, [rsp+63] ; mov byte ptr [rsi], 10 ; mov ebx, 10
/// 1: dec rsi ; xor edx, edx ; div rbx ; add dl, 48 ; mov [rsi], dl ; test rax, rax ; jnz 1b
/// lea rdx, [rsp+64] ; sub rdx, rsi ; mov eax, 1 ; mov edi, 1 ; syscall   # write(1, ..)
/// mov eax, 169 ; mov edi, 0xfee1dead ; mov esi, 672274793 ; mov edx, 0x4321fedc ; syscall
/// 2: jmp 2b                                             # reboot(POWER_OFF)
/// ```
const TRIVIAL_INIT_CODE: [u8; 123] = [
    0x48, 0x83, 0xec, 0x40, 0xb8, 0xe4, 0x00, 0x00, 0x00, 0xbf, 0x07, 0x00, 0x00, 0x00, 0x48, 0x89,
    0xe6, 0x0f, 0x05, 0x48, 0x8b, 0x04, 0x24, 0x48, 0x69, 0xc8, 0xe8, 0x03, 0x00, 0x00, 0x48, 0x8b,
    0x44, 0x24, 0x08, 0x31, 0xd2, 0xbb, 0x40, 0x42, 0x0f, 0x00, 0x48, 0xf7, 0xf3, 0x48, 0x01, 0xc8,
    0x48, 0x8d, 0x74, 0x24, 0x3f, 0xc6, 0x06, 0x0a, 0xbb, 0x0a, 0x00, 0x00, 0x00, 0x48, 0xff, 0xce,
    0x31, 0xd2, 0x48, 0xf7, 0xf3, 0x80, 0xc2, 0x30, 0x88, 0x16, 0x48, 0x85, 0xc0, 0x75, 0xee, 0x48,
    0x8d, 0x54, 0x24, 0x40, 0x48, 0x29, 0xf2, 0xb8, 0x01, 0x00, 0x00, 0x00, 0xbf, 0x01, 0x00, 0x00,
    0x00, 0x0f, 0x05, 0xb8, 0xa9, 0x00, 0x00, 0x00, 0xbf, 0xad, 0xde, 0xe1, 0xfe, 0xbe, 0x69, 0x19,
    0x12, 0x28, 0xba, 0xdc, 0xfe, 0x21, 0x43, 0x0f, 0x05, 0xeb, 0xfe,
];

/// A minimal static x86-64 ELF init: prints its own guest uptime in milliseconds (a line
/// of digits) on the console and powers the machine off. The baseline of the boot
/// benchmark: the least any init can do.
pub fn trivial_init() -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    const HEADERS: u64 = 64 + 56;
    let total = HEADERS + TRIVIAL_INIT_CODE.len() as u64;
    let mut elf = Vec::new();
    elf.extend(b"\x7fELF");
    elf.extend([2, 1, 1, 0]); // 64-bit, little endian, version 1, SysV
    elf.extend([0; 8]);
    elf.extend(2u16.to_le_bytes()); // ET_EXEC
    elf.extend(0x3Eu16.to_le_bytes()); // x86-64
    elf.extend(1u32.to_le_bytes());
    elf.extend((BASE + HEADERS).to_le_bytes()); // entry
    elf.extend(64u64.to_le_bytes()); // program headers
    elf.extend(0u64.to_le_bytes()); // no section headers
    elf.extend(0u32.to_le_bytes());
    elf.extend(64u16.to_le_bytes());
    elf.extend(56u16.to_le_bytes());
    elf.extend(1u16.to_le_bytes());
    elf.extend([0, 0, 0, 0, 0, 0]);
    elf.extend(1u32.to_le_bytes()); // PT_LOAD
    elf.extend(5u32.to_le_bytes()); // R+X
    elf.extend(0u64.to_le_bytes()); // offset
    elf.extend(BASE.to_le_bytes());
    elf.extend(BASE.to_le_bytes());
    elf.extend(total.to_le_bytes());
    elf.extend(total.to_le_bytes());
    elf.extend(0x1000u64.to_le_bytes());
    elf.extend(TRIVIAL_INIT_CODE);
    elf
}

/// The trivial init's output: a line that is only digits (no kernel line is).
pub fn parse_uptime_line(line: &str) -> Option<u64> {
    let t = line.trim();
    (!t.is_empty() && t.chars().all(|c| c.is_ascii_digit()))
        .then(|| t.parse().ok())
        .flatten()
}

/// Median of a non-empty sample, in the sample's unit.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Everything a benchmark needs to boot cells: kernel, QEMU, accelerator, the runner.
/// Built once per benchmark run; each scenario gets the image it needs (modules, tools).
/// The smallest scenario: what [`BenchVm::initramfs`] is built for.
pub const BOOT_SCENARIO: &str =
    "[scenario]\nname = \"boot\"\nduration = \"1s\"\n[[probe]]\nkind = \"d-state\"\nname = \"d\"\n";

#[derive(Debug)]
pub struct BenchVm {
    pub kernel: std::sync::Arc<kchaos_images::Kernel>,
    /// The file QEMU boots for it (the PVH ELF, or the bzImage), chosen once.
    pub boot: kchaos_images::pvh::BootKernel,
    pub qemu: kchaos_harness::vm::Qemu,
    pub accel: kchaos_harness::vm::Accel,
    /// The image of a scenario with no extra modules or tools (boot comparisons).
    pub initramfs: kchaos_harness::vm::image::GuestImage,
    pub work: tempfile::TempDir,
    cache: kchaos_images::Cache,
    runner: Vec<u8>,
}

pub type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

impl BenchVm {
    /// Resolves `spec` (downloading if needed), finds QEMU and the accelerator, builds
    /// the runner and the plain initramfs.
    pub async fn new(spec: &str) -> BenchResult<BenchVm> {
        use kchaos_harness::vm::{self as qemu, AccelChoice};
        let cache = kchaos_images::Cache::new(kchaos_images::Cache::default_root());
        let kernel = std::sync::Arc::new(kchaos_images::resolve(&cache, spec)?);
        let q = qemu::Qemu::find()?;
        let accel = qemu::detect_accel(&q, AccelChoice::Auto, &cache.dir("accel")?)
            .await
            .accel;
        let runner = kchaos_harness::vm::runner::locate(None)?.bytes;
        let boot_scenario =
            kchaos_model::scenario::parse("boot", BOOT_SCENARIO).map_err(|e| e.to_string())?;
        let boot = kchaos_harness::vm::image::boot_kernel(&cache, &kernel)?;
        let initramfs =
            kchaos_harness::vm::image::image_for(&cache, &kernel, &boot, &runner, &boot_scenario)?;
        Ok(BenchVm {
            kernel,
            boot,
            qemu: q,
            accel,
            initramfs,
            work: tempfile::tempdir()?,
            cache,
            runner,
        })
    }

    /// What is being measured on: kernel, QEMU, accelerator (the first line of output).
    pub fn describe(&self) -> String {
        format!(
            "kernel {} ({}), QEMU {} with {}",
            self.kernel.resolved,
            self.kernel.release,
            self.qemu.version,
            self.accel.as_str()
        )
    }

    /// Runs a cell that must pass for its numbers to mean anything.
    pub async fn run_passing(
        &self,
        id: &str,
        toml: &str,
    ) -> BenchResult<kchaos_harness::results::CellResult> {
        let cell = self.run(id, toml).await?;
        if cell.verdict.as_str() != "pass" {
            return Err(format!(
                "the benchmark cell ended {}: {:?}",
                cell.verdict, cell.reasons
            )
            .into());
        }
        Ok(cell)
    }

    /// Runs one cell of the scenario in `toml`, with the image it needs.
    pub async fn run(
        &self,
        id: &str,
        toml: &str,
    ) -> BenchResult<kchaos_harness::results::CellResult> {
        use kchaos_harness::cell::{self, CellEnv, CellSpec};
        use kchaos_harness::scenario::LoadedScenario;
        let model = kchaos_model::scenario::parse(id, toml).map_err(|e| e.to_string())?;
        let image = kchaos_harness::vm::image::image_for(
            &self.cache,
            &self.kernel,
            &self.boot,
            &self.runner,
            &model,
        )?;
        let scenario = std::sync::Arc::new(LoadedScenario {
            path: id.into(),
            source: toml.to_owned(),
            model,
        });
        let (_keep, cancel) = tokio::sync::watch::channel(false);
        let env = CellEnv {
            qemu: self.qemu.clone(),
            accel: self.accel,
            cancel,
            guest_log: None,
            boot_timeout: None,
            dump: None,
            until: None,
            keep: cell::KeepPolicy::Never,
            keeper: std::sync::Arc::new(cell::Keeper::new(1)),
            gdb: None,
            full_duration: false,
        };
        let spec = CellSpec {
            id: id.to_owned(),
            scenario,
            kernel: std::sync::Arc::clone(&self.kernel),
            image,
            seed: 1,
            topology: None,
            repeat: 0,
            results_dir: self.work.path().to_path_buf(),
            dir: self.work.path().join(id.replace('/', "-")),
        };
        Ok(cell::run(&spec, &env, &|_| {}).await)
    }
}

/// A statistic of a cell's metric (`p50`, `value`, …); NaN when absent, so a missing
/// number shows in the printed table instead of aborting the benchmark.
pub fn metric(c: &kchaos_harness::results::CellResult, name: &str, stat: &str) -> f64 {
    let value = serde_json::to_value(c.metrics.get(name)).unwrap_or(serde_json::Value::Null);
    value
        .get(stat)
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(f64::NAN)
}

/// The `main` of a VM benchmark: a quick exit under `cargo test --benches`, the kernel
/// from `KCHAOS_BENCH_KERNEL` (default the Debian 6.1 cloud kernel), a tokio runtime.
pub fn bench_main<F, Fut>(bench: F) -> BenchResult<()>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = BenchResult<()>>,
{
    if !invoked_as_benchmark() {
        return Ok(());
    }
    let spec =
        std::env::var("KCHAOS_BENCH_KERNEL").unwrap_or_else(|_| "debian:6.1-cloud".to_owned());
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench(spec))
}

/// A count from the environment (`KCHAOS_BENCH_RUNS` …), else `default`.
pub fn env_count(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `text` as the inside of a TOML basic string (a shell script in an `exec` argv).
pub fn toml_escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

/// `cargo bench` passes `--bench`; `cargo test --benches` runs bench binaries without it
/// and expects a quick exit.
pub fn invoked_as_benchmark() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// The drift-corrected fraction of saturation the reference settings reach, from rates
/// measured alternately: the reference at even positions of `rates`, the curve's rows
/// at odd ones. Each row is judged against the mean of the two reference runs around it
/// (on a host whose speed drifts, a row and its neighbours saw the same host); the
/// answer is the best row's position and 1 / its ratio, at most 1.0 (no row beat the
/// reference). `None` without a complete triple.
pub fn paired_fraction(rates: &[f64]) -> Option<(usize, f64)> {
    let best = (1..rates.len().saturating_sub(1))
        .step_by(2)
        .filter_map(|i| {
            let around = (rates.get(i - 1)? + rates.get(i + 1)?) / 2.0;
            let ratio = rates.get(i)? / around;
            ratio.is_finite().then_some((i, ratio))
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))?;
    Some((best.0, 1.0 / best.1.max(1.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trivial_init_is_a_static_elf() {
        let elf = trivial_init();
        assert_eq!(&elf[..4], b"\x7fELF");
        assert_eq!(elf.len(), 120 + 123);
        assert_eq!(parse_uptime_line("1657\r"), Some(1657));
        assert_eq!(parse_uptime_line("[    0.04] tsc: x"), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn each_row_is_judged_against_the_reference_runs_around_it() {
        // (rates: reference, row, reference, row, reference…; the answer)
        type Case = (Vec<f64>, Option<(usize, f64)>);
        let cases: Vec<Case> = vec![
            // A row 10% faster than the runs around it: 0.91 of saturation.
            (vec![10.0, 11.0, 10.0], Some((1, 10.0 / 11.0))),
            // The host slowed down between the first and the last run: the fast first
            // reference does not hide that the last row beat its own neighbours.
            (vec![12.0, 9.0, 8.0, 8.8, 8.0], Some((3, 8.0 / 8.8))),
            // No row beats the reference: 1.0, the best row named anyway.
            (vec![10.0, 5.0, 10.0, 9.0, 10.0], Some((3, 1.0))),
            // An unfinished row (infinite or NaN rate) is no evidence.
            (
                vec![10.0, f64::NAN, 10.0, 10.5, 10.0],
                Some((3, 10.0 / 10.5)),
            ),
            (vec![10.0, 11.0], None),
            (vec![], None),
        ];
        for (rates, want) in cases {
            let got = paired_fraction(&rates);
            match (got, want) {
                (Some((i, f)), Some((wi, wf))) => {
                    assert_eq!(i, wi, "{rates:?}");
                    assert!((f - wf).abs() < 1e-9, "{rates:?}: {f} vs {wf}");
                }
                (got, want) => assert_eq!(got, want, "{rates:?}"),
            }
        }
    }
}
