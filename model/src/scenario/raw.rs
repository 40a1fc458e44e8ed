//! Stage one: the file as written. Every table denies unknown keys; values that stage two
//! validates keep their spans so errors point at them.

use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde::Deserialize;
use toml::Spanned;

use super::{CgroupMode, ImageKind};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFile {
    pub scenario: RawMeta,
    #[serde(default)]
    pub vm: RawVm,
    #[serde(default)]
    pub requires: RawRequires,
    /// Workloads and probes are tagged by `kind`; they are deserialised one by one from
    /// the spanned document (serde's tagged enums would lose the spans).
    #[serde(default, rename = "workload")]
    pub _workload: Option<IgnoredAny>,
    #[serde(default, rename = "probe")]
    pub _probe: Option<IgnoredAny>,
    #[serde(default)]
    pub check: Vec<RawCheck>,
    #[serde(default)]
    pub signatures: RawSignatures,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMeta {
    pub name: Spanned<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub references: Vec<String>,
    pub seed: Option<u64>,
    pub duration: Option<Spanned<String>>,
    pub settle: Option<Spanned<String>>,
    /// A duration, or `"off"`: the longest any timed operation may take.
    pub stall_bound: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVm {
    pub memory: Option<Spanned<String>>,
    /// A CPU count, a topology (`"2s2c"`), or a list of either (the matrix runs each).
    pub cpus: Option<Spanned<toml::Value>>,
    pub cgroup: Option<CgroupMode>,
    #[serde(default)]
    pub cmdline: Vec<Spanned<String>>,
    #[serde(default)]
    pub sysctl: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    pub modules: Vec<Spanned<String>>,
    #[serde(default)]
    pub tools: Vec<Spanned<String>>,
    pub hang_timeout: Option<Spanned<String>>,
    pub image: Option<Spanned<ImageKind>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRequires {
    pub kernel: Option<Spanned<String>>,
    #[serde(default)]
    pub config: Vec<Spanned<String>>,
    #[serde(default)]
    pub cgroup_controllers: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCheck {
    #[serde(rename = "assert")]
    pub expr: Spanned<String>,
    /// Why the bound matters; shown next to a failure.
    pub because: Option<String>,
    /// What the check tells (orders a failed cell's reasons); inferred when absent.
    pub kind: Option<Spanned<String>>,
    /// For a check over a window: the fewest samples it must hold to be judged.
    pub min_samples: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSignatures {
    pub defaults: Option<bool>,
    #[serde(default)]
    pub crash: Vec<Spanned<String>>,
    #[serde(default)]
    pub fail: Vec<Spanned<String>>,
    #[serde(default)]
    pub ignore: Vec<Spanned<String>>,
}

/// Just the `kind` of a `[[workload]]` or `[[probe]]` entry, read first to pick the
/// struct for the rest.
#[derive(Debug, Deserialize)]
pub(crate) struct RawKind {
    pub kind: Option<Spanned<String>>,
}
