//! The results contract (`docs/results.md`): `results.json` plus one directory per cell.
//! Each cell's result is written atomically as soon as it is known, and `results.json` is
//! rewritten after every cell, so an interrupted run loses nothing it finished. Around
//! it: the SQLite store, reading results back, merging shards, replay bundles.

pub mod bundle;
pub mod merge;
pub mod sources;
pub mod store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kchaos_images::Cache;
use kchaos_model::fingerprint::Fingerprint;
use kchaos_model::metrics::Metric;
use kchaos_model::scenario::CheckResult;
use kchaos_model::signature::SignatureHit;
use kchaos_model::timeline::PhaseStats;
use kchaos_model::verdict::Verdict;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("Cannot write results to {path}")]
    Write {
        path: String,
        #[source]
        source: kchaos_images::cache::CacheError,
    },
    #[error("Cannot encode results")]
    Encode(#[source] serde_json::Error),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KernelInfo {
    /// As requested (`debian:6.1-cloud`).
    pub spec: String,
    /// Exactly which kernel (`debian:6.1.0-56-cloud`).
    pub resolved: Option<String>,
    /// `uname -r` (from the guest when it booted).
    pub release: Option<String>,
    pub package: Option<String>,
    /// The Debian package as fields: name, version and the suite it came from
    /// (`bookworm-security`); absent for local builds and older results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debian: Option<kchaos_images::DebianPackage>,
    /// The git commit a local build came from (`commit`, `describe`, `dirty`): where a
    /// nightly's failing cell sends `kchaos bisect --source`. Absent for Debian kernels
    /// and builds of trees that are not git checkouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<kchaos_images::SourceCommit>,
}

/// Paths relative to the results directory.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Artifacts {
    pub dir: Option<String>,
    pub console: Option<String>,
    pub kmsg: Option<String>,
    pub qemu_log: Option<String>,
    /// sysrq task dumps collected from a hung guest.
    pub sysrq: Option<String>,
    /// Guest memory (kdump-zlib), with `--dump-memory`.
    pub vmcore: Option<String>,
    /// The replay bundle (`replay.tar.gz`) of a cell that did not pass.
    #[serde(default)]
    pub bundle: Option<String>,
}

impl Artifacts {
    /// Each file the cell has, by kind (`dir`, `console`, `kmsg`, `qemu_log`, `sysrq`,
    /// `vmcore`, `bundle`), in that order: one list for the database, JUnit and KCIDB,
    /// so a new kind of file reaches all of them.
    pub fn present(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("dir", &self.dir),
            ("console", &self.console),
            ("kmsg", &self.kmsg),
            ("qemu_log", &self.qemu_log),
            ("sysrq", &self.sysrq),
            ("vmcore", &self.vmcore),
            ("bundle", &self.bundle),
        ]
        .into_iter()
        .filter_map(|(kind, path)| Some((kind, path.as_deref()?)))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CellResult {
    pub id: String,
    pub scenario: String,
    pub scenario_file: String,
    pub kernel: KernelInfo,
    pub accel: Option<String>,
    /// The guest image booted (absent when the cell ended before one was built).
    #[serde(default)]
    pub image: Option<crate::vm::image::ImageInfo>,
    pub seed: u64,
    /// The VM's CPU topology (`2`, `2s2c`) when the run had a topology axis
    /// (`--topology`, or a scenario's `cpus = [...]`); absent otherwise: the cell ran on
    /// its scenario's `[vm] cpus`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology: Option<String>,
    pub repeat: u32,
    pub verdict: Verdict,
    pub reasons: Vec<String>,
    /// What ended the cell, stable across runs of the same bug (crash, hang with a stack,
    /// or a failure signature with one).
    pub fingerprint: Option<Fingerprint>,
    /// From QEMU start to the runner's `Hello`, host clock.
    pub boot_ms: Option<u64>,
    /// Guest uptime (CLOCK_BOOTTIME) when the runner said `Hello`: the guest's share of
    /// `boot_ms`, the rest being QEMU start-up and firmware.
    pub guest_ready_ms: Option<u64>,
    /// Whole cell, from QEMU start to its exit.
    pub duration_ms: u64,
    /// From QEMU start to the first kernel-log signature of a failure or crash, host
    /// clock: the time to a hit (a run with `--until` ends the cell soon after it).
    #[serde(default)]
    pub first_signature_ms: Option<u64>,
    pub metrics: BTreeMap<String, Metric>,
    /// Every `[[check]]` with what was observed and the margin left, passing or not;
    /// empty when the runner never reported (and in results written before checks were
    /// recorded).
    #[serde(default)]
    pub checks: Vec<CheckResult>,
    /// Each workload's phase with the latency statistics of every probe inside it;
    /// absent when the runner reported no timed samples.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<PhaseStats>,
    pub signatures: Vec<SignatureHit>,
    pub notes: Vec<String>,
    pub artifacts: Artifacts,
    pub started_at: String,
    /// The known issue this failure matched, if any.
    #[serde(default)]
    pub known: Option<KnownMatch>,
}

/// The known issue a failing cell matched (`known-issues.toml`): the cell's verdict
/// stays what the kernel did, its class is `known`, and it does not fail the gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownMatch {
    /// The entry's id.
    pub id: String,
    pub link: String,
}

/// What a run's cells made of the known issues: which entries matched, which matched
/// nothing (possibly fixed), which would have matched but expired.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriageSummary {
    /// The known-issues file.
    pub file: String,
    /// Entry id → cells it matched.
    pub matched: BTreeMap<String, usize>,
    /// Entries that matched no cell: the bug may be fixed (or the cell did not run).
    pub possibly_fixed: Vec<String>,
    /// Entries past their expiry that would have matched: their cells fail again.
    pub expired: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResults {
    pub kchaos_version: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub host: HostInfo,
    /// What the run was asked to do (for `--resume`, `merge`, and readers).
    #[serde(default)]
    pub plan: Option<PlanInfo>,
    pub cells: Vec<CellResult>,
    /// The known issues applied to the cells, when a known-issues file was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triage: Option<TriageSummary>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HostInfo {
    pub qemu: Option<String>,
    pub accel: Option<String>,
    pub accel_reason: Option<String>,
    /// VMs run at once (`--jobs`).
    #[serde(default)]
    pub jobs: Option<usize>,
    /// The harness's own peak memory (VmHWM), QEMU not included.
    #[serde(default)]
    pub harness_peak_rss_kib: Option<u64>,
}

/// The matrix a run was asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanInfo {
    /// Scenario files and directories as given.
    pub scenarios: Vec<String>,
    /// Kernel specs in matrix order.
    pub kernels: Vec<String>,
    pub repeat: u32,
    pub shard: Option<crate::plan::Shard>,
    /// `--seed`, if one was fixed.
    pub seed: Option<u64>,
    /// `--topology`, as labels (`2s2c`); absent when not given (each scenario's own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topologies: Vec<String>,
}

/// How tables name a scenario on a topology: `cfs-quota-starvation [2s1c]`, or the
/// scenario alone off any topology axis.
pub fn scenario_label(scenario: &str, topology: Option<&str>) -> String {
    match topology {
        Some(t) => format!("{scenario} [{t}]"),
        None => scenario.to_owned(),
    }
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Writes `value` as pretty JSON to `path`, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), ResultsError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(ResultsError::Encode)?;
    bytes.push(b'\n');
    Cache::write_atomic(path, &bytes).map_err(|source| ResultsError::Write {
        path: path.display().to_string(),
        source,
    })
}

impl KernelInfo {
    /// `spec` as asked, with what it resolved to when it did.
    pub fn of(spec: &str, kernel: Option<&kchaos_images::Kernel>) -> KernelInfo {
        KernelInfo {
            spec: spec.to_owned(),
            resolved: kernel.map(|k| k.resolved.clone()),
            release: kernel.map(|k| k.release.clone()),
            package: kernel.and_then(|k| k.package.clone()),
            debian: kernel.and_then(|k| k.debian.clone()),
            source: kernel.and_then(|k| k.source.clone()),
        }
    }
}

impl CellResult {
    /// A cell with nothing observed yet: `verdict`, no reasons, metrics or artifacts,
    /// started now. Every path that decides a cell starts from it.
    pub fn new(
        id: String,
        scenario: &crate::scenario::LoadedScenario,
        kernel: KernelInfo,
        seed: u64,
        repeat: u32,
        verdict: Verdict,
    ) -> CellResult {
        CellResult {
            id,
            scenario: scenario.model.name.clone(),
            scenario_file: scenario.path.display().to_string(),
            kernel,
            accel: None,
            image: None,
            seed,
            topology: None,
            repeat,
            verdict,
            reasons: Vec::new(),
            fingerprint: None,
            boot_ms: None,
            guest_ready_ms: None,
            duration_ms: 0,
            first_signature_ms: None,
            metrics: BTreeMap::new(),
            checks: Vec::new(),
            phases: Vec::new(),
            signatures: Vec::new(),
            notes: Vec::new(),
            artifacts: Artifacts::default(),
            started_at: now_rfc3339(),
            known: None,
        }
    }

    /// The identity of this cell across runs, shards and resumes.
    pub fn key(&self) -> crate::plan::CellKey {
        crate::plan::CellKey {
            scenario: self.scenario.clone(),
            kernel: self.kernel.spec.clone(),
            topology: self.topology.clone(),
            repeat: self.repeat,
        }
    }

    /// What is compared across kernels: the scenario, on its topology when the run had
    /// a topology axis (a baseline and a candidate are matched per topology).
    pub fn column(&self) -> (String, Option<String>) {
        (self.scenario.clone(), self.topology.clone())
    }

    /// The kernel part of the cell id (`debian-6.1.0-56-cloud`): the id is
    /// `SCENARIO/KERNEL_LABEL[/topo-T][/rN]`.
    pub fn kernel_label(&self) -> &str {
        let rest = self
            .id
            .strip_prefix(&self.scenario)
            .and_then(|r| r.strip_prefix('/'))
            .unwrap_or(&self.id);
        rest.split('/').next().unwrap_or(rest)
    }
}

impl RunResults {
    /// A run starting now with `plan`, no cells yet.
    pub fn starting(host: HostInfo, plan: PlanInfo) -> RunResults {
        RunResults {
            kchaos_version: kchaos_model::VERSION.to_owned(),
            started_at: now_rfc3339(),
            finished_at: None,
            host,
            plan: Some(plan),
            cells: Vec::new(),
            triage: None,
        }
    }

    pub fn path(dir: &Path) -> PathBuf {
        dir.join("results.json")
    }
}

/// A plausible cell for tests of what reads results: one latency histogram `lat` with
/// the given p99, two counter series (`dying`, `slab`) of two samples each, and the
/// check `lat.p99 <= 4ms` evaluated on them.
#[cfg(test)]
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
pub(crate) fn test_cell(id: &str, verdict: Verdict, p99_ns: f64) -> CellResult {
    use kchaos_model::metrics::{Gauge, Series, Summary};
    use kchaos_model::units::Unit;
    let (scenario, label) = id.split_once('/').unwrap_or((id, "k"));
    let p99 = p99_ns as u64;
    let mut metrics = BTreeMap::new();
    metrics.insert(
        "lat".to_owned(),
        Metric::Histogram(Summary {
            unit: Unit::Ns,
            count: 100,
            min: p99 / 10,
            p50: p99 / 4,
            p90: p99 / 2,
            p99,
            p999: p99,
            max: p99 + p99 / 10,
            mean: p99_ns / 3.0,
        }),
    );
    for (name, end) in [("dying", 40.0), ("slab", 2e6)] {
        metrics.insert(
            name.to_owned(),
            Metric::Series(Series {
                unit: Unit::Count,
                samples: vec![(0, 0.0), (500, end)],
            }),
        );
    }
    metrics.insert(
        "churn.cgroups".to_owned(),
        Metric::Value(Gauge {
            unit: Unit::Count,
            value: 40.0,
        }),
    );
    let check = kchaos_model::scenario::Check {
        text: "lat.p99 <= 4ms".to_owned(),
        because: Some("the incident's tail".to_owned()),
        metric: "lat".to_owned(),
        stat: kchaos_model::metrics::Stat::P99,
        op: kchaos_model::scenario::CmpOp::Le,
        threshold: 4e6,
        unit: Unit::Ns,
        kind: kchaos_model::scenario::CheckKind::Behaviour,
        window: None,
        min_samples: None,
    };
    let checks = vec![check.result(&metrics)];
    CellResult {
        id: id.to_owned(),
        scenario: scenario.to_owned(),
        scenario_file: format!("scenarios/{scenario}.toml"),
        kernel: KernelInfo {
            spec: format!("debian:{label}"),
            resolved: Some(format!("debian:{label}")),
            release: Some(format!("{label}-amd64")),
            package: None,
            debian: None,
            source: None,
        },
        accel: Some("tcg".to_owned()),
        image: None,
        seed: 42,
        topology: None,
        repeat: 0,
        verdict,
        reasons: if verdict == Verdict::Pass {
            Vec::new()
        } else {
            vec![format!("check `lat.p99 <= 4ms` failed: lat.p99 = {p99_ns}")]
        },
        fingerprint: None,
        boot_ms: Some(3000),
        guest_ready_ms: Some(2500),
        duration_ms: 20_000,
        first_signature_ms: None,
        metrics,
        checks,
        phases: Vec::new(),
        signatures: Vec::new(),
        notes: Vec::new(),
        artifacts: Artifacts {
            dir: Some(id.to_owned()),
            console: Some(format!("{id}/console.log")),
            kmsg: Some(format!("{id}/kmsg.log")),
            ..Artifacts::default()
        },
        started_at: "2026-11-23T00:00:00Z".to_owned(),
        known: None,
    }
}
