//! The scenario model: what a `scenarios/*.toml` file declares, after validation.
//!
//! Parsing happens in two stages (ripgrep's habit): [`raw`] mirrors the file with serde
//! and `deny_unknown_fields`, keeping spans; [`parse`] turns it into these validated types
//! and reports every problem with its file, line, column and key. The validated model is
//! what the harness plans with and what travels to the runner over the wire, so it is
//! plain data (serde, no I/O).

mod check;
mod check_kind;
mod ctx;
mod error;
mod parse;
mod probe;
mod raw;
mod testable;
pub mod window;
pub mod workload;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use self::check::{margin, Check, CheckOutcome, CheckResult, CheckStatus, CmpOp};
pub use self::check_kind::CheckKind;
pub use self::error::{error_at, line_col, locate_toml_error, ScenarioError, ScenarioErrors};
pub use self::parse::{parse, parse_for, AnyHost, Host};
pub use self::probe::{CounterSelect, NetLatency, NetMode, Probe, ProbeSpec};
pub use self::window::{Over, Window};
pub use self::workload::{Workload, WorkloadSpec};
use crate::kernel::{ConfigRequirement, VersionRange};
use crate::metrics::MetricInfo;
use crate::topology::Topology;
use crate::units::{duration_ms, opt_duration_ms};

/// The default `stall_bound`: a cgroup, network device or unit operation, a probe's
/// read or a wake-up that takes this long is a kernel stall, not load. Under TCG on a
/// loaded two-core host the slowest stock operations seen were a few seconds (systemd
/// answering in 1.9 s beside a kernel build).
pub const DEFAULT_STALL_BOUND: Duration = Duration::from_secs(10);

/// Sysctls every scenario gets unless it sets them: the kernel's hung-task detector
/// compressed from its 120 s (longer than most runs) to 10 s, checked every 2 s, so a
/// task blocked in D state is reported, with its stack, within the run.
pub const DEFAULT_SYSCTL: &[(&str, &str)] = &[
    ("kernel.hung_task_timeout_secs", "10"),
    ("kernel.hung_task_check_interval_secs", "2"),
];

/// A validated scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
    pub references: Vec<String>,
    /// Fixed seed for everything random; `None` lets the harness pick (and record) one.
    pub seed: Option<u64>,
    /// Upper bound of the workload phase; workloads stop earlier when they reach their
    /// own `iterations` or `duration`.
    #[serde(with = "duration_ms")]
    pub duration: Duration,
    /// Time after the workloads stop during which probes keep sampling (dying cgroups
    /// need time to be reclaimed; a leak is what is left after it).
    #[serde(with = "duration_ms")]
    pub settle: Duration,
    /// The longest any operation the workloads or probes time may take before the cell
    /// fails naming it (`[scenario] stall_bound`, default [`DEFAULT_STALL_BOUND`];
    /// `None`: `"off"`). A check on the metric's own `max` replaces it for that metric.
    #[serde(default, with = "opt_duration_ms")]
    pub stall_bound: Option<Duration>,
    pub vm: VmSpec,
    pub requires: Requirements,
    pub workloads: Vec<Workload>,
    pub probes: Vec<Probe>,
    pub checks: Vec<Check>,
    pub signatures: SignaturePolicy,
}

/// How the disposable VM is shaped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmSpec {
    pub memory_mib: u64,
    /// vCPUs: `topology.cpus()`.
    pub cpus: u32,
    /// The VM's CPU topology (`[vm] cpus`; the first of a list).
    #[serde(default)]
    pub topology: Topology,
    /// With `cpus = [...]` of more than one topology: every topology the scenario runs
    /// on, each a column of the matrix (`kchaos run --topology` overrides it). Empty
    /// otherwise.
    #[serde(default)]
    pub topologies: Vec<Topology>,
    pub cgroup: CgroupMode,
    /// Extra kernel command-line parameters.
    pub cmdline: Vec<String>,
    /// `/proc/sys` settings applied before the workload, e.g. time-compression knobs such
    /// as `kernel.hung_task_timeout_secs`.
    pub sysctl: BTreeMap<String, String>,
    /// Extra kernel modules to load (beyond those the workloads need).
    pub modules: Vec<String>,
    /// Host programs copied into the guest image with their shared libraries (`sh`,
    /// `ip`), for `exec` workloads such as a bug report's shell reproducer.
    pub tools: Vec<String>,
    /// How long the guest may stay silent before the cell is a `hang`; `None` uses the
    /// harness default for the accelerator.
    #[serde(with = "opt_duration_ms")]
    pub hang_timeout: Option<Duration>,
    pub image: ImageKind,
}

/// What the guest boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageKind {
    /// The runner as PID 1 in an initramfs: fastest, no userspace but kchaos's.
    #[default]
    Initramfs,
    /// A Debian bookworm root filesystem with systemd and dbus; the runner is a service.
    Systemd,
    /// The systemd image with PID 1 rebuilt by kchaos from the same Debian source with
    /// the systemd defect patches (`vm-images/recipes/systemd-defects/`), each dormant
    /// until its `kchaos_defect.*` boot parameter: the defects' stock twin and every
    /// defect in one image, as `build:defects` is for the kernel.
    #[serde(rename = "systemd-defects")]
    SystemdDefects,
}

impl ImageKind {
    /// Whether the guest boots systemd (the runner is then its service).
    pub fn runs_systemd(self) -> bool {
        matches!(self, ImageKind::Systemd | ImageKind::SystemdDefects)
    }
}

impl std::fmt::Display for ImageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ImageKind::Initramfs => "initramfs",
            ImageKind::Systemd => "systemd",
            ImageKind::SystemdDefects => "systemd-defects",
        })
    }
}

/// Which cgroup hierarchy the runner mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// One v1 hierarchy per controller under `/sys/fs/cgroup/<controller>`.
    V1,
    /// The unified hierarchy at `/sys/fs/cgroup`.
    V2,
    /// v1 controllers as in `V1`, plus cgroup2 at `/sys/fs/cgroup/unified` (systemd's
    /// hybrid layout).
    Hybrid,
}

impl CgroupMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CgroupMode::V1 => "v1",
            CgroupMode::V2 => "v2",
            CgroupMode::Hybrid => "hybrid",
        }
    }
}

/// What a kernel must offer for the scenario to be meaningful. An unmet requirement makes
/// the cell `skip` with the reason, never `fail`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Requirements {
    pub kernel: Option<VersionRange>,
    pub config: Vec<ConfigRequirement>,
    /// Controllers that must be usable in the scenario's cgroup mode (checked in the
    /// guest: Debian 6.12 lists `memory` in `/proc/cgroups` but cannot mount it as v1).
    pub cgroup_controllers: Vec<String>,
}

/// Which kernel-log signatures decide the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignaturePolicy {
    /// Use the built-in list (panic, Oops, BUG:, WARNING:, lockups, RCU stalls, hung
    /// tasks, SLUB/page allocation failures, `unregister_netdevice: waiting for`).
    pub defaults: bool,
    /// Extra regular expressions that make the cell `crash`.
    pub crash: Vec<String>,
    /// Extra regular expressions that make the cell `fail`.
    pub fail: Vec<String>,
    /// Regular expressions for lines that never count, even if a signature matches.
    pub ignore: Vec<String>,
}

impl Default for SignaturePolicy {
    fn default() -> Self {
        SignaturePolicy {
            defaults: true,
            crash: Vec::new(),
            fail: Vec::new(),
            ignore: Vec::new(),
        }
    }
}

impl VmSpec {
    /// This VM with `topology` (one column of a topology matrix): its CPUs, and no list.
    pub fn with_topology(&self, topology: Topology) -> VmSpec {
        VmSpec {
            cpus: topology.cpus(),
            topology,
            topologies: Vec::new(),
            ..self.clone()
        }
    }
}

impl Scenario {
    /// Every metric this scenario produces, by name. Checks are validated against it.
    pub fn metric_catalog(&self) -> BTreeMap<String, MetricInfo> {
        let mut catalog = BTreeMap::new();
        for workload in &self.workloads {
            for (name, info) in workload.metrics() {
                catalog.insert(name, info);
            }
        }
        for probe in &self.probes {
            catalog.extend(probe.metrics());
        }
        catalog
    }

    /// Kernel modules the scenario needs inside the guest.
    pub fn modules(&self) -> Vec<String> {
        let mut modules: Vec<String> = self.vm.modules.clone();
        for workload in &self.workloads {
            for m in workload.spec.modules() {
                if !modules.iter().any(|x| x == m) {
                    modules.push((*m).to_owned());
                }
            }
        }
        modules
    }
}

#[cfg(test)]
mod tests;
