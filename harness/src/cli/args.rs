//! Argument groups shared by every command that means the same thing by them (ripgrep's
//! flags, nextest's shared options): the kernel list, how VMs are run, the comparison
//! thresholds. Flattened into each command, so `--kernel-list` or `--accel` behave the
//! same in `run`, `repro`, `replay`, `bisect` and `compare`.

use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use kchaos_harness::cell::{DumpPolicy, KeepPolicy};
use kchaos_harness::run::session::{GdbWait, SessionOptions};
use kchaos_harness::run::DEFAULT_KERNEL;
use kchaos_harness::vm::{Accel, AccelChoice};
use kchaos_images::kernel_list::KernelList;
use kchaos_images::spec::KernelSpec;
use kchaos_images::Cache;

use super::exit::CliError;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AccelArg {
    Auto,
    Kvm,
    Tcg,
}

impl From<AccelArg> for AccelChoice {
    fn from(a: AccelArg) -> AccelChoice {
        match a {
            AccelArg::Auto => AccelChoice::Auto,
            AccelArg::Kvm => AccelChoice::Force(Accel::Kvm),
            AccelArg::Tcg => AccelChoice::Force(Accel::Tcg),
        }
    }
}

/// Where kernel names and sets come from.
#[derive(Debug, Clone, clap::Args)]
pub struct KernelListArgs {
    /// The kernel list naming kernels and sets [default: vm-images/kernels.toml].
    #[arg(long, value_name = "FILE")]
    pub kernel_list: Option<PathBuf>,
}

impl KernelListArgs {
    pub fn load(&self) -> Result<KernelList, CliError> {
        let list = match &self.kernel_list {
            Some(path) => KernelList::load(path),
            None => KernelList::load_default(),
        };
        list.map_err(|e| CliError::usage(kchaos_model::error_chain(&e)))
    }

    /// `kernels` (specs, names, @sets) as specs in order, each checked for syntax: a
    /// malformed spec is the user's to fix before anything runs.
    pub fn expand(&self, kernels: &[String]) -> Result<Vec<String>, CliError> {
        let list = self.load()?;
        let wanted = if kernels.is_empty() {
            if list.sets.contains_key("default") {
                vec!["@default".to_owned()]
            } else {
                vec![DEFAULT_KERNEL.to_owned()]
            }
        } else {
            kernels.to_vec()
        };
        let specs = list
            .expand(&wanted)
            .map_err(|e| CliError::usage(kchaos_model::error_chain(&e)))?;
        check_specs(&specs)?;
        Ok(specs)
    }

    /// Exactly one kernel.
    pub fn expand_one(&self, kernel: &str) -> Result<String, CliError> {
        let specs = self.expand(&[kernel.to_owned()])?;
        match specs.as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(CliError::usage(format!(
                "`{kernel}` names {} kernels; give one",
                specs.len()
            ))),
        }
    }
}

/// Refuses malformed kernel specs (`ubuntu:6.8`, `path:` without a file).
pub fn check_specs(specs: &[String]) -> Result<(), CliError> {
    for spec in specs {
        KernelSpec::parse(spec).map_err(|e| CliError::usage(e.to_string()))?;
    }
    Ok(())
}

/// Where a command's runs are recorded and how its VMs run (`replay`, `detect`).
#[derive(Debug, clap::Args)]
pub struct RecordArgs {
    /// Results directory [default: results/<command>-<timestamp>].
    #[arg(short, long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub vm: VmArgs,
}

/// How VMs are run: shared by every command that boots.
#[derive(Debug, Clone, clap::Args)]
pub struct VmArgs {
    /// VMs at once [default: the host's cores].
    #[arg(short, long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub jobs: Option<u32>,
    /// Accelerator: auto probes whether KVM really works, else uses TCG.
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: AccelArg,
    /// Static runner binary to use instead of building it.
    #[arg(long, value_name = "PATH")]
    pub runner: Option<PathBuf>,
    /// The runner's own log level in the guest console (error, warn, info, debug):
    /// debug prints a timestamped boot timeline.
    #[arg(long, value_name = "LEVEL")]
    pub guest_log: Option<String>,
    /// How long the guest may take to reach the runner [default: 15s, 60s under TCG].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub boot_timeout: Option<Duration>,
    /// When a guest crashes or hangs, dump its memory (kdump-zlib) into the cell's
    /// directory for `kchaos analyze`. A panicked guest then stays up to be dumped.
    #[arg(long)]
    pub dump_memory: bool,
    /// Largest guest (MiB of RAM) whose memory is dumped.
    #[arg(long, value_name = "MIB", default_value_t = 2048)]
    pub dump_max: u64,
    /// Do not kill the VM of a cell that ends in fail, crash or hang: keep it up (a
    /// crashed guest in its panic) until Ctrl-C, with its console, QEMU's monitor and a
    /// shell on a second console (from the scenario's [vm] tools) reachable; how is
    /// printed. The verdict is recorded first. At most one kept VM per --jobs slot.
    #[arg(long, conflicts_with = "keep")]
    pub keep_on_failure: bool,
    /// Like --keep-on-failure, for every cell whatever its verdict (a pass too).
    #[arg(long)]
    pub keep: bool,
    /// QEMU's gdb stub on a Unix socket for every cell, the kernel booted with nokaslr;
    /// prints a ready-to-paste gdb command line with the kernel's debug vmlinux (fetched
    /// as `kchaos analyze` does: Debian's -dbg package, or a local build's vmlinux).
    #[arg(long)]
    pub gdb: bool,
    /// Like --gdb, and the guest waits for the debugger before it boots (`continue` in
    /// gdb starts it; the boot timeout runs from then).
    #[arg(long)]
    pub gdb_wait: bool,
    /// Run every cell to the end of its scenario even after a kernel-log signature has
    /// decided that it fails; by default such a cell collects its evidence (the sysrq
    /// dumps) and ends at once, so a bad kernel is judged as fast as a good one.
    #[arg(long)]
    pub full_duration: bool,
}

impl VmArgs {
    pub fn jobs(&self) -> usize {
        self.jobs.map_or_else(
            || std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            |j| j as usize,
        )
    }

    pub fn session(&self, cache: &Cache) -> SessionOptions {
        SessionOptions {
            accel: self.accel.into(),
            runner: self.runner.clone(),
            guest_log: self.guest_log.clone(),
            boot_timeout: self.boot_timeout,
            dump: self.dump_memory.then_some(DumpPolicy {
                max_mib: self.dump_max,
                timeout: Duration::from_secs(600),
            }),
            keep: if self.keep {
                KeepPolicy::Always
            } else if self.keep_on_failure {
                KeepPolicy::Failures
            } else {
                KeepPolicy::Never
            },
            gdb: (self.gdb || self.gdb_wait).then_some(GdbWait(self.gdb_wait)),
            full_duration: self.full_duration,
            ..SessionOptions::new(cache.clone(), self.jobs())
        }
    }
}

/// Thresholds of `compare` and of the comparison in `report`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// The reference: a kernel (spec as asked, as resolved, its label, its `uname -r`,
    /// or a name from the kernel list) or a results directory/database.
    #[arg(long, value_name = "KERNEL|DIR|DB")]
    pub baseline: Option<String>,
    /// What is judged against the baseline; same forms.
    #[arg(long, value_name = "KERNEL|DIR|DB", requires = "baseline")]
    pub candidate: Option<String>,
    /// Smallest change of the median that counts as a regression, in percent.
    #[arg(long, value_name = "PERCENT", default_value_t = 10.0)]
    pub threshold: f64,
    /// Significance level of the one-sided Mann-Whitney test.
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
}

/// `results/<what>-<timestamp>` (or `results/<timestamp>` for a run), made unique: two
/// commands started in the same second get different directories.
pub fn default_out(what: Option<&str>) -> PathBuf {
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace(':', "")
        .trim_end_matches('Z')
        .replace('T', "-");
    let name = match what {
        Some(w) => format!("{w}-{stamp}"),
        None => stamp,
    };
    let base = PathBuf::from("results").join(&name);
    if !base.exists() {
        return base;
    }
    (2..)
        .map(|n| PathBuf::from("results").join(format!("{name}-{n}")))
        .find(|p| !p.exists())
        .unwrap_or(base)
}

/// The known-issues file (`known-issues.toml`): failures it describes are `known`.
#[derive(Debug, Clone, clap::Args)]
pub struct KnownArgs {
    /// Known issues to triage failures with [default: ./known-issues.toml if present].
    #[arg(long, value_name = "FILE", conflicts_with = "no_known_issues")]
    pub known_issues: Option<PathBuf>,
    /// Ignore ./known-issues.toml: every failure counts.
    #[arg(long)]
    pub no_known_issues: bool,
}

impl KnownArgs {
    /// The entries, validated; `None` when none apply.
    pub fn load(
        &self,
        list: &KernelListArgs,
    ) -> Result<Option<std::sync::Arc<kchaos_harness::analysis::known::KnownIssues>>, CliError>
    {
        use kchaos_harness::analysis::known::{KnownError, KnownIssues, DEFAULT_PATH};
        let none_applies =
            self.known_issues.is_none() && !std::path::Path::new(DEFAULT_PATH).is_file();
        if self.no_known_issues || none_applies {
            // No list to read: the kernel list is not needed either (`report` of a
            // run elsewhere does not depend on this checkout's kernels.toml).
            return Ok(None);
        }
        let kernels = list.load()?;
        match KnownIssues::load_optional(self.known_issues.as_deref(), &kernels) {
            Ok(k) if k.issues.is_empty() && self.known_issues.is_none() => Ok(None),
            Ok(k) => Ok(Some(std::sync::Arc::new(k))),
            Err(KnownError::Invalid(errors)) => Err(CliError::Usage(
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n"),
            )),
            Err(e) => Err(CliError::usage(kchaos_model::error_chain(&e))),
        }
    }
}

/// The KCIDB export of `kchaos report`: where to, under which origin, linking where.
#[derive(Debug, Clone, clap::Args)]
pub struct KcidbArgs {
    /// Also write the results as KCIDB I/O JSON (KernelCI's schema v5.3) to FILE, for
    /// `kcidb-submit` or any KCIDB client (docs/results.md).
    #[arg(long, value_name = "FILE")]
    pub kcidb: Option<PathBuf>,
    /// The origin of every KCIDB object: this lab's name as KCIDB knows it (lower-case
    /// letters, digits, `_`).
    #[arg(
        long,
        value_name = "NAME",
        default_value = "kchaos",
        requires = "kcidb"
    )]
    pub kcidb_origin: String,
    /// Where the results directory is published: each test then links its files;
    /// `{dir}` stands for each run directory's name.
    #[arg(long, value_name = "URL", requires = "kcidb")]
    pub kcidb_base_url: Option<String>,
}

impl KcidbArgs {
    /// The file and the export's options, checked before anything is written.
    pub fn options(
        &self,
    ) -> Result<Option<(PathBuf, kchaos_harness::report::kcidb::Options)>, CliError> {
        use kchaos_harness::report::kcidb::{BaseUrl, Options, Origin};
        let Some(path) = &self.kcidb else {
            return Ok(None);
        };
        let usage = |e: kchaos_harness::report::kcidb::KcidbError| CliError::usage(e.to_string());
        let origin = Origin::parse(&self.kcidb_origin).map_err(usage)?;
        let base_url = self
            .kcidb_base_url
            .as_deref()
            .map(BaseUrl::parse)
            .transpose()
            .map_err(usage)?;
        Ok(Some((path.clone(), Options { origin, base_url })))
    }
}
