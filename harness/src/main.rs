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
use kchaos_images::kernel_list::KernelList;
use kchaos_images::Cache;

mod outputs;
mod reproduce;

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
pub(crate) enum AccelArg {
    Auto,
    Kvm,
    Tcg,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Scenario files or directories [default: ./scenarios].
    #[arg(value_name = "SCENARIO|DIR")]
    scenarios: Vec<PathBuf>,
    /// Kernel to run on (repeatable, in matrix order): a spec, debian:<version>[-<flavour>]
    /// or path:<bzImage>[,modules=<dir>][,config=<file>]; a name from the kernel list; or
    /// @SET for a set of it [default: the list's `default` set, else debian:6.1-cloud].
    #[arg(short, long = "kernel", value_name = "SPEC|NAME|@SET")]
    kernels: Vec<String>,
    /// The kernel list naming kernels and sets [default: vm-images/kernels.toml].
    #[arg(long, value_name = "FILE")]
    kernel_list: Option<PathBuf>,
    /// Cells per scenario and kernel (for latency distributions and `compare`).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    repeat: u32,
    /// VMs at once [default: the host's cores].
    #[arg(short, long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    jobs: Option<u32>,
    /// Run only shard I of N of the matrix (disjoint, together complete; see `kchaos merge`).
    #[arg(long, value_name = "I/N", value_parser = kchaos_harness::matrix::Shard::parse)]
    shard: Option<kchaos_harness::matrix::Shard>,
    /// Print the planned cells (scenario, kernel, repeat) and exit.
    #[arg(long)]
    plan: bool,
    /// Continue the interrupted run in DIR: its finished cells are kept, the rest run
    /// with the plan it recorded.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["scenarios", "kernels", "repeat", "shard", "out"])]
    resume: Option<PathBuf>,
    /// Results directory [default: results/<timestamp>].
    #[arg(short, long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Results database to add this run to [default: results.db in the results directory].
    #[arg(long, value_name = "FILE")]
    db: Option<PathBuf>,
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
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run scenarios on kernels; one disposable VM per cell.
    Run(Box<RunArgs>),
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
    /// Write report.html (self-contained) and junit.xml for results directories or
    /// databases; `kchaos run` writes both at the end of every run.
    Report {
        #[arg(required = true, value_name = "DIR|DB")]
        sources: Vec<PathBuf>,
        /// Where to write them [default: the results directory, when there is one].
        #[arg(short, long, value_name = "DIR")]
        out: Option<PathBuf>,
        #[command(flatten)]
        compare: CompareArgs,
    },
    /// Compare a candidate kernel (or run) against a baseline; exit 1 on a regression.
    Compare {
        /// Results directories or databases holding both kernels (not needed when
        /// --baseline and --candidate are themselves results).
        #[arg(value_name = "DIR|DB")]
        sources: Vec<PathBuf>,
        #[command(flatten)]
        compare: CompareArgs,
        /// Show unchanged metrics too.
        #[arg(long)]
        all: bool,
        /// Also write report.html and junit.xml with the comparison into DIR.
        #[arg(long, value_name = "DIR")]
        report: Option<PathBuf>,
        /// Also write the comparison as JSON.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// Run one scenario on one kernel in fresh VMs until the outcome appears or the
    /// budget is spent; exit 1 when reproduced, 0 when not, 125 when no run could be
    /// judged (usable as `git bisect run`).
    Repro(ReproArgs),
    /// Rerun the cell a replay bundle (replay.tar.gz) describes, exactly.
    Replay {
        #[arg(value_name = "BUNDLE")]
        bundle: PathBuf,
        /// How many times (all with the bundle's seed): how often does it recur?
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10000))]
        runs: u32,
        #[command(flatten)]
        vm: VmArgs,
    },
    /// Find the first bad kernel of an ordered list, given a good and a bad one.
    Bisect(BisectArgs),
    /// Merge results directories (e.g. the shards of a matrix) into a new one, with
    /// one database, report and JUnit file.
    Merge {
        #[arg(required = true, value_name = "DIR")]
        dirs: Vec<PathBuf>,
        #[arg(short, long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct BisectArgs {
    #[arg(value_name = "SCENARIO")]
    pub scenario: PathBuf,
    /// The ordered kernels (specs, names, @set), oldest first.
    #[arg(short, long = "kernel", value_name = "SPEC|NAME|@SET", required = true)]
    pub kernels: Vec<String>,
    /// A kernel of the list known good.
    #[arg(long, value_name = "KERNEL")]
    pub good: String,
    /// A kernel of the list known bad (reproduces).
    #[arg(long, value_name = "KERNEL")]
    pub bad: String,
    /// Outcome that makes a kernel bad: fail, crash, hang, any, or text of a reason,
    /// signature or fingerprint.
    #[arg(long, default_value = "any")]
    pub until: String,
    /// Runs per step [default: from the reproduction probability measured on the
    /// bad kernel and --confidence].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub runs: Option<u32>,
    /// Runs on the bad kernel to measure its reproduction probability.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub calibrate: u32,
    /// Wanted confidence in each good verdict.
    #[arg(long, default_value_t = 0.95)]
    pub confidence: f64,
    #[command(flatten)]
    pub vm: VmArgs,
}

#[derive(Debug, clap::Args)]
struct ReproArgs {
    #[arg(value_name = "SCENARIO")]
    scenario: PathBuf,
    #[arg(short, long, value_name = "SPEC|NAME", default_value = DEFAULT_KERNEL)]
    kernel: String,
    /// fail, crash, hang, any (fail, crash or hang), or text found in a reason, a
    /// kernel-log signature or the fingerprint.
    #[arg(long, default_value = "any")]
    until: String,
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100000))]
    max_runs: u32,
    /// Spend the whole budget instead of stopping at the first hit (a better estimate
    /// of the probability).
    #[arg(long)]
    all: bool,
    /// Sweep a scenario parameter: PATH=V1,V2,... (e.g. workload.0.concurrency=8,16,32);
    /// repeatable, all combinations are tried.
    #[arg(long = "set", value_name = "PATH=VALUES")]
    sets: Vec<String>,
    #[command(flatten)]
    vm: VmArgs,
}

/// How VMs are run, for repro, replay and bisect.
#[derive(Debug, clap::Args)]
pub(crate) struct VmArgs {
    /// VMs at once [default: the host's cores].
    #[arg(short, long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    jobs: Option<u32>,
    /// Results directory [default: results/<command>-<timestamp>].
    #[arg(short, long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// A fixed seed: every run uses exactly it (default: a new seed per run, recorded).
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long, value_enum, default_value = "auto")]
    accel: AccelArg,
    /// Static runner binary to use instead of building it.
    #[arg(long, value_name = "PATH")]
    runner: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct CompareArgs {
    /// The reference: a kernel (spec as asked, as resolved, its label, its `uname -r`,
    /// or a name from the kernel list) or a results directory/database.
    #[arg(long, value_name = "KERNEL|DIR|DB")]
    baseline: Option<String>,
    /// What is judged against the baseline; same forms.
    #[arg(long, value_name = "KERNEL|DIR|DB", requires = "baseline")]
    candidate: Option<String>,
    /// Smallest change of the median that counts as a regression, in percent.
    #[arg(long, value_name = "PERCENT", default_value_t = 10.0)]
    threshold: f64,
    /// Significance level of the one-sided Mann-Whitney test.
    #[arg(long, default_value_t = 0.05)]
    alpha: f64,
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
        Command::Run(args) => run_command(*args, cache),
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
        Command::Report {
            sources,
            out,
            compare,
        } => outputs::report(&sources, out, &compare),
        Command::Compare {
            sources,
            compare,
            all,
            report,
            json,
        } => outputs::compare(&sources, &compare, all, report, json),
        Command::Merge { dirs, out } => outputs::merge(&dirs, &out),
        Command::Repro(args) => reproduce::repro(args, cache),
        Command::Replay { bundle, runs, vm } => reproduce::replay(&bundle, runs, vm, cache),
        Command::Bisect(args) => reproduce::bisect(args, cache),
    }
}

fn run_command(args: RunArgs, cache: Cache) -> anyhow::Result<u8> {
    let (mut scenarios, mut kernels, mut repeat, mut shard, mut seed) = (
        args.scenarios,
        args.kernels,
        args.repeat,
        args.shard,
        args.seed,
    );
    let resume = args.resume.is_some();
    let out = match args.resume {
        Some(dir) => {
            let (plan, _) = run::stored_plan(&dir).map_err(|e| anyhow::anyhow!(error_chain(&e)))?;
            scenarios = plan.scenarios.iter().map(PathBuf::from).collect();
            kernels = plan.kernels;
            repeat = plan.repeat;
            shard = plan.shard;
            seed = seed.or(plan.seed);
            dir
        }
        None => args
            .out
            .unwrap_or_else(|| PathBuf::from("results").join(timestamp())),
    };
    if !resume {
        let list = match &args.kernel_list {
            Some(path) => KernelList::load(path),
            None => KernelList::load_default(),
        };
        let list = match list {
            Ok(l) => l,
            Err(e) => {
                eprintln!("kchaos: {}", error_chain(&e));
                return Ok(2);
            }
        };
        if kernels.is_empty() {
            kernels = if list.sets.contains_key("default") {
                vec!["@default".to_owned()]
            } else {
                vec![DEFAULT_KERNEL.to_owned()]
            };
        }
        kernels = match list.expand(&kernels) {
            Ok(k) => k,
            Err(e) => {
                eprintln!("kchaos: {}", error_chain(&e));
                return Ok(2);
            }
        };
    }
    if scenarios.is_empty() {
        scenarios = vec![PathBuf::from("scenarios")];
    }
    if scenarios.len() == 1 && !scenarios[0].exists() {
        eprintln!("kchaos: {}: no such file or directory (run from the kchaos checkout, or name scenario files)", scenarios[0].display());
        return Ok(2);
    }
    let jobs = args.jobs.map_or_else(
        || std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        |j| j as usize,
    );
    let opts = RunOptions {
        scenarios,
        kernels,
        repeat,
        jobs,
        shard,
        resume,
        out,
        db: args.db,
        accel: match args.accel {
            AccelArg::Auto => AccelChoice::Auto,
            AccelArg::Kvm => AccelChoice::Force(Accel::Kvm),
            AccelArg::Tcg => AccelChoice::Force(Accel::Tcg),
        },
        runner: args.runner,
        seed,
        same_seed: false,
        guest_log: args.guest_log,
        boot_timeout: args.boot_timeout,
        dump: args.dump_memory.then_some(DumpPolicy {
            max_mib: args.dump_max,
            timeout: std::time::Duration::from_secs(600),
        }),
        cache,
    };
    if args.plan {
        return match run::plan_lines(&opts) {
            Ok(lines) => {
                println!("SCENARIO\tKERNEL\tREPEAT");
                for l in &lines {
                    println!("{l}");
                }
                eprintln!("kchaos: {} cells", lines.len());
                Ok(0)
            }
            Err(run::RunError::Scenarios(lines)) => {
                for l in lines {
                    eprintln!("{l}");
                }
                Ok(2)
            }
            Err(e) => Err(anyhow::anyhow!(error_chain(&e))),
        };
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match runtime.block_on(run::run(opts)) {
        Ok(outcome) => {
            print!("{}", run::summary_table(&outcome.results));
            println!("results: {}", outcome.dir.join("results.json").display());
            let code = run::exit_code(&outcome.results, outcome.interrupted);
            outputs::after_run(outcome);
            Ok(code)
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
