//! `kchaos`: the command-line edge. Parses arguments, sets up logging, maps outcomes to
//! the documented exit codes (0 pass/skip, 1 fail/crash/hang, 2 usage or scenario
//! errors, 3 infrastructure errors only, 130 interrupted).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use kchaos_harness::cell::{error_chain, DumpPolicy};
use kchaos_harness::qemu::accel::AccelChoice;
use kchaos_harness::qemu::{Accel, Qemu};
use kchaos_harness::run::{self, RunOptions, DEFAULT_KERNEL};
use kchaos_harness::{runner_bin, scenarios};
use kchaos_images::Cache;

#[derive(Debug, Parser)]
#[command(
    name = "kchaos",
    version,
    about = "Reproduce kernel and systemd churn defects in disposable VMs, on any kernel."
)]
struct Cli {
    /// More log output (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Cache directory for kernels and images [default: $KCHAOS_CACHE or ~/.cache/kchaos].
    #[arg(long, global = true, value_name = "DIR")]
    cache: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AccelArg {
    Auto,
    Kvm,
    Tcg,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run scenarios on kernels; one disposable VM per cell.
    Run {
        /// Scenario files or directories [default: ./scenarios].
        #[arg(value_name = "SCENARIO|DIR")]
        scenarios: Vec<PathBuf>,
        /// Kernel to run on (repeatable): debian:<version>[-<flavour>] or path:<bzImage>[,modules=<dir>][,config=<file>].
        #[arg(short, long = "kernel", value_name = "SPEC", default_value = DEFAULT_KERNEL)]
        kernels: Vec<String>,
        /// Results directory [default: results/<timestamp>].
        #[arg(short, long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Accelerator: auto probes whether KVM really works, else uses TCG.
        #[arg(long, value_enum, default_value = "auto")]
        accel: AccelArg,
        /// Seed for every cell (default: the scenario's, else random; always recorded).
        #[arg(long)]
        seed: Option<u64>,
        /// Static runner binary to use instead of building it.
        #[arg(long, value_name = "PATH")]
        runner: Option<PathBuf>,
        /// The runner's own log level in the guest console (error, warn, info, debug):
        /// debug prints a timestamped boot timeline.
        #[arg(long, value_name = "LEVEL")]
        guest_log: Option<String>,
        /// How long the guest may take to reach the runner [default: 15s, 60s under TCG].
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        boot_timeout: Option<std::time::Duration>,
        /// When a guest crashes or hangs, dump its memory (kdump-zlib) into the cell's
        /// directory for `kchaos analyze`. A panicked guest then stays up to be dumped.
        #[arg(long)]
        dump_memory: bool,
        /// Largest guest (MiB of RAM) whose memory is dumped.
        #[arg(long, value_name = "MIB", default_value_t = 2048)]
        dump_max: u64,
    },
    /// Check scenario files; prints FILE:LINE:COL: key: message for every problem.
    Validate {
        #[arg(required = true, value_name = "SCENARIO|DIR")]
        files: Vec<PathBuf>,
    },
    /// Download and unpack kernels into the cache (for offline runs and CI warm-up).
    Fetch {
        #[arg(required = true, value_name = "SPEC")]
        kernels: Vec<String>,
    },
    /// Run the `crash` utility on a cell's memory dump (bt -a, runq -g, log) and keep
    /// the output in the cell's directory as analysis.txt.
    Analyze {
        #[arg(value_name = "CELL_DIR")]
        dir: PathBuf,
        /// Debug vmlinux to use (default: Debian's -dbg package for the cell's kernel, or
        /// the vmlinux next to a local build's bzImage).
        #[arg(long, value_name = "PATH")]
        vmlinux: Option<PathBuf>,
    },
    /// Build the static guest runner and print its path.
    BuildRunner,
    /// Install what kchaos needs on a Debian/Ubuntu host (QEMU, dpkg tools).
    Setup {
        /// Print the commands instead of running them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Report what this host offers: QEMU, KVM, apt, the runner.
    Doctor,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn,kchaos_harness=warn,kchaos_images=info",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("KCHAOS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .without_time()
        .try_init();
    let cache = Cache::new(cli.cache.clone().unwrap_or_else(Cache::default_root));
    match dispatch(cli.command, cache) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("kchaos: error: {e:#}");
            ExitCode::from(3)
        }
    }
}

fn dispatch(command: Command, cache: Cache) -> anyhow::Result<u8> {
    match command {
        Command::Validate { files } => Ok(validate(&files)),
        Command::Run {
            scenarios,
            kernels,
            out,
            accel,
            seed,
            runner,
            guest_log,
            boot_timeout,
            dump_memory,
            dump_max,
        } => {
            let scenarios = if scenarios.is_empty() {
                vec![PathBuf::from("scenarios")]
            } else {
                scenarios
            };
            if scenarios.len() == 1 && !scenarios[0].exists() {
                eprintln!("kchaos: {}: no such file or directory (run from the kchaos checkout, or name scenario files)", scenarios[0].display());
                return Ok(2);
            }
            let out = out.unwrap_or_else(|| PathBuf::from("results").join(timestamp()));
            let accel = match accel {
                AccelArg::Auto => AccelChoice::Auto,
                AccelArg::Kvm => AccelChoice::Force(Accel::Kvm),
                AccelArg::Tcg => AccelChoice::Force(Accel::Tcg),
            };
            let opts = RunOptions {
                scenarios,
                kernels,
                out,
                accel,
                runner,
                seed,
                guest_log,
                boot_timeout,
                dump: dump_memory.then_some(DumpPolicy {
                    max_mib: dump_max,
                    timeout: std::time::Duration::from_secs(600),
                }),
                cache,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            match runtime.block_on(run::run(opts)) {
                Ok(outcome) => {
                    print!("{}", run::summary_table(&outcome.results));
                    println!("results: {}", outcome.dir.join("results.json").display());
                    Ok(run::exit_code(&outcome.results, outcome.interrupted))
                }
                Err(run::RunError::Scenarios(lines)) => {
                    for l in lines {
                        eprintln!("{l}");
                    }
                    Ok(2)
                }
                Err(e) => Err(anyhow::anyhow!(error_chain(&e))),
            }
        }
        Command::Fetch { kernels } => {
            let mut failed = false;
            for spec in kernels {
                match kchaos_images::resolve(&cache, &spec) {
                    Ok(k) => println!(
                        "{spec} -> {} (release {}, image {})",
                        k.resolved,
                        k.release,
                        k.bzimage.display()
                    ),
                    Err(e) => {
                        eprintln!("kchaos: {spec}: {}", error_chain(&e));
                        failed = true;
                    }
                }
            }
            Ok(if failed { 3 } else { 0 })
        }
        Command::Analyze { dir, vmlinux } => {
            match kchaos_harness::analyze::analyze(&dir, vmlinux.as_deref(), &cache) {
                Ok(report) => {
                    println!("{}", report.display());
                    Ok(0)
                }
                Err(e) => {
                    eprintln!("kchaos: {}", error_chain(&e));
                    Ok(3)
                }
            }
        }
        Command::BuildRunner => {
            let bin = runner_bin::locate(None).map_err(|e| anyhow::anyhow!(error_chain(&e)))?;
            println!("{}", bin.path.display());
            Ok(0)
        }
        Command::Setup { dry_run } => setup(dry_run),
        Command::Doctor => doctor(&cache),
    }
}

fn validate(files: &[PathBuf]) -> u8 {
    let paths = match scenarios::expand(files) {
        Ok(p) => p,
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            return 2;
        }
    };
    let mut bad = false;
    for path in paths {
        match scenarios::load_file(&path) {
            Ok(s) => println!(
                "ok: {} ({}: {} workloads, {} probes, {} checks)",
                path.display(),
                s.model.name,
                s.model.workloads.len(),
                s.model.probes.len(),
                s.model.checks.len()
            ),
            Err(errors) => {
                bad = true;
                for e in errors {
                    println!("{e}");
                }
            }
        }
    }
    if bad {
        2
    } else {
        0
    }
}

/// Host packages kchaos uses: QEMU, dpkg-deb/apt to fetch Debian kernels, debootstrap
/// and mkfs.ext4 to build the systemd image.
const PACKAGES: &[(&str, &str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86", "no VM can boot"),
    ("dpkg-deb", "dpkg", "Debian kernels cannot be fetched"),
    ("apt-get", "apt", "Debian kernels cannot be fetched"),
    (
        "debootstrap",
        "debootstrap",
        "the systemd image cannot be built",
    ),
    (
        "mkfs.ext4",
        "e2fsprogs",
        "the systemd image cannot be built",
    ),
];

fn setup(dry_run: bool) -> anyhow::Result<u8> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(bin, _, _)| kchaos_harness::qemu::find_in_path(bin).is_none())
        .map(|(_, pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        println!("kchaos setup: everything needed is installed");
        return Ok(0);
    }
    let root = nix::unistd::geteuid().is_root();
    let sudo = if root { "" } else { "sudo " };
    let commands = [
        format!("{sudo}apt-get update"),
        format!(
            "{sudo}apt-get install -y --no-install-recommends {}",
            missing.join(" ")
        ),
    ];
    if dry_run {
        for c in &commands {
            println!("{c}");
        }
        return Ok(0);
    }
    for c in &commands {
        println!("kchaos setup: {c}");
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(c)
            .status()
            .with_context(|| format!("running `{c}`"))?;
        if !status.success() {
            eprintln!("kchaos setup: `{c}` failed ({status})");
            return Ok(3);
        }
    }
    Ok(0)
}

fn doctor(cache: &Cache) -> anyhow::Result<u8> {
    let mut ok = true;
    println!("cache: {}", cache.root().display());
    match Qemu::find() {
        Ok(q) => {
            println!("qemu: {} ({})", q.path.display(), q.version);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let dir = cache
                .dir("accel")
                .map_err(|e| anyhow::anyhow!(error_chain(&e)))?;
            let d = runtime.block_on(kchaos_harness::qemu::detect_accel(
                &q,
                AccelChoice::Auto,
                &dir,
            ));
            println!("accelerator: {} ({})", d.accel.as_str(), d.reason);
        }
        Err(e) => {
            ok = false;
            println!("qemu: MISSING: {}", error_chain(&e));
        }
    }
    for (bin, pkg, without) in PACKAGES.iter().skip(1) {
        match kchaos_harness::qemu::find_in_path(bin) {
            Some(p) => println!("{bin}: {}", p.display()),
            None => {
                ok = false;
                println!("{bin}: MISSING (package {pkg}; {without})");
            }
        }
    }
    if !nix::unistd::geteuid().is_root() {
        println!("user: not root; scenarios with `[vm] image = \"systemd\"` need root to build their image");
    }
    if ok {
        println!("ready: `kchaos run` will work");
        Ok(0)
    } else {
        println!("not ready: run `kchaos setup`");
        Ok(3)
    }
}

fn timestamp() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace(':', "")
        .trim_end_matches('Z')
        .replace('T', "-")
}
