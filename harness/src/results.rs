//! The results contract (`docs/results.md`): `results.json` plus one directory per cell.
//! Each cell's result is written atomically as soon as it is known, and `results.json` is
//! rewritten after every cell, so an interrupted run loses nothing it finished.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kchaos_images::Cache;
use kchaos_model::fingerprint::Fingerprint;
use kchaos_model::metrics::Metric;
use kchaos_model::signature::SignatureHit;
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
    pub image: Option<crate::images::ImageInfo>,
    pub seed: u64,
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
    pub metrics: BTreeMap<String, Metric>,
    pub signatures: Vec<SignatureHit>,
    pub notes: Vec<String>,
    pub artifacts: Artifacts,
    pub started_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResults {
    pub kchaos_version: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub host: HostInfo,
    pub cells: Vec<CellResult>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HostInfo {
    pub qemu: Option<String>,
    pub accel: Option<String>,
    pub accel_reason: Option<String>,
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

impl RunResults {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("results.json")
    }
}
